from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crop.labels import CONLL, WIKIANN, bio_to_spans, get_scheme, spans_to_bio

TYPES = ["PER", "ORG", "LOC", "MISC"]


def test_bio_to_spans_basic() -> None:
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-MISC"]
    assert bio_to_spans(tags) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 6, "LOC"), (7, 8, "MISC")]


def test_bio_to_spans_empty_and_all_o() -> None:
    assert bio_to_spans([]) == []
    assert bio_to_spans(["O", "O"]) == []


def test_stray_i_starts_an_entity() -> None:
    assert bio_to_spans(["I-PER", "I-PER", "O"]) == [(0, 2, "PER")]
    assert bio_to_spans(["O", "I-ORG"]) == [(1, 2, "ORG")]
    # a type change inside a run of I- starts a new entity
    assert bio_to_spans(["B-PER", "I-LOC", "I-LOC"]) == [(0, 1, "PER"), (1, 3, "LOC")]


@pytest.mark.parametrize("bad", ["PER", "X-PER", "B-", "I", "b-PER", "E-PER"])
def test_invalid_tags_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="not a BIO tag"):
        bio_to_spans(["O", bad])


def test_spans_to_bio() -> None:
    assert spans_to_bio(5, [(3, 5, "LOC"), (0, 1, "PER")]) == ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    assert spans_to_bio(2, []) == ["O", "O"]
    # adjacent entities of one type stay two entities
    assert spans_to_bio(2, [(0, 1, "PER"), (1, 2, "PER")]) == ["B-PER", "B-PER"]


@pytest.mark.parametrize("span", [(0, 0, "PER"), (2, 1, "PER"), (-1, 1, "PER"), (3, 6, "PER")])
def test_spans_to_bio_out_of_range(span: tuple[int, int, str]) -> None:
    with pytest.raises(ValueError):
        spans_to_bio(5, [span])


def test_spans_to_bio_overlap() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_bio(5, [(0, 3, "PER"), (2, 4, "LOC")])


@st.composite
def span_lists(draw: st.DrawFn) -> tuple[int, list[tuple[int, int, str]]]:
    n = draw(st.integers(0, 30))
    cuts = sorted(draw(st.sets(st.integers(0, n), max_size=12)))
    spans = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        if draw(st.booleans()):
            spans.append((a, b, draw(st.sampled_from(TYPES))))
    return n, spans


@given(span_lists())
def test_spans_round_trip(case: tuple[int, list[tuple[int, int, str]]]) -> None:
    n, spans = case
    tags = spans_to_bio(n, spans)
    assert len(tags) == n
    assert bio_to_spans(tags) == sorted(spans)


tag_lists = st.lists(st.sampled_from(["O", *(f"{p}-{t}" for p in "BI" for t in TYPES)]), max_size=30)


@given(tag_lists)
def test_any_tags_normalize_to_iob2(tags: list[str]) -> None:
    spans = bio_to_spans(tags)
    iob2 = spans_to_bio(len(tags), spans)
    assert bio_to_spans(iob2) == spans
    # IOB2 output: every entity starts with B-, and I- continues an entity of the same type
    for i, t in enumerate(iob2):
        if t.startswith("I-"):
            assert iob2[i - 1][2:] == t[2:] and iob2[i - 1] != "O"
    # the entity positions of non-O tags are kept
    assert [t == "O" for t in iob2] == [t == "O" for t in tags]


@settings(deadline=None)
@given(tag_lists)
def test_spans_agree_with_seqeval(tags: list[str]) -> None:
    from seqeval.metrics.sequence_labeling import get_entities  # slow first import

    expected = sorted((s, e + 1, t) for t, s, e in get_entities(tags))
    assert sorted(bio_to_spans(tags)) == expected


def test_conll_map_ontonotes() -> None:
    assert CONLL.map("PERSON") == "PER"
    assert CONLL.map("B-PERSON") == "PER"
    assert CONLL.map("GPE") == "LOC"
    assert CONLL.map("FAC") == "LOC"
    assert CONLL.map("NORP") == "MISC"
    assert CONLL.map("EVENT") == "MISC"
    assert CONLL.map("ORG") == "ORG"
    assert CONLL.map("DATE") is None
    assert CONLL.map("CARDINAL") is None
    assert CONLL.map("MONEY") is None
    assert CONLL.map("per") == "PER"
    assert CONLL.map("I-MISC") == "MISC"
    assert CONLL.map("SOMETHING_ELSE") is None


def test_wikiann_map() -> None:
    assert WIKIANN.labels == ("PER", "ORG", "LOC")
    assert WIKIANN.map("PERSON") == "PER"
    assert WIKIANN.map("GPE") == "LOC"
    assert WIKIANN.map("ORG") == "ORG"
    assert WIKIANN.map("MISC") is None
    assert WIKIANN.map("NORP") is None
    assert WIKIANN.map("DATE") is None


def test_get_scheme() -> None:
    assert get_scheme("CoNLL") is CONLL
    assert get_scheme("wikiann") is WIKIANN
    with pytest.raises(ValueError, match="unknown label scheme"):
        get_scheme("ontonotes")
