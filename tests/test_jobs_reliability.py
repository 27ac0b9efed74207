"""Reliability of bulk jobs (slow: real `crop worker` processes, a Redis server of each test's own with AOF, the
offline engines): a worker SIGKILLed in the middle of a job, and Redis killed and restarted in the middle of a
job, each leave a job whose results are those of `crop project` on the same input, every line exactly once and
in order, counted once and announced once on the stream.

Waits are on counts and log events with generous timeouts; nothing asserts a duration."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_harness import CROP, Cluster, Worker, results, submit, wait_finished, wait_for

from crop.io import dumps
from crop.jobs.state import STREAM, JobState
from crop.jobs.vote import PAUSE_ENV, voted_key
from crop.project.type_vote import TypeVoteConfig, type_vote_lines

pytestmark = pytest.mark.integration

LINES = 40
LINES_PER_BATCH = 2
VISIBILITY_TIMEOUT = 5  # seconds before a batch a dead worker held goes back to the queue
SWEEP = {"job_sweep_interval": 1, "job_requeue_after": 3}  # lost messages queued again within seconds


@pytest.fixture(scope="module")
def job_input(shared_data: Path) -> bytes:
    lines = [line for line in (shared_data / "raw" / "es.txt").read_text().splitlines() if line.strip()]
    return ("\n".join(lines[100:100 + LINES]) + "\n").encode()


@pytest.fixture(scope="module")
def expected(job_input: bytes, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """`crop project` on the job's input (saved under the job's name)."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "corpus.txt").write_bytes(job_input)
    r = subprocess.run([CROP, "project", "--src-lang", "es", "--input", "corpus.txt", "--output", "out.jsonl"],
                       cwd=folder, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = (folder / "out.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in out] == [f"corpus-{n:06d}" for n in range(1, LINES + 1)]
    return out


class Setup(Cluster):
    def worker(self, name: str) -> Worker:
        return self.start_worker(name, job_visibility_timeout=VISIBILITY_TIMEOUT, **SWEEP)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    yield s
    s.close()


def ready(w: Worker) -> bool:
    return " ready." in w.log.read_text(errors="replace")


def holds_a_batch(w: Worker) -> bool:
    """The worker took a batch it has not finished (its log: more received than succeeded)."""
    log = w.log.read_text(errors="replace")
    return log.count("crop.project_batch[") - 2 * log.count("succeeded in") > 0


def check_exactly_once(s: Setup, job_id: str, expected: list[str]) -> None:
    info = wait_finished(s.store, job_id, timeout=300, workers=s.workers)
    assert info.state == JobState.succeeded, info
    # every line once, in order, as crop project writes it
    assert results(s.storage, s.store, job_id) == expected
    # counted once, announced once per batch
    statuses = [json.loads(line)["status"] for line in expected]
    assert info.done == info.total == LINES and info.batches_done == info.batches
    assert info.counts == {st: statuses.count(st) for st in set(statuses)}
    batches = sorted(int(e["batch"]) for _, e in s.store.redis.xrange(STREAM) if e["job"] == job_id)
    assert batches == list(range(info.batches))


def test_worker_sigkilled_mid_job(setup: Setup, job_input: bytes, expected: list[str]) -> None:
    """A worker killed (SIGKILL to its whole process group) while it holds a batch: a second worker gets that
    batch after the visibility timeout, and the job's results are whole."""
    victim, survivor = setup.worker("victim"), setup.worker("survivor")
    wait_for(lambda: ready(victim) and ready(survivor), 120, "both workers to be ready")
    job_id = submit(setup.store, setup.storage, job_input, name="corpus.txt", lines_per_batch=LINES_PER_BATCH,
                    src_lang="es", in_flight=4)
    wait_for(lambda: len(setup.store.done_batches(job_id)) >= 2 and holds_a_batch(victim), 180,
             "the victim to hold a batch, two batches in")
    victim.kill()
    info = setup.store.get(job_id)
    assert info is not None and info.state == JobState.running and info.batches_done < info.batches
    check_exactly_once(setup, job_id, expected)


def test_messages_lost_by_the_broker_are_queued_again(setup: Setup, job_input: bytes, expected: list[str]) -> None:
    """Every message of a job's queue lost (as a Redis killed between a worker's pop and its record of the
    message can lose one): the workers' sweeper finds the released batches in no broker list and queues them
    again, and the job finishes exactly once."""
    job_id = submit(setup.store, setup.storage, job_input, name="corpus.txt", lines_per_batch=LINES_PER_BATCH,
                    src_lang="es", in_flight=4)
    assert setup.store.redis.delete("projection") == 1
    worker = setup.worker("w1")
    check_exactly_once(setup, job_id, expected)
    info = setup.store.get(job_id)
    assert info is not None and info.requeued == 4
    assert "batch queued again" in worker.log.read_text(errors="replace")


def test_redis_restarted_mid_job(setup: Setup, job_input: bytes, expected: list[str]) -> None:
    """Redis (AOF, fsync always) killed and started again while a job runs: the workers reconnect, and the job
    finishes with nothing lost or duplicated."""
    workers = [setup.worker("w1"), setup.worker("w2")]
    wait_for(lambda: all(ready(w) for w in workers), 120, "both workers to be ready")
    job_id = submit(setup.store, setup.storage, job_input, name="corpus.txt", lines_per_batch=LINES_PER_BATCH,
                    src_lang="es", in_flight=4)
    wait_for(lambda: len(setup.store.done_batches(job_id)) >= 3, 180, "three batches to be done")
    setup.redis.kill()
    wait_for(lambda: all("Connection to broker lost" in w.log.read_text(errors="replace") for w in workers), 120,
             "the workers to notice that Redis is gone")
    setup.redis.start()
    info = setup.store.get(job_id)
    assert info is not None and info.state == JobState.running
    check_exactly_once(setup, job_id, expected)


def test_worker_sigkilled_in_the_type_vote(setup: Setup, job_input: bytes, expected: list[str]) -> None:
    """A type-vote job whose worker is SIGKILLed in its last step, the re-typed batches written and one of them
    announced: a second worker gets the step after the visibility timeout and finishes it. The results are those
    of `crop project --type-vote` (the same votes over the same lines), every batch announced exactly once."""
    victim = setup.start_worker("victim", {PAUSE_ENV: "120"}, job_visibility_timeout=VISIBILITY_TIMEOUT, **SWEEP)
    job_id = submit(setup.store, setup.storage, job_input, name="corpus.txt", lines_per_batch=LINES_PER_BATCH,
                    src_lang="es", in_flight=4, options={"type_vote": True, "type_vote_min_count": 1})
    wait_for(lambda: "type vote paused" in victim.log.read_text(errors="replace"), 300,
             "the victim to pause in the type vote")
    victim.kill()
    info = setup.store.get(job_id)
    assert info is not None and info.state == JobState.running and info.type_vote is not None
    assert info.type_vote.state == "running" and len(announced(setup, job_id)) == 1
    survivor = setup.worker("survivor")
    info = wait_finished(setup.store, job_id, timeout=300, workers=[victim, survivor])
    assert info.state == JobState.succeeded and info.type_vote is not None and info.type_vote.state == "done"
    voted, votes = type_vote_lines([json.loads(line) for line in expected], TypeVoteConfig(min_count=1))
    got = [line for i in range(info.batches) for line in setup.storage.read_bytes(voted_key(job_id, i))
           .decode("utf-8").splitlines()]
    assert got == [dumps(line) for line in voted]
    assert info.type_vote.retyped == votes.retyped
    entries = announced(setup, job_id)
    assert sorted(int(e["batch"]) for e in entries) == list(range(info.batches))
    assert all(e["path"] == setup.storage.url(voted_key(job_id, int(e["batch"]))) for e in entries)


def announced(s: Setup, job_id: str) -> list[dict]:
    return [e for _, e in s.store.redis.xrange(STREAM) if e["job"] == job_id]
