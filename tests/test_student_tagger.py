"""Mode student of the tagger (issue 12, item 6): the student as a crop Tagger (tiny spaCy students trained here,
and the tiny transformers token classifier), a registry's current version resolved and hot-reloaded (polled, and
announced on a Redis server of the test's own) under concurrent requests to a real uvicorn tagger on loopback,
the default mode chosen from the version's metrics, 503 without a student, and `crop tag --model` on a file."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import running

from crop.api.settings import TaggerSettings
from crop.api.tagger import TaggerEngines, create_app
from crop.io import sentence_from_record
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.tag.base import Tagger
from crop.tag.student import (
    LoadedStudent,
    StudentHolder,
    StudentSource,
    StudentTagger,
    load_student_at,
    load_tagger_of,
)
from crop.train.registry import ModelRegistry, redis_announcer

CROP = str(Path(sys.executable).with_name("crop"))
SENTENCE = "Juan vive en Madrid."
# the training sentences of the tiny students: people (PER) and cities, the cities LOC for one student and ORG
# for the other, so that the version that answered shows in every answer
TRAIN = [
    (["Juan", "vive", "en", "Madrid", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["María", "trabaja", "en", "Barcelona", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["Pedro", "visitó", "Sevilla", "ayer", "."], ["B-PER", "O", "B-LOC", "O", "O"]),
    (["Ana", "López", "llegó", "a", "Valencia", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]),
    (["Luis", "vive", "en", "Bilbao", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
    (["Carmen", "viajó", "a", "Madrid", "."], ["B-PER", "O", "O", "B-LOC", "O"]),
]
EXPECTED = {"LOC": [("Juan", "PER", 0, 4), ("Madrid", "LOC", 13, 19)],
            "ORG": [("Juan", "PER", 0, 4), ("Madrid", "ORG", 13, 19)]}
METRICS = {"es": {"student": 0.9, "crop": 0.8}, "ca": {"student": 0.7, "crop": 0.75}, "gl": {"student": 0.6}}


def build_spacy_student(folder: Path, city: str, epochs: int = 20, seed: int = 0) -> Path:
    """A blank multilingual spaCy pipeline whose NER learned TRAIN (cities as `city`) by heart, saved as a
    student is (an ordinary spaCy folder)."""
    import spacy
    from spacy.tokens import Doc
    from spacy.training import Example, iob_to_biluo
    from spacy.util import fix_random_seed

    fix_random_seed(seed)
    nlp = spacy.blank("xx")
    nlp.add_pipe("ner")
    examples = [Example.from_dict(Doc(nlp.vocab, words=tokens),
                                  {"entities": iob_to_biluo([t.replace("LOC", city) for t in tags])})
                for tokens, tags in TRAIN]
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(examples)
        nlp.update(examples, sgd=optimizer, drop=0.1)
    nlp.to_disk(folder)
    return folder


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny students: cities tagged LOC, and cities tagged ORG."""
    root = tmp_path_factory.mktemp("students")
    return {city: build_spacy_student(root / city.lower(), city) for city in ("LOC", "ORG")}


def entities(answer: dict[str, Any]) -> list[tuple[str, str, int, int]]:
    return [(e["text"], e["label"], e["start"], e["end"]) for e in answer["entities"]]


def publish(registry: ModelRegistry, folder: Path, metrics: dict[str, dict[str, float]], promote: str) -> str:
    return registry.publish(folder, {"metrics": metrics}, promote=promote).version  # type: ignore[arg-type]


@pytest.fixture()
def registry(tmp_path: Path, students: dict[str, Path]) -> ModelRegistry:
    """A registry with v0001 (LOC) current and v0002 (ORG) published but not promoted."""
    reg = ModelRegistry.at(str(tmp_path / "models" / "ner"))
    assert publish(reg, students["LOC"], METRICS, "always") == "v0001"
    assert publish(reg, students["ORG"], {"es": {"student": 0.95, "crop": 0.8}}, "never") == "v0002"
    assert reg.current() == "v0001"
    return reg


# -- the student as a tagger ---------------------------------------------------------------------------------------


def test_a_spacy_student_tags_crops_tokens_with_character_offsets(students: dict[str, Path]) -> None:
    tagger = StudentTagger(students["LOC"])
    assert isinstance(tagger, Tagger) and tagger.kind == "spacy" and tagger.labels == ["LOC", "PER"]
    assert "es" in tagger.languages() and "fr" in tagger.languages()  # multilingual: any language
    text = "  Ana López  llegó a Valencia ."  # odd spacing: offsets come from crop's tokens, not from spaCy's
    spans = tagger.tag([SENTENCE, text], "es")
    assert [(s.text, s.label, s.start, s.end, s.token_start, s.token_end) for s in spans[0]] == [
        ("Juan", "PER", 0, 4, 0, 1), ("Madrid", "LOC", 13, 19, 3, 4)]
    assert [(s.text, s.label) for s in spans[1]] == [("Ana López", "PER"), ("Valencia", "LOC")]
    assert all(text[s.start:s.end] == s.text for s in spans[1])
    # tokens kept as given: one tag per token, whatever the tokenization
    [(tags, scores)] = tagger.tag_tokens([["Carmen", "viajó", "a", "Madrid", "."]], "es")
    assert tags == ["B-PER", "O", "O", "B-LOC", "O"] and len(scores) == 5
    [result] = tagger.tag_inputs([sentence_from_record({"id": "x", "tokens": ["Luis", "vive", "en", "Bilbao", "."]},
                                                       "ca")])
    assert result.lang == "ca" and result.tags == ["B-PER", "O", "O", "B-LOC", "O"]
    assert [(e.text, e.label, e.start, e.end, e.method) for e in result.entities] == [
        ("Luis", "PER", 0, 4, "student"), ("Bilbao", "LOC", 13, 19, "student")]


@pytest.mark.neural
def test_a_transformers_student_is_served_through_the_transformers_tagger(tiny_ner_model: Path) -> None:
    tagger = StudentTagger(tiny_ner_model, device="cpu")
    assert tagger.kind == "transformers" and set(tagger.labels) <= {"PER", "LOC", "ORG", "MISC"} and tagger.labels
    text = "Angela Merkel visited Paris with Barack Obama ."
    [spans] = tagger.tag([text], "en")
    assert spans, "the tiny classifier finds entities in a training-like sentence"
    assert all(text[s.start:s.end] == s.text and s.label in tagger.labels for s in spans)
    tokens = ["Angela", "Merkel", "visited", "Paris", "."]
    [(tags, scores)] = tagger.tag_tokens([tokens], "en")
    assert len(tags) == len(scores) == len(tokens)


# -- where the student comes from ----------------------------------------------------------------------------------


def test_a_registry_resolves_to_its_current_version(registry: ModelRegistry, tmp_path: Path) -> None:
    source = StudentSource(registry.location)
    assert source.kind == "registry" and source.current_version() == "v0001"
    resolved = source.resolve()
    assert resolved is not None and resolved.version == "v0001" and resolved.name == "ner"
    assert resolved.metrics == METRICS
    assert resolved.folder == Path(registry.location) / "v0001" / "model"  # the model is in model/ of the version
    registry.promote("v0002")
    assert source.current_version() == "v0002" and source.resolve().metrics["es"]["student"] == 0.95  # type: ignore
    # a version folder given directly: one fixed version, its metrics from its meta.json
    version = StudentSource(Path(registry.location) / "v0001")
    assert version.kind == "folder" and version.resolve().version == "v0001"  # type: ignore[union-attr]
    assert version.resolve().metrics == METRICS  # type: ignore[union-attr]
    # a plain model folder: no metrics, its folder name as version
    plain = StudentSource(Path(registry.location) / "v0001" / "model")
    assert plain.kind == "folder" and plain.resolve().metrics == {}  # type: ignore[union-attr]


def test_a_spacy_folder_holding_the_registry_meta_loads(students: dict[str, Path], tmp_path: Path) -> None:
    # a spaCy folder whose meta.json is the registry's (spaCy's own overwritten) still loads, from its config.cfg
    merged = shutil.copytree(students["LOC"], tmp_path / "merged")
    (merged / "meta.json").write_text(json.dumps({"name": "ner", "version": "v0003", "metrics": METRICS}))
    source = StudentSource(merged)
    assert source.kind == "folder" and source.resolve().version == "v0003"  # type: ignore[union-attr]
    assert [s.label for s in StudentTagger(merged).tag([SENTENCE], "es")[0]] == ["PER", "LOC"]


def test_locations_that_hold_no_student(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such folder"):
        StudentSource(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("no model here")
    with pytest.raises(ValueError, match="no student model"):
        StudentSource(tmp_path / "other")
    # a tagger may start before the first training run: a missing registry is one without a version yet
    waiting = StudentSource(tmp_path / "later", allow_empty=True)
    assert waiting.kind == "registry" and waiting.current_version() is None and waiting.resolve() is None
    ModelRegistry.at(str(tmp_path / "unpromoted"))  # a registry none of whose versions was promoted yet
    (tmp_path / "unpromoted").mkdir()
    (tmp_path / "unpromoted" / "v0001").mkdir()
    (tmp_path / "unpromoted" / "v0001" / "meta.json").write_text("{}")
    with pytest.raises(ValueError, match="no current version"):
        load_student_at(tmp_path / "unpromoted")
    (tmp_path / "unpromoted" / "current").write_text("v0009\n")  # a current version that is not there
    with pytest.raises(ValueError, match="v0009"):
        load_student_at(tmp_path / "unpromoted")


def test_a_version_that_fails_to_load_keeps_the_old_one(registry: ModelRegistry, students: dict[str, Path]) -> None:
    holder = StudentHolder(registry.location, poll_seconds=0)
    assert holder.refresh() is not None and holder.current().version == "v0001"  # type: ignore[union-attr]
    old = holder.current()
    broken = Path(registry.location) / "v0003"
    shutil.copytree(Path(registry.location) / "v0001", broken)
    (broken / "model" / "config.cfg").write_text("[nlp]\nthis is not a spaCy config\n")
    meta = json.loads((broken / "meta.json").read_text())
    meta.update(version="v0003", files={})
    (broken / "meta.json").write_text(json.dumps(meta))
    registry.promote("v0003")
    assert holder.refresh() is old  # the same object keeps serving
    assert holder.last_error is not None and "v0003" in holder.last_error
    assert holder.refresh() is old  # not retried at every poll
    registry.promote("v0002")
    assert holder.refresh().version == "v0002" and holder.last_error is None  # type: ignore[union-attr]


# -- the service: hot reload under load ----------------------------------------------------------------------------


class SlowStudent(StudentTagger):
    """A student that takes a while per batch, so that requests are in flight (queued or tagged) at the swap."""

    def tag_tokens(self, sentences: Any, lang: str) -> list[tuple[list[str], list[float]]]:
        time.sleep(0.05)
        return super().tag_tokens(sentences, lang)


@dataclass
class Answer:
    sent: float
    received: float
    status: int
    body: dict[str, Any]


def _client_loop(url: str, stop: threading.Event, answers: list[Answer], body: dict[str, Any]) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            sent = time.monotonic()
            r = client.post("/v1/tag", json=body)
            answers.append(Answer(sent, time.monotonic(), r.status_code, r.json()))


def test_a_hot_reload_under_concurrent_requests_answers_every_request(registry: ModelRegistry) -> None:
    loads: list[str] = []

    def loader(resolved: Any) -> StudentTagger:
        loads.append(resolved.version)
        if resolved.version == "v0002":
            time.sleep(0.5)  # a slow load: requests go on being answered by v0001 meanwhile
            return StudentTagger(resolved.folder)
        return SlowStudent(resolved.folder)

    holder = StudentHolder(registry.location, poll_seconds=0.05, loader=loader)
    first = StudentTagger(Path(registry.location) / "v0001" / "model")  # mode model: any Tagger will do here
    app = create_app(TaggerSettings(api_keys=[], max_batch_size=4),
                     engines=TaggerEngines(first, None, student=holder))
    answers: list[Answer] = []
    stop = threading.Event()
    with running(app) as url:
        info = httpx.get(url + "/v1/info").json()["student"]
        assert info["version"] == "v0001" and info["loaded"] is True
        body = {"texts": [SENTENCE, "Carmen viajó a Madrid."], "lang": "es", "mode": "student"}
        clients = [threading.Thread(target=_client_loop, args=(url, stop, answers, body)) for _ in range(6)]
        for c in clients:
            c.start()
        try:
            time.sleep(0.6)
            promoted = time.monotonic()
            registry.promote("v0002")
            deadline = time.monotonic() + 30
            while holder.current().version != "v0002":  # type: ignore[union-attr]
                assert time.monotonic() < deadline, f"v0002 was never swapped in: {holder.last_error}"
                time.sleep(0.005)
            swapped = time.monotonic()  # at or after the swap itself
            time.sleep(0.6)
        finally:
            stop.set()
            for c in clients:
                c.join(30)
        info = httpx.get(url + "/v1/info").json()["student"]
    assert info["version"] == "v0002" and info["reloads"] == 1 and loads == ["v0001", "v0002"]
    assert len(answers) > 30
    assert all(a.status == 200 for a in answers), [a.body for a in answers if a.status != 200][:3]
    versions = {a.body["model"]["version"] for a in answers}
    assert versions == {"v0001", "v0002"}
    for a in answers:
        label = "LOC" if a.body["model"]["version"] == "v0001" else "ORG"
        assert a.body["mode"] == "student" and a.body["model"]["name"] == "ner"
        assert entities(a.body["results"][0]) == EXPECTED[label]  # the whole request by the version named
        assert [e["label"] for e in a.body["results"][1]["entities"]] == ["PER", label]
    assert all(a.body["model"]["version"] == "v0002" for a in answers if a.sent > swapped)
    assert all(a.body["model"]["version"] == "v0001" for a in answers if a.received < promoted)
    # answered while v0002 was loading (off the request path), and requests in flight at the swap kept v0001
    assert any(a.sent > promoted and a.received < swapped for a in answers)
    assert any(a.body["model"]["version"] == "v0001" and a.received > swapped for a in answers)


def test_an_announcement_on_redis_reloads_a_service_built_from_settings(
        registry: ModelRegistry, tmp_path: Path, translator: Any) -> None:
    from jobs_harness import RedisServer

    redis_server = RedisServer(tmp_path / "redis").start()
    try:
        settings = TaggerSettings(api_keys=[], student=registry.location, student_poll=0, redis_url=redis_server.url)
        app = create_app(settings)
        with running(app) as url:
            holder = app.state.service.engine.student
            assert holder.subscribed.wait(30), "the tagger did not subscribe to crop:models"
            r = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "student"})
            assert r.status_code == 200 and r.json()["model"]["version"] == "v0001"
            registry.promote("v0002")  # not announced, and polling is off: nothing changes
            time.sleep(0.5)
            assert httpx.get(url + "/v1/info").json()["student"]["version"] == "v0001"
            registry.promote("v0002", announce=redis_announcer(redis_server.url, registry))
            deadline = time.monotonic() + 30
            while httpx.get(url + "/v1/info").json()["student"]["version"] != "v0002":
                assert time.monotonic() < deadline, "the announcement did not reload the student"
                time.sleep(0.05)
            r = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "student"})
            assert r.json()["model"]["version"] == "v0002" and entities(r.json()["results"][0]) == EXPECTED["ORG"]
    finally:
        redis_server.stop()


# -- the service: default mode and errors --------------------------------------------------------------------------


@pytest.mark.integration
def test_the_default_mode_follows_the_metrics(registry: ModelRegistry, translator: Any, tagger: Any) -> None:
    pipeline = CropPipeline(translator, tagger, Projector(ProjectorConfig(policy="partial", drop_all_o=False,
                                                                         langid=False)))
    holder = StudentHolder(registry.location, poll_seconds=0)
    with running(create_app(TaggerSettings(api_keys=[]), engines=TaggerEngines(tagger, pipeline,
                                                                               student=holder))) as url:
        info = httpx.get(url + "/v1/info").json()["student"]
        assert info["languages"] == ["ca", "es", "gl"] and info["metrics"] == METRICS
        assert info["default_languages"] == ["es"] and info["kind"] == "spacy" and info["name"] == "ner"

        def tag(lang: str, text: str = SENTENCE, **extra: str) -> dict[str, Any]:
            r = httpx.post(url + "/v1/tag", json={"text": text, "lang": lang, **extra}, timeout=120)
            assert r.status_code == 200, r.text
            return r.json()

        es = tag("es")  # student F1 >= crop's: the student, no translation
        assert es["mode"] == "student" and es["model"] == {"name": "ner", "version": "v0001"}
        assert entities(es["results"][0]) == EXPECTED["LOC"]
        ca = tag("ca", "Joan viu a Barcelona.")  # student below crop: crop
        assert ca["mode"] == "crop" and ca["model"] is None and ca["results"][0]["entities"]
        assert all(e["method"] for e in ca["results"][0]["entities"])  # placed by projection
        assert tag("gl", "Xoán vive en Vigo.")["mode"] == "crop"  # no crop F1 to compare with: not the default
        assert tag("es", mode="crop")["mode"] == "crop"  # an explicit mode wins
        fr = tag("fr", "Juan vit à Madrid.", mode="student")  # never evaluated: works, multilingual
        assert fr["mode"] == "student" and fr["model"]["version"] == "v0001"
        assert tag("en", "Angela Merkel visited Berlin.", mode="model")["mode"] == "model"


def test_mode_student_without_a_student_is_503(registry: ModelRegistry, tmp_path: Path,
                                               students: dict[str, Path]) -> None:
    other = StudentTagger(students["LOC"])
    with running(create_app(TaggerSettings(api_keys=[]), engines=TaggerEngines(other, None))) as url:
        r = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "student"})
        assert r.status_code == 503 and "CROP_TAGGER_STUDENT" in r.json()["detail"]
        assert httpx.get(url + "/v1/info").json()["student"] is None
        # no mode: without a student the default stays crop (here: no translator, so 503 for crop's reason)
        r = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es"})
        assert r.status_code == 503 and "translator" in r.json()["detail"]
        r = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "model"})
        assert r.status_code == 200 and r.json()["mode"] == "model" and r.json()["model"] is None

    # a registry without a version yet: 503 with Retry-After until the poller finds one
    later = tmp_path / "later"
    holder = StudentHolder(StudentSource(later, allow_empty=True), poll_seconds=0.1)
    with running(create_app(TaggerSettings(api_keys=[]), engines=TaggerEngines(other, None, student=holder))) as url:
        r = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "student"})
        assert r.status_code == 503 and "no current version" in r.json()["detail"] and r.headers["retry-after"]
        assert httpx.get(url + "/v1/info").json()["student"]["loaded"] is False
        reg = ModelRegistry.at(str(later))
        publish(reg, students["ORG"], METRICS, "auto")  # the first version becomes current
        deadline = time.monotonic() + 30
        while (r := httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "student"})) \
                .status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        assert r.json()["model"]["version"] == "v0001" and entities(r.json()["results"][0]) == EXPECTED["ORG"]


# -- crop tag --model ----------------------------------------------------------------------------------------------


def _crop(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CROP, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_crop_tag_with_a_student_on_a_file(registry: ModelRegistry, tmp_path: Path) -> None:
    registry.promote("v0002")
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([
        json.dumps({"id": "given", "tokens": ["Luis", "vive", "en", "Bilbao."]}),  # tokens kept as given
        json.dumps({"id": "text", "text": "Carmen viajó a Madrid."}, ensure_ascii=False),
        "not json",
        json.dumps({"id": "cat", "lang": "ca", "text": "Juan vive en Madrid."}),
    ]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = _crop("tag", "--model", registry.location, "--lang", "es", "--input", source, "--output", out)
    assert done.returncode == 0, done.stderr
    assert "v0002" in done.stderr and "4 sentences" in done.stderr
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["id"] for x in lines] == ["given", "text", "in-000003", "cat"]
    given, text, bad, cat = lines
    assert given["tokens"] == ["Luis", "vive", "en", "Bilbao."] and len(given["tags"]) == 4
    assert given["tags"][0] == "B-PER" and given["status"] == "kept" and given["lang"] == "es"
    assert text["tokens"] == ["Carmen", "viajó", "a", "Madrid", "."]
    assert text["tags"] == ["B-PER", "O", "O", "B-ORG", "O"]  # the current version (v0002) tagged it
    assert [(e["text"], e["label"], e["start"], e["end"], e["token_start"], e["token_end"], e["method"])
            for e in text["entities"]] == [("Carmen", "PER", 0, 6, 0, 1, "student"),
                                           ("Madrid", "ORG", 15, 21, 3, 4, "student")]
    assert bad["status"] == "failed" and "invalid JSON" in bad["reason"]
    assert cat["lang"] == "ca" and [e["label"] for e in cat["entities"]] == ["PER", "ORG"]
    # the same line format as `crop project`: every key of a ProjectionResult
    assert set(text) == {"id", "lang", "text", "tokens", "tags", "entities", "unmatched", "status", "reason",
                         "hypothesis"}


def test_crop_tag_with_a_student_stops_cleanly(registry: ModelRegistry, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from crop.cli import app

    def invoke(*args: str | Path) -> Any:
        return CliRunner().invoke(app, [str(a) for a in args])

    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": SENTENCE}) + "\nnot json\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("what was there before\n")
    # a run that stops (--strict-input at the bad line) leaves the output as it was, and no temporary file
    stopped = invoke("tag", "--model", registry.location, "--lang", "es", "--input", source, "--output", out,
                     "--strict-input")
    assert stopped.exit_code == 2 and "in.jsonl:2" in stopped.output
    assert out.read_text() == "what was there before\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # a model folder itself, and one sentence
    one = invoke("tag", "--model", Path(registry.location) / "v0001" / "model", "--lang", "es", "--json", SENTENCE)
    assert one.exit_code == 0, one.output
    assert [(e["text"], e["label"]) for e in json.loads(one.stdout)["entities"]] == [("Juan", "PER"),
                                                                                    ("Madrid", "LOC")]
    # usage errors
    assert "--model" in invoke("tag", "--lang", "es", "--input", source, "--output", out).output
    bad_model = invoke("tag", "--model", tmp_path / "nothing", "--lang", "es", SENTENCE)
    assert bad_model.exit_code == 2 and "no such folder" in bad_model.output
    assert invoke("tag", "--lang", "es").exit_code == 2
    assert invoke("tag", "--model", registry.location, "--lang", "es", "--input", source).exit_code == 2


def test_load_student_at_and_the_loaded_student(registry: ModelRegistry) -> None:
    loaded = load_student_at(registry.location)
    assert isinstance(loaded, LoadedStudent) and loaded.version == "v0001"
    assert loaded.default_languages() == ["es"] and loaded.is_default("es") and not loaded.is_default("ca")
    assert not loaded.is_default("gl") and not loaded.is_default("fr")
    assert isinstance(load_tagger_of(StudentSource(registry.location).resolve()), StudentTagger)  # type: ignore
