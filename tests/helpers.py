"""Small builders shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from crop.types import Span


def spans_of(text: str, *items: tuple[str, str]) -> list[Span]:
    """Spans for the given (substring, label) pairs, each at its first occurrence in text."""
    out = []
    for sub, label in items:
        start = text.index(sub)
        out.append(Span(start=start, end=start + len(sub), label=label, text=sub))
    return out
