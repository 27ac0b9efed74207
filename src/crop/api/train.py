"""Training runs on the jobs API of the projector service (`/v1/train`): a multilingual student trained from the
training pool that `crop trainer` fills from the bulk jobs' results, run by a trainer (Celery queue `train`).

    POST /v1/train          JSON TrainRequest {languages, name, student, rounds, source, dev, ...}; 201 + Location
    GET  /v1/train/{id}     state (queued, running, succeeded, failed), round/epoch, loss, dev F1, ETA, version,
                            metrics, error

A run belongs to the API key that created it, as a job does (another key gets 404). A request the trainer could
not run gets 422 at once, naming the field: a language whose pool has no kept sentence, a source or dev file
that is not under CROP_JOB_INPUT_PREFIXES nor in the job storage, no source or no dev set at all. Without a
reachable Redis: 503 with Retry-After (the jobs API's handler).

Mounted on a projector app that serves the jobs API (`mount_jobs` first: this router uses `app.state.jobs`):
`app.include_router(crop.api.train.router)`."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError

from crop.api.jobs import Jobs, get_jobs, owner_of
from crop.api.service import json_safe, require_api_key, require_json
from crop.train.pool import Pool
from crop.train.tasks import DataError, TrainInfo, TrainRequest, TrainStore, check_pool, queue_training, resolve_data

log = logging.getLogger("crop.api.train")

TRAIN_PATH = "/v1/train"
ERRORS = {404: {"description": "no such training run for this API key"},
          503: {"description": "the job store (Redis) cannot be reached; Retry-After"}}

router = APIRouter(prefix=TRAIN_PATH, tags=["training"], dependencies=[Depends(require_api_key)])


def _stores(jobs: Jobs) -> tuple[Pool, TrainStore]:
    pool = Pool(jobs.storage, jobs.store.redis)
    return pool, TrainStore(jobs.store.redis)


def _submit(jobs: Jobs, owner: str, body: TrainRequest) -> TrainInfo:
    pool, store = _stores(jobs)
    counts = pool.counts()
    try:
        check_pool(body, counts)
        resolve_data(body, jobs.settings, jobs.storage)
    except DataError as exc:
        raise RequestValidationError([{"type": "value_error", "loc": exc.loc, "msg": str(exc),
                                       "input": exc.value}]) from None
    info = store.create(owner, body, {lang: counts.get(lang, {}) for lang in body.languages})
    queue_training(jobs.settings.redis_url, info.id)
    return info


@router.post("", status_code=201, response_model=TrainInfo, dependencies=[Depends(require_json)],
             responses={201: {"description": "the run (TrainInfo); Location: its URL"},
                        422: {"description": "a bad field, a language with nothing in the pool, a source or dev "
                                             "file that cannot be used"}, **ERRORS})
async def submit(body: TrainRequest, request: Request, response: Response) -> Any:
    jobs = await run_in_threadpool(get_jobs, request)
    info = await run_in_threadpool(_submit, jobs, owner_of(request), body)
    response.headers["Location"] = f"{TRAIN_PATH}/{info.id}"
    log.info("training submitted", extra={"run": info.id, "languages": info.languages, "model": info.name})
    return json_safe(jsonable_encoder(info))


@router.get("/{run_id}", response_model=TrainInfo, responses=ERRORS)
def get_run(run_id: str, request: Request) -> Any:
    jobs = get_jobs(request)
    _, store = _stores(jobs)
    info = store.get(run_id)
    if info is None or info.owner != owner_of(request):
        raise HTTPException(404, f"no training run {run_id!r}")
    return json_safe(jsonable_encoder(info))
