"""What every crop service shares: the app factory (engine loaded in the background at start-up, the batch
queue), health (`/health/live`, `/health/ready`: 503 until the engine is loaded), Prometheus `/metrics`, a
request id on every response and log line, bearer API keys on `/v1`, body-size limits (413), and errors that say
what is wrong (4xx) or what failed (5xx), as JSON `{"detail": ...}`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crop.api.batching import BatchQueue, QueueFull
from crop.api.settings import ServiceSettings
from crop.log import request_id
from crop.translate.base import UnsupportedPair

log = logging.getLogger("crop.api")


class ServiceState:
    """The engine(s) of a running service, its queue and its metrics (on `app.state.service`)."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.engine: Any = None
        self.ready = False
        self.load_error: str | None = None
        self.queue: BatchQueue | None = None
        self.registry = CollectorRegistry()
        self.latency = Histogram("crop_request_seconds", "request latency", ["route", "method", "status"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.requests = Counter("crop_requests", "requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.batch_size = Histogram("crop_batch_size", "items per engine call", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_seconds = Histogram("crop_batch_seconds", "engine time per batch", registry=self.registry)
        self.queue_depth = Gauge("crop_queue_depth", "items waiting for the engine", registry=self.registry)
        self.queue_depth.set_function(lambda: self.queue.depth if self.queue else 0)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def check_sizes(self, texts: Sequence[str]) -> None:
        """413 for a request with too many sentences or too long a sentence."""
        s = self.settings
        if len(texts) > s.max_items:
            raise HTTPException(413, f"{len(texts)} sentences in one request; at most {s.max_items}")
        for i, t in enumerate(texts):
            if len(t) > s.max_text_chars:
                raise HTTPException(413, f"sentence {i} has {len(t)} characters; at most {s.max_text_chars}")

    async def submit(self, key: Hashable, values: Sequence[Any], texts: Sequence[str]) -> list[Any]:
        """Run items through the batch queue (tokens counted by whitespace); HTTP errors for a full queue (429),
        a timeout (504), an engine that refuses the input (400) or fails (500)."""
        if not self.ready or self.queue is None:
            raise HTTPException(503, f"{self.name} is not ready: " + (self.load_error or "the engine is loading"))
        try:
            return await self.queue.submit(key, values, [len(t.split()) for t in texts],
                                           timeout=self.settings.request_timeout)
        except QueueFull as exc:
            raise HTTPException(429, f"too many requests waiting: {exc}",
                                headers={"Retry-After": str(int(exc.retry_after))}) from exc
        except TimeoutError as exc:
            raise HTTPException(504, f"no result within {self.settings.request_timeout:g} s") from exc
        except (UnsupportedPair, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc


def json_safe(value: Any) -> Any:
    """`value` with what a JSON response cannot hold made printable: lone surrogates (not UTF-8) escaped as
    `\\udXXX`, infinities and NaN as strings."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


def require_api_key(request: Request) -> None:
    keys = get_state(request).settings.api_keys
    if not keys:
        return
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not any(secrets.compare_digest(token.strip(), k) for k in keys):
        raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})


class BodyLimit:
    """413 for a request body over `max_bytes`, by Content-Length or while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        # read the body here (it is small by definition) so that an oversized one is refused before the app runs
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([], message), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, None), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


def _replay(chunks: list[bytes], final: Message | None) -> Receive:
    """A `receive` that gives the body read already, then what the client sends next (a disconnect)."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}] if chunks or \
        final is None else []
    if final is not None:
        pending.append(final)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # nothing more will come: wait until the server cancels us
        raise RuntimeError("unreachable")

    return receive


def create_service(name: str, settings: ServiceSettings, load: Callable[[], Any], run: Callable[[Any, Hashable,
                   list[Any]], list[Any]], description: str) -> FastAPI:
    """A FastAPI app whose engine `load()` builds in a worker thread at start-up (the service is live at once,
    ready when it is loaded) and whose batch queue calls `run(engine, key, items)`."""
    state = ServiceState(name, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load_engine() -> None:
            try:
                state.engine = await asyncio.to_thread(load)
            except Exception as exc:  # the service stays live and says why it is not ready
                state.load_error = f"{type(exc).__name__}: {exc}"
                log.error("engine failed to load", extra={"service": name, "error": state.load_error})
                return
            state.queue = BatchQueue(lambda key, items: run(state.engine, key, items),
                                     max_batch_size=settings.max_batch_size,
                                     max_batch_tokens=settings.max_batch_tokens, max_wait_ms=settings.max_wait_ms,
                                     max_queue=settings.max_queue, on_batch=state.observe_batch)
            state.queue.start()
            state.ready = True
            log.info("ready", extra={"service": name})

        loader = asyncio.create_task(load_engine())
        yield
        loader.cancel()
        if state.queue is not None:
            await state.queue.stop()

    app = FastAPI(title=f"crop {name}", description=description, version="0.1.0", lifespan=lifespan)
    app.state.service = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)

    @app.middleware("http")
    async def request_context(request: Request, call_next: Callable[[Request], Any]) -> Any:
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex
        token = request_id.set(rid)
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["X-Request-ID"] = rid
            return response
        finally:
            route = request.scope.get("route")
            path = getattr(route, "path", "unmatched")
            seconds = time.perf_counter() - t0
            state.latency.labels(path, request.method, str(status)).observe(seconds)
            state.requests.labels(path, str(status)).inc()
            if path not in ("/metrics", "/health/live", "/health/ready"):
                level = logging.WARNING if status >= 500 else logging.INFO
                log.log(level, "request", extra={"service": name, "method": request.method, "path": path,
                                                 "status": status, "ms": round(seconds * 1000, 1)})
            request_id.reset(token)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which JSON cannot always carry (a lone surrogate, 1e400)
        return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", extra={"service": name, "path": request.url.path})
        return JSONResponse({"detail": json_safe(f"internal error: {type(exc).__name__}: {exc}")}, status_code=500)

    @app.get("/health/live", tags=["operations"])
    def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/health/ready", tags=["operations"], responses={503: {"description": "the engine is not loaded"}})
    def ready() -> JSONResponse:
        if state.ready:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "loading" if state.load_error is None else "failed",
                             "detail": state.load_error or "the engine is loading"}, status_code=503)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    return app


V1 = [Depends(require_api_key)]
