"""Small builders shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from crop.labels import CONLL
from crop.text import tokenize
from crop.types import Span


def spans_of(text: str, *items: tuple[str, str]) -> list[Span]:
    """Spans for the given (substring, label) pairs, each at its first occurrence in text."""
    out = []
    for sub, label in items:
        start = text.index(sub)
        out.append(Span(start=start, end=start + len(sub), label=label, text=sub))
    return out


def check_offsets(text: str, spans: list[Span], lang: str = "en") -> None:
    """A tagger's spans: in order, not overlapping, character and token offsets agreeing with crop's
    tokenization of `text`, labels of the CoNLL scheme, scores in (0, 1]."""
    tokens, offsets = tokenize(text, lang)
    prev_end = 0
    for s in spans:
        assert 0 <= s.start < s.end <= len(text)
        assert text[s.start:s.end] == s.text
        assert s.token_start is not None and s.token_end is not None
        assert 0 <= s.token_start < s.token_end <= len(tokens)
        assert offsets[s.token_start][0] == s.start
        assert offsets[s.token_end - 1][1] == s.end
        assert s.token_start >= prev_end, "spans overlap or are out of order"
        assert s.label in CONLL.labels
        assert 0.0 < s.score <= 1.0
        prev_end = s.token_end
