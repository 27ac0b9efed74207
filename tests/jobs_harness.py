"""Real parts for the tests of bulk jobs: a Redis server of the test's own (AOF on, its own port and folder),
`crop worker` subprocesses (each in its own process group, so that a test can kill a whole worker), and a job
submitted at the library level (input written to storage, planned, created, started).

Importable from the tests because pytest puts tests/ on sys.path."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from servers import free_port

from crop.jobs.dispatch import start_job
from crop.jobs.lines import plan_batches, sniff_key
from crop.jobs.settings import JobSettings
from crop.jobs.state import JobInfo, JobState, JobStore, new_job_id
from crop.jobs.tasks import batch_key, input_key
from crop.storage import Storage

CROP = str(Path(sys.executable).with_name("crop"))
FINISHED = (JobState.succeeded, JobState.failed, JobState.cancelled)


class RedisServer:
    """redis-server on 127.0.0.1:<port>, appendonly with fsync on every write, data in `folder`; `kill()` and
    `start()` again restart it on the same port with the same data."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        if shutil.which("redis-server") is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--dir", str(self.folder), "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_for(lambda: _pings(client), 30, f"redis-server on port {self.port}")
        # loaded from the AOF: answers LOADING until then
        wait_for(lambda: client.info("persistence").get("loading") == 0, 30, "redis-server loading its AOF")
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last save (what was acknowledged is in the AOF already)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class Worker:
    """`crop worker` named `name` (or another `command`: `crop trainer`, the stream consumer) in a process group
    of its own, its log in `log`."""

    def __init__(self, env: dict[str, str], log: Path, name: str = "w", concurrency: int = 1,
                 command: list[str] | None = None) -> None:
        self.log = log
        self.out = open(log, "ab")  # noqa: SIM115 - closed by stop/kill
        argv = command or [CROP, "worker", "--concurrency", str(concurrency), "--loglevel", "info", "--hostname",
                           f"{name}@%h"]
        self.proc = subprocess.Popen(argv, env=env, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def kill(self) -> None:
        """SIGKILL to the whole worker: its main process and its pool processes, nothing acknowledged."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.out.close()

    def stop(self) -> int:
        """SIGTERM (a warm shutdown: it finishes the batch it holds), SIGKILL after 60 s; its exit status."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        self.out.close()
        return self.proc.returncode

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])



class Cluster:
    """A Redis server of its own, a job store and a storage under `tmp`, and the workers started on them; `close`
    stops them all (the workers first)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.redis = RedisServer(tmp / "redis").start()
        self.store = JobStore(self.redis.url)
        self.storage = Storage(str(tmp / "storage"))
        self.workers: list[Worker] = []

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None, **settings: Any) -> Worker:
        """`crop worker` on this Redis and storage, with CROP_<NAME> for each setting, its log in tmp/<name>.log."""
        env = worker_env(self.redis.url, self.tmp / "storage", **settings) | (extra_env or {})
        w = Worker(env, self.tmp / f"{name}.log", name)
        self.workers.append(w)
        return w

    def close(self) -> None:
        for w in self.workers:
            if not w.out.closed:
                w.stop()
        self.store.close()
        self.redis.stop()

def worker_env(redis_url: str, storage_root: Path, **settings: Any) -> dict[str, str]:
    """The environment of a worker: this test's Redis and storage, and CROP_<NAME> for each setting given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROP_")}
    env.update({"CROP_REDIS_URL": redis_url, "CROP_STORAGE_ROOT": str(storage_root), "CROP_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1"})
    env.update({f"CROP_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def submit(store: JobStore, storage: Storage, data: bytes, *, name: str, lines_per_batch: int,
           src_lang: str | None = None, options: dict[str, Any] | None = None, engine: str = "default",
           in_flight: int = 2, owner: str = "test", start: bool = True) -> str:
    """A job as the API makes one: the input stored, planned into batches, created and (`start`) started."""
    job_id = new_job_id()
    storage.write_bytes(input_key(job_id), data)
    batches, total = plan_batches(storage, input_key(job_id), lines_per_batch)
    fmt = sniff_key(storage, input_key(job_id), name)
    store.create(job_id, owner, name, src_lang, fmt, engine, options or {}, batches, total, in_flight=in_flight)
    if start:
        start_job(store, job_id)
    return job_id


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """The first truthy value of `predicate()`, polled until `timeout` seconds; fails the test naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_finished(store: JobStore, job_id: str, timeout: float = 180, workers: list[Worker] | None = None) -> JobInfo:
    def finished() -> JobInfo | None:
        info = store.get(job_id)
        return info if info is not None and info.state in FINISHED else None

    try:
        return wait_for(finished, timeout, f"job {job_id} to finish")
    except pytest.fail.Exception:
        logs = "\n".join(f"--- {w.log.name}\n{w.tail()}" for w in workers or [])
        pytest.fail(f"job {job_id} did not finish: {store.get(job_id)}\n{logs}")


def results(storage: Storage, store: JobStore, job_id: str) -> list[str]:
    """The result lines of a job: its batch files in order (those done)."""
    lines: list[str] = []
    for index in store.done_batches(job_id):
        lines += storage.read_bytes(batch_key(job_id, index)).decode("utf-8").splitlines()
    return lines


@contextmanager
def own_redis(folder: Path, **settings: Any) -> Iterator[tuple[JobStore, Storage, JobSettings]]:
    """A `Cluster` without workers: its job store, its storage and job settings over both (sweeps every 60 s, a
    batch re-queued after 30 s missing, unless `settings` say otherwise)."""
    cluster = Cluster(folder)
    job_settings = JobSettings(redis_url=cluster.redis.url, storage_root=str(folder / "storage"),
                               **{"job_sweep_interval": 60, "job_requeue_after": 30, **settings})
    try:
        yield cluster.store, cluster.storage, job_settings
    finally:
        cluster.close()
