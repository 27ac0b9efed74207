"""A crop translator service (`crop serve translator`) as a translation engine:

    load_translator("remote:http://translator:8101")       # or connect_translator(url, api_key=...)

Long inputs go out in requests of `batch_size` sentences (the service batches them again across clients).
When the service's engine gives word alignments (`/v1/info` says `aligned: true`), `connect_translator` returns a
`RemoteAligningTranslator`, so that the pipeline gets the forward-translation evidence from it too. HTTP
behaviour (pooling, API key, retries) is `crop.remote_http`'s: a service that is down raises `RemoteUnavailable`,
a `crop.errors.EngineUnavailable` (the pipeline and the services stop at once on it, with 503 + Retry-After,
instead of retrying sentence by sentence).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from crop.remote_http import RemoteEngine, RemoteRequestError, chunks
from crop.translate.base import UnsupportedPair
from crop.types import AlignedTranslation, LabeledItem, LabeledResult

__all__ = ["RemoteAligningTranslator", "RemoteTranslator", "connect_translator"]

T = TypeVar("T")
R = TypeVar("R")


class RemoteTranslator(RemoteEngine):
    """The Translator protocol over a translator service's /v1/translate and /v1/translate/labeled."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def pairs(self) -> list[tuple[str, str]]:
        return [(str(a), str(b)) for a, b in self.info().get("pairs", [])]

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        def call(batch: list[str]) -> list[str]:
            out = self._post("/v1/translate", {"texts": batch, "src": src, "tgt": tgt})["translations"]
            return [str(t) for t in out]

        return self._batched(list(texts), lambda t: bool(t.strip()), call, lambda _: "", src, tgt)

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        def call(batch: list[LabeledItem]) -> list[LabeledResult]:
            body = {"items": [{"text": it.text, "spans": [{"start": s.start, "end": s.end, "label": s.label}
                                                          for s in it.spans]} for it in batch],
                    "src": src, "tgt": tgt}
            return [LabeledResult.model_validate(r) for r in self._post("/v1/translate/labeled", body)["results"]]

        return self._batched(list(items), lambda it: bool(it.text.strip()), call,
                             lambda it: LabeledResult(text="", lost=list(range(len(it.spans)))), src, tgt)

    # -- helpers ------------------------------------------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.http.post(path, body)
        except RemoteRequestError as exc:
            if exc.status == 400 and exc.detail and "is not served" in exc.detail:
                raise UnsupportedPair(exc.detail) from exc
            raise

    def _batched(self, items: list[T], send: Callable[[T], bool], call: Callable[[list[T]], list[R]],
                 empty: Callable[[T], R], src: str, tgt: str) -> list[R]:
        """`call` on the items `send` accepts (blank sentences, which the service refuses, get `empty`), in
        requests of `batch_size`; results in input order."""
        out: list[R | None] = [None if send(it) else empty(it) for it in items]
        todo = [i for i, it in enumerate(items) if send(it)]
        for idx in chunks(len(todo), self.batch_size):
            batch = [items[todo[i]] for i in idx]
            results = call(batch)
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name} answered {len(results)} results for {len(batch)} sentences "
                                   f"({src}->{tgt})")
            for i, r in zip(idx, results, strict=True):
                out[todo[i]] = r
        return out  # type: ignore[return-value]


class RemoteAligningTranslator(RemoteTranslator):
    """A RemoteTranslator whose service also serves /v1/translate/aligned (the AligningTranslator protocol)."""

    def translate_aligned(self, sentences: Sequence[Sequence[str]], src: str, tgt: str) -> list[AlignedTranslation]:
        def call(batch: list[Sequence[str]]) -> list[AlignedTranslation]:
            body = {"sentences": [list(s) for s in batch], "src": src, "tgt": tgt}
            return [AlignedTranslation.model_validate(r)
                    for r in self._post("/v1/translate/aligned", body)["results"]]

        return self._batched(list(sentences), lambda s: bool(s) and all(t.strip() for t in s), call,
                             lambda _: AlignedTranslation(text="", tokens=[], alignment=[]), src, tgt)


def connect_translator(base_url: str, **options: Any) -> RemoteTranslator:
    """A client of the translator service at `base_url` (options as RemoteTranslator's): a
    RemoteAligningTranslator when its /v1/info says `aligned: true`, else a RemoteTranslator."""
    probe = RemoteTranslator(base_url, **options)
    try:
        info = probe.info()
    except BaseException:
        probe.close()
        raise
    if info.get("service", "translator") != "translator":
        probe.close()
        raise ValueError(f"{base_url} is a crop {info.get('service')} service, not a translator")
    if not info.get("aligned"):
        return probe
    probe.close()
    aligned = RemoteAligningTranslator(base_url, **options)
    aligned._info = info
    return aligned
