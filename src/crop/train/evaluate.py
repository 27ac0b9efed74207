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


# -- error breakdown: what kind of mistake each gold entity and each prediction is ---------------------------------

BREAKDOWN_KINDS = ("exact", "wrong_type", "wrong_boundary", "wrong_both", "missed", "spurious")


class ErrorExample(BaseModel):
    id: str
    gold: str = Field(default="", description="the gold entity, 'TYPE: words' (empty for a spurious prediction)")
    pred: str = Field(default="", description="the prediction it was matched with, 'TYPE: words' (empty if missed)")


class ErrorCounts(BaseModel):
    """Each gold entity falls in exactly one of the first five; `spurious` counts predictions overlapping no gold
    entity (counted under the predicted type)."""

    exact: int = 0
    wrong_type: int = 0
    wrong_boundary: int = 0
    wrong_both: int = 0
    missed: int = 0
    spurious: int = 0

    @property
    def gold(self) -> int:
        return self.exact + self.wrong_type + self.wrong_boundary + self.wrong_both + self.missed

    @property
    def type_error_share(self) -> float:
        """The share of the errors (all but exact) that are a wrong type with the right span."""
        errors = self.gold - self.exact + self.spurious
        return self.wrong_type / errors if errors else 0.0


class Breakdown(BaseModel):
    """Error kinds per language (`lang` of the gold lines; '' when absent) and per gold type, with examples."""

    total: ErrorCounts
    per_lang: dict[str, ErrorCounts]
    per_type: dict[str, dict[str, ErrorCounts]] = Field(description="language -> gold (or, spurious, predicted) "
                                                        "type -> counts")
    examples: dict[str, list[ErrorExample]] = Field(description="kind -> the first few examples")
    type_error_share: float = Field(description="wrong-type-only entities over all errors (the non-exact gold "
                                    "entities and the spurious predictions)")

    def table(self) -> str:
        header = ("lang", "type", *BREAKDOWN_KINDS)
        rows: list[tuple[str, ...]] = []
        for lang in sorted(self.per_type):
            for typ, c in sorted(self.per_type[lang].items()):
                rows.append((lang or "-", typ, *(str(getattr(c, k)) for k in BREAKDOWN_KINDS)))
            c = self.per_lang[lang]
            rows.append((lang or "-", "all", *(str(getattr(c, k)) for k in BREAKDOWN_KINDS)))
        rows.append(("all", "all", *(str(getattr(self.total, k)) for k in BREAKDOWN_KINDS)))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths,
                                                                                              strict=True)))
                 for r in [header, *rows]]
        lines.append(f"type errors (right span, wrong type): {self.type_error_share:.1%} of all errors")
        for kind in BREAKDOWN_KINDS[1:]:
            for ex in self.examples.get(kind, []):
                lines.append(f"  {kind}: {ex.id}: gold [{ex.gold}] pred [{ex.pred}]")
        return "\n".join(lines)


def _entities_conlleval(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return [(t, s, e + 1) for t, s, e in get_entities(list(tags))]


def _show(ent: tuple[str, int, int], tokens: list[str] | None) -> str:
    words = " ".join(tokens[ent[1]:ent[2]]) if tokens is not None else f"tokens {ent[1]}-{ent[2]}"
    return f"{ent[0]}: {words}"


def breakdown(
    gold: Mapping[str, Tagged | Sequence[str]],
    pred: Mapping[str, Tagged | Sequence[str]],
    langs: Mapping[str, str] | None = None,
    n_examples: int = 5,
) -> Breakdown:
    """Classify every gold entity (exact, wrong type only, wrong boundary only, both, missed) and every prediction
    overlapping no gold entity (spurious), entities read as `evaluate` reads them (conlleval). A gold entity is
    matched with the best overlapping prediction: an exact one, then the same span, then the same type."""
    total = ErrorCounts()
    per_lang: dict[str, ErrorCounts] = {}
    per_type: dict[str, dict[str, ErrorCounts]] = {}
    examples: dict[str, list[ErrorExample]] = {k: [] for k in BREAKDOWN_KINDS[1:]}

    def bump(lang: str, typ: str, kind: str) -> None:
        for c in (total, per_lang.setdefault(lang, ErrorCounts()),
                  per_type.setdefault(lang, {}).setdefault(typ, ErrorCounts())):
            setattr(c, kind, getattr(c, kind) + 1)

    for sid, gvalue in gold.items():
        gtoks, gtags = _split(gvalue)
        ptags: Sequence[str] = ["O"] * len(gtags)
        if sid in pred:
            _, ptags = _split(pred[sid])
            if len(ptags) != len(gtags):
                raise EvalError(f"sentence {sid!r}: {len(ptags)} predicted tags for {len(gtags)} gold tokens")
        lang = (langs or {}).get(sid, "")
        toks = list(gtoks) if gtoks is not None else None

        g_ents, p_ents = _entities_conlleval(gtags), _entities_conlleval(ptags)
        for g in g_ents:
            over = [p for p in p_ents if p[1] < g[2] and g[1] < p[2]]
            same_span = [p for p in over if (p[1], p[2]) == (g[1], g[2])]
            same_type = [p for p in over if p[0] == g[0]]
            if g in over:
                kind, match = "exact", g
            elif same_span:
                kind, match = "wrong_type", same_span[0]
            elif same_type:
                kind, match = "wrong_boundary", same_type[0]
            elif over:
                kind, match = "wrong_both", over[0]
            else:
                kind, match = "missed", None
            bump(lang, g[0], kind)
            if kind != "exact" and len(examples[kind]) < n_examples:
                examples[kind].append(ErrorExample(id=sid, gold=_show(g, toks),
                                                   pred=_show(match, toks) if match else ""))
        for p in p_ents:
            if not any(p[1] < g[2] and g[1] < p[2] for g in g_ents):
                bump(lang, p[0], "spurious")
                if len(examples["spurious"]) < n_examples:
                    examples["spurious"].append(ErrorExample(id=sid, pred=_show(p, toks)))
    return Breakdown(total=total, per_lang=per_lang, per_type=per_type, examples=examples,
                     type_error_share=round(total.type_error_share, 4))


def gold_langs(path: PathLike) -> dict[str, str]:
    """id -> `lang` of the lines of a gold JSONL file (lines without one are left out)."""
    from crop.io import iter_jsonl

    out: dict[str, str] = {}
    for _, rec in iter_jsonl(path):
        if isinstance(rec, dict) and isinstance(rec.get("lang"), str):
            rid = rec.get("id")
            out[str(rid)] = rec["lang"]
    return out


def breakdown_files(gold_path: PathLike, pred_path: PathLike, n_examples: int = 5) -> Breakdown:
    """`breakdown` over two JSONL files (languages from the gold lines' `lang`)."""
    return breakdown(read_gold(gold_path), read_predictions(pred_path), gold_langs(gold_path), n_examples)
