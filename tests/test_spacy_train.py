"""Fitting the spaCy NER to source-language labels (`crop tagger train`), on a split of the shared English
training data: what the fitted tagger does on sentences it did not see, against the pipeline it started from."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.io import InputSentence, read_jsonl
from crop.labels import CONLL, WIKIANN, spans_to_bio
from crop.tag.spacy import DEFAULT_PIPELINE, SpacyTagger
from crop.tag.spacy_train import train_spacy_ner
from crop.text import detokenize, tokenize
from crop.train.evaluate import EvalReport, evaluate

pytestmark = pytest.mark.integration

N_HELD_OUT, N_FIT, EPOCHS = 200, 300, 8


@pytest.fixture(scope="module")
def split(shared_data: Path) -> tuple[list[InputSentence], list[InputSentence]]:
    """(held out, to fit on): disjoint, from a seeded shuffle of en/train.jsonl (the dev sets stay untouched).
    Only sentences whose text crop tokenizes back into their tokens, so that spans map onto the gold tags."""
    sentences = [s for s in read_jsonl(shared_data / "en" / "train.jsonl", "en")
                 if s.tags and tokenize(detokenize(s.tokens, "en")[0], "en")[0] == s.tokens]
    random.Random(0).shuffle(sentences)
    return sentences[:N_HELD_OUT], sentences[N_HELD_OUT:N_HELD_OUT + N_FIT]


def write_jsonl(path: Path, sentences: list[InputSentence]) -> Path:
    path.write_text("".join(s.model_dump_json(exclude_none=True) + "\n" for s in sentences), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, split) -> tuple[Path, dict]:
    """The tagger `crop tagger train` fits on the fit part: its folder and the report it printed."""
    root = tmp_path_factory.mktemp("ner")
    train = write_jsonl(root / "train.jsonl", split[1])
    result = CliRunner().invoke(app, ["tagger", "train", "--train", str(train), "--output", str(root / "model"),
                                      "--epochs", str(EPOCHS), "--seed", "1"])
    assert result.exit_code == 0, result.output
    return root / "model", json.loads(result.stdout[result.stdout.index("{"):])


def entity_scores(pipeline: str, sentences: list[InputSentence]) -> EvalReport:
    """seqeval entity scores of a spaCy pipeline, labels mapped to CoNLL, tagging as crop tags the English side:
    the sentence's text, its spans put back onto the gold tokens."""
    texts = [detokenize(s.tokens, "en")[0] for s in sentences]
    tagged = SpacyTagger(pipeline, scheme=CONLL).tag(texts, "en")
    pred = {s.id: spans_to_bio(len(s.tokens), [(sp.token_start, sp.token_end, sp.label) for sp in spans
                                               if sp.token_start is not None and sp.token_end is not None])
            for s, spans in zip(sentences, tagged, strict=True)}
    return evaluate({s.id: s.tags or [] for s in sentences}, pred)


def test_fitted_tagger_beats_the_base_pipeline_on_held_out_sentences(fitted, split) -> None:
    held_out = split[0]
    base = entity_scores(DEFAULT_PIPELINE, held_out)
    tuned = entity_scores(str(fitted[0]), held_out)
    assert base.support == tuned.support > 300  # enough gold entities for the comparison to mean something
    print(f"held-out entity F1: base {DEFAULT_PIPELINE} {base.f1:.4f}, fitted {tuned.f1:.4f}")
    assert tuned.f1 > base.f1, (base.table(), tuned.table())


def test_cli_report_and_fitted_tagger(fitted) -> None:
    model, report = fitted
    assert (model / "meta.json").exists()
    assert report["train_sentences"] + report["dev_sentences"] == N_FIT
    assert [e["epoch"] for e in report["epochs"]] == list(range(1, EPOCHS + 1))
    assert report["epochs"][-1]["loss"] < report["epochs"][0]["loss"]  # it learns
    dev_f1 = [e["dev_f1"] for e in report["epochs"]]
    assert report["best_epoch"] == dev_f1.index(max(dev_f1)) + 1 and report["best_dev_f1"] == max(dev_f1)
    assert report["labels"] == list(CONLL.labels)
    text = "Pedro Sánchez met Emmanuel Macron in Paris on Monday."
    spans = SpacyTagger(str(model)).tag([text], "en")[0]
    assert [(s.text, s.label) for s in spans if s.label == "PER"] == [("Pedro Sánchez", "PER"),
                                                                       ("Emmanuel Macron", "PER")]
    assert ("Paris", "LOC") in [(s.text, s.label) for s in spans]
    assert all(s.label in CONLL.labels and text[s.start:s.end] == s.text for s in spans)


def test_same_seed_same_model(split, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", split[1][:80])
    first = train_spacy_ner(train, tmp_path / "a", epochs=2, seed=3)
    second = train_spacy_ner(train, tmp_path / "b", epochs=2, seed=3)
    assert [(e.loss, e.dev_f1) for e in first.epochs] == [(e.loss, e.dev_f1) for e in second.epochs]


def test_wikiann_scheme_drops_misc(split, tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", split[1][:80])
    report = train_spacy_ner(train, tmp_path / "ner", scheme=WIKIANN, epochs=1)
    assert report.labels == ["PER", "ORG", "LOC"]


def test_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"id": "a", "tokens": ["Hello"]}) + "\n")
    with pytest.raises(ValueError, match="no sentence with tags"):
        train_spacy_ner(empty, tmp_path / "out", epochs=1)
    with pytest.raises(ValueError, match="epochs"):
        train_spacy_ner(empty, tmp_path / "out", epochs=0)
    tagged = tmp_path / "tagged.jsonl"
    tagged.write_text(json.dumps({"id": "a", "tokens": ["Hello", "Paris"], "tags": ["O", "B-LOC"]}) + "\n")
    with pytest.raises(ValueError, match="not-a-pipeline"):
        train_spacy_ner(tagged, tmp_path / "out", base="not-a-pipeline", epochs=1)


def test_cli_missing_training_file(tmp_path: Path) -> None:
    missing = CliRunner().invoke(app, ["tagger", "train", "--train", str(tmp_path / "nope.jsonl"), "--output",
                                       str(tmp_path / "m2")])
    assert missing.exit_code != 0
    assert "does not exist" in missing.output
