"""What hostile and unlucky clients do to the services (issue 10), over real uvicorn servers on loopback: metric
labels a client cannot multiply, the work one request can cause (token length, queue size), the work of a request
that timed out or whose client went away never reaching the engine, engine loading retried, an engine that is
down answered 503 quickly, content types, log levels, `/docs` offline with the bearer scheme, bad settings and
connection limits of `crop serve`.

The engines of the service-machinery tests are a recording echo (it stands for any engine: what is tested is
the queue and the HTTP layer around it, and a real engine cannot be made to block, fail to load or go down on
cue); the limits and content types are tested on the real translator over Apertium."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
import string
import subprocess
import sys
import threading
import time
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from servers import free_port, running

from crop.api import projector as projector_api
from crop.api import translator as translator_api
from crop.api.service import V1, _backoff, create_service
from crop.api.settings import ProjectorSettings, TranslatorSettings
from crop.errors import EngineUnavailable
from crop.translate.base import Translator

pytestmark = pytest.mark.integration

GUARD = 30.0  # seconds a wait for an event may take before the test gives up (a hang guard, not a bound)


def until(condition: Any, what: str) -> Any:
    """Poll `condition()` until it returns something true; its value."""
    deadline = time.monotonic() + GUARD
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)
    return value


def metric(url: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in httpx.get(url + "/metrics").text.splitlines():
        head, _, value = line.rpartition(" ")
        if head.partition("{")[0] == name and all(w in head for w in want):
            return float(value)
    return 0.0


class Engine:
    """An echo engine that records every batch it gets: an item "block" holds the engine until `gate` is set,
    "down" raises EngineUnavailable, "boom" a ValueError (bad input: 400), "crash" a RuntimeError (500)."""

    name = "echo-engine"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()  # set when a "block" item reached the engine
        self.gate = threading.Event()

    def run(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        if "block" in items:
            self.started.set()
            assert self.gate.wait(GUARD)
        if "down" in items:
            raise EngineUnavailable("the echo server at http://127.0.0.1:9 refused the connection", retry_after=2.5)
        if "boom" in items:
            raise ValueError("cannot echo 'boom'")
        if "crash" in items:
            raise RuntimeError("the echo engine crashed")
        return [it.upper() for it in items]

    def received(self) -> list[str]:
        return [it for batch in self.batches for it in batch]


def echo_service(settings: TranslatorSettings, engine: Engine, load: Any = None) -> Any:
    def run(eng: Engine, key: Hashable, items: list[Any]) -> list[Any]:
        return eng.run(items)

    app = create_service("echo", settings, load or (lambda: engine), run, "test service")

    @app.post("/v1/echo", dependencies=V1)
    async def echo(body: dict[str, list[str]]) -> dict[str, list[str]]:
        state = app.state.service
        state.check_sizes(body["texts"], "en")
        return {"out": await state.submit("k", body["texts"], body["texts"])}

    return app


# -- 1. metric labels -------------------------------------------------------------------------------------------


def _series(url: str) -> list[str]:
    return [line.rpartition(" ")[0] for line in httpx.get(url + "/metrics").text.splitlines()
            if line and not line.startswith("#")]


def test_made_up_methods_and_paths_add_no_metric_series():
    rng = random.Random(10)

    # made-up methods (which httptools refuses before the app, h11 lets through) and real ones that are not in
    # the closed set (WebDAV's, which both parsers let through): both must end as "other"
    webdav = ["PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"]

    def junk(n: int) -> list[tuple[str, str]]:
        return [(rng.choice(webdav) if i % 2 else
                 "".join(rng.choices(string.ascii_uppercase, k=rng.choice([3, 12, 200, 2000]))),
                 "/" + "".join(rng.choices(string.ascii_lowercase + "/", k=rng.randint(1, 300)))) for i in range(n)]

    with running(echo_service(TranslatorSettings(), Engine())) as url, httpx.Client(timeout=30) as client:
        for method, path in junk(20):  # the "other" series exist after these
            client.request(method, url + path)
            client.request(method, url + "/v1/echo")
        _series(url)  # the scrape's own series
        before = _series(url)
        sent = junk(300)
        for method, path in sent:
            assert client.request(method, url + path).status_code < 500
            assert client.request(method, url + "/v1/echo").status_code < 500
        after = _series(url)
    assert len(after) == len(before), set(after) - set(before)
    text = "\n".join(after)
    assert not any(method in text for method, _ in sent if len(method) > 3 and method not in webdav)
    assert 'method="other",route="other"' in text and 'method="other",route="/v1/echo"' in text


# -- 2. the work one request can cause --------------------------------------------------------------------------


def test_a_token_longer_than_the_limit_is_422_naming_it(translator: Translator):
    with running(translator_api.create_app(TranslatorSettings(max_token_chars=20), engine=translator)) as url:
        r = httpx.post(url + "/v1/translate", json={"texts": ["hola", "la casa " + "x" * 21], "src": "es",
                                                    "tgt": "en"})
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]  # located as FastAPI's own 422s are
        assert error["loc"] == ["body", "texts", 1] and error["ctx"] == {"length": 21, "max_token_chars": 20}
        assert error["msg"] == "sentence 1 has a token of 21 characters; at most 20"
        ok = httpx.post(url + "/v1/translate", json={"text": "la casa " + "x" * 20, "src": "es", "tgt": "en"})
        assert ok.status_code == 200
        r = httpx.post(url + "/v1/translate/aligned", json={"sentences": [["casa", "y" * 30]], "src": "es",
                                                            "tgt": "en"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "sentences", 0]
        assert "30 characters" in r.text
    # the defaults: one 4,000-character token (seconds of Apertium time) is refused before it reaches the engine
    with running(translator_api.create_app(TranslatorSettings(), engine=translator)) as url:
        r = httpx.post(url + "/v1/translate", json={"text": "x" * 4000, "src": "es", "tgt": "en"})
        assert r.status_code == 422 and "4000 characters" in r.text and "at most 200" in r.text
        r = httpx.post(url + "/v1/translate", json={"text": "x" * 6000, "src": "es", "tgt": "en"})
        assert r.status_code == 413 and "at most 5000" in r.json()["detail"]


def test_more_items_than_the_queue_can_ever_hold_is_413_not_429(translator: Translator):
    settings = TranslatorSettings(max_queue=4, max_items=256)
    with running(translator_api.create_app(settings, engine=translator)) as url:
        r = httpx.post(url + "/v1/translate", json={"texts": ["hola"] * 5, "src": "es", "tgt": "en"})
        assert r.status_code == 413 and "retry-after" not in r.headers
        assert "5 sentences" in r.json()["detail"] and "at most 4" in r.json()["detail"]
        assert httpx.post(url + "/v1/translate", json={"texts": ["hola"] * 4, "src": "es", "tgt": "en"}).status_code \
            == 200


def test_a_timed_out_requests_items_never_reach_the_engine():
    engine = Engine()
    with running(echo_service(TranslatorSettings(request_timeout=1.0, max_batch_size=1), engine)) as url:
        async def scenario() -> None:
            async with httpx.AsyncClient(timeout=GUARD) as client:
                first = asyncio.create_task(client.post(url + "/v1/echo", json={"texts": ["block"]}))
                assert await asyncio.to_thread(engine.started.wait, GUARD)
                late = await client.post(url + "/v1/echo", json={"texts": ["b1", "b2"]})
                assert late.status_code == 504, late.text
                engine.gate.set()
                await first
                after = await client.post(url + "/v1/echo", json={"texts": ["c"]})
                assert after.json() == {"out": ["C"]}

        asyncio.run(scenario())
    assert engine.received() == ["block", "c"]


@contextmanager
def _hung_up_request(url: str, texts: list[str]) -> Iterator[None]:
    """A POST whose client closes the connection when the block ends, without reading the answer."""
    host, port = url.removeprefix("http://").split(":")
    body = ('{"texts": [' + ", ".join(f'"{t}"' for t in texts) + "]}").encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        yield


def test_a_disconnected_clients_items_never_reach_the_engine():
    engine = Engine()
    with running(echo_service(TranslatorSettings(max_batch_size=1), engine)) as url:
        async def scenario() -> None:
            async with httpx.AsyncClient(timeout=GUARD) as client:
                first = asyncio.create_task(client.post(url + "/v1/echo", json={"texts": ["block"]}))
                assert await asyncio.to_thread(engine.started.wait, GUARD)
                with _hung_up_request(url, ["b1", "b2"]):
                    await asyncio.to_thread(until, lambda: metric(url, "crop_queue_depth") == 2, "b1, b2 queued")
                # the service notices the hang-up while the engine is still busy, and answers it 499
                await asyncio.to_thread(until, lambda: metric(url, "crop_requests_total", route="/v1/echo",
                                                              status="499") == 1, "the hang-up to be noticed")
                engine.gate.set()
                assert (await first).json() == {"out": ["BLOCK"]}
                assert (await client.post(url + "/v1/echo", json={"texts": ["c"]})).json() == {"out": ["C"]}

        asyncio.run(scenario())
    assert engine.received() == ["block", "c"]


# -- 3. engine loading retried ----------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap():
    settings = TranslatorSettings(load_retry_initial=1, load_retry_max=30)
    assert [_backoff(n, settings) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert _backoff(10_000, settings) == 30


def test_engine_load_is_retried_until_it_succeeds():
    engine = Engine()
    attempts: list[int] = []
    third = threading.Event()

    def load() -> Engine:
        attempts.append(len(attempts) + 1)
        if len(attempts) <= 2:
            raise ConnectionError(f"translator unreachable (attempt {len(attempts)})")
        assert third.wait(GUARD)
        return engine

    settings = TranslatorSettings(load_retry_initial=0.01, load_retry_max=0.05)
    with running(echo_service(settings, engine, load), ready=False) as url:
        r = until(lambda: (r := httpx.get(url + "/health/ready")).json().get("attempts") == 2 and r,
                  "two failed attempts")
        assert r.status_code == 503 and r.json()["status"] == "retrying"
        assert "ConnectionError: translator unreachable (attempt 2)" in r.json()["detail"]
        not_ready = httpx.post(url + "/v1/echo", json={"texts": ["a"]})
        assert not_ready.status_code == 503 and "attempt 2" in not_ready.json()["detail"]
        third.set()
        until(lambda: httpx.get(url + "/health/ready").status_code == 200, "ready after the third attempt")
        assert httpx.post(url + "/v1/echo", json={"texts": ["a"]}).json() == {"out": ["A"]}
    assert attempts == [1, 2, 3]


# -- 4. an engine that is down ----------------------------------------------------------------------------------


def test_an_engine_that_is_down_is_503_with_retry_after_and_one_call():
    engine = Engine()
    with running(echo_service(TranslatorSettings(), engine)) as url:
        r = httpx.post(url + "/v1/echo", json={"texts": ["down", "x", "y"]})
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "3"  # 2.5 s, rounded up
    assert "echo-engine" in r.json()["detail"] and "refused the connection" in r.json()["detail"]
    assert engine.batches == [["down", "x", "y"]]  # not retried item by item


# -- 5. content types and log levels ----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json; x=1"])
def test_a_body_that_is_not_json_is_415(translator: Translator, content_type: str):
    with running(translator_api.create_app(TranslatorSettings(), engine=translator)) as url:
        r = httpx.post(url + "/v1/translate", content=b'{"text": "hola", "src": "es", "tgt": "en"}',
                       headers={"content-type": content_type})
        assert r.status_code == 415, r.text
        assert content_type in r.json()["detail"] and "application/json" in r.json()["detail"]
        ok = httpx.post(url + "/v1/translate", content=b'{"text": "hola", "src": "es", "tgt": "en"}',
                        headers={"content-type": "application/json; charset=utf-8"})
        assert ok.status_code == 200


def test_client_errors_log_at_info_or_warning_and_server_errors_at_error(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO)
    settings = TranslatorSettings(max_items=3, api_keys=["k"])
    auth = {"Authorization": "Bearer k"}
    with running(echo_service(settings, Engine())) as url:
        client_errors = {
            400: httpx.post(url + "/v1/echo", json={"texts": ["boom"]}, headers=auth),
            401: httpx.post(url + "/v1/echo", json={"texts": ["a"]}),
            404: httpx.get(url + "/nothing/here"),
            413: httpx.post(url + "/v1/echo", json={"texts": ["a"] * 4}, headers=auth),
            415: httpx.post(url + "/v1/echo", content=b"{}", headers={**auth, "content-type": "text/plain"}),
            422: httpx.post(url + "/v1/echo", content=b"{", headers={**auth, "content-type": "application/json"}),
        }
        assert {code: r.status_code for code, r in client_errors.items()} == {c: c for c in client_errors}
        until(lambda: len([r for r in caplog.records if r.getMessage() == "request"]) >= 6, "the request logs")
        client_logs = [r for r in caplog.records if r.name.startswith("crop")]
        caplog.clear()
        crash = httpx.post(url + "/v1/echo", json={"texts": ["crash"]}, headers=auth)
        assert crash.status_code == 500
        until(lambda: any(getattr(r, "status", None) == 500 for r in caplog.records), "the 500's log")
    assert all(r.levelno < logging.ERROR and r.exc_info is None for r in client_logs), \
        [(r.levelname, r.getMessage(), getattr(r, "status", None)) for r in client_logs if r.levelno >= logging.ERROR]
    levels = {r.status: r.levelname for r in client_logs if r.getMessage() == "request"}  # type: ignore[attr-defined]
    assert levels == {400: "INFO", 401: "INFO", 404: "INFO", 413: "WARNING", 415: "INFO", 422: "INFO"}
    assert [r.levelname for r in caplog.records if getattr(r, "status", None) == 500] == ["ERROR"]


# -- 6. /docs offline, the bearer scheme ------------------------------------------------------------------------


def test_docs_load_only_local_assets_and_declare_the_bearer_scheme():
    settings = ProjectorSettings(langid=False, api_keys=["s3cret"])
    with running(projector_api.create_app(settings)) as url:
        page = httpx.get(url + "/docs")
        assert page.status_code == 200
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
        assert len(refs) >= 4 and all(ref.startswith("/") and not ref.startswith("//") for ref in refs), refs
        for ref in refs:
            assert httpx.get(url + ref).status_code == 200, ref
        assert "SwaggerUIBundle" in httpx.get(url + next(r for r in refs if r.endswith(".js"))).text
        spec = httpx.get(url + "/openapi.json").json()
        schemes = spec["components"]["securitySchemes"]
        assert [s for s in schemes.values() if s == {**s, "type": "http", "scheme": "bearer"}]
        assert spec["paths"]["/v1/project"]["post"]["security"]
        assert "security" not in spec["paths"]["/health/ready"]["get"]
        r = httpx.get(url + "/v1/info")
        assert r.status_code == 401 and r.json()["detail"] == "missing or wrong API key (Authorization: Bearer <key>)"
        assert httpx.get(url + "/v1/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url + "/v1/info", headers={"Authorization": "Basic s3cret"}).status_code == 401
    with running(projector_api.create_app(ProjectorSettings(langid=False))) as url:  # no keys: nothing to declare
        spec = httpx.get(url + "/openapi.json").json()
        assert "securitySchemes" not in spec.get("components", {})
        assert "security" not in spec["paths"]["/v1/project"]["post"]


# -- 7, 8. crop serve: bad settings, connection limits ----------------------------------------------------------

CROP = [sys.executable, "-c", "from crop.cli import main; main()"]


@pytest.mark.parametrize(("service", "variable", "value", "needle"), [
    ("projector", "CROP_PROJECTOR_METHODS", "", "names no matching method"),
    ("projector", "CROP_PROJECTOR_METHODS", "exact,bogus", "unknown matching method(s) 'bogus'"),
    ("tagger", "CROP_TAGGER_API_KEYS", ",, ,", "separators but no key"),
    ("translator", "CROP_TRANSLATOR_MAX_ITEMS", "many", "valid integer"),
])
def test_a_bad_setting_stops_crop_serve_with_one_line(service: str, variable: str, value: str, needle: str):
    env = {**os.environ, variable: value}
    r = subprocess.run([*CROP, "serve", service, "--port", str(free_port())], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert variable in lines[0] and needle in lines[0] and "Traceback" not in r.stderr


def test_crop_serve_passes_the_connection_limits():
    port = free_port()
    env = {**os.environ, "CROP_PROJECTOR_LANGID": "false", "CROP_PROJECTOR_MAX_HEADER_BYTES": "4096"}
    proc = subprocess.Popen([*CROP, "serve", "projector", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        def live() -> bool:
            assert proc.poll() is None, "crop serve projector exited"
            try:
                return httpx.get(url + "/health/live", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        until(live, "crop serve projector to be live")
        assert httpx.get(url + "/health/live", headers={"X-Pad": "p" * 2000}).status_code == 200
        # a head that keeps coming past 4 KiB (uvicorn's default would wait for up to 16 KiB) is refused at once
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 6000)
            assert sock.recv(64).startswith(b"HTTP/1.1 431")
        # ... and one that comes whole, in one read
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 6000 + b"\r\n\r\n")
            assert sock.recv(64).startswith(b"HTTP/1.1 431")
        # ... or bit by bit, each read small
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
            for i in range(10):
                try:
                    sock.sendall(b"X-Pad-%d: " % i + b"p" * 500 + b"\r\n")
                except OSError:  # refused and closed already: what it answered is still to be read
                    break
                time.sleep(0.01)
            sock.settimeout(GUARD)
            assert sock.recv(64).startswith(b"HTTP/1.1 431")
        # requests under the limit, pipelined on one connection, are all answered
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as sock:
            request = b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 3000 + b"\r\n\r\n"
            sock.sendall(request * 3)
            received = b""
            while received.count(b"HTTP/1.1 200") < 3:
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
    finally:
        proc.terminate()
        proc.wait(timeout=GUARD)
