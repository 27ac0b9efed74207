"""The Celery app of the projection workers: `celery -A crop.jobs worker -Q projection` (or `crop worker`).

Redis is the broker; no result backend (a job's state is in `crop.jobs.state`). A batch is acknowledged only
once it is done (acks_late) and given back when its worker dies (reject_on_worker_lost); a worker holds one
message per process (prefetch 1), so the others stay in the queue for the workers that are free; a message a
worker took and never acknowledged (the whole worker killed) goes back to the queue after the visibility timeout.
Messages are JSON only. The main process of each worker runs the sweeper (`crop.jobs.sweeper`), which queues
again the batches whose message the broker lost."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from crop.jobs.dispatch import QUEUE
from crop.jobs.settings import JobSettings, job_settings


def celery_config(settings: JobSettings) -> dict[str, Any]:
    vt = settings.visibility_timeout
    return {
        "broker_url": settings.redis_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a Redis that restarts is waited for, however long
        "broker_transport_options": {
            "visibility_timeout": vt,
            # how often a worker looks for messages whose worker died (every sweep scans: throttle 1)
            "unacked_restore_interval": max(1, min(10, vt // 4)),
            "unacked_restore_throttle": 1,
        },
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_default_queue": QUEUE,
        "worker_cancel_long_running_tasks_on_connection_loss": False,  # acks_late: redelivered, and idempotent
        "worker_hijack_root_logger": False,
        "include": ["crop.jobs.tasks", "crop.train.tasks"],
    }


app = Celery("crop")
app.conf.update(celery_config(job_settings()))


@worker_process_init.connect
def _load_engines(**_: Any) -> None:
    """Each worker process loads the configured engines when it starts, not on its first batch."""
    from crop.jobs.tasks import preload_engines

    preload_engines()


_sweepers: list[Any] = []


@worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    from crop.jobs.sweeper import Sweeper

    sweeper = Sweeper(job_settings())
    sweeper.start()
    _sweepers.append(sweeper)


@worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    for sweeper in _sweepers:
        sweeper.stop()
