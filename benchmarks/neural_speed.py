"""CTranslate2 (int8, float32) against transformers on the same seq2seq model, side by side in one run:
sentences/s and target pieces/s at several batch sizes, es->en over raw/es.txt, through crop's own engines.

    python benchmarks/neural_speed.py                       # a random M2M100 of m2m100_418M's width, built here
    python benchmarks/neural_speed.py --model facebook/m2m100_418M --sentences 200

Without --model it builds a random-weight M2M100 of m2m100_418M's width (d_model 1024, FFN 4096, 16 heads) with
6+6 layers and an 8k sentencepiece vocabulary of the shared corpus (--d-model 512 for transformer-base);
random weights decode to the length limit or stop at random, identically in both engines at float32 (greedy),
so the work compared is the same. On a GPU (when one is visible) it adds transformers fp16 and CTranslate2
float16.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

from common import emit, shared_data

from crop.io import read_text
from crop.translate.convert import convert
from crop.translate.ctranslate2 import CTranslate2Translator
from crop.translate.transformers import TransformersTranslator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def build_random_m2m100(out: Path, d_model: int, layers: int) -> Path:
    import torch
    from tiny_models import corpus
    from tiny_seq2seq import _config, build_tokenizer
    from transformers import M2M100ForConditionalGeneration

    tok = build_tokenizer(out, corpus(shared_data(), per_file=3000), vocab_size=8000)
    config = _config(tok, d_model=d_model, layers=layers)
    config.encoder_attention_heads = config.decoder_attention_heads = d_model // 64
    config.encoder_ffn_dim = config.decoder_ffn_dim = 4 * d_model
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(config)
    path = out / f"m2m100-random-{d_model}x{layers}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def measure(engines: dict[str, object], texts: list[str], repeats: int) -> dict[str, dict[str, float]]:
    """Best of `repeats` passes per engine, the engines taking turns within each pass (so that a noisy moment
    of a shared machine hits them alike)."""
    best = dict.fromkeys(engines, float("inf"))
    pieces = dict.fromkeys(engines, 0)
    for tr in engines.values():
        tr.translate(texts[:4], "es", "en")  # type: ignore[attr-defined]  # warm-up
    for _ in range(repeats):
        for name, tr in engines.items():
            before = tr.generated_pieces  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            tr.translate(texts, "es", "en")  # type: ignore[attr-defined]
            best[name] = min(best[name], time.perf_counter() - t0)
            pieces[name] = tr.generated_pieces - before  # type: ignore[attr-defined]
    return {name: {"seconds": round(best[name], 3), "sentences_per_second": round(len(texts) / best[name], 2),
                   "target_pieces_per_second": round(pieces[name] / best[name], 1), "target_pieces": pieces[name]}
            for name in engines}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="Hugging Face seq2seq model (default: a random transformer-base M2M100)")
    ap.add_argument("--d-model", type=int, default=1024, help="of the random model: 1024 (m2m100_418M), 512 (base)")
    ap.add_argument("--layers", type=int, default=6, help="encoder and decoder layers of the random model")
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--batch-sizes", default="1,4,8")
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import ctranslate2
    import torch

    torch.set_num_threads(args.threads)
    texts = [s.text for s in islice(read_text(shared_data() / "raw" / "es.txt", "es"), args.sentences)]
    gpu = torch.cuda.is_available() and ctranslate2.get_cuda_device_count() > 0
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(build_random_m2m100(Path(tmp), args.d_model, args.layers))
        converted = {q: str(convert(model, Path(tmp) / f"ct2-{q}", q)) for q in ("int8", "float32")}
        if gpu:
            converted["float16"] = str(convert(model, Path(tmp) / "ct2-float16", "float16"))
        engines = {
            "transformers_fp32_cpu": lambda bs: TransformersTranslator(model, device="cpu", beam_size=1,
                                                                       max_batch_size=bs, max_length=args.max_length),
            "ctranslate2_int8_cpu": lambda bs: CTranslate2Translator(converted["int8"], device="cpu",
                                                                     compute_type="int8", intra_threads=args.threads,
                                                                     beam_size=1, max_batch_size=bs,
                                                                     max_length=args.max_length),
            "ctranslate2_float32_cpu": lambda bs: CTranslate2Translator(converted["float32"], device="cpu",
                                                                        compute_type="float32",
                                                                        intra_threads=args.threads, beam_size=1,
                                                                        max_batch_size=bs, max_length=args.max_length),
        }
        if gpu:
            engines["transformers_fp16_cuda"] = lambda bs: TransformersTranslator(
                model, device="cuda", dtype="fp16", beam_size=1, max_batch_size=bs, max_length=args.max_length)
            engines["ctranslate2_float16_cuda"] = lambda bs: CTranslate2Translator(
                converted["float16"], device="cuda", compute_type="float16", beam_size=1, max_batch_size=bs,
                max_length=args.max_length)
        results: dict[str, dict[str, dict[str, float]]] = {}
        for bs in (int(b) for b in args.batch_sizes.split(",")):
            measured = measure({name: make(bs) for name, make in engines.items()}, texts, args.repeats)
            for name, result in measured.items():
                results.setdefault(name, {})[str(bs)] = result
                print(name, bs, result, file=sys.stderr, flush=True)
    base = results["transformers_fp32_cpu"]
    speedup = {name: {bs: round(r["target_pieces_per_second"] / base[bs]["target_pieces_per_second"], 2)
                      for bs, r in by_bs.items()}
               for name, by_bs in results.items() if name.endswith("_cpu") and name != "transformers_fp32_cpu"}
    emit("neural_speed", {
        "model": args.model or f"random M2M100, d_model {args.d_model}, {args.layers}+{args.layers} layers, 8k vocab",
        "sentences": len(texts), "max_length": args.max_length, "threads": args.threads, "greedy": True,
        "gpu": gpu, "results": results, "speedup_vs_transformers_cpu_pieces_per_second": speedup,
    })


if __name__ == "__main__":
    main()
