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
        self.name = f"{spans.name}|{types.name}"

    def languages(self) -> list[str]:
        return sorted(set(self.spans.languages()) & set(self.types.languages()))

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        first, second = self.spans.tag(sentences, lang), self.types.tag(sentences, lang)
        return [merge_spans(a, b) for a, b in zip(first, second, strict=True)]


def vote_spans(outputs: Sequence[Sequence[Span]], min_votes: int) -> list[Span]:
    """Entity-level majority of several taggers' spans of one sentence: a character span found by at least
    `min_votes` of them is kept (most votes first, then longer ones, none overlapping a kept one); its type is
    the one most of the taggers that found it gave (a tie goes to the earliest tagger)."""
    votes: dict[tuple[int, int], list[Span]] = {}
    for spans in outputs:
        for s in spans:
            votes.setdefault((s.start, s.end), []).append(s)
    kept: list[Span] = []
    for (start, end), found in sorted(votes.items(), key=lambda kv: (-len(kv[1]), kv[0][0] - kv[0][1], kv[0])):
        if len(found) < min_votes:
            break
        if any(start < k.end and k.start < end for k in kept):
            continue
        counts: dict[str, int] = {}
        for s in found:
            counts[s.label] = counts.get(s.label, 0) + 1
        best = max(counts.values())
        label = next(s.label for s in found if counts[s.label] == best)  # `found` is in tagger order
        kept.append(found[0].model_copy(update={"label": label,
                                                "score": round(len(found) / len(outputs), 4)}))
    return sorted(kept, key=lambda s: s.start)


class VotingEnsemble:
    """Several taggers (e.g. the same English tagger fitted with several seeds, with and without round-trip
    augmentation) voting entity by entity: what at least half of them found, typed as most of those typed it.
    One tagger's seed moves end-to-end F1 by up to 0.02 on the dev sets; the vote keeps what the seeds agree on.
    Each entity's score is the share of taggers that found it."""

    def __init__(self, taggers: Sequence[Tagger], min_votes: int | None = None) -> None:
        if len(taggers) < 2:
            raise ValueError("a voting ensemble needs at least two taggers")
        self.taggers = list(taggers)
        self.min_votes = min_votes if min_votes is not None else (len(taggers) + 1) // 2
        if not 1 <= self.min_votes <= len(taggers):
            raise ValueError(f"min_votes must be between 1 and {len(taggers)}, not {self.min_votes}")
        self.name = "+".join(t.name for t in self.taggers)

    def languages(self) -> list[str]:
        common = set(self.taggers[0].languages())
        for t in self.taggers[1:]:
            common &= set(t.languages())
        return sorted(common)

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        outputs = [t.tag(sentences, lang) for t in self.taggers]
        return [vote_spans([out[i] for out in outputs], self.min_votes) for i in range(len(sentences))]
