"""Self-training (CROP step 6, paper §4.1): one multilingual student trained on L_all = L_src + L_tgt, in rounds.

Data
    - `source`: JSONL files with `tokens` and `tags` (L_src, e.g. the English training data). Lines without tags are
      skipped (counted).
    - `targets`: per language, the outputs of `crop project` or of projection jobs (one `ProjectionResult` per line:
      `tokens`, `tags`, `status`), or training-pool files of the same format. Only `kept` sentences train on their
      projected tags; `discarded` ones are unlabeled text that the student relabels between rounds (those discarded
      for an absurdly long token are skipped); `failed` ones are ignored. A line without `status` counts as kept.
    - `dev`: per language, gold JSONL (`tokens`, `tags`). Dev sets only choose the best epoch and the best round;
      they are never trained on.
    - `dev_projected` (optional): per language, the projection of the dev sentences (same ids), to report the F1 of
      the projected labels (the teacher, mode `crop`) and of the combined labels next to the student's.

Source sampling
    Each round trains on every target training sentence and on n_src = min(len(L_src), round(source_ratio * n_tgt))
    source sentences, n_tgt being that round's number of target training sentences (source_ratio=1.0: as many source
    as target sentences, or all of L_src when it is smaller; 0: no source). The source sentences are the first n_src
    of one seeded permutation of L_src, so the rounds' samples are nested. Without any target training sentence every
    source sentence is used (a source-only, zero-shot student).

Rounds
    Round 1 trains on the projection. After round k < rounds, the round-k student tags the discarded sentences (and
    the kept ones with `relabel_kept`), its tags are combined with the projected tags (`combine`, below), and round
    k+1 trains a fresh student (same seed) on kept sentences (projected or combined tags) + relabelled discarded
    sentences + the source sample. A relabelled sentence left without any entity is dropped unless
    `relabeled_all_o` (the projector drops all-O sentences by default for the same reason: they mostly teach "O").
    Relabelled discarded sentences train with weight `relabeled_weight` (spaCy samples by weight).
    With `min_entity_score`, a kept sentence whose projection placed an entity with a lower matching score (the
    projector's: 1.0 exact, 0.95 normalized, lower for the CROP rule and fuzzy matches) is handled as discarded:
    that entity is removed from its projected tags, it does not train in round 1, and it is relabelled after.

Combine modes (projection tags P, student tags S over the same tokens; entities as seqeval reads BIO)
    - "projection-first": every entity of P, plus each entity of S whose tokens are all O in P (an S entity that
      overlaps a P entity is dropped). Where P has no entity, this is S.
    - "agreement": only the entities that P and S both have, with the same boundaries and type; every other token
      is O. On a discarded sentence that the projection left all O it yields nothing, so this mode mainly cleans the
      kept sentences (with `relabel_kept`) and keeps the discarded sentences where both found the same entities.
      A kept sentence that had entities and has none left after combining is dropped (unless `relabeled_all_o`).

The best round (mean dev F1 over the dev languages; the earlier on ties; the last without dev sets) is the student
written to `output`. Runs are deterministic given the student's seed.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from crop.io import InputError, iter_jsonl, read_jsonl
from crop.labels import bio_to_spans, spans_to_bio
from crop.train.students.base import (
    EpochReport,
    LabeledSentence,
    Scores,
    Student,
    StudentConfig,
    evaluate_student,
    mean_f1,
    new_student,
    score,
)
from crop.types import ProjectionResult, Status

log = logging.getLogger(__name__)

CombineMode = Literal["projection-first", "agreement"]
# discarded sentences that are not worth relabelling (a token of hundreds of characters is not text)
SKIP_RELABEL_REASONS = ("token_too_long",)


class SelfTrainConfig(BaseModel):
    source: list[str] = Field(default_factory=list, description="L_src JSONL files (tokens, tags)")
    targets: dict[str, list[str]] = Field(
        default_factory=dict, description="lang -> projection outputs (ProjectionResult JSONL lines) or pool files")
    dev: dict[str, str] = Field(default_factory=dict, description="lang -> gold JSONL (never trained on)")
    student: StudentConfig = Field(default_factory=StudentConfig)
    rounds: int = Field(default=1, ge=1)
    source_ratio: float = Field(default=1.0, ge=0.0, description="source sentences per target sentence (capped)")
    combine: CombineMode = "projection-first"
    relabel_kept: bool = False
    min_entity_score: float = Field(default=0.0, ge=0.0, le=1.0, description="a kept sentence with a projected "
                                    "entity scored below this is relabelled like a discarded one, that entity "
                                    "removed from its projection (0: off)")
    relabeled_weight: float = Field(default=1.0, ge=0.0, description="training weight of relabelled discarded "
                                    "sentences")
    relabeled_all_o: bool = Field(default=False, description="train on relabelled sentences without any entity")
    dev_projected: dict[str, str] = Field(
        default_factory=dict, description="lang -> projection output of the dev sentences (same ids): reports the "
        "projected and the combined labels' F1")
    crop_f1: dict[str, float] = Field(default_factory=dict, description="the teacher's (mode crop) dev F1 per "
                                      "language when known (else measured from dev_projected)")


class Progress(BaseModel):
    round: int
    rounds: int
    epoch: int
    epochs: int
    loss: float | None = None
    dev_f1: float | None = None
    eta_seconds: float | None = None
    message: str = ""


class RoundReport(BaseModel):
    round: int
    train_sentences: dict[str, int] = Field(description="per language (the source's too) sentences trained on")
    relabeled: dict[str, int] = Field(default_factory=dict, description="per language, sentences whose training "
                                      "tags came from this round's combination (0 in round 1)")
    epochs: list[EpochReport]
    best_epoch: int
    dev: dict[str, Scores] = Field(description="the round's student (best epoch) on each dev language")
    combined: dict[str, Scores] = Field(default_factory=dict, description="projection combined with the student "
                                        "on the dev languages with dev_projected")
    seconds: float


class SelfTrainReport(BaseModel):
    config: SelfTrainConfig
    rounds: list[RoundReport]
    best_round: int
    metrics: dict[str, dict[str, float]] = Field(
        description="dev lang -> {'student': F1 of the best round, 'crop': the teacher's F1 when known, "
        "'combined': the best round combined with the projection, when dev_projected is given}")
    data: list[dict] = Field(description="per file: path, role, lang, counts, sha256")
    seconds: float


# ----------------------------------------------------------------------------------------------- combining


def combine(projected: Sequence[str], student: Sequence[str], mode: CombineMode = "projection-first") -> list[str]:
    """The combined BIO tags of one sentence (see the module doc for the modes)."""
    if len(projected) != len(student):
        raise ValueError(f"{len(projected)} projected tags for {len(student)} student tags")
    p_spans = bio_to_spans(projected)
    s_spans = bio_to_spans(student)
    if mode == "agreement":
        keep = set(s_spans)
        return spans_to_bio(len(projected), [s for s in p_spans if s in keep])
    if mode != "projection-first":
        raise ValueError(f"unknown combine mode {mode!r}")
    covered = [False] * len(projected)
    for a, b, _ in p_spans:
        covered[a:b] = [True] * (b - a)
    added = [(a, b, lab) for a, b, lab in s_spans if not any(covered[a:b])]
    return spans_to_bio(len(projected), sorted(p_spans + added))


# ------------------------------------------------------------------------------------------------- reading


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_labeled(path: str | Path, lang: str | None = None) -> tuple[list[LabeledSentence], int]:
    """Sentences with tags of a JSONL file, and how many lines had no tags."""
    out: list[LabeledSentence] = []
    untagged = 0
    for s in read_jsonl(path, lang):
        if s.tags is None:  # type: ignore[union-attr]
            untagged += 1
            continue
        out.append(LabeledSentence(id=s.id, lang=s.lang, tokens=s.tokens, tags=s.tags))  # type: ignore[union-attr]
    return out, untagged


class TargetData(BaseModel):
    kept: list[LabeledSentence] = Field(default_factory=list)
    discarded: list[LabeledSentence] = Field(default_factory=list, description="with their (partial) projection")
    counts: dict[str, int] = Field(default_factory=dict)


def read_projected(path: str | Path, lang: str, min_entity_score: float = 0.0) -> TargetData:
    """Kept and discarded sentences of a projection output (failed and empty ones counted, not returned).

    A kept sentence with a projected entity scored below `min_entity_score` loses that entity (its tokens become O
    in the projection) and is set aside with the discarded ones (counted as "low_score", within "kept")."""
    data = TargetData(counts={"kept": 0, "discarded": 0, "failed": 0, "skipped": 0, "low_score": 0})
    for lineno, rec in iter_jsonl(path):
        if isinstance(rec, dict) and not rec.get("lang"):
            rec = {**rec, "lang": lang}
        try:
            res = ProjectionResult.model_validate(rec)
        except ValidationError as exc:
            raise InputError(f"not a projection result: {exc.errors()[0]['msg']}", str(path), lineno) from None
        if len(res.tags) != len(res.tokens):
            raise InputError(f"{len(res.tags)} tags for {len(res.tokens)} tokens", str(path), lineno)
        data.counts[res.status.value] += 1
        if res.status == Status.failed:
            continue
        if not res.tokens or (res.status == Status.discarded and
                              (res.reason or "").startswith(SKIP_RELABEL_REASONS)):
            data.counts["skipped"] += 1
            continue
        tags, kept = res.tags, res.status == Status.kept
        weak = {(e.token_start, e.token_end) for e in res.entities if e.score < min_entity_score}
        if kept and weak:
            tags = spans_to_bio(len(tags), [sp for sp in bio_to_spans(tags) if (sp[0], sp[1]) not in weak])
            kept = False
            data.counts["low_score"] += 1
        s = LabeledSentence(id=res.id or f"{Path(path).name}:{lineno}", lang=res.lang or lang, tokens=res.tokens,
                            tags=tags)
        (data.kept if kept else data.discarded).append(s)
    return data


def _read_dev_projected(path: str | Path, gold: list[LabeledSentence]) -> list[list[str]]:
    """The projected tags of each gold sentence, by id; all O for a sentence missing or with other tokens (as
    `crop eval` counts a missing prediction)."""
    by_id: dict[str, list[str]] = {}
    for _, rec in iter_jsonl(path):
        if isinstance(rec, dict) and isinstance(rec.get("tags"), list) and rec.get("id") is not None:
            by_id[str(rec["id"])] = [str(t) for t in rec["tags"]]
    out = []
    for s in gold:
        tags = by_id.get(s.id)
        out.append(tags if tags is not None and len(tags) == len(s.tokens) else ["O"] * len(s.tokens))
    return out


# ---------------------------------------------------------------------------------------------------- running


class _Eta:
    """Seconds left from the mean epoch time so far (relabelling counted as part of the next round's time)."""

    def __init__(self, rounds: int, epochs: int) -> None:
        self.total = rounds * epochs
        self.done = 0
        self.t0 = time.perf_counter()

    def epoch_done(self) -> None:
        self.done += 1

    def seconds(self) -> float | None:
        if not self.done:
            return None
        return round((time.perf_counter() - self.t0) / self.done * (self.total - self.done), 1)


def _prepare_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ValueError(f"{output}: the output must be a new or empty folder")
    output.mkdir(parents=True, exist_ok=True)


def _save_best(student: Student, output: Path) -> None:
    """Replace the output folder's content by the student (written beside it first, so a crash in save leaves the
    previous best whole)."""
    tmp = output.with_name(f".{output.name}.saving")
    if tmp.exists():
        shutil.rmtree(tmp)
    student.save(tmp)
    for child in list(output.iterdir()):
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in list(tmp.iterdir()):
        child.rename(output / child.name)
    tmp.rmdir()


def _counts(sentences: Sequence[LabeledSentence]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in sentences:
        out[s.lang] = out.get(s.lang, 0) + 1
    return dict(sorted(out.items()))


def run_selftraining(config: SelfTrainConfig, output: Path,
                     progress: Callable[[Progress], None] | None = None) -> SelfTrainReport:
    """Train the student in `config.rounds` rounds and write the best round's student to `output` (a new or empty
    folder). Returns what every round did and where the data came from."""
    t_start = time.perf_counter()
    output = Path(output)
    rounds, epochs = config.rounds, config.student.epochs

    def say(**fields: object) -> None:
        if progress is not None:
            progress(Progress(rounds=rounds, epochs=epochs, **fields))  # type: ignore[arg-type]
        if fields.get("message"):
            log.info("selftrain", extra={"detail": fields["message"]})

    # the first round's student, made first: a bad student config (kind, base, options) fails before any reading
    first_student: Student | None = new_student(config.student)

    # -- data
    data: list[dict] = []
    source: list[LabeledSentence] = []
    for path in config.source:
        sents, untagged = read_labeled(path)
        source.extend(sents)
        data.append({"path": str(path), "role": "source", "lang": ",".join(sorted({s.lang for s in sents})),
                     "sentences": len(sents), "untagged": untagged, "sha256": sha256_file(path)})
    kept: list[LabeledSentence] = []
    discarded: list[LabeledSentence] = []
    for lang, paths in config.targets.items():
        for path in paths:
            t = read_projected(path, lang, config.min_entity_score)
            kept.extend(t.kept)
            discarded.extend(t.discarded)
            data.append({"path": str(path), "role": "target", "lang": lang, "sentences": sum(
                t.counts[k] for k in ("kept", "discarded", "failed")), **t.counts, "sha256": sha256_file(path)})
    dev: dict[str, list[LabeledSentence]] = {}
    for lang, path in config.dev.items():
        dev[lang], _ = read_labeled(path, lang)
        data.append({"path": str(path), "role": "dev", "lang": lang, "sentences": len(dev[lang]),
                     "sha256": sha256_file(path)})
    dev_projected: dict[str, list[list[str]]] = {}
    crop_f1 = dict(config.crop_f1)
    for lang, path in config.dev_projected.items():
        if lang not in dev:
            raise ValueError(f"dev_projected for {lang!r} without a dev set for {lang!r}")
        dev_projected[lang] = _read_dev_projected(path, dev[lang])
        crop_f1.setdefault(lang, score(dev[lang], dev_projected[lang]).f1)
        data.append({"path": str(path), "role": "dev_projected", "lang": lang, "sha256": sha256_file(path)})
    if not source and not kept:
        raise ValueError("nothing to train on: no source sentence with tags and no kept target sentence")
    _prepare_output(output)

    order = list(range(len(source)))
    random.Random(config.student.seed).shuffle(order)  # one permutation: nested source samples across rounds

    def source_sample(n_tgt: int) -> list[LabeledSentence]:
        n = len(source) if n_tgt == 0 else min(len(source), round(config.source_ratio * n_tgt))
        return [source[i] for i in sorted(order[:n])]

    # -- rounds
    eta = _Eta(rounds, epochs)
    reports: list[RoundReport] = []
    best: tuple[float, int] = (-math.inf, 0)
    train_kept = list(kept)  # the kept sentences' current tags (projected, or combined after relabel_kept)
    relabeled: list[LabeledSentence] = []
    student: Student | None = None
    for k in range(1, rounds + 1):
        t_round = time.perf_counter()
        n_relabeled = _counts(relabeled)
        if k > 1 and student is not None:
            say(round=k, epoch=0, eta_seconds=eta.seconds(),
                message=f"round {k}: relabelling {len(discarded)} discarded"
                        + (f" and {len(kept)} kept" if config.relabel_kept else "") + " sentences")
            train_kept, relabeled = _relabel(student, config, kept, discarded)
            n_relabeled = _counts(relabeled + (train_kept if config.relabel_kept else []))
        target_train = train_kept + relabeled
        train = source_sample(len(target_train)) + target_train
        say(round=k, epoch=0, eta_seconds=eta.seconds(), message=f"round {k}: training on {len(train)} sentences")
        student = first_student or new_student(config.student)
        first_student = None

        def on_epoch(r: EpochReport, k: int = k) -> None:
            eta.epoch_done()
            say(round=k, epoch=r.epoch, loss=r.loss, dev_f1=round(mean_f1(r.dev), 4) if r.dev else None,
                eta_seconds=eta.seconds(), message=f"round {k} epoch {r.epoch}")

        epoch_reports = student.fit(train, dev, round=k, on_epoch=on_epoch)
        dev_scores = evaluate_student(student, dev)
        combined: dict[str, Scores] = {}
        for lang, proj in dev_projected.items():
            pred = student.predict([s.tokens for s in dev[lang]], lang)
            combined[lang] = score(dev[lang], [combine(p, s, config.combine) for p, s in zip(proj, pred, strict=True)])
        best_epoch = _best_epoch(epoch_reports)
        reports.append(RoundReport(round=k, train_sentences=_counts(train), relabeled=n_relabeled,
                                   epochs=epoch_reports, best_epoch=best_epoch, dev=dev_scores, combined=combined,
                                   seconds=round(time.perf_counter() - t_round, 2)))
        f1 = mean_f1(dev_scores)
        if f1 > best[0] or not dev:  # without dev sets the last round is the one kept
            best = (f1, k)
            _save_best(student, output)
        say(round=k, epoch=epochs, dev_f1=round(f1, 4) if dev else None, eta_seconds=eta.seconds(),
            message=f"round {k} done: dev F1 {f1:.4f}" if dev else f"round {k} done")

    best_report = reports[best[1] - 1]
    metrics: dict[str, dict[str, float]] = {}
    for lang in dev:
        m = {"student": round(best_report.dev[lang].f1, 4)}
        if lang in crop_f1:
            m["crop"] = round(crop_f1[lang], 4)
        if lang in best_report.combined:
            m["combined"] = round(best_report.combined[lang].f1, 4)
        metrics[lang] = m
    report = SelfTrainReport(config=config, rounds=reports, best_round=best[1], metrics=metrics, data=data,
                             seconds=round(time.perf_counter() - t_start, 2))
    say(round=rounds, epoch=epochs, eta_seconds=0.0, message=f"done: best round {best[1]}")
    return report


def _best_epoch(reports: Sequence[EpochReport]) -> int:
    """The epoch with the best mean dev F1 (the earlier on ties; the last without dev data)."""
    if not reports:
        return 0
    if not any(r.dev for r in reports):
        return reports[-1].epoch
    return max(reports, key=lambda r: (mean_f1(r.dev), -r.epoch)).epoch


def _relabel(student: Student, config: SelfTrainConfig, kept: list[LabeledSentence],
             discarded: list[LabeledSentence]) -> tuple[list[LabeledSentence], list[LabeledSentence]]:
    """(kept sentences with their training tags, relabelled discarded sentences that train) after a round."""
    def tag(sentences: list[LabeledSentence]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in sentences]
        by_lang: dict[str, list[int]] = {}
        for i, s in enumerate(sentences):
            by_lang.setdefault(s.lang, []).append(i)
        for lang, idx in by_lang.items():
            for i, tags in zip(idx, student.predict([sentences[i].tokens for i in idx], lang), strict=True):
                out[i] = tags
        return out

    new_kept = kept
    if config.relabel_kept:
        new_kept = []
        for s, t in zip(kept, tag(kept), strict=True):
            tags = combine(s.tags, t, config.combine)
            # a kept sentence that loses all its entities (agreement) is dropped, not taught as all O
            if config.relabeled_all_o or any(x != "O" for x in tags) or all(x == "O" for x in s.tags):
                new_kept.append(s.model_copy(update={"tags": tags}))
    relabeled = []
    for s, t in zip(discarded, tag(discarded), strict=True):
        tags = combine(s.tags, t, config.combine)
        if config.relabeled_all_o or any(x != "O" for x in tags):
            relabeled.append(s.model_copy(update={"tags": tags, "weight": config.relabeled_weight}))
    return new_kept, relabeled


def registry_meta(report: SelfTrainReport) -> dict:
    """The `meta` argument of `ModelRegistry.publish` for a self-training run (config, data, metrics, rounds)."""
    return {
        "kind": report.config.student.kind,
        "config": report.config.model_dump(mode="json"),
        "data": report.data,
        "metrics": report.metrics,
        "rounds": [
            {"round": r.round, "best_epoch": r.best_epoch, "seconds": r.seconds,
             "train_sentences": r.train_sentences, "relabeled": r.relabeled,
             "dev": {lang: s.model_dump() for lang, s in r.dev.items()},
             "combined": {lang: s.model_dump() for lang, s in r.combined.items()},
             "epochs": [{"epoch": e.epoch, "loss": e.loss, "seconds": e.seconds,
                         "dev_f1": {lang: round(s.f1, 4) for lang, s in e.dev.items()}} for e in r.epochs],
             "best": r.round == report.best_round}
            for r in report.rounds
        ],
    }
