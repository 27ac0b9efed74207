"""The sweeper (`crop.jobs.sweeper`) on a Redis server of the test's own: it finds the batches whose message the
broker lost (in no queue list, not unacknowledged), queues them again once they have been missing long enough,
leaves alone the ones in the broker, and starts a job whose API process died before starting it. A real worker
then finishes a job that lost every message of its queue (in test_jobs_reliability.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_harness import own_redis, submit

from crop.jobs.dispatch import QUEUE, queue_batch
from crop.jobs.settings import JobSettings
from crop.jobs.state import JobStore
from crop.jobs.sweeper import LOCK, UNACKED, broker_batches, message_batch, message_task, sweep
from crop.storage import Storage
from crop.train.tasks import HEARTBEAT_STALE, TrainRequest, TrainState, TrainStore, queue_training, run_key
from crop.train.tasks import QUEUE as TRAIN_QUEUE
from crop.train.tasks import TASK as TRAIN_TASK

INPUT = "".join(f"Frase número {i} de Ana García en Madrid.\n" for i in range(10)).encode()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[JobStore, Storage, JobSettings]]:
    with own_redis(tmp_path) as env:
        yield env


def queued(store: JobStore) -> list[tuple[str, int]]:
    return sorted(b for raw in store.redis.lrange(QUEUE, 0, -1) if (b := message_batch(raw)) is not None)


def test_a_lost_message_is_queued_again_after_the_grace_period(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, storage, settings = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=3)
    assert queued(store) == [(job, 0), (job, 1), (job, 2)]
    lost = store.redis.lrange(QUEUE, 0, -1)[1]  # LPUSHed: the list is newest first, so this is batch 1
    assert message_batch(lost) == (job, 1)
    store.redis.lrem(QUEUE, 1, lost)

    first = sweep(store, settings, now=1000.0, force=True)
    assert first is not None and first.missing == 1 and first.requeued == {}  # seen missing once: not yet
    assert queued(store) == [(job, 0), (job, 2)]
    early = sweep(store, settings, now=1000.0 + settings.job_requeue_after - 1, force=True)
    assert early is not None and early.requeued == {}
    late = sweep(store, settings, now=1000.0 + settings.job_requeue_after, force=True)
    assert late is not None and late.requeued == {job: [1]}
    assert queued(store) == [(job, 0), (job, 1), (job, 2)]
    info = store.get(job)
    assert info is not None and info.requeued == 1
    # present again: the next sweeps leave it alone
    again = sweep(store, settings, now=5000.0, force=True)
    assert again is not None and again.missing == 0 and again.requeued == {}


def test_a_batch_found_again_is_forgotten(env: tuple[JobStore, Storage, JobSettings]) -> None:
    """Missing at one sweep (a worker between popping it and recording it) and back at the next: the clock of
    that batch starts again, so a batch is queued again only when it is missing at sweeps spanning the grace."""
    store, storage, settings = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=1)
    message = store.redis.lpop(QUEUE)
    assert sweep(store, settings, now=0.0, force=True).missing == 1  # type: ignore[union-attr]
    store.redis.lpush(QUEUE, message)
    assert sweep(store, settings, now=10.0, force=True).missing == 0  # type: ignore[union-attr]
    store.redis.lpop(QUEUE)
    report = sweep(store, settings, now=10.0 + settings.job_requeue_after - 1, force=True)
    assert report is not None and report.missing == 1 and report.requeued == {}
    assert queued(store) == [] and job


def test_unacknowledged_and_done_batches_are_not_missing(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, storage, settings = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=2)
    # batch 0 taken by a worker: kombu moves it to the unacked hash as [message, exchange, routing key]
    taken = store.redis.rpop(QUEUE)
    assert message_batch(taken) == (job, 0)
    store.redis.hset(UNACKED, "some-delivery-tag", json.dumps([json.loads(taken), "", QUEUE]))
    assert broker_batches(store.redis) == {(job, 0), (job, 1)}
    # batch 1 done (its message acknowledged and gone): not missing either
    store.redis.lpop(QUEUE)
    outcome = store.complete_batch(job, 1, {"sentences": 2, "status": {"kept": 2}}, ["es"], "x", 100)
    assert outcome.release == 2
    queue_batch(store.redis_url, job, 2)  # as the worker does with the batch its completion released
    for now in (0.0, 10_000.0):
        report = sweep(store, settings, now=now, force=True)
        assert report is not None and report.missing == 0 and report.requeued == {}


def test_a_job_never_started_is_started(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, storage, settings = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=2, start=False)
    created = float(store.job_fields(job)["created"])
    assert sweep(store, settings, now=created + 1, force=True).started == []  # type: ignore[union-attr]
    report = sweep(store, settings, now=created + settings.job_requeue_after, force=True)
    assert report is not None and report.started == [job]
    assert queued(store) == [(job, 0), (job, 1)]


def test_one_sweep_per_interval_across_workers(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, _, settings = env
    assert sweep(store, settings) is not None
    assert sweep(store, settings) is None  # the lock of the first one holds for the interval
    assert 0 < store.redis.ttl(LOCK) <= settings.job_sweep_interval


def test_message_batch_ignores_other_messages() -> None:
    assert message_batch("not json") is None
    assert message_batch(json.dumps({"headers": {"task": "other"}, "body": ""})) is None
    assert message_batch(json.dumps({"headers": {"task": "crop.project_batch"}, "body": "%%"})) is None


def test_a_training_run_whose_trainer_died_is_queued_again(env: tuple[JobStore, Storage, JobSettings]) -> None:
    """A run running with a stale heartbeat (its trainer SIGKILLed holding the message, unacknowledged until
    the trainers' day-long visibility timeout) and not waiting in the queue: queued again on the queue "train";
    one waiting there, or with a fresh heartbeat, or finished, is left alone."""
    store, _, settings = env
    runs = TrainStore(store.redis)
    dead = runs.create("test", TrainRequest(languages=["es"]), {"es": {"kept": 1}}).id
    alive = runs.create("test", TrainRequest(languages=["ca"]), {"ca": {"kept": 1}}).id
    done = runs.create("test", TrainRequest(languages=["gl"]), {"gl": {"kept": 1}}).id
    for run_id in (dead, alive, done):
        assert runs.begin(run_id, "trainer-1") == ("running", True)
    runs.finish(done, TrainState.succeeded)
    now = time.time()
    store.redis.hset(run_key(dead), "heartbeat", repr(now - HEARTBEAT_STALE - 1))
    store.redis.hset(run_key(done), "heartbeat", repr(now - HEARTBEAT_STALE - 1))
    # the dead trainer took the run's message and never acknowledged it (SIGKILL): it is in the unacked hash
    queue_training(store.redis_url, dead)
    taken = store.redis.rpop(TRAIN_QUEUE)
    store.redis.hset(UNACKED, "tag-of-the-dead-trainer", json.dumps([json.loads(taken), "", TRAIN_QUEUE]))
    report = sweep(store, settings, now=now, force=True)
    assert report is not None and report.runs_requeued == [dead]
    waiting = [m for raw in store.redis.lrange(TRAIN_QUEUE, 0, -1) if (m := message_task(raw)) is not None]
    assert waiting == [(TRAIN_TASK, [dead])]
    # its message is in the broker now: not queued a second time
    assert sweep(store, settings, now=now + 1, force=True).runs_requeued == []  # type: ignore[union-attr]
