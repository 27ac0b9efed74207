"""`crop eval --breakdown`: what kind of mistake each gold entity and each prediction is, per language and type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.train.evaluate import EvalError, breakdown, breakdown_files

TOKS = ["Ana", "Gómez", "visitó", "Lugo", "con", "la", "ONU", "y", "Real", "Madrid", "ayer"]
GOLD = ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "B-ORG", "O", "B-ORG", "I-ORG", "O"]
#        exact            wrong type    wrong boundary   wrong both (MISC, other span)
PRED = ["B-PER", "I-PER", "O", "B-ORG", "O", "B-ORG", "I-ORG", "O", "B-MISC", "O", "B-LOC"]
#                                                                               spurious: "ayer" LOC


def test_each_gold_entity_gets_one_kind() -> None:
    b = breakdown({"s1": (TOKS, GOLD), "s2": (["Vigo"], ["B-LOC"])},
                  {"s1": (TOKS, PRED), "s2": (["Vigo"], ["O"])}, langs={"s1": "es", "s2": "gl"})
    t = b.total
    assert (t.exact, t.wrong_type, t.wrong_boundary, t.wrong_both, t.missed, t.spurious) == (1, 1, 1, 1, 1, 1)
    assert t.gold == 5
    es, gl = b.per_type["es"], b.per_type["gl"]
    assert es["PER"].exact == 1 and es["LOC"].wrong_type == 1
    assert es["ORG"].wrong_boundary == 1 and es["ORG"].wrong_both == 1
    assert es["LOC"].spurious == 1  # counted under the predicted type
    assert gl["LOC"].missed == 1 and b.per_lang["gl"].gold == 1 and b.per_lang["es"].gold == 4
    # 1 wrong type among 5 errors (4 wrong gold entities + 1 spurious)
    assert b.type_error_share == pytest.approx(0.2)
    ex = {k: v[0] for k, v in b.examples.items()}
    assert ex["wrong_type"].gold == "LOC: Lugo" and ex["wrong_type"].pred == "ORG: Lugo"
    assert ex["wrong_boundary"].pred == "ORG: la ONU"
    assert ex["wrong_both"].gold == "ORG: Real Madrid" and ex["wrong_both"].pred == "MISC: Real"
    assert ex["spurious"].pred == "LOC: ayer" and ex["spurious"].gold == ""
    assert ex["missed"].id == "s2" and ex["missed"].pred == ""
    text = b.table()
    assert "wrong_type: s1: gold [LOC: Lugo] pred [ORG: Lugo]" in text and "20.0% of all errors" in text


def test_missing_prediction_is_missed_and_length_mismatch_is_an_error() -> None:
    b = breakdown({"a": (["Lugo"], ["B-LOC"])}, {})
    assert b.total.missed == 1 and b.per_lang[""].missed == 1
    with pytest.raises(EvalError):
        breakdown({"a": (["Lugo"], ["B-LOC"])}, {"a": (["Lugo", "x"], ["B-LOC", "O"])})


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_breakdown_text_and_json(tmp_path: Path) -> None:
    gold = _write(tmp_path / "gold.jsonl", [{"id": "s1", "lang": "es", "tokens": TOKS, "tags": GOLD}])
    pred = _write(tmp_path / "pred.jsonl", [{"id": "s1", "tokens": TOKS, "tags": PRED, "status": "kept"}])
    assert breakdown_files(gold, pred).per_lang["es"].exact == 1
    res = CliRunner().invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--breakdown"])
    assert res.exit_code == 0, res.output
    assert "overall" in res.output and "wrong_boundary" in res.output and "es    all" in res.output
    res = CliRunner().invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--breakdown", "--json",
                                   "--examples", "0"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["correct"] == 1 and data["breakdown"]["per_lang"]["es"]["wrong_type"] == 1
    assert data["breakdown"]["examples"]["wrong_type"] == []
    plain = json.loads(CliRunner().invoke(app, ["eval", "--gold", str(gold), "--pred", str(pred), "--json"]).output)
    assert "breakdown" not in plain
