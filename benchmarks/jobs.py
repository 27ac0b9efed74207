"""Bulk jobs end to end: every line of ../shared/data/raw/{es,ca,gl}.txt as one mixed-language JSONL job (records
with `lang`) on the offline engines (Apertium + spaCy), with 1 and 2 `crop worker` processes, against the
in-process `crop project` on the same input, measured in the same run.

    python benchmarks/jobs.py [--workers 1,2] [--limit N] [--batch-lines 256]

A Redis server of its own (redis-server on a free port) and a temporary storage folder; the workers are started
and their engines loaded before the clock starts (a deployment's workers are running when a job comes). A job's
rate is its sentences over the time from submit (input stored, planned, created, queued) to the job's end (its
last batch recorded). `crop project`'s rate is the input's sentences over the wall time of the command (engine
loading included: what a user of the command waits); its pipeline-only rate (the engines' time, from --stats) is
given too. The job's results are checked equal to crop project's output, line by line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import LANGS, emit, shared_data

from crop.jobs.dispatch import start_job
from crop.jobs.lines import plan_batches, sniff_key
from crop.jobs.state import JobState, JobStore, new_job_id
from crop.jobs.tasks import batch_key, input_key
from crop.storage import Storage

CROP = str(Path(sys.executable).with_name("crop"))
NAME = "mixed.jsonl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(predicate, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return value


def mixed_input(limit: int | None) -> bytes:
    """Every non-blank line of the raw files, one JSON record each, language by language."""
    records = []
    for lang in LANGS:
        lines = [line for line in (shared_data() / "raw" / f"{lang}.txt").read_text().splitlines() if line.strip()]
        records += [json.dumps({"lang": lang, "text": line}, ensure_ascii=False) for line in lines[:limit]]
    return ("\n".join(records) + "\n").encode()


def run_crop_project(folder: Path, data: bytes) -> dict:
    (folder / NAME).write_bytes(data)
    t0 = time.perf_counter()
    subprocess.run([CROP, "project", "--src-lang", "es", "--input", NAME, "--output", "project.jsonl", "--stats",
                    "stats.json"], cwd=folder, check=True, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    stats = json.loads((folder / "stats.json").read_text())
    return {"wall_seconds": round(wall, 2), "sentences": stats["sentences"],
            "sentences_per_second": round(stats["sentences"] / wall, 2),
            "pipeline_sentences_per_second": stats["sentences_per_second"], "seconds_per_stage": stats["seconds"]}


def start_workers(n: int, redis_url: str, storage_root: Path, folder: Path, batch_lines: int
                  ) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "CROP_REDIS_URL": redis_url, "CROP_STORAGE_ROOT": str(storage_root),
           "CROP_JOB_BATCH_LINES": str(batch_lines), "CROP_LOG_LEVEL": "INFO"}
    procs, logs = [], []
    for i in range(n):
        log = folder / f"worker{n}-{i}.log"
        logs.append(log)
        procs.append(subprocess.Popen([CROP, "worker", "--concurrency", "1", "--hostname", f"bench{i}@%h"], env=env,
                                      stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True))
    # ready, and each worker's pool process has loaded the engines
    wait(lambda: all("engines loaded" in log.read_text(errors="replace") for log in logs), 300, "workers")
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        os.killpg(p.pid, 15)
    for p in procs:
        p.wait(120)


def run_job(store: JobStore, storage: Storage, data: bytes, batch_lines: int) -> tuple[dict, str]:
    t0 = time.perf_counter()
    job_id = new_job_id()
    storage.write_bytes(input_key(job_id), data)
    batches, total = plan_batches(storage, input_key(job_id), batch_lines)
    store.create(job_id, "bench", NAME, "es", sniff_key(storage, input_key(job_id), NAME), "default", {}, batches,
                 total)
    start_job(store, job_id)
    info = wait(lambda: (i := store.get(job_id)) is not None and i.state not in (JobState.queued, JobState.running)
                and i, 24 * 3600, "the job")
    wall = time.perf_counter() - t0
    return {"state": info.state.value, "sentences": info.total, "batches": info.batches,
            "wall_seconds": round(wall, 2), "sentences_per_second": round(info.total / wall, 2),
            "seconds_per_stage": info.seconds}, job_id


def results(storage: Storage, store: JobStore, job_id: str) -> list[str]:
    return [line for i in store.done_batches(job_id)
            for line in storage.read_bytes(batch_key(job_id, i)).decode().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", default="1,2", help="worker counts to measure, comma-separated")
    ap.add_argument("--limit", type=int, default=None, help="lines per language (default: all)")
    ap.add_argument("--batch-lines", type=int, default=256, help="input lines per batch (CROP_JOB_BATCH_LINES)")
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed")
    data = mixed_input(args.limit)
    folder = Path(tempfile.mkdtemp(prefix="crop-bench-jobs-"))
    report: dict = {"input": {"languages": list(LANGS), "lines": data.count(b"\n"), "format": "jsonl"},
                    "cores": os.cpu_count(), "batch_lines": args.batch_lines}
    report["crop_project"] = run_crop_project(folder, data)
    expected = (folder / "project.jsonl").read_text().splitlines()
    port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(folder)], stdout=subprocess.DEVNULL)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        store = JobStore(url)
        wait(store.ping, 30, "redis-server")
        storage = Storage(str(folder / "storage"))
        report["jobs"] = {}
        for n in (int(x) for x in args.workers.split(",")):
            procs = start_workers(n, url, folder / "storage", folder, args.batch_lines)
            try:
                job, job_id = run_job(store, storage, data, args.batch_lines)
            finally:
                stop_workers(procs)
            job["equal_to_crop_project"] = results(storage, store, job_id) == expected
            job["ratio_to_crop_project"] = round(job["sentences_per_second"]
                                                 / report["crop_project"]["sentences_per_second"], 3)
            job["ratio_to_pipeline_only"] = round(job["sentences_per_second"]
                                                  / report["crop_project"]["pipeline_sentences_per_second"], 3)
            report["jobs"][f"{n}_worker{'s' if n > 1 else ''}"] = job
    finally:
        redis.terminate()
        redis.wait(30)
        shutil.rmtree(folder, ignore_errors=True)
    emit("jobs", report)


if __name__ == "__main__":
    main()
