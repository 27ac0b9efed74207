"""Two English taggers read the same machine-translated English: the one fitted to clean English finds the names
(spans), the one also trained on round-tripped English (`crop tagger train --roundtrip`) types them better (issue
15: it makes fewer type errors but misses more names). Together: the spans of the first, typed by the second where
it found the same span, and the second's spans that overlap none of the first's."""

from __future__ import annotations

from collections.abc import Sequence

from crop.tag.base import Tagger
from crop.types import Span


def merge_spans(spans: Sequence[Span], typed: Sequence[Span]) -> list[Span]:
    """`spans` re-typed by `typed` where both have the same character span, plus the `typed` spans that overlap
    none of `spans`; sorted by start."""
    by_span = {(s.start, s.end): s for s in typed}
    out = [s.model_copy(update={"label": by_span[(s.start, s.end)].label}) if (s.start, s.end) in by_span else s
           for s in spans]
    out += [t for t in typed if all(t.end <= s.start or s.end <= t.start for s in spans)]
    return sorted(out, key=lambda s: s.start)


class SpanTypeEnsemble:
    """A tagger of `spans` (whose spans are kept) and `types` (whose types win on the same span)."""

    def __init__(self, spans: Tagger, types: Tagger) -> None:
        self.spans, self.types = spans, types
        self.name = f"{spans.name}+{types.name}"

    def languages(self) -> list[str]:
        return sorted(set(self.spans.languages()) & set(self.types.languages()))

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        first, second = self.spans.tag(sentences, lang), self.types.tag(sentences, lang)
        return [merge_spans(a, b) for a, b in zip(first, second, strict=True)]
