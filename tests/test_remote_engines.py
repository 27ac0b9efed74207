"""The remote engines (`crop.translate.remote`, `crop.tag.remote`) against real uvicorn servers: the translator
service over the real Apertium, the tagger service over the real spaCy tagger, and tiny fake servers for the
HTTP behaviour (retries, Retry-After, errors, batching)."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from servers import free_port, running

from crop.api.settings import TaggerSettings, TranslatorSettings
from crop.api.tagger import TaggerEngines
from crop.api.tagger import create_app as create_tagger_app
from crop.api.translator import create_app as create_translator_app
from crop.errors import EngineUnavailable
from crop.io import InputSentence, read_jsonl
from crop.pipeline import CropPipeline, english_spans
from crop.project import Projector
from crop.remote_http import RemoteRequestError, RemoteServiceError, RemoteUnavailable
from crop.tag import Tagger, load_tagger
from crop.tag.remote import RemoteTagger
from crop.translate import AligningTranslator, Translator, UnsupportedPair, load_translator
from crop.translate.remote import RemoteAligningTranslator, RemoteTranslator, connect_translator
from crop.types import LabeledItem, Status

pytestmark = pytest.mark.integration

N_DEV = 20
FAST = {"max_retries": 3, "backoff": 0.01}


def _settings(cls: type, **kw: Any) -> Any:
    return cls(max_wait_ms=1.0, api_keys=[], **kw)


@pytest.fixture(scope="module")
def dev_es(shared_data: Path) -> list[InputSentence]:
    return list(itertools.islice(read_jsonl(shared_data / "dev" / "es.dev.jsonl"), N_DEV))


@pytest.fixture(scope="module")
def translator_url(translator) -> Iterator[str]:
    with running(create_translator_app(_settings(TranslatorSettings), engine=translator)) as url:
        yield url


@pytest.fixture(scope="module")
def tagger_url(translator, tagger) -> Iterator[str]:
    engines = TaggerEngines(tagger, CropPipeline(translator, tagger, Projector()))
    with running(create_tagger_app(_settings(TaggerSettings), engines=engines)) as url:
        yield url


@pytest.fixture()
def remote(translator_url: str) -> Iterator[RemoteTranslator]:
    with connect_translator(translator_url, **FAST) as t:
        yield t


def _requests_served(url: str, route: str) -> float:
    """crop_requests_total of a route (status 200) from the service's /metrics."""
    text = httpx.get(url + "/metrics").text
    pattern = rf'^crop_requests_total\{{route="{re.escape(route)}",status="200"\}} (\S+)$'
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else 0.0


# -- translation against the real Apertium service -------------------------------------------------------------


def test_connect_picks_the_aligning_class_and_reads_info(remote: RemoteTranslator, translator, translator_url):
    assert isinstance(remote, RemoteAligningTranslator)
    assert isinstance(remote, AligningTranslator) and isinstance(remote, Translator)
    assert remote.name == f"remote:{translator_url}"
    assert sorted(remote.pairs()) == sorted(translator.pairs())
    assert ("es", "en") in remote.pairs() and ("en", "es") in remote.pairs()
    # a plain RemoteTranslator is not an AligningTranslator, whatever its service does
    with RemoteTranslator(translator_url) as plain:
        assert not isinstance(plain, AligningTranslator)
        assert plain.pairs() == remote.pairs()


def test_info_is_cached(remote: RemoteTranslator, translator_url: str):
    remote.pairs()
    before = _requests_served(translator_url, "/v1/info")
    for _ in range(3):
        remote.pairs()
    assert _requests_served(translator_url, "/v1/info") == before


def test_plain_labeled_and_aligned_match_the_engine(remote: RemoteTranslator, translator, dev_es):
    sentences = dev_es[:6]
    texts = [s.text for s in sentences]
    assert remote.translate(texts, "es", "en") == translator.translate(texts, "es", "en")

    items = [LabeledItem(text=text, spans=spans)
             for text, spans in (english_spans(s.en_tokens, s.en_tags) for s in sentences)]
    assert any(it.spans for it in items)
    got = remote.translate_labeled(items, "en", "es")
    want = translator.translate_labeled(items, "en", "es")
    assert [r.model_dump() for r in got] == [r.model_dump() for r in want]
    assert all(r.spans or r.lost for r, it in zip(got, items, strict=True) if it.spans)

    tokens = [s.tokens for s in sentences]
    aligned = remote.translate_aligned(tokens, "es", "en")
    assert [a.model_dump() for a in aligned] == [a.model_dump() for a in translator.translate_aligned(tokens, "es",
                                                                                                      "en")]
    assert all(len(a.tokens) == len(a.alignment) for a in aligned)


def test_blank_sentences_are_answered_locally(remote: RemoteTranslator):
    assert remote.translate([], "es", "en") == []
    out = remote.translate(["Hola.", "  ", "Adiós."], "es", "en")
    assert out[1] == "" and out[0] and out[2]


def test_unsupported_pair(remote: RemoteTranslator):
    with pytest.raises(UnsupportedPair, match="not served"):
        remote.translate(["Hola."], "es", "xx")
    with pytest.raises(UnsupportedPair, match="not served"):
        remote.translate_labeled([LabeledItem(text="Hola.")], "xx", "es")


def test_invalid_request_is_a_value_error_with_the_detail(remote: RemoteTranslator, translator_url: str):
    bad = {"items": [{"text": "Hola.", "spans": [{"start": 3, "end": 99, "label": "PER"}]}], "src": "es",
           "tgt": "en"}
    with pytest.raises(RemoteRequestError) as info:
        remote.http.post("/v1/translate/labeled", bad)
    assert isinstance(info.value, ValueError)
    assert info.value.status == 422 and "outside the text" in str(info.value)
    assert translator_url in str(info.value)


def test_batches_split_into_requests(translator_url: str, dev_es):
    texts = [s.text for s in dev_es[:5]]
    with RemoteTranslator(translator_url, batch_size=2, **FAST) as client:
        before = _requests_served(translator_url, "/v1/translate")
        out = client.translate(texts, "es", "en")
        assert _requests_served(translator_url, "/v1/translate") - before == 3
    assert len(out) == 5 and all(out)


def test_registry_builds_remote_engines(translator_url: str, tagger_url: str):
    t = load_translator(f"remote:{translator_url}", batch_size=8, max_retries=1)
    try:
        assert isinstance(t, RemoteAligningTranslator)
        assert t.batch_size == 8 and t.http.max_retries == 1 and t.base_url == translator_url
    finally:
        t.close()
    g = load_tagger(f"remote:{tagger_url}/")
    try:
        assert isinstance(g, RemoteTagger) and isinstance(g, Tagger)
        assert g.base_url == tagger_url and g.mode == "model"
    finally:
        g.close()
    with pytest.raises(ValueError, match="available: apertium, transformers, ctranslate2, openai, remote"):
        load_translator("nope:x")
    with pytest.raises(ValueError, match="available: spacy, transformers, remote"):
        load_tagger("nope")
    with pytest.raises(ValueError, match="names no service"):
        load_translator("remote:")


# -- tagging and the whole pipeline over remote engines ----------------------------------------------------------


def test_remote_tagger_matches_spacy(tagger_url: str, tagger, remote: RemoteTranslator, dev_es):
    english = remote.translate([s.text for s in dev_es[:8]], "es", "en")
    with RemoteTagger(tagger_url, mode="model", **FAST) as client:
        assert client.languages() == tagger.languages()
        got = client.tag(english, "en")
        assert got == tagger.tag(english, "en")
        assert any(got)
        with pytest.raises(RemoteRequestError, match="use mode crop"):
            client.tag(["Hola, Madrid."], "es")
    with RemoteTagger(tagger_url, mode="crop", **FAST) as crop_mode:
        assert {"es", "en"} <= set(crop_mode.languages())
        spans = crop_mode.tag([dev_es[0].text], "es")[0]
        assert spans and all(dev_es[0].text[s.start:s.end] == s.text for s in spans)


def test_pipeline_over_remote_engines_matches_in_process(translator, tagger, translator_url, tagger_url, dev_es):
    sentences = [s.model_copy(update={"en_tokens": None, "en_tags": None}) for s in dev_es]
    local = list(CropPipeline(translator, tagger, Projector()).run(sentences))
    with connect_translator(translator_url, **FAST) as rt, RemoteTagger(tagger_url, mode="model", **FAST) as rg:
        pipe = CropPipeline(rt, rg, Projector())
        assert pipe.use_alignment  # the forward evidence comes from the remote Apertium
        pipe.check("es")
        got = list(pipe.run(sentences))
    assert [r.model_dump() for r in got] == [r.model_dump() for r in local]
    assert sum(len(r.entities) for r in got) > 0
    assert not [r.reason for r in got if r.status == Status.failed]
    assert sum(r.status == Status.kept for r in got) >= N_DEV // 2


# -- API keys ----------------------------------------------------------------------------------------------------


def test_api_key(translator, monkeypatch: pytest.MonkeyPatch):
    settings = TranslatorSettings(max_wait_ms=1.0, api_keys=["k"])
    with running(create_translator_app(settings, engine=translator)) as url:
        monkeypatch.delenv("CROP_REMOTE_API_KEY", raising=False)
        with RemoteTranslator(url, **FAST) as anonymous, pytest.raises(RemoteServiceError) as info:
            anonymous.translate(["Hola."], "es", "en")
        assert info.value.status == 401 and "API key" in str(info.value) and url in str(info.value)
        with RemoteTranslator(url, api_key="wrong", **FAST) as wrong, pytest.raises(RemoteServiceError,
                                                                                    match="HTTP 401"):
            wrong.pairs()
        with RemoteTranslator(url, api_key="k", **FAST) as keyed:
            assert keyed.translate(["Hola."], "es", "en") == ["Hello."]
        monkeypatch.setenv("CROP_REMOTE_API_KEY", "k")
        with connect_translator(url, **FAST) as from_env:
            assert isinstance(from_env, AligningTranslator)
            assert from_env.translate(["Adiós."], "es", "en")


# -- HTTP behaviour against fake servers -------------------------------------------------------------------------


class Script:
    """What a fake server answers, one entry per request (the last entry repeats), and what it was sent."""

    def __init__(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[float, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def next(self, body: dict[str, Any]) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.calls.append((time.monotonic(), body))
            return self.answers[min(len(self.calls), len(self.answers)) - 1]


def _fake_flaky_server(script: Script) -> FastAPI:
    """A fake translator service answering /v1/translate from `script` (the other routes always work)."""
    app = FastAPI()

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "live"}

    @app.get("/v1/info")
    def info() -> dict[str, Any]:
        return {"service": "translator", "engine": "fake", "pairs": [["es", "en"]], "aligned": False, "ready": True}

    @app.post("/v1/translate")
    async def translate(request: Request) -> JSONResponse:
        body = await request.json()
        status, headers, content = script.next(body)
        if content is None:  # echo the texts, upper-cased
            content = {"translations": [t.upper() for t in body["texts"]]}
        return JSONResponse(content, status_code=status, headers=headers)

    return app


OK = (200, {}, None)


def test_retries_503_then_succeeds():
    script = Script((503, {}, {"detail": "translator is not ready: the engine is loading"}), OK)
    with running(_fake_flaky_server(script), ready=False) as url, RemoteTranslator(url, **FAST) as client:
        assert client.translate(["hola", "adiós"], "es", "en") == ["HOLA", "ADIÓS"]
        with connect_translator(url) as plain:
            assert type(plain) is RemoteTranslator and not isinstance(plain, AligningTranslator)
    assert len(script.calls) == 2
    assert script.calls[0][1] == script.calls[1][1] == {"texts": ["hola", "adiós"], "src": "es", "tgt": "en"}


def test_429_honours_retry_after():
    script = Script((429, {"Retry-After": "1"}, {"detail": "too many requests waiting"}), OK)
    with running(_fake_flaky_server(script), ready=False) as url, RemoteTranslator(url, **FAST) as client:
        assert client.translate(["hola"], "es", "en") == ["HOLA"]
    assert len(script.calls) == 2
    assert script.calls[1][0] - script.calls[0][0] >= 0.9  # not the 0.01 s backoff


def test_gives_up_after_the_retries():
    script = Script((504, {}, {"detail": "no result within 60 s"}))
    with running(_fake_flaky_server(script), ready=False) as url, RemoteTranslator(url, **FAST) as client, \
            pytest.raises(RemoteServiceError) as info:
        client.translate(["hola"], "es", "en")
    assert len(script.calls) == 4
    err = info.value
    assert err.status == 504 and err.detail == "no result within 60 s"
    assert "gave up after 4 attempts" in str(err) and url in str(err)
    # the service is down, not the sentence wrong: the layers above answer 503 and do not isolate item by item
    assert isinstance(err, RemoteUnavailable) and isinstance(err, EngineUnavailable)


@pytest.mark.parametrize("status", [429, 502, 503])
def test_unavailable_answers_after_the_retries(status: int):
    script = Script((status, {"Retry-After": "0"}, {"detail": "busy"}))
    with running(_fake_flaky_server(script), ready=False) as url, \
            RemoteTranslator(url, cooldown=7.0, **FAST) as client, pytest.raises(EngineUnavailable) as info:
        client.translate(["hola"], "es", "en")
    assert len(script.calls) == 4  # retried with backoff: these pass
    assert info.value.retry_after == 7.0 and f"HTTP {status}" in str(info.value)


def test_circuit_breaker_fails_fast_then_tries_again():
    script = Script((503, {}, {"detail": "translator is not ready: the engine is loading"}), OK)
    with running(_fake_flaky_server(script), ready=False) as url, \
            RemoteTranslator(url, max_retries=0, cooldown=60.0) as client:
        assert client.http.health.up is None
        with pytest.raises(RemoteUnavailable) as first:
            client.translate(["hola"], "es", "en")
        assert len(script.calls) == 1 and first.value.retry_after == 60.0
        health = client.http.health
        assert health.up is False and "HTTP 503" in (health.last_error or "")
        down_since = health.since
        # within the window: every call fails at once, without a request, saying when to come back
        for _ in range(5):
            with pytest.raises(RemoteUnavailable, match="not sent, the service failed just before") as info:
                client.translate(["hola"], "es", "en")
            assert 0 < info.value.retry_after <= 60.0
            assert isinstance(info.value, EngineUnavailable)
        assert len(script.calls) == 1

    script = Script((503, {}, {"detail": "loading"}), OK)
    with running(_fake_flaky_server(script), ready=False) as url, \
            RemoteTranslator(url, max_retries=0, cooldown=0.2) as client:
        with pytest.raises(RemoteUnavailable):
            client.translate(["hola"], "es", "en")
        time.sleep(0.3)  # past the window: the next call is sent, and the service is up again
        assert client.translate(["hola"], "es", "en") == ["HOLA"]
        assert len(script.calls) == 2
        assert client.http.health.up is True and client.http.health.since > down_since
        assert "HTTP 503" in (client.http.health.last_error or "")  # kept for /v1/info


def test_no_answer_in_time_is_unavailable():
    app = FastAPI()
    calls: list[int] = []

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "live"}

    @app.post("/v1/translate")
    async def slow() -> dict[str, Any]:
        calls.append(1)
        await asyncio.sleep(5)
        return {"translations": []}

    with running(app, ready=False) as url, RemoteTranslator(url, timeout=0.2, max_retries=1, backoff=0.01) as client, \
            pytest.raises(RemoteUnavailable, match="no answer within 0.2 s") as info:
        client.translate(["hola"], "es", "en")
    assert len(calls) == 2 and "gave up after 2 attempts" in str(info.value)


def test_no_retry_on_other_client_errors():
    for status, detail, exc in ((400, "language pair es->xx is not served by 'fake'", UnsupportedPair),
                                (401, "missing or wrong API key", RemoteServiceError),
                                (500, "internal error: boom", RemoteServiceError)):
        script = Script((status, {}, {"detail": detail}), OK)
        with running(_fake_flaky_server(script), ready=False) as url, RemoteTranslator(url, **FAST) as client, \
                pytest.raises(exc, match=re.escape(detail)):
            client.translate(["hola"], "es", "xx")
        assert len(script.calls) == 1, status


def test_batch_size_splits_requests_on_a_fake_server():
    script = Script(OK)
    texts = [f"frase {i}" for i in range(5)]
    with running(_fake_flaky_server(script), ready=False) as url, \
            RemoteTranslator(url, batch_size=2, **FAST) as client:
        assert client.translate(texts, "es", "en") == [t.upper() for t in texts]
    assert [body["texts"] for _, body in script.calls] == [texts[0:2], texts[2:4], texts[4:5]]


def test_down_server_fails_clearly_after_one_quick_retry():
    url = f"http://127.0.0.1:{free_port()}"
    # a refused connection is not retried with backoff, however many retries the client allows
    with RemoteTranslator(url, max_retries=5, backoff=10.0, cooldown=3.0) as client, \
            pytest.raises(RemoteUnavailable) as info:
        client.translate(["hola"], "es", "en")
    assert client.http.attempts == 2 and info.value.retry_after == 3.0
    msg = str(info.value)
    assert url in msg and "connection failed" in msg and "gave up after 2 attempts" in msg
    assert info.value.status is None and isinstance(info.value, EngineUnavailable)
    assert client.http.health.up is False and "connection failed" in (client.http.health.last_error or "")
    with pytest.raises(RemoteServiceError, match="connection failed"):
        connect_translator(url, max_retries=0)
    with pytest.raises(RemoteServiceError, match="connection failed"):
        RemoteTagger(url, max_retries=0).languages()


def test_waits_while_the_service_loads():
    state = {"n": 0}
    app = FastAPI()

    @app.get("/v1/info")
    def info() -> dict[str, Any]:
        state["n"] += 1
        return {"service": "translator", "engine": "fake", "pairs": [["es", "en"]], "aligned": True,
                "ready": state["n"] > 2}

    @app.get("/health/live")
    def live() -> dict[str, str]:
        return {"status": "live"}

    with running(app, ready=False) as url:
        client = connect_translator(url, **FAST)
        assert isinstance(client, RemoteAligningTranslator) and client.pairs() == [("es", "en")]
        client.close()
        state["n"] = -100
        with pytest.raises(RemoteServiceError, match="not ready"):
            connect_translator(url, backoff=0.01, ready_timeout=0.2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="http"):
        RemoteTranslator("localhost:8101")
    with pytest.raises(ValueError, match="batch_size"):
        RemoteTranslator("http://127.0.0.1:1", batch_size=0)
    with pytest.raises(ValueError, match="mode"):
        RemoteTagger("http://127.0.0.1:1", mode="other")  # type: ignore[arg-type]
