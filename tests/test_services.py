"""The services over real uvicorn servers on loopback ports: translator (Apertium), tagger (Apertium + spaCy),
projector; batching, limits (413, 429, 504), health, metrics, API keys, request ids, `crop serve`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import free_port, running

from crop.api import projector as projector_api
from crop.api import tagger as tagger_api
from crop.api import translator as translator_api
from crop.api.service import create_service
from crop.api.settings import ProjectorSettings, TaggerSettings, TranslatorSettings
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.translate.base import Translator

pytestmark = pytest.mark.integration

SENTENCE = "Pedro Sánchez se reunió con Olaf Scholz en Berlín."


@pytest.fixture(scope="module")
def translator_url(translator):
    settings = TranslatorSettings(max_wait_ms=30, api_keys=[])
    with running(translator_api.create_app(settings, engine=translator)) as url:
        yield url


@pytest.fixture(scope="module")
def tagger_url(translator, tagger):
    engines = tagger_api.TaggerEngines(tagger, CropPipeline(translator, tagger, Projector(ProjectorConfig(
        policy="partial", drop_all_o=False, langid=False))))
    with running(tagger_api.create_app(TaggerSettings(), engines=engines)) as url:
        yield url


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample of a service (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + ("{" if labels else " ")):
            head, _, value = line.rpartition(" ")
            got = head[len(name):].strip("{}")
            if not labels or all(part in got.split(",") for part in want.split(",")):
                return float(value)
    return 0.0


# -- translator ----------------------------------------------------------------------------------------------------


def test_translate_plain_labeled_and_aligned(translator_url: str):
    r = httpx.post(translator_url + "/v1/translate", json={"text": "La casa es grande.", "src": "es", "tgt": "en"})
    assert r.status_code == 200 and r.json()["translations"][0].lower().startswith("the house")
    assert r.headers["x-request-id"]
    r = httpx.post(translator_url + "/v1/translate/labeled", json={
        "items": [{"text": "John lives in London.", "spans": [{"start": 0, "end": 4, "label": "PER"},
                                                              {"start": 14, "end": 20, "label": "LOC"}]}],
        "src": "en", "tgt": "es"})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert {s["text"] for s in res["spans"]} == {"John", "Londres"} and res["lost"] == []
    r = httpx.post(translator_url + "/v1/translate/aligned",
                   json={"sentences": [["La", "casa", "es", "grande", "."]], "src": "es", "tgt": "en"})
    assert r.status_code == 200 and r.json()["results"][0]["alignment"]
    info = httpx.get(translator_url + "/v1/info").json()
    assert ["es", "en"] in info["pairs"] and info["aligned"] is True and info["ready"] is True


@pytest.mark.parametrize("body,status,needle", [
    ({"text": "hola", "src": "es", "tgt": "xx"}, 400, "es->xx is not served"),
    ({"text": "", "src": "es", "tgt": "en"}, 422, "`text` is empty"),
    ({"texts": [], "src": "es", "tgt": "en"}, 422, "`texts` is empty"),
    ({"text": "a", "texts": ["b"], "src": "es", "tgt": "en"}, 422, "exactly one of"),
    ({"text": 3, "src": "es", "tgt": "en"}, 422, "string"),
    ({"text": "hola", "src": "e$", "tgt": "en"}, 422, "pattern"),
    ({"text": "hola", "src": "es", "tgt": "en", "extra": 1}, 422, "extra"),
    ({"text": "x" * 6000, "src": "es", "tgt": "en"}, 413, "at most 5000"),
    ({"texts": ["hola"] * 300, "src": "es", "tgt": "en"}, 413, "at most 256"),
])
def test_bad_translate_requests_get_4xx_naming_the_problem(translator_url: str, body, status, needle):
    r = httpx.post(translator_url + "/v1/translate", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_malformed_json_and_huge_bodies(translator_url: str):
    r = httpx.post(translator_url + "/v1/translate", content=b'{"text": "hola", ', headers={
        "content-type": "application/json"})
    assert r.status_code == 422 and "JSON decode error" in r.text
    r = httpx.post(translator_url + "/v1/translate", json={"text": "a" * (1 << 20), "src": "es", "tgt": "en"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit is counted as the body streams in
        for _ in range(64):
            yield b"x" * 16384

    r = httpx.post(translator_url + "/v1/translate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_labeled_spans_outside_the_text_are_refused(translator_url: str):
    r = httpx.post(translator_url + "/v1/translate/labeled", json={
        "items": [{"text": "John", "spans": [{"start": 0, "end": 9, "label": "PER"}]}], "src": "en", "tgt": "es"})
    assert r.status_code == 422 and "outside the text" in r.text
    r = httpx.post(translator_url + "/v1/translate/labeled", json={
        "items": [{"text": "John Smith", "spans": [{"start": 0, "end": 10, "label": "PER"},
                                                   {"start": 5, "end": 10, "label": "PER"}]}],
        "src": "en", "tgt": "es"})
    assert r.status_code == 400 and "overlap" in r.text


class HeldTranslator:
    """The real translator, with its first call held until `release` is set (so that requests queue behind it)."""

    def __init__(self, inner: Translator) -> None:
        self.inner = inner
        self.name = inner.name
        self.holding = threading.Event()
        self.release = threading.Event()

    def pairs(self) -> list[tuple[str, str]]:
        return self.inner.pairs()

    def translate(self, texts: list[str], src: str, tgt: str) -> list[str]:
        if not self.holding.is_set():
            self.holding.set()
            assert self.release.wait(60)
        return self.inner.translate(texts, src, tgt)

    def translate_labeled(self, items: list[Any], src: str, tgt: str) -> list[Any]:
        return self.inner.translate_labeled(items, src, tgt)


def test_concurrent_requests_are_batched(translator):
    # counted, not timed: 23 requests queue while the engine holds the first one, then run as one Apertium call
    held = HeldTranslator(translator)
    with running(translator_api.create_app(TranslatorSettings(max_wait_ms=0), engine=held)) as url:
        async def many() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as client:
                def post(i: int) -> Any:
                    return client.post(url + "/v1/translate", json={"text": f"La casa número {i}.", "src": "es",
                                                                    "tgt": "en"})

                first = asyncio.create_task(post(0))
                assert await asyncio.to_thread(held.holding.wait, 60)
                rest = [asyncio.create_task(post(i)) for i in range(1, 24)]
                deadline = time.monotonic() + 60
                while metric(url, "crop_queue_depth") < 23:
                    assert time.monotonic() < deadline, "the requests did not queue"
                    await asyncio.sleep(0.02)
                held.release.set()
                return [await first] + [await r for r in rest]

        responses = asyncio.run(many())
        assert all(r.status_code == 200 for r in responses)
        outputs = [r.json()["translations"][0] for r in responses]
        assert all(out.endswith(f" {i}.") for i, out in enumerate(outputs))  # each request got its own sentence
        assert metric(url, "crop_batch_size_sum") == 24 and metric(url, "crop_batch_size_count") == 2


def test_metrics_and_health(translator_url: str):
    assert httpx.get(translator_url + "/health/live").json() == {"status": "live"}
    assert httpx.get(translator_url + "/health/ready").status_code == 200
    httpx.post(translator_url + "/v1/translate", json={"text": "", "src": "es", "tgt": "en"})
    text = httpx.get(translator_url + "/metrics").text
    assert 'crop_request_seconds_bucket{le="0.005",method="POST",route="/v1/translate",status="422"}' in text
    assert "crop_queue_depth" in text and "crop_requests_total" in text
    assert httpx.get(translator_url + "/docs").status_code == 200
    assert "/v1/translate/labeled" in httpx.get(translator_url + "/openapi.json").json()["paths"]


def test_request_id_is_echoed(translator_url: str):
    r = httpx.get(translator_url + "/v1/info", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_every_answer_says_its_time_in_the_service(translator_url: str):
    """Server-Timing (the service's own time, without the network) on answers of every kind, refusals by the
    body limit included, and the time of a translation counted in it."""
    def app_ms(r: httpx.Response) -> float:
        name, _, dur = r.headers["server-timing"].partition(";")
        assert name == "app" and dur.startswith("dur=")
        return float(dur.removeprefix("dur="))

    ok = httpx.post(translator_url + "/v1/translate", json={"texts": ["El perro come ."], "src": "es", "tgt": "en"})
    assert ok.status_code == 200 and app_ms(ok) > 0
    too_big = httpx.post(translator_url + "/v1/translate", content=b"x" * (1 << 20),
                         headers={"content-type": "application/json"})
    assert too_big.status_code == 413 and too_big.headers["x-request-id"] and app_ms(too_big) >= 0
    assert app_ms(httpx.get(translator_url + "/health/live")) >= 0


# -- tagger ---------------------------------------------------------------------------------------------------------


def test_tag_a_sentence_in_crop_mode(tagger_url: str):
    r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "crop"})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert res["text"] == SENTENCE
    found = {(e["text"], e["label"]) for e in res["entities"]}
    assert ("Pedro Sánchez", "PER") in found and ("Berlín", "LOC") in found
    for e in res["entities"]:
        assert SENTENCE[e["start"]:e["end"]] == e["text"] and e["method"]


def test_tag_batch_and_model_mode(tagger_url: str):
    r = httpx.post(tagger_url + "/v1/tag", json={"texts": [SENTENCE, "La casa es grande."], "lang": "es"})
    assert r.status_code == 200 and len(r.json()["results"]) == 2
    r = httpx.post(tagger_url + "/v1/tag", json={"text": "Angela Merkel visited Paris.", "lang": "en",
                                                 "mode": "model"})
    assert {e["text"] for e in r.json()["results"][0]["entities"]} >= {"Angela Merkel", "Paris"}
    r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "model"})
    assert r.status_code == 400 and "use mode crop" in r.json()["detail"]
    r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "eu"})
    assert r.status_code == 400 and "not served" in r.json()["detail"]
    info = httpx.get(tagger_url + "/v1/info").json()
    assert info["crop_languages"] == ["ca", "es", "gl"] and info["model_languages"] == ["en"]


def test_decomposed_text_and_controls_get_offsets_into_the_text_sent(tagger_url: str):
    """NFD (as macOS writes it) and control characters: the entities are those of the clean text, the offsets
    index the text the client sent, and no entity holds a control character or edge punctuation."""
    import unicodedata

    for text, lang, mode, want in [
        (unicodedata.normalize("NFD", SENTENCE), "es", "crop", {"Pedro Sánchez", "Berlín"}),
        ("\x07 Berlín.\x1b[31m", "es", "crop", {"Berlín"}),
        (unicodedata.normalize("NFD", "Angela Merkel visited Zürich.\x1b[0m"), "en", "model",
         {"Angela Merkel", "Zürich"}),
    ]:
        r = httpx.post(tagger_url + "/v1/tag", json={"text": text, "lang": lang, "mode": mode})
        assert r.status_code == 200, r.text
        entities = r.json()["results"][0]["entities"]
        for e in entities:
            assert text[e["start"]:e["end"]] == e["text"] and e["text"] == e["text"].strip(" .\x07\x1b")
        assert want <= {unicodedata.normalize("NFC", e["text"]) for e in entities}, entities


def test_the_page_is_served(tagger_url: str):
    r = httpx.get(tagger_url + "/")
    assert r.status_code == 200 and "v1/tag" in r.text and "<mark" not in r.text


# -- projector ------------------------------------------------------------------------------------------------------


def test_project_with_a_labeled_back_translation():
    with running(projector_api.create_app(ProjectorSettings(langid=False))) as url:
        item = {
            "lang": "es", "text": "Juan vive en Londres .", "source_text": "Juan lives in London.",
            "source": [{"start": 0, "end": 4, "label": "PER", "text": "Juan"},
                       {"start": 14, "end": 20, "label": "LOC", "text": "London"}],
            "back": {"text": "Juan vive en Londres.", "spans": [
                {"start": 0, "end": 4, "label": "PER", "text": "Juan", "ref": 0},
                {"start": 13, "end": 20, "label": "LOC", "text": "Londres", "ref": 1}]},
        }
        r = httpx.post(url + "/v1/project", json={"items": [item, {**item, "back": None}]})
        assert r.status_code == 200, r.text
        first, second = r.json()["results"]
        assert first["tags"] == ["B-PER", "O", "O", "B-LOC", "O"] and first["status"] == "kept"
        assert [e["method"] for e in first["entities"]] == ["exact", "exact"]
        assert second["status"] == "discarded"  # no back-translation: Juan is copied, London is not found
        r = httpx.post(url + "/v1/project", json={"items": [{"lang": "es", "source": []}]})
        assert r.status_code == 422 and "tokens` or `text`" in r.text


# -- the service machinery, with engines made slow or failing on purpose ------------------------------------------


def _slow_service(settings: TranslatorSettings, seconds: float, gate: threading.Event | None = None):
    def load() -> str:
        if gate is not None:
            gate.wait(30)
        return "engine"

    def run(engine: Any, key: Hashable, items: list[Any]) -> list[Any]:
        time.sleep(seconds)
        out = []
        for it in items:
            if it == "boom":
                raise ValueError("cannot translate 'boom'")
            out.append(it.upper())
        return out

    app = create_service("echo", settings, load, run, "test service")

    @app.post("/v1/echo")
    async def echo(body: dict[str, list[str]]) -> dict[str, list[str]]:
        state = app.state.service
        return {"out": await state.submit("k", body["texts"], body["texts"])}

    return app


def test_not_ready_until_the_engine_is_loaded():
    gate = threading.Event()
    with running(_slow_service(TranslatorSettings(), 0, gate), ready=False) as url:
        r = httpx.get(url + "/health/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        r = httpx.post(url + "/v1/echo", json={"texts": ["a"]})
        assert r.status_code == 503 and "not ready" in r.json()["detail"]
        gate.set()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.post(url + "/v1/echo", json={"texts": ["a"]}).json() == {"out": ["A"]}


def test_engine_that_fails_to_load_says_why():
    def load() -> None:
        raise OSError("no model at /models/x")

    app = create_service("broken", TranslatorSettings(), load, lambda e, k, i: i, "test")
    with running(app, ready=False) as url:
        deadline = time.monotonic() + 10
        while (r := httpx.get(url + "/health/ready")).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert r.status_code == 503 and "no model at /models/x" in r.json()["detail"]


def test_full_queue_answers_429_with_retry_after():
    with running(_slow_service(TranslatorSettings(max_queue=2, max_batch_size=1), 0.3)) as url:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*[client.post(url + "/v1/echo", json={"texts": [f"t{i}"]})
                                              for i in range(8)])

        responses = asyncio.run(burst())
        codes = sorted(r.status_code for r in responses)
        assert 429 in codes and 200 in codes
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1 and "too many requests" in refused.json()["detail"]


def test_slow_requests_time_out_with_504():
    with running(_slow_service(TranslatorSettings(request_timeout=0.2), 1.0)) as url:
        r = httpx.post(url + "/v1/echo", json={"texts": ["a"]}, timeout=10)
        assert r.status_code == 504 and "within 0.2 s" in r.json()["detail"]


def test_one_bad_item_does_not_fail_the_others_in_its_batch():
    with running(_slow_service(TranslatorSettings(max_wait_ms=100), 0.0)) as url:
        async def mixed() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as client:
                return await asyncio.gather(*[client.post(url + "/v1/echo", json={"texts": [t]})
                                              for t in ("a", "boom", "c")])

        good1, bad, good2 = asyncio.run(mixed())
        assert good1.json() == {"out": ["A"]} and good2.json() == {"out": ["C"]}
        assert bad.status_code == 400 and "cannot translate 'boom'" in bad.json()["detail"]


def test_api_keys():
    settings = ProjectorSettings(api_keys=["s3cret", "other"], langid=False)
    with running(projector_api.create_app(settings)) as url:
        r = httpx.get(url + "/v1/info")
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert httpx.get(url + "/v1/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/v1/info", headers={"Authorization": "Bearer other"}).status_code == 200
        assert httpx.get(url + "/health/ready").status_code == 200  # operations stay open


# -- one command ----------------------------------------------------------------------------------------------------


def test_crop_serve_starts_a_service(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "CROP_PROJECTOR_LANGID": "false", "CROP_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen([sys.executable, "-c", "from crop.cli import main; main()", "serve", "projector",
                             "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "crop serve projector did not become ready"
            time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/v1/info").json()["langid"] is False
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = subprocess.run([sys.executable, "-c", "from crop.cli import main; main()", "serve", "nothing"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown service" in bad.stderr


# -- neural engines behind the services (tiny models built at test time) --------------------------------------------


def test_services_over_tiny_neural_engines(copy_m2m100_ct2: Path, tiny_ner_model: Path):
    from crop.tag.transformers import TransformersTagger
    from crop.translate.ctranslate2 import CTranslate2Translator

    ct2 = CTranslate2Translator(str(copy_m2m100_ct2), beam_size=2, n_best=2)
    with running(translator_api.create_app(TranslatorSettings(), engine=ct2)) as url:
        info = httpx.get(url + "/v1/info").json()
        assert info["engine"] == "ctranslate2" and ["en", "es"] in info["pairs"] and info["aligned"] is False
        r = httpx.post(url + "/v1/translate/labeled", json={
            "items": [{"text": "John Smith lives in Madrid .", "spans": [{"start": 0, "end": 10, "label": "PER"},
                                                                        {"start": 20, "end": 26, "label": "LOC"}]}],
            "src": "en", "tgt": "es"})
        assert r.status_code == 200, r.text
        res = r.json()["results"][0]
        assert "__SLOT0__" in res["raw"] and len(res["alternatives"]) == 1
        r = httpx.post(url + "/v1/translate/aligned", json={"sentences": [["a"]], "src": "en", "tgt": "es"})
        assert r.status_code == 400 and "does not give word alignments" in r.json()["detail"]
    tagger = TransformersTagger(str(tiny_ner_model), device="cpu")
    engines = tagger_api.TaggerEngines(tagger, CropPipeline(ct2, tagger, Projector(ProjectorConfig(
        policy="partial", drop_all_o=False, langid=False))))
    with running(tagger_api.create_app(TaggerSettings(), engines=engines)) as url:
        assert httpx.get(url + "/v1/info").json()["model_languages"] == ["*"]
        for mode in ("model", "crop"):
            r = httpx.post(url + "/v1/tag", json={"texts": ["Pedro Sánchez visited the European Commission .",
                                                            "la house de Google"], "lang": "es", "mode": mode})
            assert r.status_code == 200, r.text
            assert len(r.json()["results"]) == 2
