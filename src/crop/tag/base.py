"""The tagger protocol: sentences in, entity spans (character and token offsets, label, score) out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from crop.labels import bio_to_spans
from crop.text import char_to_token_span, tokenize
from crop.types import Span


@runtime_checkable
class Tagger(Protocol):
    name: str

    def languages(self) -> list[str]: ...

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]: ...


_LEADING_DETERMINERS = frozenset({"the", "a", "an"})
_EDGE_PUNCT = ",.;:!?\"'«»“”()[]{}"


def finish_span(text: str, start: int, end: int, label: str, score: float, lang: str,
                offsets: Sequence[tuple[int, int]] | None = None) -> Span | None:
    """A span in CoNLL conventions: without a leading article ("the European Union" -> "European Union"),
    a trailing possessive or edge punctuation; with token offsets over crop's tokenization of `text`."""
    while start < end and (text[start].isspace() or text[start] in _EDGE_PUNCT):
        start += 1
    while end > start and (text[end - 1].isspace() or text[end - 1] in _EDGE_PUNCT.replace(".", "")):
        end -= 1
    if lang == "en":
        first, _, rest = text[start:end].partition(" ")
        if rest and first.lower() in _LEADING_DETERMINERS:
            start += len(first) + 1
        for suffix in ("'s", "’s"):
            if text[start:end].endswith(suffix) and end - len(suffix) > start:
                end -= len(suffix)
    if start >= end:
        return None
    if offsets is None:
        offsets = tokenize(text, lang)[1]
    tok = char_to_token_span(offsets, start, end)
    if tok is None:
        return None
    # a final period that is a token of its own ends the sentence, not the name ("Urraca I.")
    while tok[1] - tok[0] > 1 and text[offsets[tok[1] - 1][0]:offsets[tok[1] - 1][1]] in (".", "…"):
        tok = (tok[0], tok[1] - 1)
        end = offsets[tok[1] - 1][1]
    return Span(start=start, end=end, label=label, text=text[start:end], token_start=tok[0], token_end=tok[1],
                score=score)


def tagged_spans(text: str, offsets: Sequence[tuple[int, int]], tags: Sequence[str], scores: Sequence[float],
                 lang: str) -> list[Span]:
    """The spans of a sentence's BIO tags over its tokens (`offsets` into `text`), each scored by the mean of its
    tokens' scores, in CoNLL conventions (`finish_span`), without overlaps."""
    spans: list[Span] = []
    for start, end, label in bio_to_spans(tags):
        score = sum(scores[start:end]) / (end - start)
        span = finish_span(text, offsets[start][0], offsets[end - 1][1], label, score, lang, offsets)
        if span is not None and (not spans or span.token_start >= spans[-1].token_end):
            spans.append(span)
    return spans
