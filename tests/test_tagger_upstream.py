"""The tagger service and its remote translator (issue 10, items 4 and 5), with real uvicorn servers on loopback:
a tagger started before its translator is ready for mode model at once and becomes whole when the translator
comes up; a translator that goes away makes mode crop answer 503 with Retry-After after a bounded number of
connection attempts (counted, not timed), and shows in `/v1/info` and `crop_upstream_up`."""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import Any

import httpx
import pytest
import servers
from servers import free_port, running

from crop.api.settings import TaggerSettings, TranslatorSettings
from crop.api.tagger import TaggerEngines
from crop.api.tagger import create_app as create_tagger_app
from crop.api.translator import create_app as create_translator_app

pytestmark = pytest.mark.integration

SPANISH = "Pedro Sánchez visitó Berlín con Angela Merkel."
THREE = [SPANISH, "Juan vive en Londres.", "María trabaja en Madrid."]


def _tagger_app(translator_url: str) -> Any:
    return create_tagger_app(TaggerSettings(api_keys=[], engine="spacy", translator=f"remote:{translator_url}"))


@contextmanager
def _translator_on(port: int, engine: Any) -> Iterator[str]:
    """A real translator service (Apertium) on the given port."""
    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as m:  # only while it starts: later servers get ports of their own
            m.setattr(servers, "free_port", lambda: port)
            url = stack.enter_context(running(create_translator_app(TranslatorSettings(api_keys=[]),
                                                                    engine=engine)))
        yield url


@contextmanager
def _tagger_behind_translator(engine: Any) -> Iterator[tuple[str, Any, ExitStack, int]]:
    """A tagger over a working translator service: (tagger URL, tagger app, the translator's stack (close it to
    take the translator away), the translator's port). The breaker's window is long, so that a request right
    after an outage falls inside it however slow the machine is."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("CROP_REMOTE_COOLDOWN", "120")
        port = free_port()
        with ExitStack() as translator_stack:
            translator_stack.enter_context(_translator_on(port, engine))
            app = _tagger_app(f"http://127.0.0.1:{port}")
            with running(app) as url:
                assert _tag(url, THREE).status_code == 200
                yield url, app, translator_stack, port


def _tag(url: str, texts: list[str], lang: str = "es", mode: str = "crop") -> httpx.Response:
    return httpx.post(url + "/v1/tag", json={"texts": texts, "lang": lang, "mode": mode}, timeout=120)


def _upstream_up(url: str) -> float:
    m = re.search(r'^crop_upstream_up\{upstream="translator"\} (\S+)$', httpx.get(url + "/metrics").text, re.M)
    assert m, "no crop_upstream_up metric"
    return float(m.group(1))


def _engines(app: Any) -> TaggerEngines:
    return app.state.service.engine


def _wait_for(predicate: Any, what: str, timeout: float = 120.0) -> None:
    """Poll until `predicate()` holds (a generous bound against a hang, not a speed requirement)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen"
        time.sleep(0.1)


def test_tagger_started_before_its_translator_becomes_whole(translator):
    port = free_port()  # nothing listens here yet
    translator_url = f"http://127.0.0.1:{port}"
    app = _tagger_app(translator_url)
    with running(app) as url:  # ready: the tagger's own model is loaded, the translator is not needed for that
        assert httpx.get(url + "/health/ready").status_code == 200
        r = _tag(url, ["Angela Merkel visited Berlin."], lang="en", mode="model")
        assert r.status_code == 200 and r.json()["results"][0]["entities"], r.text

        r = _tag(url, [SPANISH])
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert translator_url in r.json()["detail"] and "not reachable yet" in r.json()["detail"]
        info = httpx.get(url + "/v1/info").json()
        assert info["ready"] is True and info["crop_languages"] == []
        assert info["upstream"]["url"] == translator_url and info["upstream"]["state"] == "connecting"
        assert "connection failed" in info["upstream"]["last_error"]
        assert _upstream_up(url) == 0.0

        with _translator_on(port, translator) as started:
            assert started == translator_url
            _wait_for(lambda: httpx.get(url + "/v1/info").json()["upstream"]["state"] == "up",
                      "the tagger connecting to its translator")
            r = _tag(url, [SPANISH])
            assert r.status_code == 200, r.text
            entities = {(e["text"], e["label"]) for e in r.json()["results"][0]["entities"]}
            assert {("Pedro Sánchez", "PER"), ("Berlín", "LOC")} <= entities
            info = httpx.get(url + "/v1/info").json()
            assert "es" in info["crop_languages"] and info["translator"] == f"remote:{translator_url}"
            assert _upstream_up(url) == 1.0


def test_translator_outage_is_a_quick_503(translator):
    with _tagger_behind_translator(translator) as (url, app, translator_stack, _):
        upstream = httpx.get(url + "/v1/info").json()["upstream"]
        assert upstream["state"] == "up" and upstream["last_error"] is None
        http = _engines(app).pipeline.translator.http  # type: ignore[union-attr]

        translator_stack.close()  # the translator goes away: its port refuses connections
        before = http.attempts
        r = _tag(url, THREE)
        assert r.status_code == 503, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 120
        assert "connection failed" in r.json()["detail"]
        assert http.attempts - before <= 2  # one quick retry, not a backoff loop per sentence

        # within the breaker's window: answered without trying the translator at all
        before = http.attempts
        r = _tag(url, THREE[:1])
        assert r.status_code == 503 and "Retry-After" in r.headers, r.text
        assert http.attempts == before

        info = httpx.get(url + "/v1/info").json()
        assert info["upstream"]["state"] == "down" and "connection failed" in info["upstream"]["last_error"]
        assert datetime.fromisoformat(info["upstream"]["since"]) > datetime.fromisoformat(upstream["since"])
        assert _upstream_up(url) == 0.0
        # the tagger itself stays in service
        assert httpx.get(url + "/health/ready").status_code == 200
        assert _tag(url, ["Angela Merkel visited Berlin."], lang="en", mode="model").status_code == 200


class ResettingListener:
    """A TCP port that accepts connections and closes them at once (a crashed upstream behind a proxy, a
    process dying mid-request); counts the connections."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a RST
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_dropped_connections_are_a_503_after_a_bounded_number_of_connections(translator):
    with _tagger_behind_translator(translator) as (url, _, translator_stack, port):
        translator_stack.close()
        listener = ResettingListener(port)
        try:
            r = _tag(url, THREE)
            assert r.status_code == 503 and "Retry-After" in r.headers, r.text
            assert 1 <= listener.accepted <= 2, listener.accepted
            r = _tag(url, THREE)
            assert r.status_code == 503, r.text
            assert listener.accepted <= 2, listener.accepted
        finally:
            listener.close()
