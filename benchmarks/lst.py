"""Labeled sequence translation, measured: alignment statistics of `crop lst prepare`, marker accuracy (the CROP
paper's Table 6) before and after fine-tuning, and fine-tuning speed (tokens/s, GPU memory when there is a GPU).

    python benchmarks/lst.py                 # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/lst.py --steps 500 --skip-dev-finetune --speed-steps 10

1. Alignment: `prepare` on the parallel dev sets (English -> es/ca/gl, eflomal on 60-100 pairs only) and on a
   synthetic corpus; plus the share of gold entity pairs that are consistent phrase pairs of the symmetrized
   alignment (what the slots of LST data can cover).
2. Markers on the synthetic corpus: a tiny M2M100 trained to translate it (no slot tokens) against the same model
   after LST fine-tuning on eflomal slot data, on held-out names (the entities of the toy world) and on aligned
   phrases; the learning curve comes from the trainer's checkpoint evaluations. Apertium on the dev sets is the
   reference row of a real engine.
3. Markers on the dev data: a tiny M2M100 trained to copy the shared raw text, fine-tuned on slot data made from
   the es and ca dev sets, measured on the gl dev entities (a language it was not fine-tuned on).
4. Speed: optimizer steps of the trainer at two widths on CPU, and at m2m100_418M's width on a GPU when visible.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import LANGS, emit, shared_data

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from tiny_lst import (  # noqa: E402
    build_base_m2m100,
    entity_records,
    synthetic_corpus,
    write_jsonl,
    write_parallel,
)

from crop.io import iter_jsonl  # noqa: E402
from crop.text import char_to_token_span, detokenize, tokenize  # noqa: E402
from crop.train.lst.alignment import parse_pharaoh  # noqa: E402
from crop.train.lst.finetune import LstTrainConfig, train_lst  # noqa: E402
from crop.train.lst.marker_eval import MarkerEvalReport, evaluate, read_items  # noqa: E402
from crop.train.lst.phrases import extract_phrase_pairs  # noqa: E402
from crop.train.lst.prepare import PrepareConfig, prepare  # noqa: E402
from crop.translate import load_translator  # noqa: E402
from crop.translate.convert import convert  # noqa: E402


def _rows(report: MarkerEvalReport) -> list[dict[str, Any]]:
    return [{"engine": r.engine, "pair": f"{r.src_lang}-{r.tgt_lang}", "phrases": r.phrases,
             "kept": r.kept_share, "exact": r.exact_share, "match": r.match_share,
             "sentences_all_kept": r.all_kept_share, "sentences_all_match": r.all_match_share,
             "spurious": r.spurious, "bleu_labeled": round(r.bleu_labeled, 2), "bleu_plain": round(r.bleu_plain, 2)}
            for r in report.engines]


def entity_alignment_recall(gold: Path, prepared: Path, alignments: Path, lang: str) -> dict[str, Any]:
    """Share of gold entity pairs (English span, target span) that are consistent phrase pairs of the alignment
    `prepare` computed, with tight and with extended phrases."""
    records = [rec for _, rec in iter_jsonl(gold)]
    out_by_id = {rec["id"]: rec for _, rec in iter_jsonl(prepared)}
    lines = alignments.read_text(encoding="utf-8").split("\n")
    found = {"tight": 0, "extended": 0}
    total = unmapped = 0
    for k, rec in enumerate(records):
        out = out_by_id.get(rec["id"])
        if out is None:
            continue
        en_text, en_off = detokenize(rec["en_tokens"], "en")
        tgt_text, tgt_off = detokenize(rec["tokens"], lang)
        if " ".join(en_text.split()) != out["src"] or " ".join(tgt_text.split()) != out["tgt"]:
            unmapped += len(rec["entities"])
            continue
        src_tok, src_pos = tokenize(out["src"], "en")
        tgt_tok, tgt_pos = tokenize(out["tgt"], lang)
        points = parse_pharaoh(lines[k])
        phrases = {kind: {tuple(p) for p in extract_phrase_pairs(src_tok, tgt_tok, points, max_len=8,
                                                                  tight=kind == "tight")}
                   for kind in found}
        for ent in rec["entities"]:
            total += 1
            s = char_to_token_span(src_pos, en_off[ent["en"][0]][0], en_off[ent["en"][1] - 1][1])
            t = char_to_token_span(tgt_pos, tgt_off[ent["tgt"][0]][0], tgt_off[ent["tgt"][1] - 1][1])
            if s is None or t is None:
                unmapped += 1
                continue
            for kind in found:
                found[kind] += (s[0], s[1], t[0], t[1]) in phrases[kind]
    return {"entities": total, "unmapped": unmapped,
            **{f"recall_{kind}": round(n / total, 4) if total else None for kind, n in found.items()}}


def alignment_section(work: Path, synthetic_pairs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lang in LANGS:
        gold = shared_data() / "dev" / f"{lang}.dev.jsonl"
        stats = prepare(PrepareConfig("en", lang, seed=0), work / f"dev-{lang}.jsonl", input=gold,
                        alignments_out=work / f"dev-{lang}.align")
        out[f"dev-{lang}"] = {"stats": stats.model_dump(),
                              "entity_pairs": entity_alignment_recall(gold, work / f"dev-{lang}.jsonl",
                                                                      work / f"dev-{lang}.align", lang)}
    src, tgt = write_parallel(synthetic_corpus(synthetic_pairs, seed=21), work / "syn-align")
    t0 = time.perf_counter()
    stats = prepare(PrepareConfig("en", "es", seed=0), work / "syn-align.jsonl", src=src, tgt=tgt)
    out["synthetic"] = {"stats": stats.model_dump(), "seconds": round(time.perf_counter() - t0, 2),
                        "pairs_per_second": round(synthetic_pairs / (time.perf_counter() - t0), 1)}
    return out


def synthetic_markers(work: Path, steps: int, train_pairs: int) -> dict[str, Any]:
    base = build_base_m2m100(work / "base")
    src, tgt = write_parallel(synthetic_corpus(train_pairs, seed=11), work / "train")
    prepare(PrepareConfig("en", "es", seed=0), work / "lst.jsonl", src=src, tgt=tgt)
    names = write_jsonl(entity_records([p for p in synthetic_corpus(600, seed=13) if p.names][:300]),
                        work / "names.jsonl")
    held_src, held_tgt = write_parallel(synthetic_corpus(300, seed=12), work / "held")
    prepare(PrepareConfig("en", "es", seed=1), work / "phrases.jsonl", src=held_src, tgt=held_tgt)
    items = {"names": list(read_items(names)), "phrases": list(read_items(work / "phrases.jsonl"))}
    before = {"base, slot markers": load_translator(f"transformers:{base}", markers="slot", beam_size=1),
              "base, bracket markers": load_translator(f"transformers:{base}", markers="bracket", beam_size=1)}
    out_dir = work / "lst-model"
    summary = train_lst(LstTrainConfig(
        model=str(base), data=[str(work / "lst.jsonl")], output=str(out_dir), max_steps=steps, batch_size=32,
        lr=1e-3, warmup_steps=max(1, steps // 10), alpha=0.5, device="cpu", save_every=max(1, steps // 8),
        log_every=max(1, steps // 8), eval_data=str(names), eval_limit=200, resume=False))
    ct2 = convert(str(out_dir), work / "lst-ct2", "int8", force=True)
    after = {"LST (transformers)": load_translator(f"transformers:{out_dir}", beam_size=1),
             "LST (CTranslate2 int8)": load_translator(f"ctranslate2:{ct2}", beam_size=1)}
    return {
        "steps": steps, "train_pairs": train_pairs, "train_seconds": summary.seconds,
        "learning_curve_names": [{"step": h["step"], **h["eval"]["en-es"]} for h in summary.history if "eval" in h],
        "final_loss": summary.final_loss,
        **{k: _rows(evaluate({**before, **after}, v, examples=0)) for k, v in items.items()},
    }


def apertium_reference() -> dict[str, Any]:
    tr = load_translator("apertium")
    return {lang: _rows(evaluate({"apertium": tr}, list(read_items(shared_data() / "dev" / f"{lang}.dev.jsonl")),
                                 examples=0))[0] for lang in LANGS}


def dev_markers(work: Path, base_steps: int, steps: int) -> dict[str, Any]:
    """A tiny copy model of the shared raw text, fine-tuned on es+ca dev slot data, measured on gl dev."""
    import torch
    from tiny_models import corpus
    from tiny_seq2seq import _config, build_tokenizer
    from transformers import M2M100ForConditionalGeneration

    tok = build_tokenizer(work / "dev-spm", corpus(shared_data()), vocab_size=1000, slots=False)
    torch.manual_seed(0)
    init = work / "dev-init"
    M2M100ForConditionalGeneration(_config(tok, d_model=64)).save_pretrained(init)
    tok.save_pretrained(init)
    rng = random.Random(0)
    raw = [line.strip() for lang in LANGS for line in (shared_data() / "raw" / f"{lang}.txt").open(encoding="utf-8")
           if line.strip()]
    copy = write_jsonl([{"src_lang": "en", "tgt_lang": rng.choice(LANGS), "src": s, "tgt": s, "src_marked": s,
                         "tgt_marked": s, "phrases": []} for s in raw], work / "copy.jsonl")
    base = work / "dev-base"
    train_lst(LstTrainConfig(model=str(init), data=[str(copy)], output=str(base), max_steps=base_steps,
                             batch_size=32, lr=3e-3, warmup_steps=50, schedule="linear", alpha=0.0,
                             label_smoothing=0.0, device="cpu", save_every=10**9, slots=16, directions="forward",
                             resume=False))
    data = []
    for lang in ("es", "ca"):
        prepare(PrepareConfig("en", lang, seed=0), work / f"dev-train-{lang}.jsonl",
                input=shared_data() / "dev" / f"{lang}.dev.jsonl")
        data.append(str(work / f"dev-train-{lang}.jsonl"))
    gl = list(read_items(shared_data() / "dev" / "gl.dev.jsonl"))
    before = evaluate({"copy base, slot markers": load_translator(f"transformers:{base}", markers="slot",
                                                                  beam_size=1)}, gl, examples=0)
    lst = work / "dev-lst"
    train_lst(LstTrainConfig(model=str(base), data=data, output=str(lst), max_steps=steps, batch_size=16,
                             lr=1e-3, warmup_steps=30, alpha=0.5, device="cpu", save_every=10**9, resume=False))
    after = evaluate({"after LST on es+ca dev": load_translator(f"transformers:{lst}", beam_size=1)}, gl, examples=0)
    return {"base_steps": base_steps, "steps": steps, "gl": _rows(before) + _rows(after)}


def speed(work: Path, steps: int) -> dict[str, Any]:
    import torch
    from neural_speed import build_random_m2m100
    from transformers import AutoModelForSeq2SeqLM

    pairs = synthetic_corpus(20_000, seed=31)
    src, tgt = write_parallel(pairs, work / "speed")
    prepare(PrepareConfig("en", "es", seed=0), work / "speed.jsonl", src=src, tgt=tgt)
    setups = [("cpu", 64, 2), ("cpu", 512, 6)]
    if torch.cuda.is_available():
        setups += [("cuda", 1024, 12)]
    out = []
    for device, d_model, layers in setups:
        init = build_random_m2m100(work / f"speed-{d_model}", d_model, layers)
        n = steps if device == "cpu" else steps * 10
        s = train_lst(LstTrainConfig(model=str(init), data=[str(work / "speed.jsonl")], output=str(init) + "-lst",
                                     max_steps=n, batch_size=32 if device == "cpu" else 128, warmup_steps=1,
                                     device=device, save_every=10**9, log_every=max(1, n // 4), resume=False))
        steady = [h["tokens_per_second"] for h in s.history if "tokens_per_second" in h][1:]
        params = AutoModelForSeq2SeqLM.from_pretrained(init).num_parameters()
        out.append({"device": s.device, "d_model": d_model, "layers": f"{layers}+{layers}",
                    "parameters_m": round(params / 1e6, 1), "steps": n,
                    "target_tokens_per_second": s.tokens_per_second,
                    "target_tokens_per_second_steady": round(sum(steady) / len(steady), 1) if steady else None,
                    "peak_memory_mb": s.peak_memory_mb})
    return {"results": out, "gpu": torch.cuda.is_available()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000, help="LST fine-tuning steps on the synthetic corpus")
    ap.add_argument("--train-pairs", type=int, default=5000)
    ap.add_argument("--synthetic-align-pairs", type=int, default=20_000)
    ap.add_argument("--skip-dev-finetune", action="store_true")
    ap.add_argument("--speed-steps", type=int, default=30)
    args = ap.parse_args()
    torch_threads()
    with tempfile.TemporaryDirectory(prefix="crop-lst-bench-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"alignment": alignment_section(work, args.synthetic_align_pairs)}
        result["markers_synthetic"] = synthetic_markers(work, args.steps, args.train_pairs)
        result["markers_apertium_dev"] = apertium_reference()
        if not args.skip_dev_finetune:
            result["markers_dev_finetune"] = dev_markers(work, base_steps=800, steps=300)
        result["speed"] = speed(work, args.speed_steps)
    emit("lst", result)


def torch_threads() -> None:
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("CROP_BENCH_THREADS", os.cpu_count() or 1)))


if __name__ == "__main__":
    main()
