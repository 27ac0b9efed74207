"""The spaCy student's fast tagging path (`crop.tag.spacy_fast`) against spaCy itself: the same entities on the
shared dev and raw sentences, for crop's student architecture and for spaCy's default NER, one sentence at a time
and batched; spaCy's own path for any architecture it does not compute."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from crop.tag.spacy_fast import FastNer
from crop.tag.student import StudentTagger
from crop.text import tokenize
from crop.train.students.spacy_student import SpacyOptions, ner_model_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
LANGS = ("es", "ca", "gl")


def dev_sentences() -> list[tuple[list[str], list[str]]]:
    import json

    out = []
    for lang in LANGS:
        for line in (SHARED / "dev" / f"{lang}.dev.jsonl").read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            out.append((record["tokens"], record["tags"]))
    return out


def raw_sentences(per_lang: int = 300) -> list[list[str]]:
    out = []
    for lang in LANGS:
        lines = [t for t in (SHARED / "raw" / f"{lang}.txt").read_text(encoding="utf-8").splitlines() if t.strip()]
        out += [tokenize(t, lang)[0] for t in lines[:per_lang]]
    return [t for t in out if t]


# whitespace tokens (no entity may start on one), a one-token sentence, entities at the very end
# and words whose attributes are spaCy symbols, not hashes (the shape "X", the norm "meta")
EDGE = [["Madrid"], ["Juan", " ", "Pérez", "vive", "en", "Madrid"], ["\u00a0", "Barcelona"],
        ["visitó", "Nueva", "York", "y", "Los", "Ángeles"], ["Ana", "López"], ["Meta", "y", "B", "X", "J", "."]]


def train_student(folder: Path, model: dict[str, Any], epochs: int, seed: int) -> Path:
    """A blank multilingual pipeline whose NER (architecture `model`) learned the es dev sentences for a few
    epochs (the half-trained one: many close calls between actions)."""
    import spacy
    from spacy.tokens import Doc
    from spacy.training import Example, iob_to_biluo
    from spacy.util import fix_random_seed, minibatch

    fix_random_seed(seed)
    nlp = spacy.blank("xx")
    nlp.add_pipe("ner", config={"model": model} if model else {})
    train = dev_sentences()[:80]
    examples = [Example.from_dict(Doc(nlp.vocab, words=tokens), {"entities": iob_to_biluo(tags)})
                for tokens, tags in train]
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(examples)
        for batch in minibatch(examples, size=8):
            nlp.update(batch, sgd=optimizer, drop=0.1)
    nlp.to_disk(folder)
    return folder


ARCHITECTURES = {
    "crop-default": (ner_model_config(SpacyOptions()), 15),
    "depth-1-window-2": ({**ner_model_config(SpacyOptions(depth=1)),
                          "tok2vec": {**ner_model_config(SpacyOptions(depth=1))["tok2vec"],
                                      "encode": {"@architectures": "spacy.MaxoutWindowEncoder.v2", "width": 64,
                                                 "depth": 1, "window_size": 2, "maxout_pieces": 3}}}, 15),
    "spacy-default-ner": ({}, 10),
    "half-trained": (ner_model_config(SpacyOptions()), 5),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def student(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, epochs = ARCHITECTURES[request.param]
    return train_student(tmp_path_factory.mktemp(request.param), model, epochs, seed=len(request.param))


def test_the_fast_path_tags_exactly_as_spacy(student: Path):
    spacy_path = StudentTagger(student, fast=False)
    fast = StudentTagger(student)
    assert fast.fast and not spacy_path.fast
    sentences = [tokens for tokens, _ in dev_sentences()] + raw_sentences() + EDGE
    expected = [tags for tags, _ in spacy_path.tag_tokens(sentences, "es")]
    batched = [tags for tags, _ in fast.tag_tokens(sentences, "es")]
    assert batched == expected
    one_by_one = [fast.tag_tokens([s], "es")[0][0] for s in sentences[:150] + EDGE]
    assert one_by_one == expected[:150] + expected[-len(EDGE):]
    assert sum(t != "O" for tags in expected for t in tags) > 0  # the comparison saw entities


def test_text_tagging_goes_through_the_fast_path_with_the_same_spans(student: Path):
    texts = ["Juan Pérez vive en Madrid con  Ana López .", "El Barça ganó en Londres el lunes .", ""]
    assert StudentTagger(student).tag(texts, "es") == StudentTagger(student, fast=False).tag(texts, "es")


def test_an_architecture_the_fast_path_does_not_compute_keeps_spacy(tmp_path: Path):
    import spacy

    folder = train_student(tmp_path / "student", ner_model_config(SpacyOptions()), 1, seed=3)
    nlp = spacy.load(folder)
    assert FastNer.of(nlp) is not None
    # a component before the NER could set entities the decoding would have to respect: spaCy's path
    nlp.add_pipe("entity_ruler", before="ner").add_patterns([{"label": "LOC", "pattern": "Madrid"}])
    assert FastNer.of(nlp) is None
    # a parser with a beam
    beam = spacy.load(folder)
    beam.get_pipe("ner").cfg["beam_width"] = 4
    assert FastNer.of(beam) is None
    # an NER without the upper layer
    flat = spacy.blank("xx")
    flat.add_pipe("ner", config={"model": {**ner_model_config(SpacyOptions()), "use_upper": False}})
    flat.initialize()
    assert FastNer.of(flat) is None


def test_the_tok2vec_of_the_fast_path_equals_thincs(student: Path):
    import numpy as np
    import spacy
    from spacy.tokens import Doc

    nlp = spacy.load(student)
    fast = FastNer.of(nlp)
    assert fast is not None
    docs = [Doc(nlp.vocab, words=t) for t in [tokens for tokens, _ in dev_sentences()[:40]] + EDGE] + \
        [Doc(nlp.vocab, words=[])]
    expected = nlp.get_pipe("ner").model.layers[0].predict(docs)
    got = fast.tok2vec(docs)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert fast([]) == [] and fast([Doc(nlp.vocab, words=[])]) == [[]]


def test_tagging_new_words_does_not_grow_the_vocabulary(student: Path):
    import string

    fast = StudentTagger(student)
    vocab = fast.nlp.vocab
    lexemes, strings = len(vocab), len(vocab.strings)
    rng = random.Random(7)
    novel = [["".join(rng.choices(string.ascii_letters + "áéñç", k=rng.randint(1, 14))) for _ in range(12)]
             for _ in range(300)]
    tags = [t for t, _ in fast.tag_tokens(novel, "es")]
    assert (len(vocab), len(vocab.strings)) == (lexemes, strings)
    # and they are tagged as spaCy tags them (which does add them, to its own copy)
    assert tags == [t for t, _ in StudentTagger(student, fast=False).tag_tokens(novel, "es")]


def test_the_word_cache_is_bounded(student: Path):
    import spacy

    fast = FastNer.of(spacy.load(student))
    assert fast is not None
    fast.features.cache_size = 50
    fast.tag_words([[f"palabra{i}" for i in range(j, j + 20)] for j in range(0, 400, 20)])
    assert 0 < len(fast.features._cache) <= 50
