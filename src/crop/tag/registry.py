"""Build a tagger from a spec string: `spacy`, `spacy:<pipeline name or path>`,
`transformers:<hub id or path of a token classification model>`, `remote:<url of a crop tagger service>` (its
mode "model"; options also from CROP_REMOTE_TIMEOUT, CROP_REMOTE_MAX_RETRIES, CROP_REMOTE_BACKOFF,
CROP_REMOTE_BATCH_SIZE; the API key from CROP_REMOTE_API_KEY), `<spec>|<spec>`: the first tagger's spans with
the second one's types, or `<spec>+<spec>+...`: the entities at least half of the taggers found, typed by their
majority (`crop.tag.ensemble`; `+` joins parts that may be `|` pairs)."""

from __future__ import annotations

from typing import Any

from crop.env_options import options_from_env
from crop.labels import get_scheme
from crop.tag.base import Tagger

ENGINES = ("spacy", "transformers", "remote")


def load_tagger(spec: str = "spacy", scheme: str = "conll", **options: Any) -> Tagger:
    """A tagger by spec. `options` go to the engine's constructor; a transformers tagger also reads its
    `device`, `dtype` and `batch_size` from CROP_TAGGER_DEVICE, CROP_TAGGER_DTYPE, CROP_TAGGER_BATCH_SIZE
    when not given."""
    if "+" in spec:  # an entity-level vote of several taggers (crop.tag.ensemble)
        from crop.tag.ensemble import VotingEnsemble

        parts = [p.strip() for p in spec.split("+")]
        if any(not p for p in parts):
            raise ValueError(f"{spec!r}: an empty tagger spec between '+' signs")
        return VotingEnsemble([load_tagger(p, scheme, **options) for p in parts])
    if "|" in spec:  # spans of the first tagger, types of the second (crop.tag.ensemble)
        from crop.tag.ensemble import SpanTypeEnsemble

        first, _, second = spec.partition("|")
        return SpanTypeEnsemble(load_tagger(first, scheme, **options), load_tagger(second, scheme, **options))
    engine, _, arg = spec.partition(":")
    if engine == "spacy":
        from crop.tag.spacy import DEFAULT_PIPELINE, SpacyTagger

        return SpacyTagger(arg or DEFAULT_PIPELINE, scheme=get_scheme(scheme), **options)
    if engine == "transformers":
        if not arg:
            raise ValueError(f"{spec!r} names no model: use transformers:<hub id or path>")
        from crop.tag.transformers import TransformersTagger

        options = options_from_env(options, "CROP_TAGGER", {"device": str, "dtype": str, "batch_size": int})
        return TransformersTagger(arg, scheme=get_scheme(scheme), **options)
    if engine == "remote":
        if not arg:
            raise ValueError(f"{spec!r} names no service: use remote:http://<host>:<port>")
        from crop.remote_http import OPTION_TYPES
        from crop.tag.remote import RemoteTagger

        return RemoteTagger(arg, **options_from_env(options, "CROP_REMOTE", OPTION_TYPES))
    raise ValueError(f"unknown tagger engine {engine!r} in {spec!r}; available: {', '.join(ENGINES)}")
