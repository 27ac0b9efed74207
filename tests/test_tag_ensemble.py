"""The span/type ensemble of two English taggers (crop.tag.ensemble)."""

from __future__ import annotations

import pytest

from crop.tag.ensemble import SpanTypeEnsemble, merge_spans
from crop.types import Span

TEXT = "Pedro Sanchez met Marbella officials in Paris with the Basque Party ."


def _span(text: str, label: str) -> Span:
    start = TEXT.index(text)
    return Span(start=start, end=start + len(text), label=label, text=text)


def test_spans_of_the_first_types_of_the_second() -> None:
    first = [_span("Pedro Sanchez", "PER"), _span("Marbella", "ORG"), _span("Basque Party", "ORG")]
    second = [_span("Marbella", "LOC"), _span("Paris", "LOC"), _span("Basque", "MISC"), _span("Pedro", "PER")]
    merged = merge_spans(first, second)
    assert [(s.text, s.label) for s in merged] == [
        ("Pedro Sanchez", "PER"),  # the second's "Pedro" overlaps it: the first's span stays
        ("Marbella", "LOC"),  # same span: the second's type
        ("Paris", "LOC"),  # found by the second only, overlapping nothing: added
        ("Basque Party", "ORG"),  # the second's "Basque" overlaps it: left out
    ]
    assert merge_spans([], second) == sorted(second, key=lambda s: s.start)
    assert merge_spans(first, []) == first


@pytest.mark.integration
def test_ensemble_of_real_taggers() -> None:
    from crop.tag.spacy import SpacyTagger

    stock = SpacyTagger()
    ens = SpanTypeEnsemble(stock, stock)
    sents = ["Angela Merkel visited Paris on Monday .", "It rained ."]
    assert ens.tag(sents, "en") == stock.tag(sents, "en")
    assert "en" in ens.languages() and ens.name == "spacy+spacy"
