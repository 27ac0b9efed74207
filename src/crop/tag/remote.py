"""A crop tagger service (`crop serve tagger`) as a tagger:

    load_tagger("remote:http://tagger:8102")                 # mode "model": the service's own model
    RemoteTagger("http://tagger:8102", mode="crop")          # through the service's translate-tag-project

Entities come back with character offsets; their token offsets are computed here over crop's tokenization of the
sentence, as the in-process taggers do. HTTP behaviour (pooling, API key, retries) is `crop.remote_http`'s: a
service that is down raises `RemoteUnavailable`, a `crop.errors.EngineUnavailable` (the pipeline and the services
stop at once on it, with 503 + Retry-After, instead of retrying sentence by sentence).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from crop.remote_http import RemoteEngine, chunks
from crop.tag.transformers import AnyLanguage
from crop.text import char_to_token_span, tokenize
from crop.types import Span

__all__ = ["RemoteTagger"]


class RemoteTagger(RemoteEngine):
    """The Tagger protocol over a tagger service's /v1/tag (mode "model" or "crop")."""

    def __init__(self, base_url: str, mode: Literal["model", "crop"] = "model", **options: Any) -> None:
        if mode not in ("model", "crop"):
            raise ValueError(f"mode must be 'model' or 'crop', not {mode!r}")
        super().__init__(base_url, **options)
        self.mode = mode

    def __repr__(self) -> str:
        return f"RemoteTagger({self.base_url!r}, mode={self.mode!r})"

    def languages(self) -> list[str]:
        """The languages of this mode: the model's (`["*"]`: any, as an `AnyLanguage`) or crop's plus the pivot."""
        info = self.info()
        if self.mode == "model":
            langs = [str(x) for x in info.get("model_languages", [])]
            return AnyLanguage() if "*" in langs else langs
        pivot = info.get("pivot")
        return sorted({str(x) for x in info.get("crop_languages", [])} | ({str(pivot)} if pivot else set()))

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        texts = list(sentences)
        out: list[list[Span]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]  # the service refuses blank sentences
        for idx in chunks(len(todo), self.batch_size):
            batch = [texts[todo[i]] for i in idx]
            results = self.http.post("/v1/tag", {"texts": batch, "lang": lang, "mode": self.mode})["results"]
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name} answered {len(results)} results for {len(batch)} sentences")
            for i, text, result in zip(idx, batch, results, strict=True):
                out[todo[i]] = _spans(text, lang, result.get("entities", []))
        return out


def _spans(text: str, lang: str, entities: Sequence[dict[str, Any]]) -> list[Span]:
    """Spans of the service's entities, with token offsets over crop's tokenization (character offsets snapped to
    the tokens they overlap); entities outside the text or overlapping an earlier one are dropped."""
    offsets = tokenize(text, lang)[1]
    spans: list[Span] = []
    for e in sorted(entities, key=lambda e: (int(e["start"]), int(e["end"]))):
        start, end = int(e["start"]), int(e["end"])
        if not 0 <= start < end <= len(text):
            continue
        tok = char_to_token_span(offsets, start, end)
        if tok is None or (spans and tok[0] < (spans[-1].token_end or 0)):
            continue
        start, end = offsets[tok[0]][0], offsets[tok[1] - 1][1]
        spans.append(Span(start=start, end=end, label=str(e["label"]), text=text[start:end], token_start=tok[0],
                          token_end=tok[1], score=float(e.get("score", 1.0))))
    return spans
