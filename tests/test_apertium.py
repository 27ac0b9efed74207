"""Apertium translator against the real engine: batching, block integrity, marks, escaping, labeled and aligned
translation, pairs and errors."""

from __future__ import annotations

import re
import subprocess

import pytest
from helpers import spans_of

from crop.text import tokenize
from crop.translate.apertium import ApertiumTranslator
from crop.translate.base import AligningTranslator, Translator, UnsupportedPair
from crop.types import LabeledItem

pytestmark = pytest.mark.integration



@pytest.fixture
def count_runs(translator: ApertiumTranslator, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record every process started (the real subprocess.Popen still runs); a translation run is one `bash`
    pipeline. The installed modes, the modes' pipelines and their canaries are ready before counting."""
    translator.pairs()
    for mode in ("spa-eng", "eng-spa"):
        translator.canary(mode)
    calls: list[list[str]] = []
    real_popen = subprocess.Popen

    def counting_popen(cmd, *args, **kwargs):
        calls.append(list(cmd))
        return real_popen(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", counting_popen)
    return calls


def test_protocols(translator: ApertiumTranslator) -> None:
    assert isinstance(translator, Translator)
    assert isinstance(translator, AligningTranslator)
    assert translator.name == "apertium"


def test_pairs(translator: ApertiumTranslator) -> None:
    pairs = translator.pairs()
    for pair in [("en", "es"), ("es", "en"), ("en", "ca"), ("ca", "en"), ("en", "gl"), ("gl", "en")]:
        assert pair in pairs
    assert pairs == sorted(set(pairs))
    # variants such as eng-cat_valencia are not separate pairs
    assert all("_" not in a and "_" not in b for a, b in pairs)


@pytest.mark.parametrize(
    ("src", "tgt", "text", "word"),
    [
        ("es", "en", "El perro come carne.", "dog"),
        ("en", "es", "The dog eats meat.", "perro"),
        ("ca", "en", "El gos menja carn.", "dog"),
        ("en", "ca", "The dog eats meat.", "gos"),
        ("gl", "en", "O can come carne.", "dog"),
        ("en", "gl", "The dog eats meat.", "can"),
    ],
)
def test_translate_each_direction(translator: ApertiumTranslator, src: str, tgt: str, text: str, word: str) -> None:
    (out,) = translator.translate([text], src, tgt)
    assert word in out.split(), out
    assert out == out.strip() and "  " not in out


def test_batch_is_one_process_and_never_merges(translator: ApertiumTranslator, count_runs: list[list[str]]) -> None:
    # no final punctuation: Apertium's plain-text mode would join such lines
    texts = [f"El perro número {100 + i} come carne en la casa" for i in range(20)]
    outs = translator.translate(texts, "es", "en")
    assert [c[0] for c in count_runs] == ["bash"], count_runs
    assert len(outs) == 20
    for i, out in enumerate(outs):
        assert re.findall(r"\d+", out) == [str(100 + i)], (i, out)  # its own number, nothing else: order kept
        assert "dog" in out and "house" in out


def test_batch_equals_one_by_one(translator: ApertiumTranslator) -> None:
    texts = ["Hola mundo", "El gato duerme", "Vivo en Madrid desde hace años", "Sin puntuación final"]
    batch = translator.translate(texts, "es", "en")
    single = [translator.translate([t], "es", "en")[0] for t in texts]
    assert batch == single


def test_labeled_and_aligned_batches_are_one_process(translator: ApertiumTranslator,
                                                       count_runs: list[list[str]]) -> None:
    texts = [f"Maria visited Madrid on day {i}" for i in range(12)]
    items = [LabeledItem(text=t, spans=spans_of(t, ("Maria", "PER"), ("Madrid", "LOC"))) for t in texts]
    results = translator.translate_labeled(items, "en", "es")
    assert len(count_runs) == 1
    assert len(results) == 12
    aligned = translator.translate_aligned([tokenize(t, "en")[0] for t in texts], "en", "es")
    assert len(count_runs) == 2
    assert len(aligned) == 12
    for i, (res, al) in enumerate(zip(results, aligned, strict=True)):
        assert str(i) in res.text.split() and str(i) in al.tokens


def test_empty_batch(translator: ApertiumTranslator, count_runs: list[list[str]]) -> None:
    assert translator.translate([], "es", "en") == []
    assert translator.translate_labeled([], "en", "es") == []
    assert translator.translate_aligned([], "es", "en") == []
    assert count_runs == []


def test_empty_sentence_in_batch(translator: ApertiumTranslator) -> None:
    assert translator.translate(["Hola", "", "Adiós"], "es", "en") == ["Hello", "", "Goodbye"]


def test_unknown_word_marks_removed(translator: ApertiumTranslator) -> None:
    outs = translator.translate(["El blorfnax zzqxw corre hacia el norte", "Vi un grumplet azul"], "es", "en")
    for out in outs:
        assert not set("*#@") & set(out), out
    assert "blorfnax" in outs[0] and "zzqxw" in outs[0]
    assert "grumplet" in outs[1]
    (labeled,) = translator.translate_labeled(
        [LabeledItem(text="The blorfnax met Zqwertine in Madrid", spans=spans_of(
            "The blorfnax met Zqwertine in Madrid", ("Zqwertine", "PER")))], "en", "es")
    assert not set("*#@") & set(labeled.text)
    assert [s.text for s in labeled.spans] == ["Zqwertine"]


def test_marks_of_the_source_are_kept(translator: ApertiumTranslator) -> None:
    (out,) = translator.translate(["Escribe a info@ejemplo.com con el hashtag #Madrid"], "es", "en")
    assert "info@ejemplo.com" in out
    assert "#Madrid" in out


def test_html_special_characters_survive(translator: ApertiumTranslator) -> None:
    outs = translator.translate(["El precio es 5 & 3 < 4 > 2", "Tom &amp; Jerry", "Dijo <p>hola</p> y se fue"],
                                "es", "en")
    assert "5 & 3 < 4 > 2" in outs[0]
    assert "&amp;" in outs[1]  # literal text stays literal, it is not unescaped twice
    assert "<p>" in outs[2] and "</p>" in outs[2]
    assert len(outs) == 3

    text = "Tom & Jerry met AT&T in <Madrid>."
    (res,) = translator.translate_labeled(
        [LabeledItem(text=text, spans=spans_of(text, ("AT&T", "ORG"), ("Madrid", "LOC")))], "en", "es")
    assert "Tom & Jerry" in res.text and "<Madrid>" in res.text
    assert [(s.text, s.ref) for s in res.spans] == [("AT&T", 0), ("Madrid", 1)]
    for s in res.spans:
        assert res.text[s.start:s.end] == s.text

    (al,) = translator.translate_aligned([["Tom", "&", "Jerry", "<", "3", "in", "Madrid", "."]], "en", "es")
    assert "&" in al.tokens and "<" in al.tokens
    assert "&amp;" not in al.text and "&lt;" not in al.text


def test_labeled_keeps_spans(translator: ApertiumTranslator) -> None:
    text = "Donald Trump met Pedro Sánchez in Madrid."
    spans = spans_of(text, ("Donald Trump", "PER"), ("Pedro Sánchez", "PER"), ("Madrid", "LOC"))
    (res,) = translator.translate_labeled([LabeledItem(text=text, spans=spans)], "en", "es")
    assert len(res.spans) == 3
    assert res.lost == []
    assert [s.ref for s in res.spans] == [0, 1, 2]
    assert [s.label for s in res.spans] == ["PER", "PER", "LOC"]
    for s in res.spans:
        assert res.text[s.start:s.end] == s.text
    assert res.spans[1].text == "Pedro Sánchez"
    assert res.spans[2].text == "Madrid"
    assert "<" not in res.text  # no markup left in the plain text
    assert 'id="e0"' in res.raw


def test_labeled_batch_mixed(translator: ApertiumTranslator) -> None:
    t1 = "The European Union signed an agreement with Mercosur."
    t2 = "It rained all day"
    t3 = "Barcelona and Girona are in Catalonia."
    items = [
        LabeledItem(text=t1, spans=spans_of(t1, ("European Union", "ORG"), ("Mercosur", "ORG"))),
        LabeledItem(text=t2),
        LabeledItem(text=t3, spans=spans_of(t3, ("Barcelona", "LOC"), ("Girona", "LOC"), ("Catalonia", "LOC"))),
    ]
    res = translator.translate_labeled(items, "en", "ca")
    assert len(res) == 3
    assert res[1].spans == [] and res[1].lost == [] and res[1].text
    assert [s.ref for s in res[0].spans] == [0, 1]
    assert "Mercosur" in res[0].spans[1].text
    assert [s.text for s in res[2].spans][:2] == ["Barcelona", "Girona"]
    for r, item in zip(res, items, strict=True):
        assert sorted([s.ref for s in r.spans] + r.lost) == list(range(len(item.spans)))
        for s in r.spans:
            assert r.text[s.start:s.end] == s.text


def test_translate_aligned(translator: ApertiumTranslator) -> None:
    sentences = [
        tokenize("Pedro Sánchez vive en Madrid con su familia .", "es")[0],
        ["El", "presidente", "de", "Francia", "visitó", "Madrid", "ayer", "."],
    ]
    results = translator.translate_aligned(sentences, "es", "en")
    assert len(results) == 2
    for src, al in zip(sentences, results, strict=True):
        assert len(al.tokens) == len(al.alignment)
        assert al.tokens == tokenize(al.text, "en")[0]
        assert all(0 <= i < len(src) for ids in al.alignment for i in ids)
        madrid = al.tokens.index("Madrid")
        assert al.alignment[madrid] == [src.index("Madrid")]
    france = results[1].tokens.index("France")
    assert results[1].alignment[france] == [3]


def test_unsupported_pair(translator: ApertiumTranslator) -> None:
    for src, tgt in [("en", "xx"), ("es", "ca")]:
        with pytest.raises(UnsupportedPair) as info:
            translator.translate(["Hola"], src, tgt)
        msg = str(info.value)
        assert f"{src}->{tgt}" in msg
        assert "es-en" in msg and "en-es" in msg and "en-gl" in msg
    assert issubclass(UnsupportedPair, ValueError)
    with pytest.raises(UnsupportedPair):
        translator.translate_labeled([LabeledItem(text="Hello")], "en", "xx")
    with pytest.raises(UnsupportedPair):
        translator.translate_aligned([["Hola"]], "es", "ca")


def test_mode_accepts_both_code_styles(translator: ApertiumTranslator) -> None:
    assert translator.mode("es", "en") == translator.mode("spa", "eng") == "spa-eng"
    assert translator.mode("en", "gl") == "en-gl"


@pytest.mark.parametrize("lang", ["es", "ca", "gl"])
def test_dev_set_invariants(translator: ApertiumTranslator, shared_data, lang: str) -> None:
    """Labeled translation of every gold English dev sentence and aligned translation of every target one."""
    from crop.io import read_jsonl
    from crop.pipeline import english_spans

    sents = list(read_jsonl(shared_data / "dev" / f"{lang}.dev.jsonl"))
    items = [LabeledItem(text=text, spans=spans)
             for text, spans in (english_spans(s.en_tokens, s.en_tags) for s in sents)]
    results = translator.translate_labeled(items, "en", lang)
    assert len(results) == len(items)
    n_spans = sum(len(it.spans) for it in items)
    n_lost = 0
    for it, res in zip(items, results, strict=True):
        assert sorted([s.ref for s in res.spans] + res.lost) == list(range(len(it.spans)))
        n_lost += len(res.lost)
        for s in res.spans + res.fragments:
            assert s.text and res.text[s.start:s.end] == s.text
            assert s.label == it.spans[s.ref].label
        if "<" not in it.text and "&" not in it.text:
            assert "<" not in res.text and "&" not in res.text, res.text
    assert n_lost <= 0.05 * n_spans

    aligned = translator.translate_aligned([s.tokens for s in sents], lang, "en")
    assert len(aligned) == len(sents)
    n_aligned = n_tokens = 0
    for s, al in zip(sents, aligned, strict=True):
        assert len(al.tokens) == len(al.alignment)
        assert al.tokens == tokenize(al.text, "en")[0]
        assert all(0 <= i < len(s.tokens) for ids in al.alignment for i in ids)
        n_tokens += len(al.tokens)
        n_aligned += sum(bool(ids) for ids in al.alignment)
    assert n_aligned >= 0.9 * n_tokens
