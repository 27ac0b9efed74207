"""The tagger service under load: throughput and p50/p99 latency at 1, 8 and 32 concurrent clients (one sentence
per request), with batching on and off (max_batch_size 1: one request per engine call), and the same engines
in-process (no HTTP), all in one run on the same sentences.

    python benchmarks/service_speed.py [--mode crop|model] [--requests 96] [--clients 1,8,32]

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
from common import emit, shared_data

from crop.io import read_text, sentence_from_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from servers import free_port  # noqa: E402


def start_tagger(batching: bool, max_wait_ms: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "CROP_TAGGER_MAX_BATCH_SIZE": "64" if batching else "1",
           "CROP_TAGGER_MAX_WAIT_MS": str(max_wait_ms), "CROP_TAGGER_MAX_QUEUE": "100000", "CROP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-c", "from crop.cli import main; main()", "serve", "tagger",
                             "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the tagger service did not start")
        time.sleep(0.2)


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


def in_process(sentences: list[str], lang: str, mode: str) -> dict[str, float]:
    """The same engines without HTTP: one call per sentence, and one call for all."""
    from crop.pipeline import CropPipeline
    from crop.project import Projector, ProjectorConfig
    from crop.tag import load_tagger
    from crop.translate import load_translator

    tagger = load_tagger("spacy")
    pipe = CropPipeline(load_translator("apertium"), tagger, Projector(ProjectorConfig(
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
    return {"one_per_call_sentences_per_second": round(len(records) / one, 2),
            "batched_64_sentences_per_second": round(len(records) / batched, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", default="crop", choices=["crop", "model"])
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--max-wait-ms", type=float, default=0.0, help="the batching service's wait for more items")
    args = ap.parse_args()
    lang = "es" if args.mode == "crop" else "en"
    source = shared_data() / "raw" / "es.txt"
    sentences = [s.text for s in islice(read_text(source, "es"), args.requests)]
    if args.mode == "model":  # the tagger's own model tags English: the English side of the training data
        import json

        with open(shared_data() / "en" / "train.jsonl", encoding="utf-8") as f:
            sentences = [" ".join(json.loads(line)["tokens"]) for line in islice(f, args.requests)]
    report: dict = {"mode": args.mode, "engines": "apertium + spacy en_core_web_sm", "cores": os.cpu_count(),
                    "max_wait_ms": args.max_wait_ms,
                    "requests": len(sentences), "service": {}}
    for batching in (True, False):
        proc, url = start_tagger(batching, args.max_wait_ms)
        try:
            for clients in (int(c) for c in args.clients.split(",")):
                result = asyncio.run(load(url, sentences, clients, lang, args.mode))
                report["service"].setdefault("batching" if batching else "one_request_per_batch", {})[
                    str(clients)] = result
                print("batching" if batching else "no batching", clients, result, file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    report["in_process"] = in_process(sentences, lang, args.mode)
    on, off = report["service"]["batching"], report["service"]["one_request_per_batch"]
    report["batching_speedup"] = {c: round(on[c]["requests_per_second"] / off[c]["requests_per_second"], 2)
                                  for c in on}
    emit(f"service_speed_{args.mode}", report)


if __name__ == "__main__":
    main()
