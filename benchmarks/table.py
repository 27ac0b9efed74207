"""Render benchmarks/results/{quality,throughput}.json as the Markdown tables of the README."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def quality_table(q: dict) -> str:
    rows = ["| lang | setting | crop | exact (lowercase) | crop `exact` alone | EasyProject fuzzy | direct spaCy "
            "| kept (crop) |", "|---|---|---|---|---|---|---|---|"]
    for lang, r in q["languages"].items():
        for key, name in (("projection_alone", "projection alone (gold English)"),
                          ("end_to_end", "end to end, spaCy en_core_web_sm"),
                          ("end_to_end_trained_tagger", "end to end, spaCy fitted to en/train")):
            if key not in r:
                continue
            s = r[key]
            fuzzy = f"{s['easyproject_fuzzy']['f1']:.3f}" if "easyproject_fuzzy" in s else "–"
            direct = f"{r['direct_spacy']['f1']:.3f}" if key == "end_to_end" else "–"
            rows.append(f"| {lang} | {name} | **{s['crop']['f1']:.3f}** | {s['exact_only']['f1']:.3f} | "
                        f"{s['crop_exact_method_only']['f1']:.3f} | {fuzzy} | {direct} | {s['crop']['kept']:.2f} |")
    return "\n".join(rows)


def ablation_table(q: dict) -> str:
    """Projection-alone F1 of `exact` plus one method, and of the cascade without one method."""
    langs = [lang for lang, r in q["languages"].items() if "ablation" in r["projection_alone"]]
    if not langs:
        return ""
    keys = list(q["languages"][langs[0]]["projection_alone"]["ablation"])
    rows = ["| projection alone | " + " | ".join(langs) + " |", "|---|" + "---|" * len(langs)]
    for k in keys:
        rows.append(f"| {k} | " + " | ".join(f"{q['languages'][lang]['projection_alone']['ablation'][k]:.3f}"
                                             for lang in langs) + " |")
    return "\n".join(rows)


def _rate(r: dict) -> str:
    return f"{r['median']:,} warm (best {r['best']:,}); {r['cold_median']:,} with empty caches"


def throughput_table(t: dict) -> str:
    p = t["projector"]["sentences_per_second"]
    pipe = t["pipeline_es"]
    build = ", compiled build" if t.get("compiled") else ", plain Python"
    stages = ", ".join(f"{k} {v:.0%}" for k, v in pipe["share_per_stage"].items())
    return "\n".join([
        "| what | sentences/s |", "|---|---|",
        f"| projector, all methods + filters, 1 core (dev data, translations given){build} "
        f"| {_rate(p['crop_all_methods'])} |",
        f"| projector, exact matching only + filters, 1 core | {_rate(p['exact_only'])} |",
        f"| whole pipeline on raw/es.txt ({pipe['sentences']} sentences; {stages}) "
        f"| {pipe['sentences_per_second']} |",
    ])


if __name__ == "__main__":
    quality = json.loads((RESULTS / "quality.json").read_text())
    print(quality_table(quality))
    print()
    print(ablation_table(quality))
    print()
    print(throughput_table(json.loads((RESULTS / "throughput.json").read_text())))
