"""The jobs API of the projector service (`/v1/jobs`): bulk projection jobs that Celery workers (`crop worker`) run
batch by batch, with their state in Redis and their input and results in the job storage (`crop.storage`).

    POST   /v1/jobs                 an upload (text/plain or JSONL as the raw body, options as query parameters),
                                    or JSON {"input_url": ..., options}; 201 + Location
    GET    /v1/jobs                 the caller's jobs, newest first (offset, limit)
    GET    /v1/jobs/{id}            state, counts, progress, rate, ETA, timestamps, errors
    GET    /v1/jobs/{id}/results    format=jsonl|conll, streamed in input order (the finished prefix while running)
    DELETE /v1/jobs/{id}            cancel: batches not started never run, results so far are kept

A job belongs to the API key that created it (sha256 of the key; "anonymous" without keys): another key gets 404.
An upload is streamed to storage as it comes (never held whole), and refused with no job left behind when it
cannot be read at all (its first line not UTF-8, a JSONL first line that is not an object, no language); a bad
line further in is the workers' to record as failed, in its place. Without a reachable Redis the routes answer
503 with Retry-After, and the rest of the projector keeps serving.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, Literal
from urllib.parse import urlsplit

import redis
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import ClientDisconnect

from crop.api.service import UPLOAD_TYPES, get_state, json_safe, require_api_key, require_upload
from crop.jobs.dispatch import QUEUE, start_job
from crop.jobs.lines import plan_batches, result_lines_to_conll, sniff_format
from crop.jobs.options import ProjectionOptions
from crop.jobs.settings import JobSettings, env_name
from crop.jobs.state import JobInfo, JobState, JobStore, job_key, new_job_id
from crop.jobs.tasks import batch_key, input_key
from crop.jobs.vote import voted_key
from crop.langcodes import normalize_lang
from crop.storage import Storage, TooLarge, storage_from_url

log = logging.getLogger("crop.api.jobs")

JOBS_PATH = "/v1/jobs"
HEAD_BYTES = 64 * 1024  # the start of an upload kept for the checks that refuse it as a whole
RETRY_DOWN = 5  # Retry-After (s) while Redis cannot be reached
RETRY_BUSY = 30  # Retry-After (s) for a key with too many active jobs
REDIS_TIMEOUT = 3.0  # seconds for the availability probe and the metrics
CHUNK = 64 * 1024
ANONYMOUS = "anonymous"
FORMATS = {"text/plain": "text", "application/x-ndjson": "jsonl", "application/jsonl": "jsonl"}


class JobList(BaseModel):
    jobs: list[JobInfo]
    total: int
    offset: int
    limit: int


class JobParams(BaseModel):
    """What a job request says besides its input; the projection options are the extra fields."""

    model_config = ConfigDict(extra="allow")

    src_lang: str | None = None
    name: str | None = None
    engine: str | None = None


class InputUrl(JobParams):
    input_url: str


class Jobs:
    """The job store, the storage and the settings of the jobs API (on `app.state.jobs`)."""

    def __init__(self, settings: JobSettings) -> None:
        self.settings = settings
        self.store = JobStore(settings.redis_url)
        self.storage = Storage(settings.storage_root)
        # a client of our own with short timeouts: the availability probe and the metrics never hang a request
        self.redis = redis.Redis.from_url(settings.redis_url, socket_timeout=REDIS_TIMEOUT,
                                          socket_connect_timeout=REDIS_TIMEOUT)

    def where(self) -> str:
        """The Redis server, without credentials (for messages)."""
        url = urlsplit(self.settings.redis_url)
        return f"{url.scheme}://{url.hostname}:{url.port or 6379}{url.path}"

    # -- requests ------------------------------------------------------------------------------------------------

    def check_up(self) -> None:
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise _down(self, exc) from exc

    def owned(self, job_id: str, owner: str) -> JobInfo:
        """The job `job_id` of `owner`; 404 when there is none (or it is another owner's: no hint it exists)."""
        info = self.store.get(job_id)
        if info is None or info.owner != owner:
            raise HTTPException(404, f"no job {job_id!r}")
        return info

    def check_capacity(self, owner: str) -> None:
        active = self.store.active_count(owner)
        if active >= self.settings.job_max_active:
            raise HTTPException(429, f"{active} jobs of this API key are queued or running; at most "
                                     f"{self.settings.job_max_active} ({env_name('job_max_active')}): wait for one "
                                     "to finish, or cancel one", headers={"Retry-After": str(RETRY_BUSY)})

    def engine(self, name: str | None, loc: tuple[str, ...]) -> str:
        names = list(self.settings.job_engines)
        if name is None:
            return names[0]
        if name not in self.settings.job_engines:
            raise _invalid(loc + ("engine",), name, f"unknown engine {name!r}; this deployment offers "
                                                    f"{', '.join(map(repr, names))} ({env_name('job_engines')})")
        return name

    def input_source(self, url: str) -> tuple[Storage, str]:
        """The storage and key of an `input_url`, which must lie in a folder of `job_input_prefixes` (a prefix
        is a folder: "s3://b/in" admits "s3://b/in/x.txt", not "s3://b/inside.txt")."""
        setting = env_name("job_input_prefixes")
        prefixes = self.settings.job_input_prefixes
        if not prefixes:
            raise HTTPException(403, f"input_url is not accepted by this deployment ({setting} is empty); "
                                     "upload the input as the request body instead")
        inside = any(url.startswith(p.rstrip("/") + "/") for p in prefixes)
        if ".." in url.replace("\\", "/").split("/") or not inside:
            raise HTTPException(403, f"input_url {url!r} is not under an allowed prefix ({setting}: "
                                     f"{', '.join(prefixes)})")
        try:
            storage, key = storage_from_url(url)
        except ValueError as exc:
            raise _invalid(("body", "input_url"), url, f"input_url {url!r} cannot be read: {exc}") from exc
        if not storage.exists(key):
            raise _invalid(("body", "input_url"), url, f"input_url {url!r} does not exist")
        return storage, key

    def copy_input(self, source: Storage, source_key: str, key: str, check: HeadCheck) -> None:
        """Copy an input from its URL into the job's storage (the job then never depends on the source
        staying as it was), `check`ing its start."""
        with source.open_read(source_key) as f:
            self._write(key, _checking_head(iter(lambda: f.read(CHUNK), b""), check))

    def _write(self, key: str, chunks: Iterable[bytes]) -> None:
        try:
            self.storage.write_stream(key, chunks, max_bytes=self.settings.job_max_upload_bytes)
        except TooLarge as exc:
            raise self.too_large() from exc

    async def receive(self, request: Request, key: str, check: HeadCheck) -> None:
        """Stream the request body to storage under `key`, `check`ing its start (a refused upload is not read
        to its end)."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.job_max_upload_bytes:
            raise self.too_large()
        try:
            await self.storage.write_async_stream(key, _checking_head_async(request.stream(), check),
                                                  max_bytes=self.settings.job_max_upload_bytes)
        except TooLarge as exc:
            raise self.too_large() from exc
        except ClientDisconnect as exc:
            raise HTTPException(499, "the client closed the connection during the upload") from exc

    def too_large(self) -> HTTPException:
        return HTTPException(413, f"input larger than {self.settings.job_max_upload_bytes} bytes "
                                  f"({env_name('job_max_upload_bytes')})")

    def create(self, job_id: str, owner: str, name: str, src_lang: str | None, fmt: str, engine: str,
               options: ProjectionOptions) -> JobInfo:
        batches, total = plan_batches(self.storage, input_key(job_id), self.settings.job_batch_lines)
        if total == 0:
            raise HTTPException(422, "the input has no sentence (every line is blank)")
        self.check_capacity(owner)  # again: jobs of the same key may have been created during the upload
        self.store.create(job_id, owner, name, src_lang, fmt, engine, options.model_dump(), batches, total,
                          in_flight=self.settings.job_in_flight)
        start_job(self.store, job_id)
        info = self.store.get(job_id)
        assert info is not None
        return info

    def discard(self, job_id: str) -> None:
        try:
            self.storage.delete(f"jobs/{job_id}/")
        except Exception:  # nothing there, or the storage is down: the refused job has no state to point at it
            log.warning("could not delete the input of a refused job", extra={"job": job_id}, exc_info=True)

    # -- results ---------------------------------------------------------------------------------------------

    def finished_prefix(self, info: JobInfo) -> int:
        """How many batches from the first are done (the results readable in input order)."""
        done = set(self.store.done_batches(info.id))
        k = 0
        while k < info.batches and k in done:
            k += 1
        return k

    def result_lines(self, job_id: str, batches: int, voted: bool = False) -> Iterator[bytes]:
        """The output of the first `batches` batches, in order; `voted`: as the job's type vote re-typed them."""
        for index in range(batches):
            with self.storage.open_read(voted_key(job_id, index) if voted else batch_key(job_id, index)) as f:
                yield from f

    # -- metrics -------------------------------------------------------------------------------------------------

    def totals(self) -> tuple[dict[str, int], int, int]:
        """(jobs by state, batches done, sentences done) over every job: three fields of each job's hash, in one
        round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for raw in self.redis.zrange("crop:jobs", 0, -1):
            pipe.hmget(job_key(raw.decode()), "state", "batches_done", "done")
        states: dict[str, int] = {}
        batches = sentences = 0
        for state, batches_done, done in pipe.execute():
            if state is not None:
                states[state.decode()] = states.get(state.decode(), 0) + 1
                batches += int(batches_done or 0)
                sentences += int(done or 0)
        return states, batches, sentences


class HeadCheck:
    """Keeps the first HEAD_BYTES of an input as it streams past and runs `check(head, complete)` on them once,
    as soon as they are in (or at the end of a shorter input); what it raises stops the stream."""

    def __init__(self, check: Callable[[bytes, bool], None]) -> None:
        self.check = check
        self.head = bytearray()
        self.done = False

    def feed(self, chunk: bytes) -> None:
        if not self.done:
            self.head.extend(chunk[:HEAD_BYTES - len(self.head)])
            if len(self.head) >= HEAD_BYTES:
                self.finish(complete=False)

    def finish(self, complete: bool = True) -> None:
        if not self.done:
            self.done = True
            self.check(bytes(self.head), complete)


def _checking_head(chunks: Iterable[bytes], check: HeadCheck) -> Iterator[bytes]:
    for chunk in chunks:
        check.feed(chunk)
        yield chunk
    check.finish()


async def _checking_head_async(chunks: AsyncIterator[bytes], check: HeadCheck) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if chunk:
            check.feed(chunk)
            yield chunk
    check.finish()


def _down(jobs: Jobs, exc: Exception) -> HTTPException:
    return HTTPException(503, f"the job store (Redis at {jobs.where()}, {env_name('redis_url')}) cannot be reached: "
                              f"{type(exc).__name__}: {exc}; retry in {RETRY_DOWN} s",
                         headers={"Retry-After": str(RETRY_DOWN)})


def _invalid(loc: tuple[str, ...], value: Any, msg: str, kind: str = "value_error") -> RequestValidationError:
    return RequestValidationError([{"type": kind, "loc": loc, "msg": msg, "input": value}])


# -- checks of a request ---------------------------------------------------------------------------------------------


def owner_of(request: Request) -> str:
    """The owner of the caller's jobs: a hash of its API key (require_api_key has checked it), or "anonymous"."""
    if not get_state(request).settings.api_keys:
        return ANONYMOUS
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def job_options(params: JobParams, where: str) -> ProjectionOptions:
    """The projection options among `params`' extra fields; 422 naming each bad or unknown one."""
    try:
        return ProjectionOptions(**(params.model_extra or {}))
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": (where, *e["loc"])}
                                      for e in exc.errors(include_url=False, include_context=False)]) from None


def source_lang(params: JobParams, where: str) -> str | None:
    if params.src_lang is None or not params.src_lang.strip():
        return None
    try:
        return normalize_lang(params.src_lang)
    except ValueError as exc:
        raise _invalid((where, "src_lang"), params.src_lang, str(exc)) from None


def upload_format(request: Request) -> str:
    return FORMATS[request.headers.get("content-type", "").partition(";")[0].strip().lower()]


def url_format(url: str, head: bytes) -> str:
    """The format of an input read from a URL: by suffix, as `crop project` reads files, else by content."""
    return sniff_format(head, urlsplit(url).path.rsplit("/", 1)[-1])


def check_head(head: bytes, complete: bool, fmt: str, src_lang: str | None) -> None:
    """422 for an input that cannot be read as a whole, judged by its first non-blank line: not UTF-8, not a
    JSON object (JSONL), or no language (no src_lang, and no `lang` in the first JSONL record)."""
    lines = head.split(b"\n")
    if not complete:
        lines = lines[:-1]  # cut where the head ends
    for lineno, raw in enumerate(lines, 1):
        line = raw.removeprefix(b"\xef\xbb\xbf") if lineno == 1 else raw
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HTTPException(422, f"the input is not UTF-8 text: line {lineno} has the byte "
                                     f"0x{line[exc.start]:02x} at {exc.start}, which is not UTF-8; send the input "
                                     "encoded as UTF-8") from None
        if fmt == "jsonl":
            _check_record(text, lineno, src_lang)
        elif src_lang is None:
            raise HTTPException(422, "no source language: give src_lang (text input has no per-line language)")
        return
    if not complete:
        raise HTTPException(422, f"the input has no line end in its first {HEAD_BYTES} bytes; send one sentence "
                                 "(or one JSON object) a line")


def _check_record(text: str, lineno: int, src_lang: str | None) -> None:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HTTPException(422, f"the input is not JSONL: line {lineno} is not JSON ({exc.msg} at column "
                                 f"{exc.colno})") from None
    if not isinstance(record, dict):
        raise HTTPException(422, f"the input is not JSONL: line {lineno} is a JSON {type(record).__name__}, not an "
                                 "object")
    if src_lang is None and not record.get("lang"):
        raise HTTPException(422, f"no source language: give src_lang, or a `lang` field on each line (line {lineno} "
                                 "has none)")


# -- the router ------------------------------------------------------------------------------------------------------


def get_jobs(request: Request) -> Jobs:
    jobs: Jobs = request.app.state.jobs
    jobs.check_up()
    return jobs


UPLOAD_DOC = {"content": {t: {"schema": {"type": "string", "format": "binary"}} for t in sorted(UPLOAD_TYPES)}
              | {"application/json": {"schema": InputUrl.model_json_schema()}},
              "description": "the input as the body (text: one sentence a line; JSONL: one object a line with "
                             "`text` or `tokens`, optionally `id` and `lang`), options as query parameters; or "
                             "JSON with `input_url` and the options"}
ERRORS = {404: {"description": "no such job for this API key"},
          503: {"description": "the job store (Redis) cannot be reached; Retry-After"}}

router = APIRouter(prefix=JOBS_PATH, tags=["jobs"], dependencies=[Depends(require_api_key)])


@router.post("", status_code=201, response_model=JobInfo, dependencies=[Depends(require_upload)],
             openapi_extra={"requestBody": UPLOAD_DOC},
             responses={201: {"description": "the job (JobInfo); Location: its URL"},
                        403: {"description": "input_url not allowed"}, 413: {"description": "input too large"},
                        415: {"description": "not text, JSONL or JSON"},
                        422: {"description": "bad options, unknown engine, or an input that cannot be read"},
                        429: {"description": "too many active jobs for this API key; Retry-After"}, **ERRORS})
async def submit(request: Request, response: Response) -> Any:
    jobs = await run_in_threadpool(get_jobs, request)
    owner = owner_of(request)
    upload = request.headers.get("content-type", "").partition(";")[0].strip().lower() in UPLOAD_TYPES
    where = "query" if upload else "body"
    params = _upload_params(request) if upload else await _json_params(request)
    options = job_options(params, where)
    src_lang = source_lang(params, where)
    engine = jobs.engine(params.engine, (where,))
    await run_in_threadpool(jobs.check_capacity, owner)
    job_id = new_job_id()
    fmt = upload_format(request) if upload else None
    try:
        if upload:
            name = params.name or "upload"
            await jobs.receive(request, input_key(job_id), HeadCheck(lambda h, c: check_head(h, c, fmt, src_lang)))
        else:
            url = params.input_url  # type: ignore[attr-defined]
            name = params.name or urlsplit(url).path.rsplit("/", 1)[-1] or "input"
            source, key = await run_in_threadpool(jobs.input_source, url)

            def check(head: bytes, complete: bool) -> None:
                nonlocal fmt
                fmt = url_format(url, head)
                check_head(head, complete, fmt, src_lang)

            await run_in_threadpool(jobs.copy_input, source, key, input_key(job_id), HeadCheck(check))
        assert fmt is not None
        info = await run_in_threadpool(jobs.create, job_id, owner, name, src_lang, fmt, engine, options)
    except BaseException:
        await run_in_threadpool(jobs.discard, job_id)
        raise
    response.headers["Location"] = f"{JOBS_PATH}/{job_id}"
    log.info("job submitted", extra={"job": job_id, "total": info.total, "batches": info.batches, "engine": engine})
    return _info(info)


def _upload_params(request: Request) -> JobParams:
    return JobParams(**{k: v for k, v in request.query_params.items()})


async def _json_params(request: Request) -> InputUrl:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(("body",), None, f"the body is not JSON ({exc}); send an input upload as text/plain or "
                                        "application/x-ndjson, or JSON with input_url", "json_invalid") from None
    if not isinstance(body, dict):
        raise _invalid(("body",), body, "the body must be a JSON object with input_url")
    try:
        return InputUrl(**body)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False, include_context=False)]) from None


@router.get("", responses=ERRORS)
def list_jobs(request: Request, offset: int = Query(0, ge=0, le=10**9),
              limit: int = Query(50, ge=1, le=500)) -> JobList:
    jobs = get_jobs(request)
    infos, total = jobs.store.list(owner_of(request), offset=offset, limit=limit)
    return JobList(jobs=[JobInfo.model_validate(_info(i)) for i in infos], total=total, offset=offset, limit=limit)


@router.get("/{job_id}", response_model=JobInfo, responses=ERRORS)
def get_job(job_id: str, request: Request) -> Any:
    jobs = get_jobs(request)
    return _info(jobs.owned(job_id, owner_of(request)))


@router.delete("/{job_id}", response_model=JobInfo, responses=ERRORS)
def cancel_job(job_id: str, request: Request) -> Any:
    jobs = get_jobs(request)
    jobs.owned(job_id, owner_of(request))
    info = jobs.store.cancel(job_id)
    log.info("job cancelled", extra={"job": job_id, "state": str(info.state)})
    return _info(info)


@router.get("/{job_id}/results", response_class=StreamingResponse,
            responses={200: {"description": "one line per input line (jsonl, as `crop project --output`) or the "
                                            "kept sentences as CoNLL; X-Crop-Partial: true while the job is not "
                                            "complete (the finished prefix, in input order); with the option "
                                            "type_vote, X-Crop-Type-Vote: done once the lines are re-typed",
                             "content": {"application/x-ndjson": {}, "text/plain": {}}}, **ERRORS})
def job_results(job_id: str, request: Request,
                format: Literal["jsonl", "conll"] = Query("jsonl", description="jsonl or conll")) -> StreamingResponse:
    jobs = get_jobs(request)
    info = jobs.owned(job_id, owner_of(request))
    ready = jobs.finished_prefix(info)
    partial = ready < info.batches or str(info.state) != "succeeded"
    headers = {"X-Crop-Partial": "true" if partial else "false", "X-Crop-Batches": f"{ready}/{info.batches}",
               "X-Crop-Job-State": str(info.state)}
    # a type-vote job's lines are re-typed once its vote is done; before, the finished prefix as projected
    voted = info.type_vote is not None and info.type_vote.state == "done"
    headers["X-Crop-Type-Vote"] = info.type_vote.state if info.type_vote is not None else "off"
    lines = jobs.result_lines(job_id, ready, voted)
    if format == "conll":
        body: Iterator[bytes] = _chunks(s.encode() for s in result_lines_to_conll(lines))
        return StreamingResponse(body, media_type="text/plain; charset=utf-8", headers=headers)
    return StreamingResponse(_chunks(lines), media_type="application/x-ndjson", headers=headers)


def _chunks(parts: Iterable[bytes]) -> Iterator[bytes]:
    """Lines gathered into chunks of about CHUNK bytes (one write per line would be slow)."""
    buf: list[bytes] = []
    size = 0
    for part in parts:
        buf.append(part)
        size += len(part)
        if size >= CHUNK:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


def _info(info: JobInfo) -> dict[str, Any]:
    return json_safe(jsonable_encoder(info))


# -- metrics and mounting --------------------------------------------------------------------------------------------


class JobsCollector(Collector):
    """Job metrics read from Redis at each scrape (the workers update Redis, not this process)."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("crop_jobs_store_up", "1 when the job store (Redis) answers")
        try:
            states, batches, sentences = self.jobs.totals()
            depth = int(self.jobs.redis.llen(QUEUE))
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_state = GaugeMetricFamily("crop_jobs", "jobs by state", labels=["state"])
        for state in JobState:
            by_state.add_metric([state.value], states.get(state.value, 0))
        yield by_state
        yield CounterMetricFamily("crop_job_batches_processed", "batches of all jobs processed", value=batches)
        yield CounterMetricFamily("crop_job_sentences_processed", "sentences of all jobs processed", value=sentences)
        yield GaugeMetricFamily("crop_job_queue_depth", f"batches waiting in the Celery queue {QUEUE!r}", value=depth)


def mount_jobs(app: FastAPI, settings: JobSettings) -> Jobs:
    """Serve the jobs API on `app` (a projector service) with these settings."""
    jobs = Jobs(settings)
    app.state.jobs = jobs
    app.include_router(router)
    app.state.service.registry.register(JobsCollector(jobs))

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def store_down(request: Request, exc: Exception) -> JSONResponse:
        http = _down(jobs, exc)
        log.error("job store unreachable", extra={"path": request.url.path, "error": str(exc)})
        return JSONResponse({"detail": http.detail}, status_code=503, headers=http.headers)

    return jobs

