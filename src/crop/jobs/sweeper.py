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

from crop.jobs.dispatch import QUEUE, TASK, queue_batch, start_job
from crop.jobs.settings import JobSettings
from crop.jobs.state import ACTIVE, JobStore

log = logging.getLogger(__name__)

LOCK = "crop:sweeper"
UNACKED = "unacked"  # kombu's Redis transport: delivery tag -> JSON [message, exchange, routing key]
SCAN_COUNT = 500


class SweepReport(BaseModel):
    jobs: int = 0
    missing: int = 0
    requeued: dict[str, list[int]] = {}
    started: list[str] = []


def message_batch(raw: str | bytes) -> tuple[str, int] | None:
    """(job id, batch index) of a kombu message of task `crop.project_batch` as the Redis transport stores it
    (a JSON envelope whose body is the task's [args, kwargs, embed], base64-encoded); None for anything else."""
    try:
        payload: Any = json.loads(raw)
        if isinstance(payload, list):  # an unacked entry: [message, exchange, routing key]
            payload = payload[0]
        if (payload.get("headers") or {}).get("task") != TASK:
            return None
        body = payload["body"]
        if (payload.get("properties") or {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return str(args[0]), int(args[1])
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def broker_batches(client: redis.Redis) -> set[tuple[str, int]]:
    """The batches that have a message in the broker now: waiting in the queue (any priority) or taken and not
    acknowledged. The queue holds at most `in_flight` batches per active job, so reading it whole is cheap."""
    found: set[tuple[str, int]] = set()
    for key in [QUEUE, *(f"{QUEUE}\x06\x16{p}" for p in (3, 6, 9))]:
        for raw in client.lrange(key, 0, -1):
            if (b := message_batch(raw)) is not None:
                found.add(b)
    for _, raw in client.hscan_iter(UNACKED, count=SCAN_COUNT):
        if (b := message_batch(raw)) is not None:
            found.add(b)
    return found


def sweep(store: JobStore, settings: JobSettings, now: float | None = None, force: bool = False) -> SweepReport | None:
    """One sweep, unless another worker swept less than `job_sweep_interval` seconds ago (None then; `force`
    sweeps anyway)."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    interval = max(1, int(settings.job_sweep_interval))
    if not store.redis.set(LOCK, owner, nx=True, ex=interval) and not force:
        return None
    now = time.time() if now is None else now
    report = SweepReport()
    present = broker_batches(store.redis)
    for job_id in store.active_jobs():
        fields = store.job_fields(job_id)
        if not fields or fields.get("state") not in ACTIVE:
            continue
        report.jobs += 1
        if "next" not in fields:  # created, never started
            if now - float(fields["created"]) >= settings.job_requeue_after:
                start_job(store, job_id)
                report.started.append(job_id)
                log.warning("job started by the sweeper", extra={"job": job_id})
            continue
        released = min(int(fields["next"]), int(fields["batches"]))
        done = set(store.done_batches(job_id))
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
    return report


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
                if report is not None and (report.requeued or report.started):
                    log.info("sweep", extra=report.model_dump())
        finally:
            store.close()

    def stop(self) -> None:
        self.stopping.set()

