"""The trainer: training requests and their data, the training API (`crop.api.train` on a real projector service
with the jobs API), and end to end a real `crop trainer` subprocess (Celery worker on queue `train` + the
crop:projected consumer) that pools the batches of a job, trains a small spaCy student (2 epochs on a few dozen
sentences) on a run submitted with `crop train submit --wait`, publishes it in the registry and announces it.

Redis: a server of this module's own (jobs_harness.RedisServer). The job's batches are recorded with
`JobStore.complete_batch` (what a projection worker does) over outputs written here from the shared gold dev data
(standing in for projections), so the test does not need the translation engines."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from jobs_harness import CROP, RedisServer, Worker, submit, wait_for, worker_env
from pydantic import ValidationError
from servers import free_port, running

from crop.api.projector import create_app
from crop.api.settings import ProjectorSettings
from crop.api.train import router as train_router
from crop.jobs.settings import JobSettings
from crop.jobs.state import JobStore
from crop.jobs.tasks import batch_key
from crop.storage import Storage
from crop.train.pool import Pool
from crop.train.tasks import (
    DataError,
    TrainRequest,
    TrainState,
    TrainStore,
    check_pool,
    resolve_data,
    run_training,
)

KEY = "k-train"


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> JobSettings:
    redis.Redis.from_url(redis_server.url).flushdb()
    (tmp_path / "inputs").mkdir()
    return JobSettings(redis_url=redis_server.url, storage_root=str(tmp_path / "store"),
                       job_input_prefixes=[str(tmp_path / "inputs")])


def read_jsonl(path: Path, start: int, stop: int) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()[start:stop]]


def gold_lines(shared: Path, lang: str, start: int, stop: int) -> list[dict[str, Any]]:
    """Gold dev sentences as projection results (kept), standing in for a projection job's output."""
    return [{"id": r["id"], "lang": lang, "text": " ".join(r["tokens"]), "tokens": r["tokens"], "tags": r["tags"],
             "status": "kept"} for r in read_jsonl(shared / "dev" / f"{lang}.dev.jsonl", start, stop)]


def record_job(store: JobStore, storage: Storage, batches: list[list[dict[str, Any]]]) -> str:
    data = "".join(x["text"] + "\n" for b in batches for x in b).encode()
    job = submit(store, storage, data, name="corpus", lines_per_batch=len(batches[0]), src_lang="es", start=False)
    for index, lines in enumerate(batches):
        storage.write_bytes(batch_key(job, index), "".join(json.dumps(x) + "\n" for x in lines).encode())
        outcome = store.complete_batch(job, index, {"sentences": len(lines), "status": {"kept": len(lines)}},
                                       sorted({x["lang"] for x in lines}), storage.url(batch_key(job, index)),
                                       100_000)
        assert outcome.recorded
    return job


def write_jsonl(storage: Storage, key: str, rows: list[dict[str, Any]]) -> None:
    storage.write_bytes(key, "".join(json.dumps(r) + "\n" for r in rows).encode())


# ----------------------------------------------------------------------------------------- requests and data


def test_request_is_validated() -> None:
    req = TrainRequest(languages=["ES", "spa", "ca-ES"], dev={"es-ES": "dev/es.jsonl"})
    assert req.languages == ["es", "ca"] and req.dev == {"es": "dev/es.jsonl"}
    assert req.name == "ner" and req.student.kind == "spacy"
    for bad in ({"languages": []}, {"languages": ["es"], "name": "../x"}, {"languages": ["es"], "rounds": 0},
                {"languages": ["not a language"]}, {"languages": ["es"], "student": {"kind": "svm"}},
                {"languages": ["es"], "colour": "red"}):
        with pytest.raises(ValidationError):
            TrainRequest(**bad)


def test_data_references_resolve_against_prefixes_and_storage(settings: JobSettings, tmp_path: Path) -> None:
    storage = Storage(settings.storage_root)
    req = TrainRequest(languages=["es", "ca"])
    with pytest.raises(DataError, match="no source data"):
        resolve_data(req, settings, storage)
    write_jsonl(storage, "source/en.jsonl", [{"tokens": ["A"], "tags": ["O"]}])
    with pytest.raises(DataError, match="no dev set"):
        resolve_data(req, settings, storage)
    write_jsonl(storage, "dev/ca.jsonl", [{"tokens": ["A"], "tags": ["O"]}])
    sources, dev = resolve_data(req, settings, storage)
    assert list(sources) == ["source/en.jsonl"] and {k: v[1] for k, v in dev.items()} == {"ca": "dev/ca.jsonl"}
    allowed = tmp_path / "inputs" / "es.dev.jsonl"
    allowed.write_text('{"tokens": ["A"], "tags": ["O"]}\n')
    sources, dev = resolve_data(TrainRequest(languages=["es"], dev={"es": str(allowed)}, source=["source/en.jsonl"]),
                                settings, storage)
    assert dev["es"][0].exists(dev["es"][1])
    for ref, why in ((str(tmp_path / "elsewhere.jsonl"), "not under an allowed prefix"),
                     (str(tmp_path / "inputs" / ".." / "x.jsonl"), "not under an allowed prefix"),
                     ("dev/../../etc/passwd", "stay under the root"), ("dev/none.jsonl", "does not exist")):
        with pytest.raises(DataError, match=why) as exc:
            resolve_data(TrainRequest(languages=["es"], dev={"es": ref}), settings, storage)
        assert exc.value.loc == ("body", "dev", "es")
    with pytest.raises(DataError, match="no kept sentence in gl"):
        check_pool(TrainRequest(languages=["es", "gl"]), {"es": {"kept": 3, "discarded": 0}})


# ----------------------------------------------------------------------------------------------------- the API


@contextmanager
def service(settings: JobSettings, keys: tuple[str, ...] = (KEY,)) -> Iterator[str]:
    app = create_app(ProjectorSettings(api_keys=list(keys), langid=False), jobs=settings)
    app.include_router(train_router)
    with running(app, ready=False) as url:
        yield url


def test_api_refuses_what_cannot_train_and_owns_runs(settings: JobSettings, shared_data: Path) -> None:
    storage = Storage(settings.storage_root)
    auth = {"Authorization": f"Bearer {KEY}"}
    with service(settings, (KEY, "other")) as url:
        r = httpx.post(f"{url}/v1/train", json={"languages": ["es"]})
        assert r.status_code == 401
        r = httpx.post(f"{url}/v1/train", json={"languages": ["es"]}, headers=auth)
        assert r.status_code == 422 and "no kept sentence in es" in r.text
        r = httpx.post(f"{url}/v1/train", json={"languages": ["es"], "student": {"kind": "svm"}}, headers=auth)
        assert r.status_code == 422 and "student" in r.text
        Pool(storage, JobStore(settings.redis_url).redis).add("1-0", gold_lines(shared_data, "es", 0, 3))
        r = httpx.post(f"{url}/v1/train", json={"languages": ["es"], "source": ["/etc/passwd"]}, headers=auth)
        assert r.status_code == 422 and "not under an allowed prefix" in r.text
        assert r.json()["detail"][0]["loc"] == ["body", "source", "0"]
        write_jsonl(storage, "source/en.jsonl", read_jsonl(shared_data / "en" / "train.jsonl", 0, 3))
        write_jsonl(storage, "dev/es.jsonl", read_jsonl(shared_data / "dev" / "es.dev.jsonl", 50, 53))
        r = httpx.post(f"{url}/v1/train", json={"languages": ["es"], "rounds": 2}, headers=auth)
        assert r.status_code == 201, r.text
        info = r.json()
        assert r.headers["location"] == f"/v1/train/{info['id']}"
        assert (info["state"], info["rounds"], info["pool"]) == ("queued", 2, {"es": {"kept": 3, "discarded": 0}})
        # no trainer listens: it stays queued, its message in the queue "train"
        assert redis.Redis.from_url(settings.redis_url).llen("train") == 1
        assert httpx.get(f"{url}/v1/train/{info['id']}", headers=auth).json()["state"] == "queued"
        assert httpx.get(f"{url}/v1/train/{info['id']}", headers={"Authorization": "Bearer other"}).status_code == 404
        assert httpx.get(f"{url}/v1/train/nope", headers=auth).status_code == 404


def test_api_answers_503_without_redis(tmp_path: Path) -> None:
    down = JobSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", storage_root=str(tmp_path / "store"))
    with service(down, ()) as url:
        r = httpx.post(f"{url}/v1/train", json={"languages": ["es"]}, timeout=30)
        assert r.status_code == 503 and "retry-after" in r.headers
        assert httpx.get(f"{url}/v1/train/x", timeout=30).status_code == 503


# --------------------------------------------------------------------------------------------------- end to end


def test_trainer_pools_a_job_and_trains_a_student(settings: JobSettings, shared_data: Path, tmp_path: Path) -> None:
    storage = Storage(settings.storage_root)
    store = JobStore(settings.redis_url)
    write_jsonl(storage, "source/en.jsonl", read_jsonl(shared_data / "en" / "train.jsonl", 0, 40))
    write_jsonl(storage, "dev/es.jsonl", read_jsonl(shared_data / "dev" / "es.dev.jsonl", 60, 80))
    write_jsonl(storage, "dev/ca.jsonl", read_jsonl(shared_data / "dev" / "ca.dev.jsonl", 60, 80))
    es, ca = gold_lines(shared_data, "es", 0, 30), gold_lines(shared_data, "ca", 0, 30)
    batches = [es[:10] + ca[:10], es[10:20] + ca[10:20], es[20:] + ca[20:], es[:10] + ca[:10]]  # the last: repeats
    record_job(store, storage, batches)

    announcements: list[dict[str, Any]] = []
    sub = redis.Redis.from_url(settings.redis_url).pubsub()
    sub.subscribe("crop:models")
    stop_listening = threading.Event()

    def listen() -> None:
        while not stop_listening.is_set():
            msg = sub.get_message(timeout=0.2)
            if msg and msg["type"] == "message":
                announcements.append(json.loads(msg["data"]))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    env = worker_env(settings.redis_url, Path(settings.storage_root), trainer_block_ms=200)
    trainer = Worker(env, tmp_path / "trainer.log", command=[CROP, "trainer", "--hostname", "t1@%h"])
    try:
        pool = Pool(storage, store.redis)
        wait_for(lambda: pool.counts() == {"ca": {"kept": 30, "discarded": 0}, "es": {"kept": 30, "discarded": 0}},
                 120, f"the pool to fill ({pool.counts()})")
        with service(settings) as url:
            cli = [CROP, "train", "submit", "--languages", "es,ca", "--epochs",
                   "2", "--name", "ner-test", "--wait", "--poll", "0.2", "--server", url, "--api-key", KEY]
            r = subprocess.run(cli, env={**env, "CROP_PROGRESS": "1"}, capture_output=True, text=True, timeout=400)
            assert r.returncode == 0, f"{r.stdout}\n{r.stderr}\n{trainer.tail()}"
            run_id = r.stdout.strip().splitlines()[-1]
            assert "succeeded" in r.stderr and "dev F1" in r.stderr
            info = httpx.get(f"{url}/v1/train/{run_id}", headers={"Authorization": f"Bearer {KEY}"}).json()
            status = subprocess.run([CROP, "train", "status", run_id, "--server",
                                     url, "--api-key", KEY], env=env, capture_output=True, text=True, timeout=60)
            assert status.returncode == 0 and status.stdout.strip().splitlines()[-1] == "succeeded"
    finally:
        rc = trainer.stop()
        stop_listening.set()
        listener.join(5)
    assert rc == 0, trainer.tail()
    assert "stream consumer stopped" in trainer.log.read_text()  # the SIGTERM stopped the consumer cleanly

    assert info["state"] == "succeeded", info
    assert (info["version"], info["promoted"], info["epoch"], info["epochs"]) == ("v0001", True, 2, 2)
    assert info["loss"] is not None and 0.0 <= info["dev_f1"] <= 1.0 and info["eta_seconds"] == 0.0
    assert set(info["metrics"]) == {"es", "ca"} and all(0.0 <= m["student"] <= 1.0 for m in info["metrics"].values())
    assert info["pool"] == {"es": {"kept": 30, "discarded": 0}, "ca": {"kept": 30, "discarded": 0}}
    from crop.train.registry import ModelRegistry
    from crop.train.students import load_student

    registry = ModelRegistry(storage, "models/ner-test")
    assert registry.current() == "v0001"
    meta = registry.meta("v0001")
    assert meta.metrics == info["metrics"] and meta.config["run"] == run_id
    assert {d["path"] for d in meta.data if d.get("role") == "target"} == {"pool:es", "pool:ca"}
    assert {d["path"] for d in meta.data if d.get("role") == "source"} == {"source/en.jsonl"}
    assert [a["version"] for a in announcements] == ["v0001"] and announcements[0]["prefix"] == "models/ner-test"
    student = load_student(registry.local_copy("v0001"))
    tags = student.predict([["Pedro", "vive", "en", "Madrid", "."]], "es")
    assert len(tags[0]) == 5
    assert TrainStore(store.redis).get(run_id).state == "succeeded"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------ run state and failure


def test_a_run_is_taken_once_unless_its_trainer_died(settings: JobSettings) -> None:
    store = TrainStore.from_url(settings.redis_url)
    info = store.create("me", TrainRequest(languages=["es"]), {"es": {"kept": 1, "discarded": 0}})
    assert store.begin(info.id, "w1") == ("running", True)
    assert store.begin(info.id, "w2") == ("running", False)  # a redelivery while w1 beats its heartbeat
    store.redis.hset(f"crop:train:{info.id}", "heartbeat", "0")  # w1 died long ago
    assert store.begin(info.id, "w2") == ("running", True)
    assert store.redis.hget(f"crop:train:{info.id}", "restarts") == "1"
    assert store.finish(info.id, TrainState.failed, error="boom") == "failed"
    assert store.finish(info.id, TrainState.succeeded) == "failed"  # a terminal state never changes
    assert store.begin(info.id, "w3") == ("failed", False)
    assert store.begin("nope", "w3") == ("", False)


def test_a_run_whose_data_went_away_fails_with_the_reason(settings: JobSettings, shared_data: Path) -> None:
    storage = Storage(settings.storage_root)
    store = TrainStore.from_url(settings.redis_url)
    Pool(storage, store.redis).add("1-0", gold_lines(shared_data, "es", 0, 3))
    write_jsonl(storage, "source/en.jsonl", read_jsonl(shared_data / "en" / "train.jsonl", 0, 3))
    write_jsonl(storage, "dev/es.jsonl", read_jsonl(shared_data / "dev" / "es.dev.jsonl", 50, 53))
    info = store.create("me", TrainRequest(languages=["es"], name="gone"), {})
    storage.delete("dev/es.jsonl")  # between the API's checks and the trainer
    done = run_training(info.id, settings, worker="w1")
    assert done is not None and done.state == TrainState.failed
    assert done.error is not None and "no dev set" in done.error
    assert run_training(info.id, settings) is None  # delivered again: a finished run is left as it is
    assert not storage.list("models")
