"""Quality on the parallel dev sets (seqeval entity-level P/R/F1), all systems in one run:

- projection alone: gold English labels, Apertium labeled back-translation, then
  crop's cascade | exact matching only (the marked span, lowercased, as a raw token sequence) |
  crop's `exact` method alone (exact after trimming edge articles) | EasyProject-style fuzzy matching
- end to end: Apertium forward translation, spaCy English NER, labeled back-translation, then the same matchers
- direct: the English spaCy model run on the target text (no translation)

    python benchmarks/quality.py [--langs es,ca,gl] [--ablation]
"""

from __future__ import annotations

import argparse

from baselines import direct_spacy, easyproject_fuzzy, exact_lowercase
from common import LANGS, emit, translate_dev

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
    args = ap.parse_args()
    translator, tagger = ApertiumTranslator(), SpacyTagger()
    report: dict = {"metric": "seqeval entity-level (conlleval)", "translator": "apertium",
                    "tagger": "spacy en_core_web_sm", "languages": {}}
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
        res["direct_spacy"] = score(tr.sentences, direct_spacy(tagger.nlp, [s.tokens for s in tr.sentences]))
        pa, e2e = res["projection_alone"], res["end_to_end"]
        res["checks"] = {
            "projection_alone_f1>=0.92": pa["crop"]["f1"] >= 0.92,
            "projection_alone_above_exact_and_fuzzy": pa["crop"]["f1"] > max(pa["exact_only"]["f1"],
                                                                             pa["easyproject_fuzzy"]["f1"]),
            "end_to_end_gain_over_exact>=0.08": round(e2e["crop"]["f1"] - e2e["exact_only"]["f1"], 4) >= 0.08,
        }
        report["languages"][lang] = res
    emit("quality", report)


if __name__ == "__main__":
    main()
