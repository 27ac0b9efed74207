"""The tagger service under load: throughput and p50/p99 latency at 1, 8 and 32 concurrent clients (one sentence
per request), with batching on (and off with --batching on,off: max_batch_size 1, one request per engine call),
the same engines in-process (no HTTP), and in mode crop `crop project` on --project-lines lines of raw Spanish;
each for both Apertium engines (the one-shot process pipeline per batch, CROP_APERTIUM_PERSISTENT=0, and the
persistent null-flush pipelines), all in one run on the same sentences, so that their ratios can be read side by
side on a shared, noisy machine.

    python benchmarks/service_speed.py [--mode crop|model] [--requests 96] [--clients 1,8,32]
        [--engines oneshot,persistent] [--batching on] [--project-lines 1000]
    python benchmarks/service_speed.py --mode student --student FOLDER [--requests 480] [--batching on,off]
        (the self-trained student on raw Spanish: no translator in the path, so one engine row)

The service runs as `crop serve tagger` in its own process (Apertium + spaCy by default); the clients are asyncio
tasks of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from itertools import islice
from pathlib import Path

import httpx
from common import emit, serve_tagger, shared_data

from crop.io import read_text, sentence_from_record

ENGINES = {"oneshot": "0", "persistent": "1"}  # CROP_APERTIUM_PERSISTENT


def start_tagger(batching: bool, max_wait_ms: float, engine: str = "persistent",
                 student: Path | None = None) -> tuple[subprocess.Popen, str]:
    env = {"CROP_TAGGER_MAX_BATCH_SIZE": "64" if batching else "1", "CROP_TAGGER_MAX_WAIT_MS": str(max_wait_ms),
           "CROP_TAGGER_MAX_QUEUE": "100000", "CROP_LOG_LEVEL": "WARNING", "CROP_APERTIUM_PERSISTENT": ENGINES[engine]}
    if student is not None:
        env.update({"CROP_TAGGER_STUDENT": str(student), "CROP_TAGGER_STUDENT_POLL": "0"})
    return serve_tagger(env, timeout=120)


async def load(url: str, sentences: list[str], clients: int, lang: str, mode: str) -> dict[str, float]:
    """`clients` tasks send the sentences one request each (round robin) until all are done."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for s in sentences:
        queue.put_nowait(s)
    latencies: list[float] = []
    errors = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal errors
        while not queue.empty():
            text = queue.get_nowait()
            t0 = time.perf_counter()
            r = await http.post(url + "/v1/tag", json={"text": text, "lang": lang, "mode": mode})
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await http.post(url + "/v1/tag", json={"text": sentences[0], "lang": lang, "mode": mode})  # warm-up
        t0 = time.perf_counter()
        await asyncio.gather(*[client(http) for _ in range(clients)])
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "requests_per_second": round(len(latencies) / wall, 2), "p50_ms": round(q[49] * 1000, 1),
            "p99_ms": round(q[98] * 1000, 1)}


def in_process(sentences: list[str], lang: str, mode: str, engine: str = "persistent",
               student: Path | None = None) -> dict[str, float]:
    """The same engines without HTTP: one call per sentence, and one call for all."""
    from crop.pipeline import CropPipeline
    from crop.project import Projector, ProjectorConfig
    from crop.tag import load_tagger
    from crop.translate import load_translator

    if mode == "student":
        from crop.tag.student import StudentTagger

        tagger_of_student = StudentTagger(student)  # type: ignore[arg-type]
        tagger_of_student.tag(sentences[:1], lang)
        t0 = time.perf_counter()
        for s in sentences:
            tagger_of_student.tag([s], lang)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(0, len(sentences), 64):
            tagger_of_student.tag(sentences[i:i + 64], lang)
        batched = time.perf_counter() - t0
        return {"one_per_call_sentences_per_second": round(len(sentences) / one, 2),
                "batched_64_sentences_per_second": round(len(sentences) / batched, 2)}

    tagger = load_tagger("spacy")
    translator = load_translator("apertium", persistent=ENGINES[engine] == "1")
    pipe = CropPipeline(translator, tagger, Projector(ProjectorConfig(
        policy="partial", drop_all_o=False, langid=False, max_tokens=10**6)))
    records = [sentence_from_record({"id": str(i), "text": s}, lang) for i, s in enumerate(sentences)]

    def run(batch: list) -> None:
        if mode == "model":
            tagger.tag([s.text for s in batch], lang)
        else:
            pipe.project_batch(batch)

    run(records[:1])
    t0 = time.perf_counter()
    for r in records:
        run([r])
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(records), 64):
        run(records[i:i + 64])
    batched = time.perf_counter() - t0
    translator.close()
    return {"one_per_call_sentences_per_second": round(len(records) / one, 2),
            "batched_64_sentences_per_second": round(len(records) / batched, 2)}


def project_cli(lines: int, engine: str) -> dict[str, float]:
    """`crop project` (a fresh process, as a user runs it) on the first `lines` lines of raw Spanish."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="crop-bench-") as tmp:
        source = Path(tmp) / "es.txt"
        with open(shared_data() / "raw" / "es.txt", encoding="utf-8") as f:
            source.write_text("".join(islice(f, lines)), encoding="utf-8")
        env = {**os.environ, "CROP_APERTIUM_PERSISTENT": ENGINES[engine], "CROP_LOG_LEVEL": "WARNING"}
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from crop.cli import main; main()", "project", "--src-lang", "es",
                        "--input", str(source), "--output", str(Path(tmp) / "out.jsonl")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
    return {"lines": lines, "seconds": round(seconds, 2), "sentences_per_second": round(lines / seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="crop", choices=["crop", "model", "student"])
    ap.add_argument("--student", type=Path, default=None, help="mode student: the student's folder or registry")
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-wait-ms", type=float, default=0.0, help="the batching service's wait for more items")
    ap.add_argument("--engines", default="oneshot,persistent", help="Apertium engines to compare")
    ap.add_argument("--batching", default="on", help="on, off or on,off")
    ap.add_argument("--project-lines", type=int, default=1000, help="crop project on this many lines (0: skip)")
    args = ap.parse_args()
    if args.mode == "student" and args.student is None:
        ap.error("--mode student needs --student FOLDER")
    # mode student translates nothing: Apertium's engine makes no difference to it
    engines = ["persistent"] if args.mode == "student" else [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        ap.error(f"unknown engines {sorted(unknown)}; choose from {sorted(ENGINES)}")
    lang = "en" if args.mode == "model" else "es"
    source = shared_data() / "raw" / "es.txt"
    sentences = [s.text for s in islice(read_text(source, "es"), args.requests)]
    if args.mode == "model":  # the tagger's own model tags English: the English side of the training data
        import json

        with open(shared_data() / "en" / "train.jsonl", encoding="utf-8") as f:
            sentences = [" ".join(json.loads(line)["tokens"]) for line in islice(f, args.requests)]
    engines_used = f"student {args.student}" if args.mode == "student" else "apertium + spacy en_core_web_sm"
    report: dict = {"mode": args.mode, "cores": os.cpu_count(), "engines": engines_used,
                    "max_wait_ms": args.max_wait_ms, "requests": len(sentences), "apertium": {}}
    modes = {"on": True, "off": False}
    for engine in engines:
        out: dict = report["apertium"].setdefault(engine, {"service": {}})
        for batching in (modes[b] for b in args.batching.split(",")):
            proc, url = start_tagger(batching, args.max_wait_ms, engine, args.student)
            try:
                for clients in (int(c) for c in args.clients.split(",")):
                    result = asyncio.run(load(url, sentences, clients, lang, args.mode))
                    out["service"].setdefault("batching" if batching else "one_request_per_batch", {})[
                        str(clients)] = result
                    print(engine, "batching" if batching else "no batching", clients, result, file=sys.stderr,
                          flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
        out["in_process"] = in_process(sentences, lang, args.mode, engine, args.student)
        if args.mode == "crop" and args.project_lines:
            out["crop_project"] = project_cli(args.project_lines, engine)
            print(engine, "crop project", out["crop_project"], file=sys.stderr, flush=True)
        svc = out["service"]
        if "batching" in svc and "one_request_per_batch" in svc:
            out["batching_speedup"] = {c: round(svc["batching"][c]["requests_per_second"]
                                                / svc["one_request_per_batch"][c]["requests_per_second"], 2)
                                       for c in svc["batching"]}
    if {"oneshot", "persistent"} <= set(engines):
        old, new = report["apertium"]["oneshot"], report["apertium"]["persistent"]
        ratios: dict = {}
        for key, per_clients in new["service"].items():
            ratios[key] = {c: {"requests_per_second": round(r["requests_per_second"]
                                                            / old["service"][key][c]["requests_per_second"], 2),
                               "p50_speedup": round(old["service"][key][c]["p50_ms"] / r["p50_ms"], 2)}
                           for c, r in per_clients.items()}
        if "crop_project" in new:
            ratios["crop_project_sentences_per_second"] = round(
                new["crop_project"]["sentences_per_second"] / old["crop_project"]["sentences_per_second"], 2)
        report["persistent_over_oneshot"] = ratios
    emit(f"service_speed_{args.mode}", report)


if __name__ == "__main__":
    main()
