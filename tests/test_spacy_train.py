"""Fitting the spaCy NER to source-language labels (a small run on the shared English data)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.labels import CONLL, WIKIANN
from crop.tag.spacy import SpacyTagger
from crop.tag.spacy_train import train_spacy_ner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small_train(tmp_path_factory, shared_data: Path) -> Path:
    path = tmp_path_factory.mktemp("ner") / "train.jsonl"
    lines = (shared_data / "en" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:80]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_trained_tagger_loads_and_tags_with_scheme_labels(small_train: Path, tmp_path: Path) -> None:
    out = tmp_path / "ner"
    report = train_spacy_ner(small_train, out, epochs=2, seed=1)
    assert (out / "meta.json").exists()
    assert report.train_sentences + report.dev_sentences == 80
    assert [e.epoch for e in report.epochs] == [1, 2]
    assert report.epochs[1].loss < report.epochs[0].loss  # it learns
    assert 1 <= report.best_epoch <= 2
    tagger = SpacyTagger(str(out))
    spans = tagger.tag(["Pedro Sánchez met Emmanuel Macron in Paris on Monday."], "en")[0]
    assert all(s.label in CONLL.labels for s in spans)
    assert all(s.text == "Pedro Sánchez met Emmanuel Macron in Paris on Monday."[s.start:s.end] for s in spans)


def test_wikiann_scheme_drops_misc(small_train: Path, tmp_path: Path) -> None:
    report = train_spacy_ner(small_train, tmp_path / "ner", scheme=WIKIANN, epochs=1)
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


def test_cli(small_train: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["tagger", "train", "--train", str(small_train), "--output", str(tmp_path / "m"),
                                 "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{"):])["best_epoch"] == 1
    missing = runner.invoke(app, ["tagger", "train", "--train", str(tmp_path / "nope.jsonl"), "--output",
                                  str(tmp_path / "m2")])
    assert missing.exit_code != 0
    assert "does not exist" in missing.output
