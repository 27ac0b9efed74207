"""Bulk projection jobs: settings, options, job state in Redis, dispatch, and the Celery app of the workers
(`celery -A crop.jobs worker -Q projection`, or `crop worker`).

`app` is loaded on first use, so that importing the settings or the options does not import Celery."""

from __future__ import annotations

from typing import Any

__all__ = ["app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from crop.jobs.celery_app import app

        return app
    raise AttributeError(f"module 'crop.jobs' has no attribute {name!r}")
