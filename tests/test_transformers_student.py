"""TransformersStudent on a tiny random-weight XLM-R built at test time (no hub): it learns synthetic sentences
(dev = held-out sentences), keeps its best epoch, tags long sentences in windows, and saves a folder that
transformers and crop's `transformers:` tagger load without the student."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from tiny_models import build_tiny_token_classifier, one_thread

from crop.tag import load_tagger
from crop.train.students import LabeledSentence, StudentConfig, evaluate_student, load_student, new_student
from crop.train.students.base import EpochReport
from crop.train.students.transformers_student import LABELS, TransformersStudent

PER = ["Pedro Sánchez", "Ana", "María López", "Luís Montenegro", "Carles Puyol"]
LOC = ["Madrid", "Badajoz", "Barcelona", "Lisboa", "Vigo"]
ORG = ["Telefónica", "la ONU", "Iberia"]
TEMPLATES = ["{P} visitó {L} ayer .", "El presidente {P} llegó a {L} con {O} .", "{O} abrió una oficina en {L} .",
             "Según {O} , {P} vive en {L} ."]
TYPES = {"{P}": "PER", "{L}": "LOC", "{O}": "ORG"}


def _sentence(i: int, template: str, names: dict[str, str], lang: str = "es") -> LabeledSentence:
    tokens: list[str] = []
    tags: list[str] = []
    for word in template.split():
        if word in TYPES:
            name = names[word].split()
            tokens += name
            tags += [f"B-{TYPES[word]}"] + [f"I-{TYPES[word]}"] * (len(name) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return LabeledSentence(id=f"{lang}-{i}", lang=lang, tokens=tokens, tags=tags)


def synthetic(seed: int = 0) -> tuple[list[LabeledSentence], list[LabeledSentence]]:
    """60 training sentences and 40 held-out dev sentences: the same names and templates, other combinations."""
    combos = [(t, p, loc, o) for t in TEMPLATES for p in PER for loc in LOC for o in ORG]
    random.Random(seed).shuffle(combos)
    data = [_sentence(i, t, {"{P}": p, "{L}": loc, "{O}": o}) for i, (t, p, loc, o) in enumerate(combos)]
    return data[:60], data[60:100]


def long_sentence(n_names: int = 30) -> LabeledSentence:
    """One sentence of several windows of the tiny model (62 sub-tokens each)."""
    parts = [_sentence(0, TEMPLATES[i % len(TEMPLATES)],
                       {"{P}": PER[i % 5], "{L}": LOC[(i + 2) % 5], "{O}": ORG[i % 3]}) for i in range(n_names)]
    return LabeledSentence(id="long", lang="es", tokens=[t for p in parts for t in p.tokens],
                           tags=[t for p in parts for t in p.tags])


def config(base: Path, **changes: object) -> StudentConfig:
    values: dict = {"kind": "transformers", "base": str(base), "epochs": 5, "batch_size": 8, "learning_rate": 3e-3,
                    "device": "cpu", "seed": 0}
    return StudentConfig(**{**values, **changes})


def valid_bio(tags: list[str]) -> bool:
    prev = "O"
    for tag in tags:
        if tag not in LABELS or (tag.startswith("I-") and prev[2:] != tag[2:]):
            return False
        prev = tag
    return True


def repair_bio(tags: list[str]) -> list[str]:
    """An I- that continues no entity of its type begins one."""
    out: list[str] = []
    for tag in tags:
        prev = out[-1] if out else "O"
        out.append("B-" + tag[2:] if tag.startswith("I-") and prev[2:] != tag[2:] else tag)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A random-weight tiny XLM-R token classifier (66 positions: long sentences exceed its window)."""
    return build_tiny_token_classifier(tmp_path_factory.mktemp("student-base"), shared_data, steps=0)


@pytest.fixture(scope="module")
def trained(base: Path) -> tuple[TransformersStudent, list[EpochReport]]:
    train, dev = synthetic()
    student = TransformersStudent(config(base))
    seen: list[EpochReport] = []
    with one_thread():
        reports = student.fit(train, {"es": dev}, round=1, on_epoch=seen.append)
    assert seen == reports
    return student, reports


def test_fit_improves_over_first_epoch_on_held_out_dev(trained: tuple[TransformersStudent, list[EpochReport]]
                                                       ) -> None:
    student, reports = trained
    assert [(r.round, r.epoch) for r in reports] == [(1, e) for e in range(1, 6)]
    assert all(set(r.dev) == {"es"} and r.seconds > 0 for r in reports)
    assert reports[-1].loss < reports[0].loss
    best = max(r.mean_f1 for r in reports)
    assert best > reports[0].mean_f1
    assert best > 0.8  # the held-out sentences: names seen in training, in other combinations
    _, dev = synthetic()
    # the kept weights are the best epoch's
    assert evaluate_student(student, {"es": dev})["es"].f1 == pytest.approx(best)


def test_keeps_best_epoch_when_later_epochs_get_worse(base: Path) -> None:
    train, dev = synthetic()
    student = TransformersStudent(config(base, epochs=4))
    with one_thread():
        student.fit(train, {"es": dev}, round=1)
        before = evaluate_student(student, {"es": dev})["es"].f1
        # a second round on labels with PER and LOC swapped: dev F1 falls epoch after epoch
        swap = {"PER": "LOC", "LOC": "PER", "ORG": "ORG"}
        wrong = [s.model_copy(update={"tags": [t if t == "O" else t[:2] + swap[t[2:]] for t in s.tags]})
                 for s in train]
        student.config = student.config.model_copy(update={"learning_rate": 1e-3})
        reports = student.fit(wrong, {"es": dev}, round=2)
    f1s = [r.dev["es"].f1 for r in reports]
    assert before > 0.8
    assert f1s[-1] < max(f1s) - 0.1
    assert evaluate_student(student, {"es": dev})["es"].f1 == pytest.approx(max(f1s))


def test_same_seed_same_training(base: Path) -> None:
    train, dev = synthetic()
    runs = []
    for _ in range(2):
        student = TransformersStudent(config(base, epochs=2))
        with one_thread():
            runs.append([(r.loss, r.dev["es"].f1) for r in student.fit(train[:24], {"es": dev[:10]}, round=1)])
    assert runs[0] == runs[1]


def test_without_dev_keeps_last_epoch(base: Path) -> None:
    train, _ = synthetic()
    student = TransformersStudent(config(base, epochs=2))
    states: list[dict[str, torch.Tensor]] = []

    def snapshot(_: EpochReport) -> None:
        states.append({k: v.clone() for k, v in student.model.state_dict().items()})

    with one_thread():
        reports = student.fit(train, {}, round=1, on_epoch=snapshot)
    assert [r.dev for r in reports] == [{}, {}]
    final = student.model.state_dict()
    assert all(torch.equal(v, states[-1][k]) for k, v in final.items())
    assert not all(torch.equal(v, states[0][k]) for k, v in final.items())


def test_predict_one_valid_tag_per_token_beyond_the_window(trained: tuple[TransformersStudent, list[EpochReport]],
                                                           base: Path) -> None:
    student, _ = trained
    long = long_sentence()
    assert sum(student._subtoken_counts([long.tokens])[0]) > 3 * student.window  # several windows
    sentences = [long.tokens, [], ["Ana"], *[s.tokens for s in synthetic()[1][:5]], long.tokens[:100]]
    tags = student.predict(sentences, "es")
    assert [len(t) for t in tags] == [len(s) for s in sentences]
    assert all(valid_bio(t) for t in tags)
    # the long sentence is tagged as well at its end as at its start (no truncated tail left O)
    report = evaluate_student(student, {"es": [long]})["es"]
    assert report.f1 > 0.8
    tail = long.tokens[-40:]
    assert student.predict([tail], "es")[0] != ["O"] * 40
    # a random model predicts I- after O; the student repairs it
    fresh = TransformersStudent(config(base))
    assert all(valid_bio(t) for t in fresh.predict(sentences, "es"))


def test_long_training_sentences_are_split_not_truncated(base: Path) -> None:
    student = TransformersStudent(config(base, epochs=1))
    long = long_sentence()
    examples = student._examples([long])
    assert len(examples) > 1
    assert all(len(e.input_ids) <= student.window + student.specials for e in examples)
    labels = [LABELS[label] for e in examples for label in e.labels if label != -100]
    assert labels == long.tags  # every word labeled once, in order
    with one_thread():
        reports = student.fit([long], {"es": [long]}, round=1)
    assert len(reports) == 1


def test_save_then_load_without_the_student(trained: tuple[TransformersStudent, list[EpochReport]],
                                            tmp_path: Path) -> None:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    student, _ = trained
    folder = tmp_path / "student"
    student.save(folder)
    sentences = [s.tokens for s in synthetic()[1]] + [long_sentence().tokens]
    expected = student.predict(sentences, "es")

    assert json.loads((folder / "config.json").read_text())["id2label"] == {str(i): t for i, t in enumerate(LABELS)}
    again = TransformersStudent.load(folder)
    assert again.predict(sentences, "es") == expected
    via_base = load_student(folder)
    assert isinstance(via_base, TransformersStudent)
    assert via_base.predict(sentences, "es") == expected
    assert json.loads((folder / "student.json").read_text())["learning_rate"] == 3e-3

    # plain transformers: first sub-token of each word, argmax
    model = AutoModelForTokenClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    short = sentences[:-1]
    enc = tokenizer(short, is_split_into_words=True, padding=True, return_tensors="pt")
    with torch.inference_mode():
        ids = model(**enc).logits.argmax(-1).tolist()
    for b, words in enumerate(short):
        first: dict[int, str] = {}
        for t, w in enumerate(enc.word_ids(b)):
            if w is not None and w not in first:
                first[w] = model.config.id2label[ids[b][t]]
        plain = [first.get(i, "O") for i in range(len(words))]
        assert repair_bio(plain) == expected[b]  # the student's tags are the model's, made valid BIO

    # crop's transformers: tagger, windows and all
    tagger = load_tagger(f"transformers:{folder}", device="cpu")
    assert [tags for tags, _ in tagger.tag_words(sentences)] == expected


def test_new_student_and_head_handling(base: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForTokenClassification

    student = new_student(config(base))
    assert isinstance(student, TransformersStudent)
    original = AutoModelForTokenClassification.from_pretrained(base)
    # the base's head has exactly the CoNLL BIO labels: kept
    assert torch.equal(student.model.classifier.weight, original.classifier.weight)

    def variant(name: str, labels: list[str]) -> Path:
        model = AutoModelForTokenClassification.from_pretrained(
            base, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={lab: i for i, lab in enumerate(labels)}, ignore_mismatched_sizes=True)
        if len(labels) == len(LABELS):
            model.classifier.load_state_dict(original.classifier.state_dict())
        dest = tmp_path / name
        model.save_pretrained(dest)
        for f in base.iterdir():
            if f.is_file() and f.name not in ("config.json", "model.safetensors"):
                shutil.copy(f, dest)
        return dest

    # WikiANN-style head (7 labels): a new 9-label head
    seven = TransformersStudent(config(variant("seven", ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"])))
    assert seven.model.config.id2label == dict(enumerate(LABELS))
    assert seven.model.classifier.weight.shape[0] == len(LABELS)
    # the same 9 labels in another order: the trained head would mislabel, so it starts afresh
    shuffled = TransformersStudent(config(variant("shuffled", list(reversed(LABELS)))))
    assert shuffled.model.config.id2label == dict(enumerate(LABELS))
    assert not torch.equal(shuffled.model.classifier.weight, original.classifier.weight)


def test_weight_scales_a_sentence_loss_and_empty_input(base: Path) -> None:
    student = TransformersStudent(config(base))
    sent = synthetic()[0][0]
    (one,) = student._examples([sent])
    (two,) = student._examples([sent.model_copy(update={"weight": 2.0})])
    student.model.eval()  # no dropout: the same forward pass twice
    with torch.no_grad():
        loss1, n1 = student._loss([one])
        loss2, n2 = student._loss([two])
    assert n1 == n2 == len(sent.tokens)
    assert float(loss2) == pytest.approx(2 * float(loss1), rel=1e-5)
    assert student.predict([], "es") == []
    assert student.predict([[], []], "es") == [[], []]


def test_bad_input_is_refused(base: Path) -> None:
    with pytest.raises(ValueError, match="base model"):
        TransformersStudent(StudentConfig(kind="transformers", base=None, device="cpu"))
    student = TransformersStudent(config(base, epochs=1))
    bad = LabeledSentence(id="x", lang="es", tokens=["Ana", "vive"], tags=["B-PERSON", "O"])
    with pytest.raises(ValueError, match="B-PERSON"):
        student.fit([bad], {}, round=1)
    short = LabeledSentence(id="y", lang="es", tokens=["Ana", "vive"], tags=["B-PER"])
    with pytest.raises(ValueError, match="1 tags for 2 tokens"):
        student.fit([short], {}, round=1)
    zero = LabeledSentence(id="z", lang="es", tokens=["Ana"], tags=["B-PER"], weight=0.0)
    with pytest.raises(ValueError, match="no training sentences"):
        student.fit([zero], {}, round=1)
