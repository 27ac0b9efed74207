"""Entity types end to end (issue 15): F1 on each dev set for the stock English tagger, the tagger fitted to
en/train.jsonl, the fitted tagger with round-trip augmentation (`crop tagger train --roundtrip es,ca,gl`), the
two together (the fitted tagger's spans typed by the round-trip tagger, crop.tag.ensemble), and both fitted with
three seeds voting entity by entity (the spec `A+B+...`, crop.tag.ensemble.VotingEnsemble), each with and
without type voting (`crop project --type-vote`) over the projection of the shared raw text plus the dev
sentences; the error breakdown of the best setting; the training time of each tagger.

The dev sentences go to the pipeline without their English side (`en_tokens`/`en_tags`), so the English is
machine-translated and tagged, as for raw text. Run from quality.py (`--types`) or alone:

    python benchmarks/entity_types.py [--langs es,ca,gl] [--retrain] [--taggers stock,fitted,roundtrip,ensemble,vote]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from common import LANGS, emit, english_tagger, load_dev, shared_data

from crop.io import read_text
from crop.jobs.options import ProjectionOptions, build_pipeline
from crop.project.type_vote import TypeVoteConfig, TypeVotes
from crop.tag.spacy import SpacyTagger
from crop.train.evaluate import breakdown, evaluate
from crop.translate.apertium import ApertiumTranslator

MODELS = Path(__file__).resolve().parent / "results" / "models"
TAGGERS = ("stock", "fitted", "roundtrip", "ensemble", "vote")  # ensemble: fitted's spans, round-trip's types
VOTE_SEEDS = (0, 1, 2)  # vote: the fitted and the round-trip tagger, each fitted with these seeds


def roundtrip_tagger(translator, retrain: bool = False, epochs: int = 10,
                     langs: tuple[str, ...] = LANGS, seed: int = 0) -> tuple[Path, dict]:
    """The fitted tagger trained on en/train.jsonl plus its round trips through `langs` (cached in
    results/models/en-conll-rt, en-conll-rt-s<seed> for another seed, with the fit's numbers in
    train_report.json), as `crop tagger train --roundtrip --seed` fits it (the seed picks the held-out part too)."""
    import tempfile

    from crop.tag.spacy_train import train_spacy_ner
    from crop.train.roundtrip import augmented_training_data

    model = MODELS / ("en-conll-rt" + (f"-s{seed}" if seed else ""))
    report = model / "train_report.json"
    if not retrain and report.exists():
        return model, json.loads(report.read_text()) | {"cached": True}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        data = augmented_training_data(shared_data() / "en" / "train.jsonl", translator, langs, Path(work),
                                       seed=seed)
        t1 = time.perf_counter()
        fit = train_spacy_ner(data.train_file, model, epochs=epochs, dev_path=data.dev_file, seed=seed)
    out = {"best_epoch": fit.best_epoch, "held_out_f1": fit.best_dev_f1, "train_sentences": fit.train_sentences,
           "augmented_sentences": data.augmented_sentences,
           "roundtrip": [s.model_dump() for s in data.roundtrip],
           "roundtrip_seconds": round(t1 - t0, 1), "training_seconds": round(time.perf_counter() - t1, 1)}
    report.write_text(json.dumps(out, indent=2) + "\n")
    return model, out


def fitted_tagger(retrain: bool, seed: int = 0) -> tuple[Path, dict]:
    t0 = time.perf_counter()
    model, fit = english_tagger(retrain=retrain, seed=seed)
    timing = model.parent / f"{model.name}.timing.json"
    if fit is not None:  # fitted now: keep its time for later runs that take it from the cache
        fit = fit | {"training_seconds": round(time.perf_counter() - t0, 1)}
        timing.write_text(json.dumps(fit) + "\n")
        return model, fit
    return model, (json.loads(timing.read_text()) if timing.exists() else {}) | {"cached": True}


def project_corpus(translator, tagger, lang: str) -> tuple[list[dict], list[dict], float | None]:
    """(raw lines, dev lines) of the projection of the raw text and the dev sentences, one run, and its seconds."""
    dev = [s.model_copy(update={"en_tokens": None, "en_tags": None, "tags": None, "meta": {}}) for s in load_dev(lang)]
    raw = list(read_text(shared_data() / "raw" / f"{lang}.txt", lang))
    pipe = build_pipeline(ProjectionOptions(), translator, tagger)
    t0 = time.perf_counter()
    out = [r.model_dump(mode="json") for r in pipe.run([*raw, *dev])]
    return out[:len(raw)], out[len(raw):], time.perf_counter() - t0


def scores(lang: str, dev_lines: list[dict]) -> tuple[dict, object]:
    gold = {s.id: (s.tokens, s.tags) for s in load_dev(lang)}
    pred = {x["id"]: (x["tokens"], x["tags"]) for x in dev_lines}
    r = evaluate(gold, pred)
    b = breakdown(gold, pred, {k: lang for k in gold})
    return {"precision": round(r.precision, 4), "recall": round(r.recall, 4), "f1": round(r.f1, 4),
            "type_error_share": b.type_error_share}, b


def voted(raw: list[dict], dev: list[dict], config: TypeVoteConfig) -> tuple[list[dict], int]:
    votes = TypeVotes(config)
    for line in [*raw, *dev]:
        votes.add(line)
    out = [votes.apply(json.loads(json.dumps(x))) for x in dev]  # copies: the unvoted lines stay as they were
    return out, votes.retyped


def run(langs: list[str], taggers: list[str], retrain: bool = False, config: TypeVoteConfig | None = None,
        save: Path | None = None, reuse: Path | None = None) -> dict:
    """The report; with `save`, the projections too (`<tagger>_<lang>.jsonl`, raw lines then dev lines), which a
    later run given them as `reuse` reads instead of projecting again (to try other vote settings)."""
    config = config or TypeVoteConfig()
    translator = ApertiumTranslator()
    report: dict = {"metric": "seqeval entity-level (conlleval), end to end",
                    "corpus": "raw/<lang>.txt + the dev sentences (without their English side)",
                    "type_vote": config.model_dump(), "taggers": {}, "f1": {}, "mean_f1": {}}
    spec: dict[str, object] = {}
    for name in taggers:
        if name == "stock":
            spec[name] = SpacyTagger()
            report["taggers"][name] = {"spec": "spacy (en_core_web_sm)", "training_seconds": 0}
        elif name == "fitted":
            model, fit = fitted_tagger(retrain)
            spec[name] = SpacyTagger(str(model))
            report["taggers"][name] = {"spec": f"spacy:{model}", **fit}
        elif name == "roundtrip":
            model, fit = roundtrip_tagger(translator, retrain)
            spec[name] = SpacyTagger(str(model))
            report["taggers"][name] = {"spec": f"spacy:{model}", **fit}
        elif name == "vote":  # both taggers fitted with each seed, voting entity by entity (crop.tag.ensemble)
            from crop.tag.ensemble import VotingEnsemble

            # (seed 0 is the "fitted" and "roundtrip" settings' tagger: fitted again by them when they run too)
            fits = [fitted_tagger(retrain and (seed > 0 or "fitted" not in taggers), seed) for seed in VOTE_SEEDS]
            rts = [roundtrip_tagger(translator, retrain and (seed > 0 or "roundtrip" not in taggers), seed=seed)
                   for seed in VOTE_SEEDS]
            folders = [m for m, _ in fits] + [m for m, _ in rts]
            spec[name] = VotingEnsemble([SpacyTagger(str(m)) for m in folders])
            report["taggers"][name] = {
                "spec": "+".join(f"spacy:{m}" for m in folders),
                "training_seconds": round(sum(float(f.get("training_seconds") or 0) for _, f in fits)
                                          + sum(float(f.get("training_seconds") or 0)
                                                + float(f.get("roundtrip_seconds") or 0) for _, f in rts), 1),
                "members_held_out_f1": [f.get("held_out_f1") or f.get("best_dev_f1") for _, f in fits + rts]}
        else:  # the two above together (crop.tag.ensemble): no training of its own
            from crop.tag.ensemble import SpanTypeEnsemble

            fitted, _ = fitted_tagger(False)
            rt, _ = roundtrip_tagger(translator, False)
            spec[name] = SpanTypeEnsemble(SpacyTagger(str(fitted)), SpacyTagger(str(rt)))
            report["taggers"][name] = {"spec": "spans of fitted, types of roundtrip (crop.tag.ensemble)",
                                       "training_seconds": "fitted + roundtrip"}
    breakdowns: dict[str, dict] = {}
    for name in taggers:
        for lang in langs:
            saved = reuse / f"{name}_{lang}.jsonl" if reuse is not None else None
            if saved is not None and saved.exists():
                lines = [json.loads(x) for x in saved.read_text(encoding="utf-8").splitlines()]
                n_dev = len(load_dev(lang))
                raw, dev, secs = lines[:-n_dev], lines[-n_dev:], None
            else:
                raw, dev, secs = project_corpus(translator, spec[name], lang)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{name}_{lang}.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n"
                                                                   for x in [*raw, *dev]), encoding="utf-8")
            plain, b_plain = scores(lang, dev)
            vdev, n = voted(raw, dev, config)
            vote, b_vote = scores(lang, vdev)
            report["f1"].setdefault(name, {})[lang] = plain["f1"]
            report["f1"].setdefault(f"{name}+vote", {})[lang] = vote["f1"]
            report.setdefault("details", {}).setdefault(lang, {})[name] = {
                "plain": plain, "type_vote": vote | {"retyped_dev_entities": n},
                "projection_seconds": None if secs is None else round(secs, 1)}
            breakdowns.setdefault(name, {})[lang] = b_plain
            breakdowns.setdefault(f"{name}+vote", {})[lang] = b_vote
            print(f"{name} {lang}: F1 {plain['f1']} / with vote {vote['f1']} ({n} re-typed)", flush=True)
    for setting, per_lang in report["f1"].items():
        report["mean_f1"][setting] = round(sum(per_lang.values()) / len(per_lang), 4)
    base = "fitted" if "fitted" in report["f1"] else None
    # the best setting is the best mean among those no language loses with (over the fitted tagger), if any
    fair = [k for k in report["mean_f1"] if base and all(report["f1"][k][x] >= report["f1"][base][x] for x in langs)]
    best = max(fair or report["mean_f1"], key=report["mean_f1"].get)
    report["best"] = {"setting": best, "mean_f1": report["mean_f1"][best],
                      "breakdown": {lang: breakdowns[best][lang].model_dump(exclude={"per_type"})
                                    | {"table": breakdowns[best][lang].table()} for lang in langs}}
    if base:
        report["best"]["gain_over_fitted"] = round(report["mean_f1"][best] - report["mean_f1"][base], 4)
        report["best"]["no_language_loses"] = all(report["f1"][best][x] >= report["f1"][base][x] for x in langs)
        report["best"]["type_error_share"] = {
            "fitted": {x: breakdowns[base][x].type_error_share for x in langs},
            best: {x: breakdowns[best][x].type_error_share for x in langs}}
        report["best"]["wrong_type_entities"] = {k: {x: breakdowns[k][x].total.wrong_type for x in langs}
                                                 for k in (base, best)}
        report["best"]["errors"] = {k: {x: breakdowns[k][x].total.gold - breakdowns[k][x].total.exact
                                        + breakdowns[k][x].total.spurious for x in langs} for k in (base, best)}
    return report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--taggers", default=",".join(TAGGERS))
    ap.add_argument("--retrain", action="store_true", help="fit the taggers again even if they are cached")
    ap.add_argument("--min-count", type=int, default=TypeVoteConfig().min_count)
    ap.add_argument("--margin", type=float, default=TypeVoteConfig().margin)
    ap.add_argument("--save", type=Path, help="also write the projections to this folder")
    ap.add_argument("--reuse", type=Path, help="read the projections a --save run wrote instead of projecting")
    args = ap.parse_args()
    emit("entity_types", run(args.langs.split(","), args.taggers.split(","), args.retrain,
                             TypeVoteConfig(min_count=args.min_count, margin=args.margin), args.save,
                             args.reuse))


if __name__ == "__main__":
    main()
