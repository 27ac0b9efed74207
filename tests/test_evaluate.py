from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crop.io import read_gold
from crop.train.evaluate import EvalError, EvalReport, evaluate, evaluate_files

DEV_ES = Path("/work/shared/data/dev/es.dev.jsonl")

GOLD = {
    "s1": (["Ana", "Gómez", "en", "Lugo"], ["B-PER", "I-PER", "O", "B-LOC"]),
    "s2": (["ONU", "y", "españoles"], ["B-ORG", "O", "B-MISC"]),
}
PRED = {
    "s1": (["Ana", "Gómez", "en", "Lugo"], ["B-PER", "I-PER", "O", "B-ORG"]),  # PER right, LOC typed ORG
    "s2": (["ONU", "y", "españoles"], ["B-ORG", "O", "O"]),  # ORG right, MISC missed
}


def test_hand_computed_scores() -> None:
    r = evaluate(GOLD, PRED)
    # 4 gold entities, 3 predicted, 2 correct
    assert (r.support, r.predicted, r.correct) == (4, 3, 2)
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(2 / 4)
    assert r.f1 == pytest.approx(4 / 7)  # 2PR/(P+R) = (2/3)/(7/6)
    assert set(r.per_type) == {"PER", "LOC", "ORG", "MISC"}
    per, loc, org, misc = (r.per_type[t] for t in ("PER", "LOC", "ORG", "MISC"))
    assert (per.precision, per.recall, per.f1, per.support) == (1.0, 1.0, 1.0, 1)
    assert (loc.precision, loc.recall, loc.f1, loc.support, loc.predicted) == (0.0, 0.0, 0.0, 1, 0)
    assert (org.precision, org.recall, org.support, org.predicted, org.correct) == (0.5, 1.0, 1, 2, 1)
    assert org.f1 == pytest.approx(2 / 3)
    assert (misc.f1, misc.support) == (0.0, 1)
    assert r.macro_f1 == pytest.approx((1 + 0 + 2 / 3 + 0) / 4)
    assert r.sentences == 2 and r.tokens == 7
    assert r.missing == [] and r.extra == [] and r.token_mismatches == []


def test_matches_seqeval_classification_report() -> None:
    from seqeval.metrics import classification_report

    r = evaluate(GOLD, PRED)
    ids = list(GOLD)
    ref = classification_report(
        [GOLD[i][1] for i in ids], [PRED[i][1] for i in ids], output_dict=True, zero_division=0
    )
    assert r.precision == pytest.approx(ref["micro avg"]["precision"])
    assert r.recall == pytest.approx(ref["micro avg"]["recall"])
    assert r.f1 == pytest.approx(ref["micro avg"]["f1-score"])
    assert r.macro_f1 == pytest.approx(ref["macro avg"]["f1-score"])
    for typ, s in r.per_type.items():
        assert s.f1 == pytest.approx(ref[typ]["f1-score"]) and s.support == ref[typ]["support"]


def test_boundary_errors_are_wrong() -> None:
    gold = {"a": (["New", "York", "City"], ["B-LOC", "I-LOC", "I-LOC"])}
    pred = {"a": (["New", "York", "City"], ["B-LOC", "I-LOC", "O"])}
    r = evaluate(gold, pred)
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)


def test_perfect_prediction() -> None:
    r = evaluate(GOLD, GOLD)
    assert (r.precision, r.recall, r.f1, r.macro_f1) == (1.0, 1.0, 1.0, 1.0)
    assert all(s.f1 == 1.0 for s in r.per_type.values())


def test_perfect_on_dev_file() -> None:
    r = evaluate_files(DEV_ES, DEV_ES)
    assert r.f1 == 1.0 and r.sentences == 100 and r.support > 100


def test_stray_i_conlleval_vs_strict() -> None:
    gold = {"a": (["Ana", "Gómez"], ["B-PER", "I-PER"])}
    pred = {"a": (["Ana", "Gómez"], ["I-PER", "I-PER"])}
    assert evaluate(gold, pred).f1 == 1.0  # conlleval: a stray I- starts an entity
    strict = evaluate(gold, pred, strict=True)
    assert strict.f1 == 0.0 and strict.predicted == 0 and strict.mode == "strict"


def test_missing_ids_count_as_all_o() -> None:
    gold = {**GOLD, "s3": (["Vigo"], ["B-LOC"])}
    pred = {**PRED, "zz": (["x"], ["B-PER"])}
    r = evaluate(gold, pred)
    assert r.missing == ["s3"] and r.extra == ["zz"]
    assert (r.support, r.predicted, r.correct) == (5, 3, 2)  # the extra prediction is ignored
    assert r.recall == pytest.approx(2 / 5) and r.precision == pytest.approx(2 / 3)
    assert r.sentences == 3
    assert evaluate(gold, {}).f1 == 0.0


def test_token_count_mismatch_is_an_error() -> None:
    pred = {**PRED, "s2": (["ONU", "y"], ["B-ORG", "O"])}
    with pytest.raises(EvalError, match="'s2'"):
        evaluate(GOLD, pred)


def test_token_text_mismatch_is_reported() -> None:
    pred = {**PRED, "s2": (["UN", "y", "españoles"], ["B-ORG", "O", "O"])}
    assert evaluate(GOLD, pred).token_mismatches == ["s2"]


def test_bare_tag_lists() -> None:
    r = evaluate({k: v[1] for k, v in GOLD.items()}, {k: v[1] for k, v in PRED.items()})
    assert r.f1 == pytest.approx(4 / 7)


def test_no_entities_at_all() -> None:
    r = evaluate({"a": (["x"], ["O"])}, {"a": (["x"], ["O"])})
    assert (r.precision, r.recall, r.f1) == (0.0, 0.0, 0.0)  # seqeval with zero_division=0
    assert r.per_type == {}


def test_table_and_json(tmp_path: Path) -> None:
    r = evaluate({**GOLD, "s3": (["Vigo"], ["B-LOC"])}, {**PRED, "zz": (["x"], ["O"])})
    table = r.table()
    lines = table.splitlines()
    assert lines[0].split() == ["type", "precision", "recall", "f1", "support", "predicted", "correct"]
    assert any(line.split()[:4] == ["PER", "1.0000", "1.0000", "1.0000"] for line in lines)
    assert any(line.startswith("overall") for line in lines)
    assert "s3" in table and "zz" in table
    dumped = json.loads(json.dumps(r.model_dump()))
    assert EvalReport.model_validate(dumped) == r


def test_evaluate_files_with_partial_predictions(tmp_path: Path) -> None:
    gold = read_gold(DEV_ES)
    pred_path = tmp_path / "pred.jsonl"
    with open(pred_path, "w", encoding="utf-8") as f:
        for i, (sid, (tokens, tags)) in enumerate(gold.items()):
            if i % 2 == 0:
                f.write(json.dumps({"id": sid, "tokens": tokens, "tags": tags}, ensure_ascii=False) + "\n")
    r = evaluate_files(DEV_ES, pred_path)
    assert r.precision == 1.0 and 0 < r.recall < 1 and len(r.missing) == 50


TAGS = st.sampled_from(["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"])


@settings(deadline=None, max_examples=60)
@given(
    st.lists(
        st.integers(1, 8).flatmap(
            lambda n: st.tuples(
                st.lists(TAGS, min_size=n, max_size=n), st.lists(TAGS, min_size=n, max_size=n)
            )
        ),
        min_size=1,
        max_size=6,
    )
)
def test_agrees_with_seqeval(pairs: list[tuple[list[str], list[str]]]) -> None:
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold = {str(i): g for i, (g, _) in enumerate(pairs)}
    pred = {str(i): p for i, (_, p) in enumerate(pairs)}
    y_true, y_pred = [g for g, _ in pairs], [p for _, p in pairs]
    r = evaluate(gold, pred)
    assert r.precision == pytest.approx(precision_score(y_true, y_pred, zero_division=0))
    assert r.recall == pytest.approx(recall_score(y_true, y_pred, zero_division=0))
    assert r.f1 == pytest.approx(f1_score(y_true, y_pred, zero_division=0))
    from seqeval.scheme import IOB2

    strict = evaluate(gold, pred, strict=True)
    assert strict.f1 == pytest.approx(f1_score(y_true, y_pred, mode="strict", scheme=IOB2, zero_division=0))
