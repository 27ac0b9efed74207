"""`crop convert`: a Hugging Face seq2seq model (M2M100, NLLB, Marian, an LST checkpoint) to a CTranslate2
folder, over CTranslate2's own converter, with the tokenizer copied beside it so that the folder is all the
`ctranslate2` engine needs.

The vocabulary is read id by id from the tokenizer: under transformers 5 the M2M100 tokenizer lists neither its
language codes nor added special tokens (the `__SLOT{i}__` tokens of an LST checkpoint) in `get_vocab()`, which
CTranslate2's loader relies on, so without this the conversion fails or drops them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from crop.translate.seq2seq import pair_from_name

log = logging.getLogger(__name__)

QUANTIZATIONS = ("int8", "int8_float16", "int8_bfloat16", "int8_float32", "int16", "float16", "bfloat16",
                 "float32")


def _patch_vocabulary(model_type: str) -> None:
    """Make CTranslate2's loader for `model_type` read the full vocabulary (see the module docstring)."""
    from ctranslate2.converters import transformers as ct2t

    from crop.translate.transformers import vocabulary_table

    loaders: dict[str, Any] = ct2t._MODEL_LOADERS
    loader = loaders.get(model_type)
    # only M2M100 (and NLLB, its architecture) needs it; other loaders trim their vocabulary on purpose (Marian
    # drops the <pad> that transformers appends)
    if model_type != "M2M100Config" or loader is None or getattr(loader, "_crop_full_vocabulary", False):
        return
    base = type(loader)

    class FullVocabulary(base):  # type: ignore[misc, valid-type]
        _crop_full_vocabulary = True

        def get_vocabulary(self, model: Any, tokenizer: Any) -> list[str]:
            return vocabulary_table(tokenizer, model.get_input_embeddings().num_embeddings)

    loaders[model_type] = FullVocabulary()


def convert(src: str, dst: str | Path, quantization: str | None = None, force: bool = False) -> Path:
    """Convert `src` (hub id or path) into the CTranslate2 folder `dst`; returns `dst`."""
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoConfig, AutoTokenizer

    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}; use one of {', '.join(QUANTIZATIONS)}")
    dst = Path(dst)
    if dst.exists() and any(dst.iterdir()) and not force:
        raise FileExistsError(f"{dst} exists and is not empty (use --force to overwrite)")
    try:
        config = AutoConfig.from_pretrained(src)
        tokenizer = AutoTokenizer.from_pretrained(src)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read a Hugging Face model from {src!r}: {exc}") from exc
    _patch_vocabulary(type(config).__name__)
    TransformersConverter(src).convert(str(dst), quantization=quantization, force=True)
    tokenizer.save_pretrained(dst)
    (dst / "crop_convert.json").write_text(json.dumps({
        "source": str(src), "quantization": quantization or "as saved", "model_type": config.model_type,
        "max_positions": getattr(config, "max_position_embeddings", None),
        # a single-pair model (Marian) says its pair in its name, which the converted folder may not keep
        "pair": pair_from_name(str(src)),
    }, indent=2) + "\n", encoding="utf-8")
    log.info("converted", extra={"source": str(src), "target": str(dst), "quantization": quantization})
    return dst
