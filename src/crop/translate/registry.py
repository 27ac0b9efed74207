"""Build a translator from a spec string: `apertium`, `apertium:/path/to/modes`,
`transformers:<hub id or path>`, `ctranslate2:<converted folder>` (options also from CROP_TRANSLATOR_DEVICE,
CROP_TRANSLATOR_BEAM_SIZE, CROP_TRANSLATOR_N_BEST, CROP_TRANSLATOR_COMPUTE_TYPE, ...),
`openai:<model>[@<base_url>]` (an OpenAI-compatible server such as `vllm serve`; the base URL defaults to
CROP_OPENAI_BASE_URL or http://127.0.0.1:8000/v1), `remote:<url of a crop translator service>` (options also
from CROP_REMOTE_TIMEOUT, CROP_REMOTE_MAX_RETRIES, CROP_REMOTE_BACKOFF, CROP_REMOTE_BATCH_SIZE; the API key from
CROP_REMOTE_API_KEY)."""

from __future__ import annotations

from typing import Any

from crop.env_options import options_from_env
from crop.translate.base import Translator

ENGINES = ("apertium", "transformers", "ctranslate2", "openai", "remote")


def load_translator(spec: str = "apertium", **options: Any) -> Translator:
    """The engine a spec names; `options` go to its constructor (e.g. `n=4`, `max_concurrency=32`)."""
    engine, _, arg = spec.partition(":")
    if engine == "apertium":
        from crop.translate.apertium import ApertiumTranslator

        return ApertiumTranslator(modes_dir=arg or None, **options)
    if engine == "openai":
        from crop.translate.openai import OpenAITranslator, parse_model_spec

        model, base_url = parse_model_spec(arg)
        if base_url:
            options["base_url"] = base_url
        return OpenAITranslator(model, **options)
    if engine == "remote":
        if not arg:
            raise ValueError(f"{spec!r} names no service: use remote:http://<host>:<port>")
        from crop.remote_http import OPTION_TYPES
        from crop.translate.remote import connect_translator

        return connect_translator(arg, **options_from_env(options, "CROP_REMOTE", OPTION_TYPES))
    if engine in ("transformers", "ctranslate2"):
        if not arg:
            raise ValueError(f"{spec!r} names no model: use {engine}:<hub id or path>")
        types: dict[str, type] = {"device": str, "beam_size": int, "n_best": int, "max_length": int,
                                  "max_batch_tokens": int, "markers": str}
        types.update({"dtype": str} if engine == "transformers" else {"compute_type": str, "intra_threads": int})
        options = options_from_env(options, "CROP_TRANSLATOR", types)
        if engine == "transformers":
            from crop.translate.transformers import TransformersTranslator

            return TransformersTranslator(arg, **options)
        from crop.translate.ctranslate2 import CTranslate2Translator

        return CTranslate2Translator(arg, **options)
    raise ValueError(f"unknown translation engine {engine!r} in {spec!r}; available: {', '.join(ENGINES)}")
