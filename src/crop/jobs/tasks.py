"""The task of the workers: project one batch of a job.

`crop.project_batch(job_id, index)` reads the batch's byte range of the input, parses it as `crop project` reads
the same lines, runs `CropPipeline` over it (engines loaded once per worker process), writes
`jobs/<id>/batches/<index:06d>.jsonl` atomically (a redelivered batch rewrites the same file with the same
lines), records it once (`JobStore.complete_batch`: counts, the `crop:projected` stream entry, the next batch
to queue) and queues that next batch. A job with the option `type_vote` ends with one step more, the vote
over all its batches (`crop.jobs.vote`), run by this task as the job's step `batches`.

Failures: an engine that is down (`EngineUnavailable`: a service that answers 5xx or nothing after its own
retries) retries the batch with backoff, `task_retries` times; then every sentence of the batch is written as
failed with the reason, so the job goes on and ends. Storage or Redis errors are retried the same way; then the
job fails with the error (its results so far stay readable)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from crop.errors import EngineUnavailable
from crop.io import InputSentence, InvalidLine, dumps, stem
from crop.jobs.celery_app import app
from crop.jobs.dispatch import queue_batch
from crop.jobs.options import ProjectionOptions, build_pipeline
from crop.jobs.settings import JobSettings, job_settings
from crop.jobs.state import ACTIVE, JobState, JobStore
from crop.pipeline import PipelineStats, failed_result, invalid_result
from crop.storage import Storage, storage_from_url

if TYPE_CHECKING:
    from crop.tag.base import Tagger
    from crop.translate.base import Translator
    from crop.types import ProjectionResult

log = logging.getLogger(__name__)

BACKOFF_CAP = 60.0  # longest wait (s) before a retry of a batch

# per worker process: the engines (by name in the settings' allow-list), the job store, the storage
_engines: dict[str, tuple[Translator, Tagger]] = {}
_stores: dict[str, JobStore] = {}
_storages: dict[str, Storage] = {}


class ConfigError(Exception):
    """A job that no retry can run (an engine name the settings do not list, a bad spec): the job fails."""


def batch_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/batches/{index:06d}.jsonl"


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input"


def job_stem(name: str) -> str:
    """The stem of the generated ids (`{stem}-{lineno:06d}`) of a job named `name` (its input's file name):
    those `crop project` gives the same file."""
    return stem(name) if name else "input"


# ------------------------------------------------------------------------------------------------- engines


def engines(name: str, settings: JobSettings) -> tuple[Translator, Tagger]:
    """The engines named `name` in `job_engines`, loaded once per process. `EngineUnavailable` (a service that
    cannot be reached) is worth a retry; `ConfigError` is not."""
    if name not in _engines:
        specs = settings.job_engines.get(name)
        if specs is None:
            listed = ", ".join(settings.job_engines)
            raise ConfigError(f"engine {name!r} is not in CROP_JOB_ENGINES (it lists {listed})")
        from crop.tag import load_tagger
        from crop.translate import load_translator

        try:
            _engines[name] = (load_translator(specs["translator"]), load_tagger(specs["tagger"]))
        except EngineUnavailable:
            raise
        except ValueError as exc:  # a bad spec or option
            raise ConfigError(f"engine {name!r}: {exc}") from exc
        except RuntimeError as exc:  # a service or program that cannot be started now
            raise EngineUnavailable(f"engine {name!r}: {exc}") from exc
        log.info("engines loaded", extra={"engine": name, **specs})
    return _engines[name]


def preload_engines() -> None:
    """Load every configured engine (at the start of a worker process); one that cannot be loaded now is
    loaded by its first batch (and retried there)."""
    settings = job_settings()
    for name in settings.job_engines:
        try:
            engines(name, settings)
        except Exception as exc:  # noqa: BLE001 - logged; the batches that need it retry and report it
            log.warning("engine not loaded at start", extra={"engine": name, "error": repr(exc)})


def store_for(settings: JobSettings) -> JobStore:
    if settings.redis_url not in _stores:
        _stores[settings.redis_url] = JobStore(settings.redis_url)
    return _stores[settings.redis_url]


def storage_for(settings: JobSettings) -> Storage:
    if settings.storage_root not in _storages:
        _storages[settings.storage_root] = Storage(settings.storage_root)
    return _storages[settings.storage_root]


# ------------------------------------------------------------------------------------------------ the task


@app.task(name="crop.project_batch", bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def project_batch(self: Any, job_id: str, index: int) -> None:
    settings = job_settings()
    store = store_for(settings)
    attempt = self.request.retries
    last = attempt >= settings.task_retries
    try:
        run_batch(store, settings, job_id, index, give_up=last)
    except ConfigError as exc:
        _fail_job(store, job_id, index, exc)
    except Exception as exc:
        if last:
            _fail_job(store, job_id, index, exc)
            return
        countdown = backoff(attempt, settings)
        log.warning("batch failed, retrying", extra={"job": job_id, "batch": index, "attempt": attempt + 1,
                                                     "countdown": countdown, "error": repr(exc)})
        raise self.retry(exc=exc, countdown=countdown) from exc


def backoff(attempt: int, settings: JobSettings) -> float:
    """Seconds before retry `attempt` (0-based): 1, 2, 4, ... capped, and well under the visibility timeout
    (a message held longer than that would be delivered again meanwhile)."""
    return min(2.0**attempt, BACKOFF_CAP, settings.visibility_timeout / 4)


def _fail_job(store: JobStore, job_id: str, index: int, exc: BaseException) -> None:
    log.error("job failed", extra={"job": job_id, "batch": index, "error": repr(exc)})
    store.finish(job_id, JobState.failed, f"batch {index}: {type(exc).__name__}: {exc}"[:1000])


def run_batch(store: JobStore, settings: JobSettings, job_id: str, index: int, give_up: bool = False) -> None:
    """Project batch `index` of a job, record it and queue the job's next batch. With `give_up`, an engine that
    is down makes every sentence of the batch a failed line instead of raising."""
    state, done = store.begin_batch(job_id, index)
    if not state:
        log.warning("batch of a job that does not exist", extra={"job": job_id, "batch": index})
        return
    if not done and state not in ACTIVE:
        log.info("batch skipped", extra={"job": job_id, "batch": index, "state": state})
        return
    if done:
        # delivered again (its worker died before acknowledging it): only make sure its successor was queued
        _queue_next(store, job_id, store.release_after_redelivery(job_id, index))
        return
    fields = store.job_fields(job_id)
    if fields.get("type_vote") == "1" and index == int(fields["batches"]):  # the job's last step (crop.jobs.vote)
        from crop.jobs.vote import run_vote

        run_vote(store, storage_for(settings), job_id, fields, settings.stream_maxlen)
        outcome = store.complete_batch(job_id, index, {"sentences": 0}, [], "", settings.stream_maxlen)
        log.info("job voted", extra={"job": job_id, "state": outcome.state})
        return
    rng = store.batch_range(job_id, index)
    if rng is None:
        raise ConfigError(f"job {job_id} has no batch {index}")
    try:
        opts = ProjectionOptions.model_validate_json(fields.get("options") or "{}")
    except ValueError as exc:
        raise ConfigError(f"the job's options: {exc}") from exc
    storage, key = _input(fields, job_id, settings)
    from crop.jobs.lines import parse_batch

    name = fields.get("name", "")
    try:
        items = parse_batch(storage.read_range(key, rng.start, rng.end), rng, fields["format"],
                            fields.get("src_lang") or None, job_stem(name), name or None)
    except ValueError as exc:  # the input is not what was planned: no retry changes that
        raise ConfigError(str(exc)) from exc
    results, stats = _project(items, fields["engine"], opts, settings, give_up)
    out = storage_for(settings)
    out.write_bytes(batch_key(job_id, index), "".join(dumps(r) + "\n" for r in results).encode("utf-8"))
    langs = sorted({it.lang for it in items if it.lang})
    outcome = store.complete_batch(job_id, index, stats.as_dict(), langs, out.url(batch_key(job_id, index)),
                                   settings.stream_maxlen)
    log.info("batch done", extra={"job": job_id, "batch": index, "sentences": stats.sentences,
                                  "recorded": outcome.recorded, "state": outcome.state})
    _queue_next(store, job_id, outcome.release)


def _queue_next(store: JobStore, job_id: str, release: int | None) -> None:
    if release is not None:
        queue_batch(store.redis_url, job_id, release)
        store.mark_queued(job_id, [release])


def _input(fields: dict[str, str], job_id: str, settings: JobSettings) -> tuple[Storage, str]:
    if fields.get("input_url"):
        return storage_from_url(fields["input_url"])
    return storage_for(settings), input_key(job_id)


def _project(items: list[InputSentence | InvalidLine], engine: str, opts: ProjectionOptions, settings: JobSettings,
             give_up: bool) -> tuple[list[ProjectionResult], PipelineStats]:
    """The results of a batch, one per item in order, and their statistics."""
    try:
        translator, tagger = engines(engine, settings)
        pipe = build_pipeline(opts, translator, tagger)
        return list(pipe.run(items)), pipe.stats
    except EngineUnavailable as exc:
        if not give_up:
            raise
        log.error("engine unavailable after the retries: the batch is recorded as failed",
                  extra={"engine": engine, "error": repr(exc)})
        stats = PipelineStats()
        results = [invalid_result(it) if isinstance(it, InvalidLine) else failed_result(it, exc) for it in items]
        for r in results:
            stats.add(r)
        return results, stats
