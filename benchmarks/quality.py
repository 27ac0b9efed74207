"""Quality on the parallel dev sets (seqeval entity-level P/R/F1), all systems in one run:

- projection alone: gold English labels, Apertium labeled back-translation, then
  crop's cascade | exact matching only (the marked span, lowercased, as a raw token sequence) |
  crop's `exact` method alone (exact after trimming edge articles) | EasyProject-style fuzzy matching
- end to end: Apertium forward translation, spaCy English NER, labeled back-translation, then the same matchers
- end to end again with an English tagger fitted to en/train.jsonl (the paper's setting: the source tagger is
  trained on the source-language labels), cached in benchmarks/results/models/en-conll
- direct: the English spaCy model run on the target text (no translation)

    python benchmarks/quality.py [--langs es,ca,gl] [--ablation]
"""

from __future__ import annotations

import argparse

from baselines import direct_spacy, easyproject_fuzzy, exact_lowercase
from common import LANGS, emit, english_tagger, translate_dev

from crop.project import ALL_METHODS, Projector, ProjectorConfig
from crop.tag.spacy import SpacyTagger
from crop.train.evaluate import evaluate
from crop.translate.apertium import ApertiumTranslator


def score(sents, tags_list) -> dict:
    gold = {s.id: (s.tokens, s.tags) for s in sents}
    pred = {s.id: (s.tokens, t) for s, t in zip(sents, tags_list, strict=True)}
    r = evaluate(gold, pred)
    return {"precision": round(r.precision, 4), "recall": round(r.recall, 4), "f1": round(r.f1, 4)}


def run_projector(tr, mode: str, methods) -> dict:
    proj = Projector(ProjectorConfig(methods=tuple(methods)))
    results = proj.project_many(tr.requests(mode))
    out = score(tr.sentences, [r.tags for r in results])
    out["kept"] = round(sum(r.status == "kept" for r in results) / len(results), 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--langs", default=",".join(LANGS))
    ap.add_argument("--ablation", action="store_true", help="also each method added to exact alone")
    ap.add_argument("--no-trained-tagger", action="store_true",
                    help="skip the end-to-end run with a tagger fitted to en/train.jsonl")
    ap.add_argument("--retrain", action="store_true", help="fit that tagger again even if it is cached")
    ap.add_argument("--types", action="store_true", help="also entity types (issue 15, entity_types.py): stock, "
                    "fitted and round-trip taggers, each with and without --type-vote, over raw text + dev")
    args = ap.parse_args()
    translator, tagger = ApertiumTranslator(), SpacyTagger()
    report: dict = {"metric": "seqeval entity-level (conlleval)", "translator": "apertium",
                    "tagger": "spacy en_core_web_sm", "languages": {}}
    trained = None
    if not args.no_trained_tagger:
        model, fit = english_tagger(retrain=args.retrain)
        if fit is not None:
            report["trained_tagger"] = fit
        trained = SpacyTagger(str(model))
    for lang in args.langs.split(","):
        tr = translate_dev(translator, tagger, lang)
        res: dict = {"sentences": len(tr.sentences), "translation_seconds": {k: round(v, 3)
                                                                             for k, v in tr.seconds.items()}}
        for mode in ("gold", "e2e"):
            key = "projection_alone" if mode == "gold" else "end_to_end"
            back = tr.gold_back if mode == "gold" else tr.e2e_back
            res[key] = {
                "crop": run_projector(tr, mode, ALL_METHODS),
                "exact_only": score(tr.sentences, [exact_lowercase(s.tokens, b, lang)
                                                   for s, b in zip(tr.sentences, back, strict=True)]),
                "crop_exact_method_only": run_projector(tr, mode, ("exact",)),
                "easyproject_fuzzy": score(tr.sentences, [easyproject_fuzzy(s.tokens, b, lang)
                                                          for s, b in zip(tr.sentences, back, strict=True)]),
            }
            if args.ablation:
                res[key]["ablation"] = {
                    f"exact+{m}": run_projector(tr, mode, ("exact", m))["f1"] for m in ALL_METHODS if m != "exact"
                } | {f"all-{m}": run_projector(tr, mode, tuple(x for x in ALL_METHODS if x != m))["f1"]
                     for m in ALL_METHODS}
        if trained is not None:
            tt = translate_dev(translator, trained, lang)
            back = tt.e2e_back
            res["end_to_end_trained_tagger"] = {
                "crop": run_projector(tt, "e2e", ALL_METHODS),
                "exact_only": score(tt.sentences, [exact_lowercase(s.tokens, b, lang)
                                                   for s, b in zip(tt.sentences, back, strict=True)]),
                "crop_exact_method_only": run_projector(tt, "e2e", ("exact",)),
            }
        res["direct_spacy"] = score(tr.sentences, direct_spacy(tagger.nlp, [s.tokens for s in tr.sentences]))
        pa = res["projection_alone"]
        gains = {key: round(res[key]["crop"]["f1"] - res[key]["exact_only"]["f1"], 4)
                 for key in ("end_to_end", "end_to_end_trained_tagger") if key in res}
        res["checks"] = {
            "end_to_end_gain_over_exact": gains,
            "projection_alone_f1>=0.92": pa["crop"]["f1"] >= 0.92,
            "projection_alone_above_exact_and_fuzzy": pa["crop"]["f1"] > max(pa["exact_only"]["f1"],
                                                                             pa["easyproject_fuzzy"]["f1"]),
            "end_to_end_gain_over_exact>=0.08": gains["end_to_end"] >= 0.08,
        }
        report["languages"][lang] = res
    if args.types:
        from entity_types import TAGGERS
        from entity_types import run as run_types

        report["entity_types"] = run_types(args.langs.split(","), list(TAGGERS), retrain=args.retrain)
    emit("quality", report)


if __name__ == "__main__":
    main()
