"""Dispatch of a job's batches to the queue "projection".

Fairness: a job never has more than its `in_flight` batches queued or running. `start_job` queues the first
ones; each finished batch queues the next one (`JobStore.complete_batch` picks it atomically). A small job
submitted behind a huge one therefore waits for at most `in_flight` batches of each job ahead of it, not for
the whole of them."""

from __future__ import annotations

from typing import Any

from crop.jobs.state import JobState, JobStore

QUEUE = "projection"
TASK = "crop.project_batch"
# publishing waits this long for a broker that restarts (about 30 s) before it fails
PUBLISH_RETRY = {"max_retries": 30, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}


def start_job(store: JobStore, job_id: str) -> None:
    """Queue the job's first `in_flight` batches (once: a second call queues nothing). A job without batches
    (an input of blank lines) succeeds at once."""
    fields = store.job_fields(job_id)
    if not fields:
        raise KeyError(f"no job {job_id!r}")
    if int(fields["batches"]) == 0:
        store.finish(job_id, JobState.succeeded)
        return
    for index in store.release_first(job_id):
        queue_batch(store.redis_url, job_id, index)
        store.mark_queued(job_id, [index])


def queue_batch(broker_url: str, job_id: str, index: int) -> None:
    """Send batch `index` of a job to the queue of the broker at `broker_url` (the job store's Redis)."""
    send(broker_url, TASK, [job_id, index], QUEUE)


def send(broker_url: str, task: str, args: list[Any], queue: str) -> None:
    """Send a task to a queue of the broker at `broker_url`, through a pooled connection, waiting for a broker
    that restarts (PUBLISH_RETRY)."""
    from kombu.pools import connections

    from crop.jobs.celery_app import app

    with connections[app.connection_for_write(broker_url)].acquire(block=True) as conn:
        app.send_task(task, args=args, queue=queue, connection=conn, retry=True, retry_policy=PUBLISH_RETRY)


def queue_keys(queue: str) -> list[str]:
    """The broker's lists of a queue: its own and its lists by priority (kombu's Redis transport:
    `<queue>\x06\x16<priority>` for the priority steps 3, 6, 9)."""
    return [queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9))]


def queue_depth(store: JobStore) -> int:
    """Batches waiting in the queue (all jobs)."""
    pipe = store.redis.pipeline(transaction=False)
    for key in queue_keys(QUEUE):
        pipe.llen(key)
    return int(sum(pipe.execute()))
