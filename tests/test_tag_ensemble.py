"""The ensembles of English taggers (crop.tag.ensemble): spans of one and types of another, and a vote of several."""

from __future__ import annotations

import pytest

from crop.tag.ensemble import SpanTypeEnsemble, VotingEnsemble, merge_spans, vote_spans
from crop.tag.registry import load_tagger
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
    assert "en" in ens.languages() and ens.name == "spacy|spacy"


def test_vote_keeps_what_at_least_half_found_typed_by_their_majority() -> None:
    a = [_span("Pedro Sanchez", "PER"), _span("Marbella", "ORG"), _span("Basque Party", "ORG")]
    b = [_span("Pedro Sanchez", "PER"), _span("Marbella", "LOC"), _span("Paris", "LOC"), _span("Basque", "MISC")]
    c = [_span("Pedro", "PER"), _span("Marbella", "LOC"), _span("Paris", "LOC"), _span("Basque", "MISC")]
    d = [_span("Marbella", "ORG"), _span("Basque Party", "ORG")]
    voted = vote_spans([a, b, c, d], min_votes=2)
    assert [(s.text, s.label, s.score) for s in voted] == [
        ("Pedro Sanchez", "PER", 0.5),  # 2 of 4; "Pedro" alone has 1 vote
        ("Marbella", "ORG", 1.0),  # 4 of 4; ORG 2, LOC 2: the tie goes to the earliest tagger's type
        ("Paris", "LOC", 0.5),
        ("Basque Party", "ORG", 0.5),  # 2 votes, and longer than "Basque" (2 votes too), which overlaps it
    ]
    # a strict majority (3 of 4) keeps Marbella only
    assert [s.text for s in vote_spans([a, b, c, d], min_votes=3)] == ["Marbella"]
    assert vote_spans([[], []], min_votes=1) == []


class _Fixed:
    """A tagger that answers the same spans for every sentence."""

    def __init__(self, name: str, spans: list[Span]) -> None:
        self.name, self.spans = name, spans

    def languages(self) -> list[str]:
        return ["en", "de"] if self.name == "a" else ["en"]

    def tag(self, sentences: list[str], lang: str) -> list[list[Span]]:
        return [list(self.spans) for _ in sentences]


def test_voting_ensemble_over_taggers() -> None:
    taggers = [_Fixed("a", [_span("Paris", "LOC")]), _Fixed("b", [_span("Paris", "ORG")]),
               _Fixed("c", [_span("Paris", "ORG"), _span("Marbella", "LOC")])]
    ens = VotingEnsemble(taggers)  # at least half: 2 of 3
    assert ens.min_votes == 2 and ens.name == "a+b+c" and ens.languages() == ["en"]
    assert [[(s.text, s.label) for s in out] for out in ens.tag([TEXT, TEXT], "en")] == [[("Paris", "ORG")]] * 2
    with pytest.raises(ValueError, match="at least two"):
        VotingEnsemble(taggers[:1])
    with pytest.raises(ValueError, match="min_votes"):
        VotingEnsemble(taggers, min_votes=4)


def test_the_vote_spec() -> None:
    with pytest.raises(ValueError, match="empty tagger spec"):
        load_tagger("spacy++spacy")
    with pytest.raises(ValueError, match="unknown tagger engine"):
        load_tagger("spacy+nope:x")


@pytest.mark.integration
def test_vote_spec_of_real_taggers() -> None:
    from crop.tag.spacy import SpacyTagger

    ens = load_tagger("spacy+spacy|spacy+spacy")
    assert isinstance(ens, VotingEnsemble) and len(ens.taggers) == 3
    assert isinstance(ens.taggers[1], SpanTypeEnsemble)
    sents = ["Angela Merkel visited Paris on Monday .", "It rained ."]
    stock = SpacyTagger().tag(sents, "en")
    assert [[(s.start, s.end, s.label) for s in out] for out in ens.tag(sents, "en")] == \
        [[(s.start, s.end, s.label) for s in out] for out in stock]
