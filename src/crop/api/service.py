"""What every crop service shares: the app factory (engine loaded in the background at start-up, retried with
backoff until it loads; the batch queue), health (`/health/live`, `/health/ready`: 503 until the engine is
loaded), Prometheus `/metrics` (labels from a closed set: a made-up method or path cannot add series), a request
id on every response and log line, bearer API keys on `/v1` (declared in OpenAPI), JSON bodies only (415), size
limits (413 for the body, the items, the characters; 422 for a token longer than `max_token_chars`), the work of
a request that timed out or whose client went away dropped from the queue, an engine that is down answered 503
with Retry-After, errors that say what is wrong (4xx, logged at INFO, 413/429 at WARNING) or what failed (5xx,
logged at ERROR), as JSON `{"detail": ...}`, and `/docs` served from the package (no CDN).
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from crop.api.batching import BatchQueue, QueueFull, TooManyItems
from crop.api.settings import ServiceSettings
from crop.errors import EngineUnavailable
from crop.log import request_id
from crop.text import first_long_token, tokenize
from crop.translate.base import UnsupportedPair

log = logging.getLogger("crop.api")

T = TypeVar("T")

# metric labels come from closed sets: a method outside this one, or a path no route matches, is "other"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})
OTHER = "other"
# quiet paths: probes and scrapes, not logged
OPERATIONS = frozenset({"/metrics", "/health/live", "/health/ready"})
DOCS_ASSETS = "/docs/assets"

# set while a request is served: an event set once its client has gone away (BodyLimit watches for it)
client_gone: ContextVar[asyncio.Event | None] = ContextVar("client_gone", default=None)


class ClientGone(Exception):
    """The client closed the connection before its answer was ready."""


class ServiceState:
    """The engine(s) of a running service, its queue and its metrics (on `app.state.service`)."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.engine: Any = None
        self.ready = False
        self.load_error: str | None = None
        self.load_attempts = 0  # failed attempts to load the engine so far
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

    def check_sizes(self, texts: Sequence[str], lang: str | Sequence[str] = "", field: str = "texts") -> None:
        """413 for a request with more sentences than a request (or the queue) may hold or too long a sentence,
        422 for a sentence with a token longer than `max_token_chars` (the engines' cost grows faster than a
        token's length), located at `field`[i] of the body like FastAPI's own 422s. `lang`: the texts'
        language, or one per text (tokenization depends on it)."""
        s = self.settings
        if len(texts) > s.max_items:
            raise HTTPException(413, f"{len(texts)} sentences in one request; at most {s.max_items}")
        if len(texts) > s.max_queue:
            raise HTTPException(413, f"{len(texts)} sentences in one request; the queue holds at most {s.max_queue}")
        langs = [lang] * len(texts) if isinstance(lang, str) else lang
        for i, (t, lg) in enumerate(zip(texts, langs, strict=True)):
            if len(t) > s.max_text_chars:
                raise HTTPException(413, f"sentence {i} has {len(t)} characters; at most {s.max_text_chars}")
            token = _long_token(t, lg, s.max_token_chars)
            if token is not None:
                raise RequestValidationError([{
                    "type": "token_too_long", "loc": ("body", field, i), "input": token[:40] + "...",
                    "msg": f"sentence {i} has a token of {len(token)} characters; at most {s.max_token_chars}",
                    "ctx": {"length": len(token), "max_token_chars": s.max_token_chars}}])

    async def submit(self, key: Hashable, values: Sequence[Any], texts: Sequence[str]) -> list[Any]:
        """Run items through the batch queue (tokens counted by whitespace); HTTP errors for more items than the
        queue can hold (413), a full queue (429), a timeout (504), an engine that refuses the input (400), is
        down (503 with Retry-After) or fails (500). Items of a client that went away are dropped (499)."""
        if not self.ready or self.queue is None:
            raise HTTPException(503, f"{self.name} is not ready: " + (self.load_error or "the engine is loading"))
        try:
            return await _unless_gone(self.queue.submit(key, values, [len(t.split()) for t in texts],
                                                        timeout=self.settings.request_timeout))
        except TooManyItems as exc:
            raise HTTPException(413, str(exc)) from exc
        except QueueFull as exc:
            raise HTTPException(429, f"too many requests waiting: {exc}",
                                headers={"Retry-After": str(int(exc.retry_after))}) from exc
        except TimeoutError as exc:
            raise HTTPException(504, f"no result within {self.settings.request_timeout:g} s") from exc
        except ClientGone as exc:
            raise HTTPException(499, "the client closed the connection") from exc
        except EngineUnavailable as exc:
            retry = max(1, math.ceil(exc.retry_after))
            raise HTTPException(503, f"the {self.name}'s engine ({self.engine_name()}) is unavailable: {exc}; "
                                     f"retry in {retry} s", headers={"Retry-After": str(retry)}) from exc
        except (UnsupportedPair, ValueError) as exc:
            raise HTTPException(400, str(exc)) from exc

    def engine_name(self) -> str:
        return str(getattr(self.engine, "name", None) or self.name)

    def readiness(self) -> JSONResponse:
        if self.ready:
            return JSONResponse({"status": "ready"})
        if self.load_error is None:
            return JSONResponse({"status": "loading", "detail": "the engine is loading", "attempts": 0},
                                status_code=503)
        return JSONResponse({"status": "retrying", "detail": self.load_error, "attempts": self.load_attempts},
                            status_code=503)


def _long_token(text: str, lang: str, limit: int) -> str | None:
    """The first token of `text` longer than `limit` characters, if any. Tokens never span whitespace, so only a
    text with a long chunk between spaces is tokenized (the others cannot have one)."""
    if all(len(chunk) <= limit for chunk in text.split()):
        return None
    tokens = tokenize(text, lang)[0]
    j = first_long_token(tokens, limit)
    return None if j is None else tokens[j]


async def _unless_gone(work: Awaitable[T]) -> T:
    """`await work`, unless the client of the request being served goes away first: then the work is cancelled
    (the queue drops its items, so they never reach the engine) and ClientGone is raised."""
    gone = client_gone.get()
    if gone is None:
        return await work
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})  # its items are out of the queue once it has handled the cancellation
    if task.cancelled():
        raise ClientGone
    return task.result()


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


# declares the scheme in OpenAPI (an Authorize button in /docs); the check and its 401 are require_api_key's
# (declared only when the service has keys: see _without_auth_in_openapi)
bearer = HTTPBearer(auto_error=False, description="an API key of the service (CROP_<SERVICE>_API_KEYS)")


# the checks below are async: FastAPI would run plain functions in its thread pool, a hop per request
async def require_api_key(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    keys = get_state(request).settings.api_keys
    if not keys:
        return
    token = credentials.credentials.strip() if credentials is not None else ""
    if not any(secrets.compare_digest(token.encode(), k.encode()) for k in keys):
        raise HTTPException(401, "missing or wrong API key (Authorization: Bearer <key>)",
                            headers={"WWW-Authenticate": "Bearer"})


JSON_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


# the media types of a file sent as the body (text, JSONL), accepted only by the upload routes (`require_upload`)
UPLOAD_TYPES = frozenset({"text/plain", "application/x-ndjson", "application/jsonl"})


def _media(content_type: str) -> str:
    return content_type.partition(";")[0].strip().lower()


def _is_json(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _require_body_type(request: Request, also: frozenset[str], hint: str) -> None:
    """415 for a body sent as anything but JSON or a type of `also` (no Content-Type at all is read as JSON)."""
    content_type = request.headers.get("content-type")
    if request.method not in JSON_BODY_METHODS or content_type is None:
        return
    media = _media(content_type)
    if not _is_json(media) and media not in also:
        raise HTTPException(415, f"Content-Type {content_type.strip()[:100]!r} is not accepted; {hint}")


async def require_json(request: Request) -> None:
    """415 for a body sent as anything but JSON (no Content-Type at all is read as JSON)."""
    _require_body_type(request, frozenset(), "send the body as application/json")


async def require_upload(request: Request) -> None:
    """`require_json` of a route that also takes a file as the body (UPLOAD_TYPES)."""
    _require_body_type(request, UPLOAD_TYPES, f"send the input as {', '.join(sorted(UPLOAD_TYPES))}, or JSON")


def is_upload(scope: Scope) -> bool:
    """Whether a request sends a file as its body (a Content-Type of UPLOAD_TYPES)."""
    content_type = dict(scope.get("headers", [])).get(b"content-type", b"").decode("latin-1")
    return _media(content_type) in UPLOAD_TYPES


class BodyLimit:
    """413 for a request body over `max_bytes`, by Content-Length or while it streams in. Once the body is in,
    it watches the connection: `client_gone` is set when the client goes away before its answer. Uploads (a file
    as the body, `is_upload`) to a path of `streamed` pass through as they come: their route streams them to
    storage under its own limit."""

    def __init__(self, app: ASGIApp, max_bytes: int, streamed: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope.get("path") in self.streamed and is_upload(scope)):
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
        gone = asyncio.Event()
        token = client_gone.set(gone)
        watcher = asyncio.create_task(_watch(receive, gone))
        try:
            await self.app(scope, _replay(chunks, None, gone), send)
        finally:
            watcher.cancel()
            client_gone.reset(token)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413)
        await response(scope, receive, send)


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Set `gone` when the client disconnects (after the body, the server's next message is the disconnect)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


def _replay(chunks: list[bytes], final: Message | None, gone: asyncio.Event | None = None) -> Receive:
    """A `receive` that gives the body read already, then what the client sends next (a disconnect, once `gone`
    is set)."""
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}] if chunks or \
        final is None else []
    if final is not None:
        pending.append(final)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        await (gone or asyncio.Event()).wait()  # without `gone`, wait until the server cancels us
        return {"type": "http.disconnect"}

    return receive


def _backoff(attempt: int, settings: ServiceSettings) -> float:
    """Seconds to wait after failed attempt `attempt` (1, 2, ...): doubling from the first wait, capped."""
    return min(settings.load_retry_initial * 2 ** min(attempt - 1, 60), settings.load_retry_max)


def _labels(scope: Scope) -> tuple[str, str]:
    """(route, method) metric labels: the route's template (set in the scope by the router) and a standard method,
    else "other"."""
    route = getattr(scope.get("route"), "path", None)
    method = scope.get("method", "")
    method = method if method in HTTP_METHODS else OTHER
    return (route if isinstance(route, str) else OTHER), method


def _log_level(status: int) -> int:
    """5xx: ERROR; an overloaded or oversized request (413, 429): WARNING; other client errors and success: INFO."""
    if status >= 500:
        return logging.ERROR
    return logging.WARNING if status in (413, 429) else logging.INFO


class RequestContext:
    """Per request: the request id (the client's X-Request-ID, else a new one) in the logs' context and on the
    answer, the latency and count metrics, a log line, and a `Server-Timing: app;dur=MS` header (the time from the
    request to its answer's start, in this process: what the service costs without the network and the client).
    Plain ASGI rather than `@app.middleware("http")`, whose task group and streams cost more per request than the
    student's forward pass does."""

    def __init__(self, app: ASGIApp, state: ServiceState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = Headers(scope=scope).get("x-request-id") or uuid.uuid4().hex
        token = request_id.set(rid)
        t0 = time.perf_counter()
        status = 500

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ms = (time.perf_counter() - t0) * 1000
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode("latin-1")),
                                      (b"server-timing", f"app;dur={ms:.2f}".encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        finally:
            path, method = _labels(scope)
            seconds = time.perf_counter() - t0
            self.state.latency.labels(path, method, str(status)).observe(seconds)
            self.state.requests.labels(path, str(status)).inc()
            if path not in OPERATIONS:
                log.log(_log_level(status), "request", extra={"service": self.state.name, "method": method,
                                                              "path": path, "status": status,
                                                              "ms": round(seconds * 1000, 1)})
            request_id.reset(token)


def create_service(name: str, settings: ServiceSettings, load: Callable[[], Any], run: Callable[[Any, Hashable,
                   list[Any]], list[Any]], description: str, streamed: frozenset[str] = frozenset()) -> FastAPI:
    """A FastAPI app whose engine `load()` builds in a worker thread at start-up (the service is live at once,
    ready when it is loaded) and whose batch queue calls `run(engine, key, items)`. `streamed`: paths whose
    uploads skip the body limit (their routes apply their own)."""
    state = ServiceState(name, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def load_engine() -> None:
            while True:
                try:
                    state.engine = await asyncio.to_thread(load)
                    break
                except Exception as exc:  # the service stays live, says why it is not ready, and tries again
                    state.load_attempts += 1
                    state.load_error = f"{type(exc).__name__}: {exc}"
                    wait = _backoff(state.load_attempts, settings)
                    log.error("engine failed to load", extra={"service": name, "error": state.load_error,
                                                              "attempt": state.load_attempts, "retry_in": wait})
                    await asyncio.sleep(wait)
            state.load_error = None
            state.queue = BatchQueue(lambda key, items: run(state.engine, key, items),
                                     max_batch_size=settings.max_batch_size,
                                     max_batch_tokens=settings.max_batch_tokens, max_wait_ms=settings.max_wait_ms,
                                     max_queue=settings.max_queue, on_batch=state.observe_batch)
            state.queue.start()
            state.ready = True
            log.info("ready", extra={"service": name, "attempts": state.load_attempts + 1})

        loader = asyncio.create_task(load_engine())
        yield
        loader.cancel()
        if state.queue is not None:
            await state.queue.stop()

    app = FastAPI(title=f"crop {name}", description=description, version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.service = state
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, streamed=streamed)

    # outermost of crop's middleware: it times and logs what BodyLimit refuses too
    app.add_middleware(RequestContext, state=state)

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

    @app.get("/health/ready", tags=["operations"],
             responses={503: {"description": "the engine is not loaded yet (loading, or retrying after an error: "
                                             "`detail` is the last error, `attempts` the failed attempts)"}})
    def ready() -> JSONResponse:
        return state.readiness()

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    _add_docs(app)
    if not settings.api_keys:
        _without_auth_in_openapi(app)
    return app


def _without_auth_in_openapi(app: FastAPI) -> None:
    """The OpenAPI of a service without API keys: no security scheme, no Authorize button (nothing asks for one)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.pop("security", None)
            components = schema.get("components", {})
            components.pop("securitySchemes", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI from the package's own copy (swagger-ui-bundle), so that it works offline."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(openapi_url=root + (app.openapi_url or "/openapi.json"), title=app.title + " - docs",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon-32x32.png")


V1 = [Depends(require_api_key), Depends(require_json)]
