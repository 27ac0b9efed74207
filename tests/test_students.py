"""The spaCy student: trains on crop's tokens, keeps its best epoch, saves a folder spaCy loads without crop."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from crop.train.students import (
    LabeledSentence,
    StudentConfig,
    load_student,
    mean_f1,
    new_student,
    student_kind,
)
from crop.train.students.base import evaluate_student
from crop.train.students.spacy_student import SpacyStudent, _sample


def _read(path: Path, lang: str, lines: slice) -> list[LabeledSentence]:
    recs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][lines]
    return [LabeledSentence(id=r["id"], lang=lang, tokens=r["tokens"], tags=r["tags"]) for r in recs]


@pytest.fixture(scope="module")
def en_train(shared_data: Path) -> list[LabeledSentence]:
    return _read(shared_data / "en" / "train.jsonl", "en", slice(0, 300))


@pytest.fixture(scope="module")
def en_dev(shared_data: Path) -> list[LabeledSentence]:
    return _read(shared_data / "en" / "train.jsonl", "en", slice(1300, 1400))  # disjoint from en_train


@pytest.fixture(scope="module")
def trained(en_train: list[LabeledSentence], en_dev: list[LabeledSentence]) -> tuple[SpacyStudent, list]:
    student = new_student(StudentConfig(epochs=4, seed=0))
    assert isinstance(student, SpacyStudent)
    seen: list = []
    reports = student.fit(en_train, {"en": en_dev}, round=1, on_epoch=seen.append)
    assert seen == reports
    return student, reports


def test_spacy_student_improves_over_its_first_epoch(trained: tuple[SpacyStudent, list],
                                                     en_dev: list[LabeledSentence]) -> None:
    student, reports = trained
    assert [r.epoch for r in reports] == [1, 2, 3, 4] and all(r.round == 1 for r in reports)
    best = max(reports, key=lambda r: (mean_f1(r.dev), -r.epoch))
    assert best.dev["en"].f1 > reports[0].dev["en"].f1 + 0.05
    assert best.dev["en"].f1 > 0.2
    # the student keeps the best epoch's weights, not the last epoch's
    assert student.best_epoch == best.epoch
    assert evaluate_student(student, {"en": en_dev})["en"].f1 == pytest.approx(best.dev["en"].f1)


def test_predict_tags_the_given_tokens(trained: tuple[SpacyStudent, list], en_dev: list[LabeledSentence]) -> None:
    student, _ = trained
    sentences = [s.tokens for s in en_dev[:20]] + [[], ["New York", "is", "big", "."]]
    tags = student.predict(sentences, "en")
    assert [len(t) for t in tags] == [len(s) for s in sentences]
    assert all(t == "O" or t[:2] in ("B-", "I-") for sent in tags for t in sent)
    assert any(t != "O" for sent in tags for t in sent)
    for sent in tags:  # valid IOB2: an I- continues an entity of its type
        for i, t in enumerate(sent):
            if t.startswith("I-"):
                assert i > 0 and sent[i - 1][2:] == t[2:]


def test_save_load_roundtrip_without_crop(trained: tuple[SpacyStudent, list], en_dev: list[LabeledSentence],
                                          tmp_path: Path) -> None:
    student, _ = trained
    folder = tmp_path / "student"
    student.save(folder)
    assert student_kind(folder) == "spacy"
    sentences = [s.tokens for s in en_dev[:30]]
    expected = student.predict(sentences, "en")

    loaded = load_student(folder)
    assert isinstance(loaded, SpacyStudent) and loaded.config == student.config
    assert loaded.predict(sentences, "en") == expected

    # plain spaCy, in a process that never imports crop
    script = (
        "import json, sys, spacy\n"
        "from spacy.tokens import Doc\n"
        "nlp = spacy.load(sys.argv[1])\n"
        "sents = json.load(sys.stdin)\n"
        "out = [[[e.start, e.end, e.label_] for e in nlp(Doc(nlp.vocab, words=s)).ents] for s in sents]\n"
        "assert not any(m == 'crop' or m.startswith('crop.') for m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, str(folder)], input=json.dumps(sentences),
                          capture_output=True, text=True, env=env, timeout=120, check=True)
    spans = json.loads(proc.stdout)
    from crop.labels import bio_to_spans

    assert [[list(s) for s in bio_to_spans(t)] for t in expected] == spans
    assert any(spans)


def test_training_is_deterministic(en_train: list[LabeledSentence], en_dev: list[LabeledSentence]) -> None:
    config = StudentConfig(epochs=1, seed=3, batch_size=32)
    runs = []
    for _ in range(2):
        student = new_student(config)
        reports = student.fit(en_train[:120], {"en": en_dev[:40]}, round=1)
        runs.append((reports[0].loss, reports[0].dev, student.predict([s.tokens for s in en_dev[:40]], "en")))
    assert runs[0] == runs[1]


def test_weight_sampling() -> None:
    rng = random.Random(0)
    counts = [0, 0, 0, 0]
    for _ in range(2000):
        for i in _sample([0.0, 1.0, 2.0, 0.25], rng):
            counts[i] += 1
    assert counts[0] == 0 and counts[1] == 2000 and counts[2] == 4000
    assert 400 < counts[3] < 600


def test_zero_weight_sentences_do_not_train(en_train: list[LabeledSentence]) -> None:
    # every sentence at weight 0: nothing is sampled, so the loss stays 0 and no entity is learned
    student = new_student(StudentConfig(epochs=1))
    reports = student.fit([s.model_copy(update={"weight": 0.0}) for s in en_train[:50]], {}, round=1)
    assert reports[0].loss == 0.0 and reports[0].dev == {}


def test_kinds_and_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind"):
        SpacyStudent(StudentConfig(kind="transformers"))
    with pytest.raises(FileNotFoundError):
        load_student(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        load_student(tmp_path / "empty")
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text('{"model_type": "xlm-roberta"}')
    assert student_kind(tmp_path / "hf") == "transformers"
    with pytest.raises(ValueError, match="nothing to train|no sentence"):
        new_student(StudentConfig()).fit([], {}, round=1)


def test_pretrained_tok2vec_initializes_the_student(shared_data: Path, en_train: list[LabeledSentence],
                                                   tmp_path: Path) -> None:
    from crop.text import tokenize
    from crop.train.students.spacy_student import _tok2vec_layer, pretrain_tok2vec

    options = {"width": 32, "depth": 1, "rows": [500, 100, 200, 50]}  # small: seconds
    lines = [line for line in (shared_data / "raw" / "es.txt").read_text(encoding="utf-8").splitlines()
             if line.strip()][:60]
    weights = pretrain_tok2vec([tokenize(line, "es")[0] for line in lines], tmp_path / "pretrain", options,
                               epochs=1)
    assert weights.is_file()
    # zero-weight sentences: initialized, never updated, so the layer holds exactly the pretrained weights
    student = new_student(StudentConfig(epochs=1, options={**options, "init_tok2vec": str(weights)}))
    student.fit([s.model_copy(update={"weight": 0.0}) for s in en_train[:10]], {}, round=1)
    assert _tok2vec_layer(student.nlp.get_pipe("ner")).to_bytes() == weights.read_bytes()
    plain = new_student(StudentConfig(epochs=1, options=options))
    plain.fit([s.model_copy(update={"weight": 0.0}) for s in en_train[:10]], {}, round=1)
    assert _tok2vec_layer(plain.nlp.get_pipe("ner")).to_bytes() != weights.read_bytes()
    with pytest.raises(ValueError, match="widht"):
        new_student(StudentConfig(options={"widht": 32}))
