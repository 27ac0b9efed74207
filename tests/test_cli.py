"""The `crop` command through typer's CliRunner: project (JSONL and text), tag, eval, and clean errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.io import read_conll

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())


def assert_clean_error(result, *needles: str) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = flat(result.output)
    assert "error" in message
    for needle in needles:
        assert needle in message, message


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dev_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "dev.jsonl"
    with open(shared_data / "dev" / "es.dev.jsonl", encoding="utf-8") as f:
        path.write_text("".join(itertools.islice(f, 8)), encoding="utf-8")
    return path


@pytest.mark.integration
def test_project_jsonl(dev_file: Path, tmp_path: Path) -> None:
    out, conll, stats = tmp_path / "out.jsonl", tmp_path / "out.conll", tmp_path / "stats.json"
    result = invoke("project", "--src-lang", "es", "--input", dev_file, "--output", out, "--conll", conll,
                    "--stats", stats)
    assert result.exit_code == 0, result.output
    inputs = read_lines(dev_file)
    outputs = read_lines(out)
    assert len(outputs) == len(inputs)
    for src, rec in zip(inputs, outputs, strict=True):
        assert {"id", "tokens", "tags", "status", "reason", "entities"} <= set(rec)
        assert rec["id"] == src["id"]
        assert rec["tokens"] == src["tokens"]
        assert len(rec["tags"]) == len(rec["tokens"])
        assert rec["status"] in ("kept", "discarded")
        assert (rec["reason"] is None) == (rec["status"] == "kept")
        for e in rec["entities"]:
            assert {"method", "score", "label", "token_start", "token_end"} <= set(e)
            assert e["method"] in ("exact", "normalized", "source_copy", "forward", "crop_rule", "context", "fuzzy")
            assert 0 < e["score"] <= 1
    kept = [rec for rec in outputs if rec["status"] == "kept"]
    assert len(kept) >= len(outputs) // 2
    assert list(read_conll(conll)) == [(rec["tokens"], rec["tags"]) for rec in kept]
    # most projected tags agree with the gold ones
    agree = sum(rec["tags"] == src["tags"] for src, rec in zip(inputs, outputs, strict=True))
    assert agree >= len(inputs) // 2
    summary = json.loads(stats.read_text())
    assert summary["sentences"] == len(inputs)
    assert summary["status"].get("kept", 0) == len(kept)


@pytest.mark.integration
def test_project_methods_option(dev_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", dev_file, "--output", out, "--methods", "exact",
                    "--policy", "partial", "--no-langid")
    assert result.exit_code == 0, result.output
    outputs = read_lines(out)
    assert len(outputs) == len(read_lines(dev_file))
    methods = {e["method"] for rec in outputs for e in rec["entities"]}
    assert methods == {"exact"}


@pytest.mark.integration
def test_project_text(tmp_path: Path) -> None:
    text = tmp_path / "sentences.txt"
    text.write_text("Pedro Sánchez se reunió ayer en Berlín con el canciller alemán.\n"
                    "La Unión Europea y el Mercosur firmaron un acuerdo en Montevideo.\n"
                    "\n"
                    "Hace buen tiempo\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", text, "--output", out, "--keep-all-o")
    assert result.exit_code == 0, result.output
    outputs = read_lines(out)
    assert [rec["id"] for rec in outputs] == ["sentences-000001", "sentences-000002", "sentences-000004"]
    assert outputs[0]["tokens"][:2] == ["Pedro", "Sánchez"]
    assert outputs[2]["tokens"] == ["Hace", "buen", "tiempo"]
    assert all(rec["status"] in ("kept", "discarded") for rec in outputs)
    assert any(e["text"] == "Berlín" for rec in outputs for e in rec["entities"])


@pytest.mark.integration
def test_tag() -> None:
    result = invoke("tag", "--lang", "es", "Pedro Sánchez visitó Berlín.")
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
    assert ["Pedro Sánchez", "PER"] in [r[:2] for r in rows]
    assert ["Berlín", "LOC"] in [r[:2] for r in rows]
    berlin = next(r for r in rows if r[0] == "Berlín")
    assert berlin[2] == "21-27"

    result = invoke("tag", "--lang", "es", "--json", "Pedro Sánchez visitó Berlín.")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokens"] == ["Pedro", "Sánchez", "visitó", "Berlín", "."]
    assert data["tags"] == ["B-PER", "I-PER", "O", "B-LOC", "O"]


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def test_eval_json(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [
        {"id": "a", "tokens": ["Pedro", "vive", "en", "Madrid"], "tags": ["B-PER", "O", "O", "B-LOC"]},
        {"id": "b", "tokens": ["La", "ONU", "habló"], "tags": ["O", "B-ORG", "O"]},
    ])
    pred = _write_jsonl(tmp_path / "pred.jsonl", [
        {"id": "a", "tokens": ["Pedro", "vive", "en", "Madrid"], "tags": ["B-PER", "O", "O", "B-ORG"],
         "status": "kept"},
        {"id": "b", "tokens": ["La", "ONU", "habló"], "tags": ["O", "B-ORG", "O"]},
    ])
    result = invoke("eval", "--gold", gold, "--pred", pred, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["precision"] == pytest.approx(2 / 3)
    assert report["recall"] == pytest.approx(2 / 3)
    assert report["f1"] == pytest.approx(2 / 3)
    assert set(report["per_type"]) == {"PER", "LOC", "ORG"}
    assert report["per_type"]["PER"]["f1"] == 1.0
    assert report["per_type"]["LOC"]["recall"] == 0.0
    assert report["per_type"]["ORG"]["precision"] == 0.5

    table = invoke("eval", "--gold", gold, "--pred", pred)
    assert table.exit_code == 0
    assert "overall" in table.stdout and "0.6667" in table.stdout


# -- errors: exit code != 0, a clear message, no traceback --------------------------------------------------------


def test_project_missing_input(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", missing, "--output", tmp_path / "o.jsonl")
    assert_clean_error(result, "nope.jsonl", "does not exist")


@pytest.mark.integration
def test_project_bad_jsonl_line(dev_file: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    lines = dev_file.read_text(encoding="utf-8").splitlines()[:2]
    bad.write_text("\n".join([*lines, '{"id": "x", "tokens": [}', lines[0]]) + "\n", encoding="utf-8")
    result = invoke("project", "--src-lang", "es", "--input", bad, "--output", tmp_path / "o.jsonl", "--strict-input")
    assert_clean_error(result, "bad.jsonl:3", "invalid JSON")
    # by default the line is recorded as failed, in its place, and the job goes on
    result = invoke("project", "--src-lang", "es", "--input", bad, "--output", tmp_path / "o.jsonl")
    assert result.exit_code == 0, result.output
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(out) == 4
    assert out[2]["status"] == "failed" and "bad.jsonl:3" in out[2]["reason"] and "invalid JSON" in out[2]["reason"]
    assert all(o["status"] in ("kept", "discarded") for o in out[:2] + out[3:])


@pytest.mark.integration
def test_project_invalid_record(tmp_path: Path) -> None:
    bad = _write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "a", "tokens": ["Hola", "."]},
        {"id": "b", "tokens": ["Hola", "."], "tags": ["O"]},
    ])
    result = invoke("project", "--src-lang", "es", "--input", bad, "--output", tmp_path / "o.jsonl", "--strict-input")
    assert_clean_error(result, "bad.jsonl:2", "'tags' has 1 tags for 2 tokens")
    result = invoke("project", "--src-lang", "es", "--input", bad, "--output", tmp_path / "o.jsonl")
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [o["id"] for o in out] == ["a", "b"]
    assert out[1]["status"] == "failed" and "'tags' has 1 tags for 2 tokens" in out[1]["reason"]


def test_project_unknown_method(dev_file: Path, tmp_path: Path) -> None:
    result = invoke("project", "--src-lang", "es", "--input", dev_file, "--output", tmp_path / "o.jsonl",
                    "--methods", "exact,telepathy")
    assert_clean_error(result, "telepathy", "known: exact")


def test_project_bad_policy(dev_file: Path, tmp_path: Path) -> None:
    result = invoke("project", "--src-lang", "es", "--input", dev_file, "--output", tmp_path / "o.jsonl",
                    "--policy", "lenient")
    assert_clean_error(result, "lenient")


def test_project_unknown_translator(dev_file: Path, tmp_path: Path) -> None:
    result = invoke("project", "--src-lang", "es", "--input", dev_file, "--output", tmp_path / "o.jsonl",
                    "--translator", "babelfish")
    assert_clean_error(result, "unknown translation engine 'babelfish'", "apertium")


@pytest.mark.integration
def test_project_unknown_tagger_pipeline(dev_file: Path, tmp_path: Path) -> None:
    result = invoke("project", "--src-lang", "es", "--input", dev_file, "--output", tmp_path / "o.jsonl",
                    "--tagger", "spacy:xx_no_such_pipeline")
    assert_clean_error(result, "xx_no_such_pipeline")


def test_tag_empty_sentence() -> None:
    assert_clean_error(invoke("tag", "--lang", "es", "   "), "empty")


def test_eval_errors(tmp_path: Path) -> None:
    gold = _write_jsonl(tmp_path / "gold.jsonl", [{"id": "a", "tokens": ["Hola"], "tags": ["O"]}])
    assert_clean_error(invoke("eval", "--gold", gold, "--pred", tmp_path / "missing.jsonl"), "missing.jsonl")
    bad = tmp_path / "pred.jsonl"
    bad.write_text('{"id": "a", "tokens": ["Hola"], "tags": ["O"]}\nnot json\n', encoding="utf-8")
    assert_clean_error(invoke("eval", "--gold", gold, "--pred", bad), "pred.jsonl:2")
    wrong_len = _write_jsonl(tmp_path / "pred2.jsonl", [{"id": "a", "tokens": ["Hola", "."], "tags": ["O", "O"]}])
    assert_clean_error(invoke("eval", "--gold", gold, "--pred", wrong_len), "'a'")


@pytest.mark.integration
def test_project_without_the_aligned_forward_translation(tmp_path: Path) -> None:
    text = tmp_path / "in.txt"
    text.write_text("Pedro Sánchez visitó Berlín.\nLa Comisión Europea se reunió en Bruselas.\n", encoding="utf-8")
    stats = tmp_path / "stats.json"
    result = invoke("project", "--src-lang", "es", "--input", text, "--output", tmp_path / "o.jsonl",
                    "--stats", stats, "--no-align")
    assert result.exit_code == 0, result.output
    seconds = json.loads(stats.read_text())["seconds"]
    assert seconds["align"] == 0 and seconds["back"] > 0
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(out) == 2 and all(e["method"] != "forward" for o in out for e in o["entities"])
