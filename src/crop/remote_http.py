"""The HTTP client the remote engines share (`crop.translate.remote`, `crop.tag.remote`): one pooled
`httpx.Client` per engine (keep-alive), bearer API keys, timeouts, and retries with exponential backoff and
jitter on dropped connections, timeouts, 429 (honouring Retry-After) and 502/503/504. Any other error answer
raises at once with the URL, the status and the server's `detail`.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from typing import Any, Self

import httpx

log = logging.getLogger(__name__)

API_KEY_ENV = "CROP_REMOTE_API_KEY"
RETRY_STATUS = frozenset({429, 502, 503, 504})
# answers that say the request itself is wrong (a ValueError, as an in-process engine would raise)
INVALID_REQUEST_STATUS = frozenset({400, 413, 422})
_DETAIL_LIMIT = 1000
# options of the remote engines that the registries also read from CROP_REMOTE_<KEY>
OPTION_TYPES: dict[str, type] = {"timeout": float, "max_retries": int, "backoff": float, "batch_size": int}


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
    """A pooled, retrying JSON client of one crop service. Safe to share between threads (httpx.Client is)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 3,
                 backoff: float = 0.5, backoff_max: float = 30.0, max_retry_after: float = 60.0,
                 ready_timeout: float = 120.0) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"a remote engine needs an http(s) URL, not {base_url!r}")
        if max_retries < 0 or backoff < 0:
            raise ValueError("max_retries and backoff must not be negative")
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.ready_timeout = ready_timeout
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
        """Backoff before retry `attempt` (0-based): base * 2**attempt, capped, with jitter (half to all of it)."""
        d = min(self.backoff_max, self.backoff * 2**attempt)
        return d / 2 + random.uniform(0, d / 2)

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The decoded JSON answer of a 2xx, with retries on transient failures; RemoteServiceError (or
        RemoteRequestError for an invalid request) otherwise."""
        url = self.base_url + path
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            wait: float | None = None
            try:
                resp = self._client.request(method, path, json=body)
            except httpx.TimeoutException as exc:
                error = RemoteServiceError(f"{method} {url}: no answer in time ({type(exc).__name__})", url)
            except httpx.TransportError as exc:
                error = RemoteServiceError(f"{method} {url}: connection failed ({type(exc).__name__}: {exc})", url)
            else:
                if resp.is_success:
                    try:
                        return resp.json()
                    except ValueError as exc:
                        raise RemoteServiceError(f"{method} {url}: answer is not JSON: {resp.text[:200]!r}", url,
                                                 resp.status_code) from exc
                detail = error_detail(resp)
                cls = RemoteRequestError if resp.status_code in INVALID_REQUEST_STATUS else RemoteServiceError
                error = cls(f"{method} {url} failed with HTTP {resp.status_code}: {detail}", url,
                            resp.status_code, detail)
                if resp.status_code not in RETRY_STATUS:
                    raise error
                wait = retry_after_seconds(resp.headers.get("retry-after"), self.max_retry_after)
            if attempt + 1 == attempts:
                if attempts > 1:
                    raise type(error)(f"{error} (gave up after {attempts} attempts)", url, error.status,
                                      error.detail)
                raise error
            pause = wait if wait is not None else self.delay(attempt)
            log.warning("remote request failed, retrying", extra={"url": url, "status": error.status,
                                                                  "attempt": attempt + 1, "delay_s": round(pause, 3)})
            time.sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover

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
                raise RemoteServiceError(f"{self.base_url} is not ready after {self.ready_timeout:g} s (engine "
                                         f"{info.get('engine')!r} still loading; see its /health/ready)",
                                         self.base_url + "/v1/info", 200)
            attempt += 1
            time.sleep(pause)


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
