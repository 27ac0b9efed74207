"""Round-trip augmentation (`crop tagger train --roundtrip`): English labeled sentences to a target language and
back through Apertium's labeled mode, kept when every entity came back with its type."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.io import InputSentence, read_jsonl, sentence_from_record
from crop.labels import bio_to_spans
from crop.train.roundtrip import augmented_training_data, roundtrip
from crop.translate.apertium import ApertiumTranslator

pytestmark = pytest.mark.integration


def _sentence(sid: str, tokens: list[str], tags: list[str]) -> InputSentence:
    return sentence_from_record({"id": sid, "tokens": tokens, "tags": tags}, "en")


@pytest.fixture(scope="module")
def translator() -> ApertiumTranslator:
    return ApertiumTranslator()


def test_entities_come_back_with_their_types(translator: ApertiumTranslator, shared_data: Path) -> None:
    sents = list(read_jsonl(shared_data / "en" / "train.jsonl", "en"))[:40]
    kept, stats = roundtrip(sents, translator, "es")
    by_id = {s.id: s for s in sents}
    assert stats.sentences == sum(bool(bio_to_spans(s.tags or [])) for s in sents)
    assert stats.kept == len(kept) and stats.kept + stats.identical + stats.lost == stats.sentences
    assert stats.kept >= stats.sentences // 2  # most sentences survive Apertium's round trip
    changed = 0
    for s in kept:
        base, _, lang = s.id.partition("#rt-")
        assert lang == "es"
        orig = by_id[base]
        # as many entities of each type (translation may reorder them)
        assert Counter(lab for _, _, lab in bio_to_spans(s.tags or [])) == \
            Counter(lab for _, _, lab in bio_to_spans(orig.tags or []))
        assert len(s.tags or []) == len(s.tokens)
        changed += s.tokens != orig.tokens
    assert changed == len(kept)  # identical ones are left out


def test_only_sentences_with_entities_travel(translator: ApertiumTranslator) -> None:
    s = [_sentence("a", ["The", "soldiers", "arrived", "in", "Madrid", "yesterday", "."],
                   ["O", "O", "O", "O", "B-LOC", "O", "O"]),
         _sentence("b", ["It", "rained", "."], ["O", "O", "O"])]
    kept, stats = roundtrip(s, translator, "ca")
    assert stats.sentences == 1
    assert [x.id for x in kept] == ["a#rt-ca"]
    assert [(kept[0].tokens[a:b], lab) for a, b, lab in bio_to_spans(kept[0].tags or [])] == [(["Madrid"], "LOC")]
    assert kept[0].tokens != s[0].tokens


def test_held_out_part_has_no_round_trip(translator: ApertiumTranslator, shared_data: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    lines = (shared_data / "en" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:30]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rep = augmented_training_data(train, translator, ["es", "gl"], tmp_path / "work",
                                  roundtrip_out=tmp_path / "rt.jsonl")
    held_out = [json.loads(x)["id"] for x in Path(rep.dev_file).read_text().splitlines()]
    dev_ids = {i for i in held_out if "#rt-" not in i}
    train_ids = [json.loads(x)["id"] for x in Path(rep.train_file).read_text().splitlines()]
    assert len(dev_ids) == rep.dev_sentences == 3 and rep.train_sentences == 27
    # the held-out part has its own round trips (the epoch is chosen on machine-translated English too)
    assert len(held_out) == 3 + rep.dev_roundtrip_sentences and rep.dev_roundtrip_sentences > 0
    assert {i.partition("#rt-")[0] for i in held_out} == dev_ids
    assert len(train_ids) == 27 + rep.augmented_sentences and rep.augmented_sentences > 0
    assert not {i.partition("#rt-")[0] for i in train_ids} & dev_ids
    assert Counter(i.partition("#rt-")[2] for i in train_ids if "#rt-" in i).keys() <= {"es", "gl"}
    out = [json.loads(x) for x in (tmp_path / "rt.jsonl").read_text().splitlines()]
    assert len(out) == rep.augmented_sentences and all("text" in r for r in out)


def test_cli_tagger_train_roundtrip(shared_data: Path, tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    lines = (shared_data / "en" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rt = tmp_path / "rt.jsonl"
    res = CliRunner().invoke(app, ["tagger", "train", "--train", str(train), "--output", str(tmp_path / "m"),
                                   "--epochs", "1", "--roundtrip", "es", "--roundtrip-out", str(rt)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"):])
    aug = report["roundtrip"]["augmented_sentences"]
    assert aug > 0 and report["train_sentences"] == 36 + aug
    assert report["roundtrip"]["roundtrip"][0]["lang"] == "es"
    assert len(rt.read_text().splitlines()) == aug and (tmp_path / "m" / "meta.json").exists()
    bad = CliRunner().invoke(app, ["tagger", "train", "--train", str(train), "--output", str(tmp_path / "n"),
                                   "--roundtrip", "xx"])
    assert bad.exit_code == 2 and "cannot translate" in bad.output
    bad = CliRunner().invoke(app, ["tagger", "train", "--train", str(train), "--output", str(tmp_path / "n"),
                                   "--roundtrip-out", str(rt)])
    assert bad.exit_code == 2
