"""Decomposed Unicode (NFD, as macOS writes it) and control characters: the engines see clean text, the client
gets offsets into the text it sent (`text[start:end]` is the entity), and no entity holds a control character or
starts or ends with punctuation. Real Apertium and spaCy."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from crop.cli import app
from crop.engine_view import engine_sentence, restore_result, tag_text, trim_span
from crop.io import sentence_from_record
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.text import clean_text, tokenize, trim_punct

SENTENCE = "Pedro Sánchez se reunió con Olaf Scholz en Berlín."
NFD = unicodedata.normalize("NFD", SENTENCE)
CONTROLS = "\x07 Berlín.\x1b[31m"


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


# -- tokenization over the text as given --------------------------------------------------------------------------


def test_decomposed_words_are_one_token_each_with_offsets_into_the_given_text():
    tokens, offsets = tokenize(NFD, "es")
    assert [unicodedata.normalize("NFC", t) for t in tokens] == tokenize(SENTENCE, "es")[0]
    assert all(NFD[s:e] == t for t, (s, e) in zip(tokens, offsets, strict=True))
    assert "Sa" not in tokens


def test_control_characters_are_whitespace_to_the_tokenizer():
    tokens, offsets = tokenize(CONTROLS, "es")
    assert tokens == ["Berlín", ".", "[", "31m"]
    assert all(CONTROLS[s:e] == t for t, (s, e) in zip(tokens, offsets, strict=True))


_PIECES = st.sampled_from(["a", "e", "\u0301", "\u0308", "\u0327", " ", "\x07", "\x1b", "\u200b", "n", ".", "ñ",
                           "\u1100", "\u1161", "\u11a8", "Z", "-", "'", "\ufeff", "\t"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_tokens_are_slices_of_the_text_and_never_hold_controls(text: str):
    for lang in ("es", "en", "zh"):
        tokens, offsets = tokenize(text, lang)
        for tok, (s, e) in zip(tokens, offsets, strict=True):
            assert text[s:e] == tok
            assert not any(unicodedata.category(c) == "Cc" for c in tok)
    clean = clean_text(text)
    assert unicodedata.is_normalized("NFC", clean.text)
    if clean.origin is not None:
        assert len(clean.origin) == len(clean.text) + 1 and clean.origin == sorted(clean.origin)


def test_trim_punct_and_trim_span():
    tokens = ["«", "Berlín", ".", "»"]
    assert trim_punct(tokens, 0, 4) == (1, 2)
    assert trim_punct(["."], 0, 1) == (0, 1)  # nothing but punctuation: left as it is
    text = "\x07 Berlín. hoy"
    assert trim_span(text, 0, 9, "es") == (2, 8)
    assert trim_span("los EE.UU. hoy", 4, 10, "es") == (4, 10)  # an abbreviation keeps its dots
    assert trim_span(" ... ", 0, 5, "es") is None


# -- the pipeline over real engines -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe(translator, tagger) -> CropPipeline:
    projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False, max_tokens=10**6))
    return CropPipeline(translator, tagger, projector)


def _entities(pipe: CropPipeline, text: str) -> list[tuple[str, str]]:
    result = pipe.project_batch([sentence_from_record({"id": "x", "text": text}, "es")])[0]
    assert result.status != "failed", result.reason
    assert result.text == text and all(text[s:e] == t for t, (s, e) in
                                       zip(result.tokens, tokenize(text, "es")[1], strict=True))
    for e in result.entities:
        assert text[e.start:e.end] == e.text
        assert result.tokens[e.token_start:e.token_end] and e.text.strip() == e.text
    return [(unicodedata.normalize("NFC", e.text), e.label) for e in result.entities]


@pytest.mark.integration
def test_decomposed_sentence_gets_the_entities_of_the_composed_one(pipe: CropPipeline):
    composed = _entities(pipe, SENTENCE)
    assert ("Berlín", "LOC") in composed and any(t == "Pedro Sánchez" for t, _ in composed)
    assert _entities(pipe, NFD) == composed


@pytest.mark.integration
def test_control_characters_never_end_up_inside_entities(pipe: CropPipeline):
    found = _entities(pipe, CONTROLS)
    assert found == [("Berlín", "LOC")]
    found = _entities(pipe, "Angela Merkel\x07 visitó\x1b[0m Berlín.\u200b")
    assert ("Berlín", "LOC") in found
    assert all(not any(unicodedata.category(c) in ("Cc", "Cf") for c in t) for t, _ in found)


def test_engine_sentence_and_restore_keep_token_indices():
    s = sentence_from_record({"id": "x", "tokens": ["\x07Sa\u0301nchez", "vive", "en", "Berli\u0301n"]}, "es")
    view = engine_sentence(s)
    assert view.tokens == ["Sánchez", "vive", "en", "Berlín"]
    assert all(view.text[a:b] == t for t, (a, b) in zip(view.tokens, view.offsets, strict=True))
    assert engine_sentence(sentence_from_record({"id": "y", "text": SENTENCE}, "es")) is not None


@pytest.mark.integration
def test_model_mode_tagging_maps_spans_back_to_the_given_text(tagger):
    text = nfd("Angela Merkel visited Zürich and Malmö.\x1b[31m")
    spans = tag_text(tagger, [text], "en")[0]
    assert spans, "the English model found nothing"
    for sp in spans:
        assert text[sp.start:sp.end] == sp.text
        assert sp.text.strip() == sp.text and not sp.text.endswith(".")
    assert any(unicodedata.normalize("NFC", sp.text) == "Angela Merkel" for sp in spans)


@pytest.mark.integration
def test_crop_tag_command_on_decomposed_text():
    result = CliRunner().invoke(app, ["tag", "--lang", "es", "--json", NFD])
    assert result.exit_code == 0, result.output
    import json

    out = json.loads(result.output)
    assert out["text"] == NFD
    names = [(NFD[e["start"]:e["end"]], e["text"]) for e in out["entities"]]
    assert names and all(a == b for a, b in names)
    assert any(unicodedata.normalize("NFC", b) == "Berlín" for _, b in names)


def test_restore_is_identity_on_clean_text():
    s = sentence_from_record({"id": "x", "text": SENTENCE}, "es")
    assert engine_sentence(s) is s
    from crop.types import ProjectionResult

    r = ProjectionResult(id="x", text=SENTENCE, tokens=list(s.tokens), tags=["O"] * len(s.tokens))
    assert restore_result(r, s) is r
