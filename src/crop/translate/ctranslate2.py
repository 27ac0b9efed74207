"""Seq2seq translation with CTranslate2: the same models as `translate/transformers` after `crop convert`
(int8 on CPU, float16 on GPU), several times faster, with the same options and the same outputs.

    CTranslate2Translator("m2m100_418M-ct2", device="cpu", compute_type="int8", beam_size=5, n_best=3)

The converted folder holds the Hugging Face tokenizer next to the CTranslate2 model (`crop convert` puts it
there); `tokenizer=` points elsewhere when it does not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crop.translate.seq2seq import Hypothesis, Seq2SeqTranslator


def load_vocabulary(model_dir: Path) -> list[str]:
    """The target vocabulary of a converted model (shared_vocabulary.json/.txt or target_vocabulary.*)."""
    for name in ("shared_vocabulary", "target_vocabulary"):
        if (model_dir / f"{name}.json").exists():
            return json.loads((model_dir / f"{name}.json").read_text(encoding="utf-8"))
        if (model_dir / f"{name}.txt").exists():
            return (model_dir / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    raise ValueError(f"{model_dir} has no vocabulary file: is it a CTranslate2 model (see `crop convert`)?")


class CTranslate2Translator(Seq2SeqTranslator):
    name = "ctranslate2"

    def __init__(self, model: str, device: str = "auto", compute_type: str = "default", tokenizer: str | None = None,
                 intra_threads: int = 0, inter_threads: int = 1, **options: Any) -> None:
        super().__init__(model, **options)
        import ctranslate2
        from transformers import AutoTokenizer

        path = Path(model)
        if not (path / "model.bin").exists():
            raise ValueError(f"{model!r} is not a CTranslate2 model folder (no model.bin); convert a Hugging Face "
                             "model first: crop convert SRC DST --quantization int8")
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        try:
            self.translator = ctranslate2.Translator(str(path), device=device, compute_type=compute_type,
                                                     intra_threads=intra_threads, inter_threads=inter_threads)
        except (RuntimeError, ValueError) as exc:
            raise ValueError(f"cannot load CTranslate2 model {model!r} on {device} ({compute_type}): {exc}") from exc
        self.compute_type = self.translator.compute_type
        try:
            hf_tokenizer = AutoTokenizer.from_pretrained(tokenizer or str(path))
        except (OSError, ValueError) as exc:
            raise ValueError(f"no tokenizer for {model!r}: pass tokenizer=<hub id or path> ({exc})") from exc
        vocab = load_vocabulary(path)
        if self._markers == "slot" and "__SLOT0__" not in vocab:
            raise ValueError(f"{model!r} has no __SLOT{{i}}__ tokens in its vocabulary: convert an LST checkpoint, "
                             "or use markers=bracket with an off-the-shelf model")
        meta_file = path / "crop_convert.json"
        meta = json.loads(meta_file.read_text(encoding="utf-8")) if meta_file.exists() else {}
        if self._pair is None and meta.get("pair"):
            self._pair = (meta["pair"][0], meta["pair"][1])
        self._setup(hf_tokenizer, set(vocab))
        self.max_positions = meta.get("max_positions")

    def _generate(self, sources: list[list[str]], target_prefix: list[str], n: int, beam_size: int,
                  max_new: int) -> list[list[Hypothesis]]:
        results = self.translator.translate_batch(
            sources, target_prefix=[target_prefix] * len(sources) if target_prefix else None, beam_size=beam_size,
            num_hypotheses=n, max_decoding_length=max_new + len(target_prefix), return_scores=True,
            max_batch_size=0)
        out = []
        for r in results:
            hyps = []
            for pieces, score in zip(r.hypotheses, r.scores or [0.0] * len(r.hypotheses), strict=False):
                if target_prefix and pieces[:len(target_prefix)] == target_prefix:
                    pieces = pieces[len(target_prefix):]
                hyps.append(Hypothesis(list(pieces), float(score)))
            out.append(hyps)
        return out
