"""The sweeper: queues again the batches of running jobs whose message the broker lost.

Celery on Redis keeps a message in one of two places: the queue's list (waiting) or the transport's `unacked`
hash (taken by a worker, until it acknowledges it; restored to the list after the visibility timeout when its
worker died). A few moments lose it from both: a worker that pops a message while Redis is killed before it
records it as unacknowledged, a publish whose retries outlast a Redis outage, a task whose own Redis writes
fail through every retry (it is then acknowledged as failed). The job would stay "running" for ever.

So a worker's main process sweeps every `job_sweep_interval` seconds (one worker of the cluster at a time, by a
lock in Redis): for each active job, the batches released to the queue and not done are looked up in the queue
lists and the unacked hash; one found in neither at sweeps spanning `job_requeue_after` seconds is queued again.
Queueing a batch twice is harmless (a batch is recorded once, see `JobStore.complete_batch`); never queueing it
would stall the job. A job created and never started (its API process died between the two) is started.

Training runs (`crop.train.tasks`) likewise: a run queued or running whose heartbeat is stale (its trainer died)
and that is not waiting in the queue "train" is queued again; the trainer that takes it starts it over.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from pydantic import BaseModel

from crop.jobs.dispatch import QUEUE, TASK, queue_batch, queue_keys, start_job
from crop.jobs.settings import JobSettings
from crop.jobs.state import ACTIVE, JobStore
from crop.train.tasks import HEARTBEAT_STALE, RUNS, queue_training, run_key
from crop.train.tasks import QUEUE as TRAIN_QUEUE
from crop.train.tasks import TASK as TRAIN_TASK

log = logging.getLogger(__name__)

LOCK = "crop:sweeper"
UNACKED = "unacked"  # kombu's Redis transport: delivery tag -> JSON [message, exchange, routing key]
SCAN_COUNT = 500


class SweepReport(BaseModel):
    jobs: int = 0
    missing: int = 0
    requeued: dict[str, list[int]] = {}
    started: list[str] = []
    runs_requeued: list[str] = []


def message_task(raw: str | bytes) -> tuple[str, list[Any]] | None:
    """(task name, positional args) of a kombu message as the Redis transport stores it (a JSON envelope whose
    body is the task's [args, kwargs, embed], base64-encoded; an unacked entry wraps it as [message, exchange,
    routing key]); None for anything else."""
    try:
        payload: Any = json.loads(raw)
        if isinstance(payload, list):
            payload = payload[0]
        task = (payload.get("headers") or {}).get("task")
        body = payload["body"]
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return (task, list(args)) if isinstance(task, str) and isinstance(args, list) else None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def message_batch(raw: str | bytes) -> tuple[str, int] | None:
    """(job id, batch index) of a message of task `crop.project_batch`; None for anything else."""
    found = message_task(raw)
    if found is None or found[0] != TASK:
        return None
    try:
        return str(found[1][0]), int(found[1][1])
    except (IndexError, TypeError, ValueError):
        return None


def broker_messages(client: redis.Redis, queues: tuple[str, ...] = (QUEUE,), unacked: bool = True
                    ) -> set[tuple[str, str]]:
    """(task, JSON of its args) of every message in the broker now: waiting in one of `queues` (any priority) or
    (`unacked`) taken and not acknowledged. A queue holds at most `in_flight` batches per active job (and the runs
    waiting for a trainer), so reading it whole is cheap."""
    found: set[tuple[str, str]] = set()
    raws = [raw for queue in queues for key in queue_keys(queue) for raw in client.lrange(key, 0, -1)]
    if unacked:
        raws += [raw for _, raw in client.hscan_iter(UNACKED, count=SCAN_COUNT)]
    for raw in raws:
        if (m := message_task(raw)) is not None:
            found.add((m[0], json.dumps(m[1])))
    return found


def batches_in(messages: set[tuple[str, str]]) -> set[tuple[str, int]]:
    """(job id, batch index) of the `crop.project_batch` messages among `broker_messages`."""
    out: set[tuple[str, int]] = set()
    for task, raw in messages:
        args = json.loads(raw)
        if task == TASK and len(args) == 2:
            out.add((str(args[0]), int(args[1])))
    return out


def broker_batches(client: redis.Redis) -> set[tuple[str, int]]:
    """The batches that have a message in the broker now."""
    return batches_in(broker_messages(client, (QUEUE,)))


def sweep(store: JobStore, settings: JobSettings, now: float | None = None, force: bool = False) -> SweepReport | None:
    """One sweep, unless another worker swept less than `job_sweep_interval` seconds ago (None then; `force`
    sweeps anyway)."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    interval = max(1, int(settings.job_sweep_interval))
    if not store.redis.set(LOCK, owner, nx=True, ex=interval) and not force:
        return None
    now = time.time() if now is None else now
    report = SweepReport()
    present = batches_in(broker_messages(store.redis))
    for job_id in store.active_jobs():
        _sweep_job(store, settings, job_id, present, now, report)
    # a run's message held by a trainer whose heartbeat stopped is held by a dead one: only waiting ones count
    waiting = broker_messages(store.redis, (TRAIN_QUEUE,), unacked=False)
    _sweep_runs(store, settings, {str(json.loads(raw)[0]) for task, raw in waiting if task == TRAIN_TASK}, now,
                report)
    return report


def _sweep_job(store: JobStore, settings: JobSettings, job_id: str, present: set[tuple[str, int]], now: float,
               report: SweepReport) -> None:
    fields = store.job_fields(job_id)
    if not fields or fields.get("state") not in ACTIVE:
        return
    report.jobs += 1
    if "next" not in fields:  # created, never started
        if now - float(fields["created"]) >= settings.job_requeue_after:
            start_job(store, job_id)
            report.started.append(job_id)
            log.warning("job started by the sweeper", extra={"job": job_id})
        return
    batches = int(fields["batches"])
    released = min(int(fields["next"]), batches)
    done = set(store.done_batches(job_id))
    if fields.get("type_vote") == "1" and all(i in done for i in range(batches)):
        released = batches + 1  # the vote step (crop.jobs.vote), released once every batch is done
    missing = {i for i in range(released) if i not in done and (job_id, i) not in present}
    report.missing += len(missing)
    overdue = store.note_missing(job_id, missing, now, settings.job_requeue_after)
    for index in overdue:
        queue_batch(store.redis_url, job_id, index)
        store.mark_queued(job_id, [index])
        store.count_requeued(job_id)
        log.warning("batch queued again: its message was lost", extra={"job": job_id, "batch": index})
    if overdue:
        report.requeued[job_id] = overdue


def _sweep_runs(store: JobStore, settings: JobSettings, present: set[str], now: float, report: SweepReport) -> None:
    """Training runs queued or running, without a heartbeat for HEARTBEAT_STALE seconds (their trainer died:
    SIGKILLed, its message unacknowledged until the visibility timeout, a day for trainers; or its message
    acknowledged by a delivery that found the run alive, or lost) and not waiting in the queue: queued again; the
    next trainer to take it starts it over (`crop.train.tasks`), and a late redelivery of the old message finds
    the run alive or finished and is dropped."""
    stale = max(HEARTBEAT_STALE, settings.job_requeue_after)
    for run_id in store.redis.zrange(RUNS, 0, -1):
        state, heartbeat, created = store.redis.hmget(run_key(run_id), "state", "heartbeat", "created")
        if state not in ("queued", "running") or run_id in present:
            continue
        if now - float(heartbeat or created or now) >= stale:
            queue_training(store.redis_url, run_id)
            report.runs_requeued.append(run_id)
            log.warning("training run queued again: its trainer is gone", extra={"run": run_id})


class Sweeper(threading.Thread):
    """`sweep` every `job_sweep_interval` seconds in a daemon thread of a worker's main process; errors (Redis
    down) are logged and the next sweep tries again."""

    def __init__(self, settings: JobSettings) -> None:
        super().__init__(name="crop-sweeper", daemon=True)
        self.settings = settings
        self.stopping = threading.Event()

    def run(self) -> None:
        store = JobStore(self.settings.redis_url)
        try:
            while not self.stopping.wait(self.settings.job_sweep_interval):
                try:
                    report = sweep(store, self.settings)
                except Exception as exc:  # noqa: BLE001 - Redis down or a broken job: the next sweep retries
                    log.warning("sweep failed", extra={"error": repr(exc)})
                    continue
                if report is not None and (report.requeued or report.started or report.runs_requeued):
                    log.info("sweep", extra=report.model_dump())
        finally:
            store.close()

    def stop(self) -> None:
        self.stopping.set()

