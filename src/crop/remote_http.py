"""The HTTP client the remote engines share (`crop.translate.remote`, `crop.tag.remote`): one pooled
`httpx.Client` per engine (keep-alive), bearer API keys, timeouts, retries with exponential backoff and jitter on
timeouts, 429 (honouring Retry-After) and 502/503/504, and one quick retry on a refused or dropped connection.
Any other error answer raises at once with the URL, the status and the server's `detail`.

A service that cannot be reached, or still answers 429/502/503/504 or nothing after the retries, raises
`RemoteUnavailable`, a `crop.errors.EngineUnavailable`: the engine is down, not the input wrong. A small circuit
breaker then fails the calls of the next few seconds (`cooldown`) at once, with the same error, instead of letting
each wait for its own retries; `RemoteHTTP.health` says whether the service is up, since when and its last error.
`UpstreamLink` connects a remote engine in the background, with backoff, until it succeeds.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Self, TypeVar

import httpx

from crop.errors import EngineUnavailable

log = logging.getLogger(__name__)

API_KEY_ENV = "CROP_REMOTE_API_KEY"
RETRY_STATUS = frozenset({429, 502, 503, 504})
# answers that say the request itself is wrong (a ValueError, as an in-process engine would raise)
INVALID_REQUEST_STATUS = frozenset({400, 413, 422})
_DETAIL_LIMIT = 1000
# options of the remote engines that the registries also read from CROP_REMOTE_<KEY>
OPTION_TYPES: dict[str, type] = {"timeout": float, "max_retries": int, "backoff": float, "batch_size": int,
                                 "cooldown": float}


class RemoteServiceError(RuntimeError):
    """A crop service failed, refused the request or could not be reached (after the retries, where retrying
    made sense). `status` is None when no answer came back."""

    def __init__(self, message: str, url: str, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.detail = detail


class RemoteRequestError(RemoteServiceError, ValueError):
    """The service refused the request as invalid (400, 413, 422)."""


class RemoteUnavailable(RemoteServiceError, EngineUnavailable):
    """The service cannot be reached (connection refused or dropped, no such host, no answer in time) or answers
    429/502/503/504, after the retries; or it did so less than `retry_after` seconds ago (the circuit breaker)."""

    def __init__(self, message: str, url: str, status: int | None = None, detail: str | None = None,
                 retry_after: float = 5.0) -> None:
        super().__init__(message, url, status, detail)
        self.retry_after = retry_after


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Backoff before retry `attempt` (0-based): base * 2**attempt, capped, with jitter (half to all of it)."""
    d = min(cap, base * 2**attempt)
    return d / 2 + random.uniform(0, d / 2)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Health:
    """What the last requests to a service said about it: `up` (None: nothing asked yet), since when (the last
    change), and the latest failure."""

    up: bool | None = None
    since: datetime = field(default_factory=utc_now)
    last_error: str | None = None


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date), at most `cap`; None when absent/unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), cap)


def error_detail(resp: httpx.Response) -> str:
    """The server's `detail` (crop services answer errors as JSON `{"detail": ...}`), else the body's start."""
    try:
        data = resp.json()
    except ValueError:
        data = None
    detail: Any = data.get("detail") if isinstance(data, dict) else None
    if detail is None:
        detail = resp.text or resp.reason_phrase
    elif not isinstance(detail, str):  # FastAPI validation errors: a list of {"loc", "msg", ...}
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" if isinstance(d, dict)
                           else str(d) for d in (detail if isinstance(detail, list) else [detail]))
    return detail if len(detail) <= _DETAIL_LIMIT else detail[:_DETAIL_LIMIT] + "…"


class RemoteHTTP:
    """A pooled, retrying JSON client of one crop service, with a circuit breaker. Safe to share between threads
    (httpx.Client is)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 backoff: float = 0.5, backoff_max: float = 30.0, max_retry_after: float = 60.0,
                 ready_timeout: float = 120.0, cooldown: float = 5.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"a remote engine needs an http(s) URL, not {base_url!r}")
        if max_retries < 0 or backoff < 0 or cooldown < 0:
            raise ValueError("max_retries, backoff and cooldown must not be negative")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.ready_timeout = ready_timeout
        self.cooldown = cooldown
        self.health = Health()
        self.attempts = 0  # HTTP requests sent (or tried), retries included
        self._open_until = 0.0  # monotonic time until which the circuit breaker refuses calls
        self._lock = threading.Lock()
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
        headers = {"Accept": "application/json", "User-Agent": "crop-remote/0.1"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                    limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=30.0))

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RemoteHTTP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, body)

    def delay(self, attempt: int) -> float:
        return backoff_delay(attempt, self.backoff, self.backoff_max)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded JSON answer of a 2xx, with retries on transient failures; RemoteUnavailable when the
        service is down (or was, less than `cooldown` seconds ago), RemoteRequestError for an invalid request,
        RemoteServiceError for any other failure."""
        url = self.base_url + path
        self._refuse_while_open(method, url)
        try:
            answer = self._send(method, path, url, body)
        except RemoteUnavailable as exc:
            self._went_down(exc)
            raise
        except RemoteServiceError:
            self._answered()  # it answered: up, even if this request failed
            raise
        self._answered()
        return answer

    def _send(self, method: str, path: str, url: str, body: dict[str, Any] | None) -> Any:
        attempt = 0
        while True:
            wait: float | None = None
            self.attempts += 1
            try:
                resp = self._client.request(method, path, json=body)
            except httpx.TimeoutException as exc:
                error = RemoteUnavailable(f"{method} {url}: no answer within {self.timeout:g} s "
                                          f"({type(exc).__name__})", url, retry_after=self.cooldown)
                retries = self.max_retries
            except httpx.TransportError as exc:
                # refused, reset, no such host: one quick retry (a restart, a stale keep-alive connection), not
                # a backoff loop that only makes the caller wait for a service that is not there
                error = RemoteUnavailable(f"{method} {url}: connection failed ({type(exc).__name__}: {exc})", url,
                                          retry_after=self.cooldown)
                retries = min(self.max_retries, 1)
                wait = min(self.delay(0), 0.1)
            else:
                if resp.is_success:
                    return _json(resp, method, url)
                wait = retry_after_seconds(resp.headers.get("retry-after"), self.max_retry_after)
                error = self._unavailable(resp, method, url, wait)
                retries = self.max_retries
            if attempt >= retries:
                raise self._gave_up(error, attempt + 1)
            pause = wait if wait is not None else self.delay(attempt)
            log.warning("remote request failed, retrying", extra={"url": url, "status": error.status,
                                                                  "attempt": attempt + 1, "delay_s": round(pause, 3)})
            time.sleep(pause)
            attempt += 1

    def _unavailable(self, resp: httpx.Response, method: str, url: str, wait: float | None) -> RemoteUnavailable:
        """The error of an answer that says the service is unavailable (429/502/503/504, retried); any other
        error answer raises at once."""
        detail = error_detail(resp)
        message = f"{method} {url} failed with HTTP {resp.status_code}: {detail}"
        if resp.status_code not in RETRY_STATUS:
            cls = RemoteRequestError if resp.status_code in INVALID_REQUEST_STATUS else RemoteServiceError
            raise cls(message, url, resp.status_code, detail)
        return RemoteUnavailable(message, url, resp.status_code, detail, retry_after=max(self.cooldown, wait or 0.0))

    @staticmethod
    def _gave_up(error: RemoteUnavailable, attempts: int) -> RemoteUnavailable:
        if attempts == 1:
            return error
        return RemoteUnavailable(f"{error} (gave up after {attempts} attempts)", error.url, error.status,
                                 error.detail, retry_after=error.retry_after)

    # -- circuit breaker and health -----------------------------------------------------------------------------

    def _refuse_while_open(self, method: str, url: str) -> None:
        with self._lock:
            remaining = self._open_until - time.monotonic()
            last = self.health.last_error
        if remaining > 0:
            raise RemoteUnavailable(f"{method} {url}: not sent, the service failed just before ({last}); next "
                                    f"try in {remaining:.1f} s", url, retry_after=remaining)

    def _went_down(self, error: RemoteUnavailable) -> None:
        with self._lock:
            self._open_until = time.monotonic() + error.retry_after
            if self.health.up is not False:
                self.health.up, self.health.since = False, utc_now()
            self.health.last_error = str(error)
        log.warning("remote service unavailable", extra={"url": error.url, "error": str(error),
                                                         "retry_after_s": round(error.retry_after, 1)})

    def _answered(self) -> None:
        with self._lock:
            self._open_until = 0.0
            if self.health.up is not True:
                if self.health.up is False:
                    log.info("remote service answers again", extra={"url": self.base_url})
                self.health.up, self.health.since = True, utc_now()

    def ready_info(self) -> dict[str, Any]:
        """`GET /v1/info`, waiting (up to `ready_timeout` seconds) while the service says it is still loading."""
        deadline = time.monotonic() + self.ready_timeout
        attempt = 0
        while True:
            info = self.get("/v1/info")
            if not isinstance(info, dict):
                raise RemoteServiceError(f"GET {self.base_url}/v1/info: unexpected answer {info!r:.200}",
                                         self.base_url + "/v1/info", 200)
            if info.get("ready", True):
                return info
            pause = self.delay(attempt)
            if time.monotonic() + pause > deadline:
                raise RemoteUnavailable(f"{self.base_url} is not ready after {self.ready_timeout:g} s (engine "
                                        f"{info.get('engine')!r} still loading; see its /health/ready)",
                                        self.base_url + "/v1/info", 200, retry_after=max(pause, self.cooldown))
            attempt += 1
            time.sleep(pause)


def _json(resp: httpx.Response, method: str, url: str) -> Any:
    try:
        return resp.json()
    except ValueError as exc:
        raise RemoteServiceError(f"{method} {url}: answer is not JSON: {resp.text[:200]!r}", url,
                                 resp.status_code) from exc


def chunks(n: int, size: int) -> list[range]:
    """Index ranges of at most `size` covering range(n)."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class RemoteEngine:
    """What a remote engine (translator, tagger) holds: its HTTP client, name, request size and the service's
    /v1/info; closes its connections as a context manager."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 backoff: float = 0.5, batch_size: int = 64, **http_options: Any) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.http = RemoteHTTP(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                               backoff=backoff, **http_options)
        self.base_url = self.http.base_url
        self.name = f"remote:{self.base_url}"
        self.batch_size = batch_size
        self._info: dict[str, Any] | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        """The service's /v1/info (fetched once, waiting while its engine loads)."""
        if self._info is None:
            self._info = self.http.ready_info()
        return self._info


E = TypeVar("E", bound=RemoteEngine)
UpstreamState = Literal["connecting", "up", "down"]


class UpstreamLink(Generic[E]):
    """A remote engine a service depends on, connected in the background: `connect()` (which must reach the
    service, e.g. `connect_translator`) is tried at `start()`, then again with backoff until it succeeds, so that
    a service started before its upstream becomes whole once the upstream is up. Until then `engine` is None and
    the state "connecting"; after, the engine's health says "up" or "down"."""

    def __init__(self, url: str, connect: Callable[[], E], backoff: float = 0.5, backoff_max: float = 10.0) -> None:
        self.url = url
        self.engine: E | None = None
        self.attempts = 0
        self.last_error: str | None = None
        self.since = utc_now()
        self._connect = connect
        # called with the engine once connected, before `engine` is set: whoever sees the engine sees its setup
        self.on_connect: Callable[[E], None] | None = None
        self._backoff = backoff
        self._backoff_max = backoff_max
        self._next_try = 0.0  # monotonic time of the next attempt while connecting
        self._stop = threading.Event()
        self._first_done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, wait: float = 10.0) -> None:
        """Connect in a background thread; return once the first attempt is over (or after `wait` seconds: a
        service that accepts connections but does not answer must not hold up the caller)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"connect {self.url}", daemon=True)
            self._thread.start()
        self._first_done.wait(wait)

    def close(self) -> None:
        """Stop connecting (an attempt under way ends on its own, in its daemon thread) and close the engine."""
        self._stop.set()
        if self.engine is not None:
            self.engine.close()

    def _run(self) -> None:
        attempt = 0
        while not self._try():
            pause = backoff_delay(attempt, self._backoff, self._backoff_max)
            self._next_try = time.monotonic() + pause
            self._first_done.set()
            if self._stop.wait(pause):
                return
            attempt += 1
        self._first_done.set()

    def _try(self) -> bool:
        self.attempts += 1
        engine: E | None = None
        try:
            engine = self._connect()
            if self.on_connect is not None and not self._stop.is_set():
                self.on_connect(engine)
        except Exception as exc:  # anything: the upstream may answer nonsense while it starts
            if engine is not None:
                engine.close()
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("upstream not reachable yet, will retry", extra={"url": self.url, "error": self.last_error,
                                                                        "attempt": self.attempts})
            return False
        if self._stop.is_set():  # closed while connecting
            engine.close()
            return True
        engine.http._answered()  # it answered the connection: up since now
        self.engine = engine
        log.info("upstream connected", extra={"url": self.url, "attempts": self.attempts})
        return True

    # -- state --------------------------------------------------------------------------------------------------

    def state(self) -> UpstreamState:
        if self.engine is None:
            return "connecting"
        return "down" if self.engine.http.health.up is False else "up"

    def status(self) -> dict[str, Any]:
        """url, state, since (when it entered the state), last_error."""
        state = self.state()
        if self.engine is None:
            return {"url": self.url, "state": state, "since": self.since, "last_error": self.last_error}
        health = self.engine.http.health
        return {"url": self.url, "state": state, "since": health.since,
                "last_error": health.last_error or self.last_error}

    def retry_after(self) -> float:
        """Seconds until the next attempt to connect (at least 1)."""
        return max(1.0, self._next_try - time.monotonic())
