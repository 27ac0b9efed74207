"""Self-training: combining labels, reading projection outputs, rounds with relabelling, the report, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.io import InputError
from crop.labels import bio_to_spans
from crop.train.selftrain import (
    Progress,
    SelfTrainConfig,
    _relabel,
    combine,
    read_projected,
    registry_meta,
    run_selftraining,
)
from crop.train.students import LabeledSentence, StudentConfig, load_student, new_student

# -- combine -------------------------------------------------------------------------------------------------------


def test_projection_first_keeps_projection_and_fills_o_regions() -> None:
    p = ["B-PER", "I-PER", "O", "O", "O", "O"]
    s = ["B-ORG", "O", "O", "B-LOC", "I-LOC", "O"]
    # the student's ORG overlaps the projected PER: dropped; its LOC lies where the projection is O: added
    assert combine(p, s, "projection-first") == ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]
    # a student span that only partly overlaps a projected one is dropped whole
    assert combine(["O", "B-PER", "O"], ["B-ORG", "I-ORG", "O"], "projection-first") == ["O", "B-PER", "O"]
    # no projected entity: the student's tags
    assert combine(["O"] * 4, ["O", "B-MISC", "O", "B-LOC"], "projection-first") == ["O", "B-MISC", "O", "B-LOC"]
    # the student adds nothing: the projection
    assert combine(p, ["O"] * 6, "projection-first") == p


def test_agreement_keeps_only_identical_entities() -> None:
    p = ["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"]
    s = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG"]
    # same PER and same ORG kept; the LOC / ORG type clash removed
    assert combine(p, s, "agreement") == ["B-PER", "I-PER", "O", "O", "O", "B-ORG"]
    # different boundaries are a disagreement
    assert combine(["B-PER", "I-PER"], ["B-PER", "O"], "agreement") == ["O", "O"]
    # a stray I- reads as seqeval reads it (an entity start)
    assert combine(["I-LOC", "O"], ["B-LOC", "O"], "agreement") == ["B-LOC", "O"]


def test_combine_checks_lengths_and_mode() -> None:
    with pytest.raises(ValueError):
        combine(["O"], ["O", "O"])
    with pytest.raises(ValueError):
        combine(["O"], ["O"], "majority")  # type: ignore[arg-type]


# -- data ----------------------------------------------------------------------------------------------------------


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def data(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small files: 150 English sentences (L_src); a fake projection of 60 Spanish dev sentences (kept ones with
    their gold tags, every 4th discarded and left all O, two failed, one discarded for an absurd token); the other
    40 Spanish dev sentences as the dev set (never trained on)."""
    folder = tmp_path_factory.mktemp("selftrain-data")
    es = _records(shared_data / "dev" / "es.dev.jsonl")
    proj = []
    for i, r in enumerate(es[:60]):
        status = "discarded" if i % 4 == 0 else "kept"
        rec = {"id": r["id"], "lang": "es", "tokens": r["tokens"], "text": " ".join(r["tokens"]),
               "tags": r["tags"] if status == "kept" else ["O"] * len(r["tokens"]), "status": status,
               "reason": None if status == "kept" else "unmatched entities: 1 of 1", "entities": []}
        if i in (5, 6):
            rec.update(status="failed", reason="EngineError: boom")
        if i == 8:
            rec.update(reason="token_too_long: token 3 has 900 characters (limit 100)")
        proj.append(rec)
    proj.append({"id": "es-bad", "lang": "es", "tokens": [], "tags": [], "status": "failed",
                 "reason": "invalid input: no 'id'"})
    en = _records(shared_data / "en" / "train.jsonl")[:150]
    return {
        "source": _write(folder / "en.jsonl", en),
        "target": _write(folder / "es.projected.jsonl", proj),
        "dev": _write(folder / "es.dev.jsonl", es[60:]),
        # the dev sentences' "projection": gold tags with every other sentence's entities dropped
        "dev_projected": _write(folder / "es.dev.projected.jsonl", [
            {"id": r["id"], "lang": "es", "tokens": r["tokens"],
             "tags": r["tags"] if i % 2 else ["O"] * len(r["tags"]), "status": "kept"} for i, r in enumerate(es[60:])]),
    }


def test_read_projected_counts(data: dict[str, Path], tmp_path: Path) -> None:
    t = read_projected(data["target"], "es")
    # 60 lines + 1 invalid: 15 discarded (every 4th, 0..56), 2 failed + 1 invalid, the rest kept
    assert t.counts == {"kept": 43, "discarded": 15, "failed": 3, "skipped": 1, "low_score": 0}
    assert len(t.kept) == 43 and len(t.discarded) == 14  # the token_too_long one is not relabelled
    assert all(s.lang == "es" for s in t.kept + t.discarded)
    # a line without lang gets the language it was given for; a line that is no projection result is an error
    bad = _write(tmp_path / "x.jsonl", [{"id": "a", "tokens": ["Hola"], "tags": ["O"], "status": "kept"},
                                        {"id": "b", "tokens": ["Hola"], "tags": ["O"], "status": "maybe"}])
    with pytest.raises(InputError, match=r"x.jsonl:2"):
        read_projected(bad, "gl")
    ok = _write(tmp_path / "y.jsonl", [{"id": "a", "tokens": ["Hola"], "tags": ["O"]}])
    assert read_projected(ok, "gl").kept[0].lang == "gl"
    mismatch = _write(tmp_path / "z.jsonl", [{"id": "a", "tokens": ["Hola", "Ana"], "tags": ["O"]}])
    with pytest.raises(InputError, match="1 tags for 2 tokens"):
        read_projected(mismatch, "gl")


def test_low_score_entities_send_a_kept_sentence_to_relabelling(tmp_path: Path) -> None:
    def ent(a: int, b: int, label: str, score: float) -> dict:
        return {"token_start": a, "token_end": b, "start": 0, "end": 1, "label": label, "text": "x",
                "method": "fuzzy", "score": score}

    path = _write(tmp_path / "p.jsonl", [
        {"id": "a", "lang": "es", "tokens": ["Ana", "vive", "en", "Lugo"], "tags": ["B-PER", "O", "O", "B-LOC"],
         "entities": [ent(0, 1, "PER", 1.0), ent(3, 4, "LOC", 0.55)], "status": "kept"},
        {"id": "b", "lang": "es", "tokens": ["Ana", "canta"], "tags": ["B-PER", "O"],
         "entities": [ent(0, 1, "PER", 0.95)], "status": "kept"},
    ])
    t = read_projected(path, "es", min_entity_score=0.6)
    assert [s.id for s in t.kept] == ["b"] and t.counts["low_score"] == 1 and t.counts["kept"] == 2
    # the weak LOC is gone from the projection; the strong PER stays (projection-first keeps it when combining)
    assert [(s.id, s.tags) for s in t.discarded] == [("a", ["B-PER", "O", "O", "O"])]
    assert len(read_projected(path, "es").kept) == 2  # off by default


# -- rounds --------------------------------------------------------------------------------------------------------


def _config(data: dict[str, Path], **kw: object) -> SelfTrainConfig:
    base = {"source": [str(data["source"])], "targets": {"es": [str(data["target"])]}, "dev": {"es": str(data["dev"])},
            "student": StudentConfig(epochs=2, seed=0)}
    return SelfTrainConfig.model_validate({**base, **kw})


def test_two_rounds_relabel_and_report(data: dict[str, Path], tmp_path: Path) -> None:
    seen: list[Progress] = []
    config = _config(data, rounds=2, relabeled_all_o=True, dev_projected={"es": str(data["dev_projected"])})
    report = run_selftraining(config, tmp_path / "out", progress=seen.append)

    r1, r2 = report.rounds
    # round 1: the 43 kept sentences and as many source sentences (ratio 1.0)
    assert r1.train_sentences == {"en": 43, "es": 43} and r1.relabeled == {}
    # round 2: the 14 relabelled discarded sentences join (all-O ones too, relabeled_all_o), and the source sample
    # grows with them
    assert r2.train_sentences == {"en": 57, "es": 57} and r2.relabeled == {"es": 14}
    assert [len(r.epochs) for r in report.rounds] == [2, 2]
    assert report.best_round in (1, 2)
    best = report.rounds[report.best_round - 1]
    assert best.dev["es"].f1 >= report.rounds[2 - report.best_round].dev["es"].f1
    assert report.metrics["es"]["student"] == round(best.dev["es"].f1, 4)
    # the teacher's F1 measured from the dev projection: every other sentence's entities kept -> recall < 1, P = 1
    assert 0.3 < report.metrics["es"]["crop"] < 0.9
    assert "combined" in report.metrics["es"] and set(best.combined) == {"es"}

    # data: each file with its hash and counts
    by_role = {d["role"]: d for d in report.data}
    assert by_role["target"]["sha256"] == hashlib.sha256(data["target"].read_bytes()).hexdigest()
    assert (by_role["target"]["kept"], by_role["target"]["discarded"], by_role["target"]["failed"]) == (43, 15, 3)
    assert by_role["source"]["sentences"] == 150 and by_role["dev"]["sentences"] == 40

    # progress: a start message per round, every epoch of every round, then done
    epochs = [(p.round, p.epoch) for p in seen if p.epoch > 0 and p.loss is not None]
    assert epochs == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(p.rounds == 2 and p.epochs == 2 for p in seen)
    assert any(p.round == 2 and "relabelling 14 discarded" in p.message for p in seen)
    assert seen[-1].message.startswith("done") and seen[-1].eta_seconds == 0.0
    assert all(p.eta_seconds is not None for p in seen if p.loss is not None)

    # the output is the best round's student, loadable as a student and as a spaCy folder
    student = load_student(tmp_path / "out")
    dev = _records(data["dev"])
    from crop.train.evaluate import evaluate

    pred = student.predict([r["tokens"] for r in dev], "es")
    f1 = evaluate({r["id"]: r["tags"] for r in dev}, {r["id"]: t for r, t in zip(dev, pred, strict=True)}).f1
    assert f1 == pytest.approx(best.dev["es"].f1)

    meta = registry_meta(report)
    assert meta["kind"] == "spacy" and meta["metrics"] == report.metrics
    assert [r["best"] for r in meta["rounds"]] == [report.best_round == 1, report.best_round == 2]
    json.dumps(meta)  # storable as JSON


def test_relabel_modes_with_a_trained_student(data: dict[str, Path]) -> None:
    t = read_projected(data["target"], "es")
    source = [LabeledSentence(id=r["id"], lang="en", tokens=r["tokens"], tags=r["tags"])
              for r in _records(data["source"])]
    student = new_student(StudentConfig(epochs=4, seed=0))
    student.fit(source + t.kept, {}, round=1)
    pred = {s.id: student.predict([s.tokens], "es")[0] for s in t.kept + t.discarded}

    # projection-first: the projected entities of kept sentences all stay; student entities only in O regions
    config = _config(data, relabel_kept=True)
    kept, relabeled = _relabel(student, config, t.kept, t.discarded)
    assert len(kept) == len(t.kept)
    for old, new in zip(t.kept, kept, strict=True):
        assert set(bio_to_spans(old.tags)) <= set(bio_to_spans(new.tags))
        assert new.tags == combine(old.tags, pred[old.id], "projection-first")
    # discarded ones (all O here) take the student's tags; the ones left without any entity are dropped
    assert [s.id for s in relabeled] == [s.id for s in t.discarded if any(x != "O" for x in pred[s.id])]
    assert all(s.tags == pred[s.id] for s in relabeled)

    # agreement: kept sentences keep only what the student found too, and those left with nothing are dropped;
    # discarded sentences that the projection left all O contribute nothing
    config = _config(data, relabel_kept=True, combine="agreement", relabeled_weight=0.5)
    kept, relabeled = _relabel(student, config, t.kept, t.discarded)
    assert relabeled == []
    for new in kept:
        old = next(s for s in t.kept if s.id == new.id)
        assert set(bio_to_spans(new.tags)) == set(bio_to_spans(old.tags)) & set(bio_to_spans(pred[old.id]))
        assert bio_to_spans(new.tags) or not bio_to_spans(old.tags)  # only sentences projected all O stay all O
    assert any(bio_to_spans(s.tags) for s in kept)  # the student agreed somewhere: the check above is not vacuous
    dropped = {s.id for s in t.kept} - {s.id for s in kept}
    assert dropped == {s.id for s in t.kept
                       if not set(bio_to_spans(s.tags)) & set(bio_to_spans(pred[s.id])) and bio_to_spans(s.tags)}


def test_source_ratio_and_determinism(data: dict[str, Path], tmp_path: Path) -> None:
    config = _config(data, source_ratio=0.5, student=StudentConfig(epochs=1, seed=1))
    a = run_selftraining(config, tmp_path / "a")
    b = run_selftraining(config, tmp_path / "b")
    assert a.rounds[0].train_sentences == {"en": 22, "es": 43}  # round(0.5 * 43)
    assert a.rounds[0].epochs[0].loss == b.rounds[0].epochs[0].loss
    assert a.rounds[0].dev == b.rounds[0].dev
    # the output must be new or empty: a finished run is never overwritten
    with pytest.raises(ValueError, match="new or empty"):
        run_selftraining(config, tmp_path / "a")


def test_without_dev_sets_the_last_round_is_kept(data: dict[str, Path], tmp_path: Path) -> None:
    config = _config(data, dev={}, rounds=2, source_ratio=0.2, student=StudentConfig(epochs=1))
    report = run_selftraining(config, tmp_path / "out")
    assert report.best_round == 2 and report.metrics == {}
    assert all(r.dev == {} and r.best_epoch == 1 for r in report.rounds)
    assert (tmp_path / "out" / "config.cfg").is_file()


def test_nothing_to_train_on(data: dict[str, Path], tmp_path: Path) -> None:
    empty = _write(tmp_path / "none.jsonl", [{"id": "x", "lang": "es", "tokens": ["a"], "tags": ["O"],
                                              "status": "failed"}])
    with pytest.raises(ValueError, match="nothing to train on"):
        run_selftraining(SelfTrainConfig(targets={"es": [str(empty)]}), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- the command ---------------------------------------------------------------------------------------------------


def test_cli_publishes_versions(data: dict[str, Path], tmp_path: Path) -> None:
    from crop.cli_train import train_app
    from crop.train.registry import ModelRegistry

    runner = CliRunner()
    registry = tmp_path / "models" / "ner"
    args = ["--source", str(data["source"]), "--target", f"es:{data['target']}", "--dev", f"es:{data['dev']}",
            "--output", str(registry), "--epochs", "1", "--source-ratio", "0.2", "--crop-f1", "es:0.5"]
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["version"] == "v0001" and out["promoted"] is True
    assert out["metrics"]["es"]["crop"] == 0.5
    reg = ModelRegistry.at(str(registry))
    assert reg.current() == "v0001"
    meta = reg.meta("v0001")
    assert meta.kind == "spacy" and meta.metrics == out["metrics"]
    assert {d["role"] for d in meta.data} == {"source", "target", "dev"}
    assert load_student(reg.local_copy()).predict([["Hola", "Ana"]], "es")[0].__len__() == 2

    # a second run is a second version (same data and seed: as good, so auto-promoted)
    result = runner.invoke(train_app, args)
    assert result.exit_code == 0, result.output
    assert reg.current() == "v0002" and reg.meta("v0002").parent == "v0001"

    # bad usage: exit status 2, nothing published
    bad = runner.invoke(train_app, ["--source", str(data["source"]), "--target", "es", "--output", str(registry)])
    assert bad.exit_code == 2 and "LANG:PATH" in bad.output
    bad = runner.invoke(train_app, [*args, "--student-option", "widht=128"])
    assert bad.exit_code == 2 and "widht" in bad.output
    assert [m.version for m in reg.versions()] == ["v0001", "v0002"]
