"""Entity-level NER evaluation with seqeval (the conlleval-style scores the CROP paper reports).

Gold and predictions are matched by sentence id. A gold sentence without a prediction counts as predicted
all O (its entities are missed) and is listed in `missing`; predictions of ids not in the gold set are
ignored and listed in `extra`. A prediction with a different number of tokens than its gold sentence is an
error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, Field

from crop.io import PathLike, read_gold, read_predictions

Tagged = tuple[Sequence[str] | None, Sequence[str]]  # (tokens or None, BIO tags)


class EvalError(ValueError):
    """Gold and predictions cannot be compared (e.g. different token counts for one id)."""


class TypeScores(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int = Field(description="gold entities of this type")
    predicted: int = Field(description="predicted entities of this type (in evaluated sentences)")
    correct: int = Field(description="predicted entities with the right type and boundaries")


class EvalReport(BaseModel):
    precision: float
    recall: float
    f1: float
    macro_f1: float = Field(description="unweighted mean of the per-type F1 scores")
    support: int = Field(description="gold entities")
    predicted: int
    correct: int
    per_type: dict[str, TypeScores]
    sentences: int = Field(description="gold sentences evaluated")
    tokens: int
    mode: str = Field(description="'conlleval' (seqeval's default) or 'strict' (IOB2)")
    missing: list[str] = Field(
        default_factory=list, description="gold ids with no prediction, counted as all O"
    )
    extra: list[str] = Field(default_factory=list, description="predicted ids not in the gold set, ignored")
    token_mismatches: list[str] = Field(
        default_factory=list,
        description="ids whose predicted tokens differ in text (same count) from the gold",
    )

    def table(self, digits: int = 4) -> str:
        """A small text table: one row per type and an overall (micro) row, then the bookkeeping."""
        header = ("type", "precision", "recall", "f1", "support", "predicted", "correct")
        rows = [
            (
                t,
                f"{s.precision:.{digits}f}",
                f"{s.recall:.{digits}f}",
                f"{s.f1:.{digits}f}",
                str(s.support),
                str(s.predicted),
                str(s.correct),
            )
            for t, s in sorted(self.per_type.items())
        ]
        rows.append(
            (
                "overall",
                f"{self.precision:.{digits}f}",
                f"{self.recall:.{digits}f}",
                f"{self.f1:.{digits}f}",
                str(self.support),
                str(self.predicted),
                str(self.correct),
            )
        )
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

        def fmt(r: Sequence[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )

        lines = [fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows[:-1])]
        if rows[:-1]:
            lines.append("  ".join("-" * w for w in widths))
        lines.append(fmt(rows[-1]))
        lines.append(
            f"macro F1 {self.macro_f1:.{digits}f}; {self.sentences} sentences, {self.tokens} tokens "
            f"({self.mode})"
        )
        if self.missing:
            lines.append(
                f"{len(self.missing)} gold sentences without prediction (counted as all O): "
                f"{_preview(self.missing)}"
            )
        if self.extra:
            lines.append(f"{len(self.extra)} predictions not in gold (ignored): {_preview(self.extra)}")
        if self.token_mismatches:
            lines.append(
                f"{len(self.token_mismatches)} sentences whose predicted tokens differ from gold: "
                f"{_preview(self.token_mismatches)}"
            )
        return "\n".join(lines)


def _preview(ids: Sequence[str], n: int = 5) -> str:
    return ", ".join(ids[:n]) + (", ..." if len(ids) > n else "")


def _prf(correct: int, predicted: int, support: int) -> tuple[float, float, float]:
    # seqeval with zero_division=0: an undefined ratio is 0
    p = correct / predicted if predicted else 0.0
    r = correct / support if support else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def _split(value: Tagged | Sequence[str]) -> Tagged:
    """Accept (tokens, tags) pairs or bare tag lists."""
    if isinstance(value, tuple) and len(value) == 2 and not isinstance(value[0], str):
        return value  # type: ignore[return-value]
    return None, value  # type: ignore[return-value]


def evaluate(
    gold: Mapping[str, Tagged | Sequence[str]],
    pred: Mapping[str, Tagged | Sequence[str]],
    strict: bool = False,
) -> EvalReport:
    """Entity-level P/R/F1 of `pred` against `gold`, both id -> (tokens, tags) (or id -> tags).

    Entities are read as seqeval reads them: by default conlleval-style (a stray I- starts an entity, as in
    `seqeval.metrics.classification_report(y_true, y_pred)`); `strict=True` is seqeval's strict IOB2 mode."""
    if strict:
        from seqeval.scheme import IOB2, Entities

        def entities(tags: list[str]) -> list[tuple[str, int, int]]:
            return [(e.tag, e.start, e.end) for e in Entities([tags], IOB2).entities[0]]
    else:
        from seqeval.metrics.sequence_labeling import get_entities

        def entities(tags: list[str]) -> list[tuple[str, int, int]]:
            return [(t, s, e + 1) for t, s, e in get_entities(tags)]

    n_gold: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    n_correct: Counter[str] = Counter()
    missing: list[str] = []
    mismatches: list[str] = []
    tokens = 0
    for sid, gvalue in gold.items():
        gtoks, gtags = _split(gvalue)
        gtags = list(gtags)
        tokens += len(gtags)
        if sid in pred:
            ptoks, ptags = _split(pred[sid])
            ptags = list(ptags)
            if len(ptags) != len(gtags):
                raise EvalError(f"sentence {sid!r}: {len(ptags)} predicted tags for {len(gtags)} gold tokens")
            if gtoks is not None and ptoks is not None and list(gtoks) != list(ptoks):
                mismatches.append(sid)
        else:
            missing.append(sid)
            ptags = ["O"] * len(gtags)
        g = set(entities(gtags))
        p = set(entities(ptags))
        n_gold.update(t for t, _, _ in g)
        n_pred.update(t for t, _, _ in p)
        n_correct.update(t for t, _, _ in g & p)
    extra = [sid for sid in pred if sid not in gold]

    per_type: dict[str, TypeScores] = {}
    for typ in sorted(set(n_gold) | set(n_pred)):
        p_, r_, f_ = _prf(n_correct[typ], n_pred[typ], n_gold[typ])
        per_type[typ] = TypeScores(
            precision=p_, recall=r_, f1=f_, support=n_gold[typ], predicted=n_pred[typ], correct=n_correct[typ]
        )
    correct, predicted, support = sum(n_correct.values()), sum(n_pred.values()), sum(n_gold.values())
    p, r, f = _prf(correct, predicted, support)
    macro = sum(s.f1 for s in per_type.values()) / len(per_type) if per_type else 0.0
    return EvalReport(
        precision=p,
        recall=r,
        f1=f,
        macro_f1=macro,
        support=support,
        predicted=predicted,
        correct=correct,
        per_type=per_type,
        sentences=len(gold),
        tokens=tokens,
        mode="strict" if strict else "conlleval",
        missing=missing,
        extra=extra,
        token_mismatches=mismatches,
    )


def evaluate_files(gold_path: PathLike, pred_path: PathLike, strict: bool = False) -> EvalReport:
    """`evaluate` over two JSONL files with `id`, `tokens`, `tags` on every line."""
    return evaluate(read_gold(gold_path), read_predictions(pred_path), strict=strict)
