"""`crop worker`: a projection worker, a thin wrapper over `celery -A crop.jobs worker -Q projection`."""

from __future__ import annotations

from typing import Annotated

import typer

from crop.cli_common import fail

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1,
                                             help="worker processes; each loads the engines (heavy), so default 1")]
    = 1,
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help=f"one of {', '.join(LOG_LEVELS)}")] = "info",
    hostname: Annotated[str | None, typer.Option(help="node name (default: celery@<host>)")] = None,
) -> None:
    """Run a worker of bulk jobs: it takes batches from the queue "projection" of CROP_REDIS_URL, projects them
    with the engines of CROP_JOB_ENGINES and writes the results under CROP_STORAGE_ROOT."""
    from crop.api.settings import SettingsError
    from crop.jobs.settings import job_settings

    if loglevel.lower() not in LOG_LEVELS:
        fail(f"--loglevel {loglevel!r} is not one of {', '.join(LOG_LEVELS)}")
    try:
        job_settings()
    except SettingsError as exc:
        fail(str(exc))
    from crop.jobs import app

    argv = ["worker", "-Q", "projection", "--concurrency", str(concurrency), "--loglevel", loglevel.upper(),
            # mingle and gossip are chatter between workers that jobs do not need (and slow a start on Redis)
            "--without-mingle", "--without-gossip"]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main(argv)
