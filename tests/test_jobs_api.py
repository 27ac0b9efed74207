"""The jobs API of the projector service (`crop.api.jobs`), served by a real uvicorn server on loopback, with its
state in the real Redis on 127.0.0.1:6379 (test-only databases, flushed) and its storage in a temporary folder.

Tests marked "no worker" use a database no worker listens on: their jobs stay queued, which is what they check
(uploads, ownership, the active-job limit, cancel, Redis down). The end-to-end tests run a real `crop worker`
subprocess (Apertium and spaCy) and compare a job's results with `crop project` on the same input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from jobs_harness import Worker, wait_for, worker_env
from servers import free_port, running

from crop.api.projector import create_app
from crop.api.settings import ProjectorSettings
from crop.jobs.settings import JobSettings

REDIS = "redis://127.0.0.1:6379"
IDLE_DB = 9  # no worker: jobs stay queued
WORKER_DB = 10  # the module's `crop worker` listens here
CROP = str(Path(sys.executable).with_name("crop"))
TEXT = "text/plain; charset=utf-8"
JSONL = "application/x-ndjson"

SPANISH = ["Barack Obama visitó Madrid el lunes.", "", "La empresa Google abrió una oficina en Barcelona.",
           "María vive en Sevilla.", "Juan trabaja para Microsoft en Valencia.", "El río Ebro pasa por Zaragoza."]


def flushed(db: int) -> redis.Redis:
    client = redis.Redis.from_url(f"{REDIS}/{db}")
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not running on 127.0.0.1:6379 ({exc})")
    client.flushdb()
    return client


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[JobSettings]:
    """Job settings on a database without workers, flushed before and after."""
    client = flushed(IDLE_DB)
    yield JobSettings(redis_url=f"{REDIS}/{IDLE_DB}", storage_root=str(tmp_path / "store"))
    client.flushdb()


@contextmanager
def projector(jobs: JobSettings, api_keys: tuple[str, ...] = (), **settings: Any) -> Iterator[str]:
    app = create_app(ProjectorSettings(api_keys=list(api_keys), langid=False, **settings), jobs=jobs)
    with running(app, ready=False) as url:
        yield url


def upload(url: str, data: bytes, key: str | None = None, content_type: str = TEXT, **params: Any) -> httpx.Response:
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})
    return httpx.post(f"{url}/v1/jobs", params=params, content=data, headers=headers, timeout=60)


def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def stored_jobs(jobs: JobSettings) -> list[Path]:
    folder = Path(jobs.storage_root) / "jobs"
    return sorted(folder.iterdir()) if folder.exists() else []


# -- uploads -----------------------------------------------------------------------------------------------------------


def test_an_upload_creates_a_queued_job_with_location(idle: JobSettings) -> None:
    with projector(idle) as url:
        resp = upload(url, "\n".join(SPANISH).encode(), src_lang="spa", name="es.txt", policy="partial")
        assert resp.status_code == 201, resp.text
        info = resp.json()
        assert resp.headers["location"] == f"/v1/jobs/{info['id']}"
        assert info["state"] == "queued" and info["total"] == 5 and info["src_lang"] == "es"
        assert info["name"] == "es.txt" and info["format"] == "text" and info["engine"] == "default"
        assert info["options"]["policy"] == "partial"
        assert (Path(idle.storage_root) / "jobs" / info["id"] / "input").read_bytes() == "\n".join(SPANISH).encode()
        assert httpx.get(url + resp.headers["location"]).json()["id"] == info["id"]
        assert redis.Redis.from_url(idle.redis_url).llen("projection") == 1  # its first batch is queued


def test_an_upload_larger_than_the_body_limit_streams_past_it(idle: JobSettings) -> None:
    """The service's body limit (512 KiB by default, here 1 KiB) is for JSON requests; an upload has its own."""
    data = ("\n".join(SPANISH) + "\n").encode() * 40
    assert len(data) > 1024
    with projector(idle, max_body_bytes=1024) as url:
        resp = upload(url, data, src_lang="es")
        assert resp.status_code == 201, resp.text
        assert resp.json()["total"] == 200
        # JSON bodies keep the service's limit
        big = httpx.post(f"{url}/v1/jobs", json={"input_url": "x" * 2000}, timeout=30)
        assert big.status_code == 413


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_upload_over_the_job_limit_is_413_and_leaves_nothing(tmp_path: Path, chunked: bool) -> None:
    client = flushed(IDLE_DB)
    jobs = JobSettings(redis_url=f"{REDIS}/{IDLE_DB}", storage_root=str(tmp_path / "store"), job_max_upload_bytes=100)
    data = b"hola Juan\n" * 20

    def body() -> Iterator[bytes]:
        yield from (data[i:i + 30] for i in range(0, len(data), 30))

    with projector(jobs) as url:
        resp = httpx.post(f"{url}/v1/jobs", params={"src_lang": "es"}, content=body() if chunked else data,
                          headers={"Content-Type": TEXT}, timeout=30)
        assert resp.status_code == 413, resp.text
        assert "100 bytes" in resp.json()["detail"] and "CROP_JOB_MAX_UPLOAD_BYTES" in resp.json()["detail"]
        assert httpx.get(f"{url}/v1/jobs").json()["total"] == 0
    assert stored_jobs(jobs) == []
    client.flushdb()


MALFORMED = [
    (b"\xe9t\xe9 \xe0 Paris\nhola\n", TEXT, {"src_lang": "es"}, "not UTF-8"),
    (b"[1, 2]\n{\"text\": \"hola\", \"lang\": \"es\"}\n", JSONL, {}, "line 1 is a JSON list, not an object"),
    (b"\n{\"text\": \"hola\", \"lang\": \n", JSONL, {}, "line 2 is not JSON"),
    (b"hola Juan\n", TEXT, {}, "give src_lang"),
    (b"{\"text\": \"hola Juan\"}\n", JSONL, {}, "a `lang` field"),
    (b"\n\n  \n", TEXT, {"src_lang": "es"}, "no sentence"),
]


@pytest.mark.parametrize(("data", "content_type", "params", "problem"), MALFORMED,
                         ids=["latin1", "jsonl-list", "jsonl-bad", "text-no-lang", "jsonl-no-lang", "blank"])
def test_a_malformed_upload_is_422_naming_the_problem_and_no_job(idle: JobSettings, data: bytes, content_type: str,
                                                                  params: dict[str, str], problem: str) -> None:
    with projector(idle) as url:
        resp = upload(url, data, content_type=content_type, **params)
        assert resp.status_code == 422, resp.text
        assert problem in resp.json()["detail"]
        assert httpx.get(f"{url}/v1/jobs").json()["total"] == 0
    assert stored_jobs(idle) == []
    assert redis.Redis.from_url(idle.redis_url).llen("projection") == 0


def test_bad_lines_after_a_good_first_line_make_a_job(idle: JobSettings) -> None:
    """Only an input that cannot be read as a whole is refused; its bad lines are the workers' to fail in place."""
    data = b'{"text": "hola Juan", "lang": "es"}\n[1]\n\xff\n{"text": "adeu", "lang": "ca"}\n'
    with projector(idle) as url:
        resp = upload(url, data, content_type=JSONL)
        assert resp.status_code == 201, resp.text
        assert resp.json()["total"] == 4 and resp.json()["format"] == "jsonl" and resp.json()["src_lang"] is None


@pytest.mark.parametrize(("params", "field", "words"), [
    ({"policy": "loose"}, "policy", "'strict' or 'partial'"),
    ({"methods": "exact,psychic"}, "methods", "psychic"),
    ({"max_tokens": "0"}, "max_tokens", "greater than or equal to 1"),
    ({"keep_all_o": "perhaps"}, "keep_all_o", "boolean"),
    ({"engine": "gpt-9"}, "engine", "'default' (CROP_JOB_ENGINES)"),
    ({"beam": "4"}, "beam", "not permitted"),
    ({"src_lang": "klingon"}, "src_lang", "not a language code"),
    ({"type_vote": "true", "type_vote_margin": "0"}, "type_vote_margin", "greater than 0"),
    ({"type_vote": "true", "type_vote_min_count": "0"}, "type_vote_min_count", "greater than or equal to 1"),
], ids=["policy", "methods", "max_tokens", "keep_all_o", "engine", "unknown", "src_lang", "type_vote_margin",
        "type_vote_min_count"])
def test_bad_options_are_422_naming_the_field(idle: JobSettings, params: dict[str, str], field: str,
                                              words: str) -> None:
    with projector(idle) as url:
        resp = upload(url, b"hola Juan\n", **({"src_lang": "es"} | params))
        assert resp.status_code == 422, resp.text
        [error] = resp.json()["detail"]
        assert error["loc"] == ["query", field] and words in error["msg"], error
        assert httpx.get(f"{url}/v1/jobs").json()["total"] == 0


def test_other_content_types_are_415(idle: JobSettings) -> None:
    with projector(idle) as url:
        resp = upload(url, b"hola\n", content_type="application/octet-stream", src_lang="es")
        assert resp.status_code == 415 and "text/plain" in resp.json()["detail"]
        # the upload types are accepted on /v1/jobs only
        project = httpx.post(f"{url}/v1/project", content=b"{}", headers={"Content-Type": TEXT})
        assert project.status_code == 415


# -- input URLs --------------------------------------------------------------------------------------------------------


def test_input_url_must_be_under_an_allowed_prefix(tmp_path: Path) -> None:
    client = flushed(IDLE_DB)
    allowed = tmp_path / "inputs"
    allowed.mkdir()
    (allowed / "es.txt").write_text("\n".join(SPANISH) + "\n", encoding="utf-8")
    (tmp_path / "secret.txt").write_text("hola\n", encoding="utf-8")
    (tmp_path / "inputs-secret").mkdir()
    (tmp_path / "inputs-secret" / "es.txt").write_text("hola\n", encoding="utf-8")
    closed = JobSettings(redis_url=f"{REDIS}/{IDLE_DB}", storage_root=str(tmp_path / "store"))
    with projector(closed) as url:
        resp = httpx.post(f"{url}/v1/jobs", json={"input_url": str(allowed / "es.txt"), "src_lang": "es"})
        assert resp.status_code == 403 and "CROP_JOB_INPUT_PREFIXES is empty" in resp.json()["detail"]
    opened = closed.model_copy(update={"job_input_prefixes": [str(allowed)]})  # a folder, with or without "/"
    with projector(opened) as url:
        for bad in (str(tmp_path / "secret.txt"), f"{allowed}/../secret.txt", f"{allowed}-secret/es.txt"):
            resp = httpx.post(f"{url}/v1/jobs", json={"input_url": bad, "src_lang": "es"})
            assert resp.status_code == 403 and "CROP_JOB_INPUT_PREFIXES" in resp.json()["detail"], resp.text
        resp = httpx.post(f"{url}/v1/jobs", json={"input_url": f"{allowed}/nope.txt", "src_lang": "es"})
        assert resp.status_code == 422 and "does not exist" in resp.text
        resp = httpx.post(f"{url}/v1/jobs", json={"input_url": str(allowed / "es.txt"), "src_lang": "es",
                                                  "policy": "loose"})
        assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "policy"]
        resp = httpx.post(f"{url}/v1/jobs", json={"input_url": str(allowed / "es.txt"), "src_lang": "es"})
        assert resp.status_code == 201, resp.text
        info = resp.json()
        assert info["name"] == "es.txt" and info["total"] == 5
        # copied into the job's storage: the job never depends on the source staying as it was
        assert (Path(opened.storage_root) / "jobs" / info["id"] / "input").read_bytes() == \
            (allowed / "es.txt").read_bytes()
    client.flushdb()


# -- ownership, limits, cancel -----------------------------------------------------------------------------------------


def test_another_key_gets_404_for_a_job(idle: JobSettings) -> None:
    with projector(idle, api_keys=("alice-key", "bob-key")) as url:
        assert upload(url, b"hola Juan\n", src_lang="es").status_code == 401
        job = upload(url, b"hola Juan\n", key="alice-key", src_lang="es").json()["id"]
        for method, path in [("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/results"),
                             ("DELETE", f"/v1/jobs/{job}")]:
            resp = httpx.request(method, url + path, headers=auth("bob-key"))
            assert resp.status_code == 404, (method, path, resp.text)
            assert httpx.request(method, url + path, headers=auth("alice-key")).status_code == 200
        assert httpx.get(f"{url}/v1/jobs", headers=auth("bob-key")).json()["total"] == 0
        listed = httpx.get(f"{url}/v1/jobs", headers=auth("alice-key")).json()
        assert [j["id"] for j in listed["jobs"]] == [job]
        assert listed["jobs"][0]["owner"] != "alice-key"  # a hash, never the key itself
        assert httpx.get(f"{url}/v1/jobs/nope", headers=auth("alice-key")).status_code == 404


def test_too_many_active_jobs_for_a_key_is_429_with_retry_after(idle: JobSettings) -> None:
    jobs = idle.model_copy(update={"job_max_active": 2})
    with projector(jobs, api_keys=("a", "b")) as url:
        first = [upload(url, b"hola Juan\n", key="a", src_lang="es") for _ in range(2)]
        assert [r.status_code for r in first] == [201, 201]
        resp = upload(url, b"hola Juan\n", key="a", src_lang="es")
        assert resp.status_code == 429 and resp.headers["retry-after"].isdigit()
        assert "CROP_JOB_MAX_ACTIVE" in resp.json()["detail"]
        assert upload(url, b"hola Juan\n", key="b", src_lang="es").status_code == 201  # per key
        # a cancelled job is no longer active
        assert httpx.delete(f"{url}/v1/jobs/{first[0].json()['id']}", headers=auth("a")).status_code == 200
        assert upload(url, b"hola Juan\n", key="a", src_lang="es").status_code == 201


def test_cancel_and_partial_results_of_a_queued_job(idle: JobSettings) -> None:
    with projector(idle) as url:
        job = upload(url, "\n".join(SPANISH).encode(), src_lang="es").json()["id"]
        resp = httpx.delete(f"{url}/v1/jobs/{job}")
        assert resp.status_code == 200 and resp.json()["state"] == "cancelled"
        assert resp.json()["finished"] is not None
        results = httpx.get(f"{url}/v1/jobs/{job}/results")
        assert results.status_code == 200 and results.content == b""
        assert results.headers["x-crop-partial"] == "true" and results.headers["x-crop-batches"] == "0/1"
        assert results.headers["x-crop-job-state"] == "cancelled"
        assert httpx.get(f"{url}/v1/jobs/{job}/results", params={"format": "xml"}).status_code == 422


def test_list_is_paginated_newest_first(idle: JobSettings) -> None:
    with projector(idle) as url:
        ids = [upload(url, b"hola Juan\n", src_lang="es").json()["id"] for _ in range(3)]
        page = httpx.get(f"{url}/v1/jobs", params={"offset": 1, "limit": 1}).json()
        assert page["total"] == 3 and page["offset"] == 1 and page["limit"] == 1
        assert [j["id"] for j in page["jobs"]] == [ids[1]]
        assert httpx.get(f"{url}/v1/jobs", params={"limit": 0}).status_code == 422


def test_metrics_count_jobs_by_state_and_the_queue(idle: JobSettings) -> None:
    with projector(idle) as url:
        job = upload(url, b"hola Juan\n", src_lang="es").json()["id"]
        upload(url, b"hola Maria\n", src_lang="es")
        httpx.delete(f"{url}/v1/jobs/{job}")
        metrics = httpx.get(f"{url}/metrics").text
    assert "crop_jobs_store_up 1.0" in metrics
    assert 'crop_jobs{state="queued"} 1.0' in metrics and 'crop_jobs{state="cancelled"} 1.0' in metrics
    assert 'crop_jobs{state="succeeded"} 0.0' in metrics
    assert "crop_job_queue_depth 2.0" in metrics  # each job's first batch (a cancelled job's is skipped by workers)
    assert "crop_job_batches_processed_total 0.0" in metrics and "crop_job_sentences_processed_total 0.0" in metrics


def test_without_redis_jobs_are_503_and_projection_goes_on(tmp_path: Path) -> None:
    down = JobSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", storage_root=str(tmp_path / "store"))
    app = create_app(ProjectorSettings(langid=False), jobs=down)
    with running(app) as url:
        for method, path in [("POST", "/v1/jobs?src_lang=es"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/x"),
                             ("GET", "/v1/jobs/x/results"), ("DELETE", "/v1/jobs/x")]:
            resp = httpx.request(method, url + path, content=b"hola\n", headers={"Content-Type": TEXT}, timeout=30)
            assert resp.status_code == 503, (method, path, resp.text)
            assert resp.headers["retry-after"] == "5" and "CROP_REDIS_URL" in resp.json()["detail"]
        item = {"lang": "es", "text": "Juan vive en Madrid .", "source": [{"text": "Juan", "label": "PER"}],
                "back": "<PER>Juan</PER> vive en Madrid ."}
        resp = httpx.post(f"{url}/v1/project", json={"items": [item]})
        assert resp.status_code != 503, resp.text
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.status_code == 200 and "crop_jobs_store_up 0.0" in metrics.text
    assert stored_jobs(down) == []


def test_an_empty_redis_url_turns_the_jobs_api_off(tmp_path: Path) -> None:
    app = create_app(ProjectorSettings(langid=False), jobs=JobSettings(redis_url="", storage_root=str(tmp_path)))
    with running(app, ready=False) as url:
        assert httpx.get(f"{url}/v1/jobs").status_code == 404
        assert "/v1/jobs" not in httpx.get(f"{url}/openapi.json").json()["paths"]


# -- end to end: a real `crop worker` ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_jobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobSettings]:
    """Job settings shared with a `crop worker` subprocess (same Redis database, same storage)."""
    folder = tmp_path_factory.mktemp("jobs-e2e")
    client = flushed(WORKER_DB)
    jobs = JobSettings(redis_url=f"{REDIS}/{WORKER_DB}", storage_root=str(folder / "store"), job_batch_lines=2,
                       job_in_flight=1)
    worker = Worker(worker_env(jobs.redis_url, Path(jobs.storage_root)), folder / "worker.log", "e2e")
    try:
        yield jobs
    finally:
        worker.stop()
        client.flushdb()


def wait_done(url: str, job: str, key: str | None = None) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        info = httpx.get(f"{url}/v1/jobs/{job}", headers=auth(key)).json()
        return info if info["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(finished, 300, f"job {job} to finish", every=0.2)


def crop_project(folder: Path, name: str, *args: str) -> tuple[bytes, bytes]:
    """`crop project` on folder/name (run in `folder`, so that its messages name the file as the job does):
    its JSONL and CoNLL outputs."""
    subprocess.run([CROP, "project", "--input", name, "--output", "ref.jsonl", "--conll", "ref.conll", *args],
                   cwd=folder, check=True, capture_output=True, timeout=600)
    return (folder / "ref.jsonl").read_bytes(), (folder / "ref.conll").read_bytes()


def test_results_equal_crop_project_on_the_same_input(worker_jobs: JobSettings, tmp_path: Path) -> None:
    """A text job over several batches, with a blank line and a line that is not UTF-8 inside it: the results
    (JSONL and CoNLL) are byte for byte those of `crop project`, the bad line failed in its place."""
    data = ("\n".join(SPANISH) + "\n").encode() + b"Caf\xe9 en Lima.\n" + "Ana visitó Roma.\n".encode()
    (tmp_path / "es.txt").write_bytes(data)
    ref_jsonl, ref_conll = crop_project(tmp_path, "es.txt", "--src-lang", "es")
    with projector(worker_jobs) as url:
        resp = upload(url, data, src_lang="es", name="es.txt")
        assert resp.status_code == 201, resp.text
        info = wait_done(url, resp.json()["id"])
        assert info["state"] == "succeeded", info
        assert info["done"] == info["total"] == 7 and info["batches_done"] == info["batches"] == 4
        assert info["counts"].get("failed") == 1 and sum(info["counts"].values()) == 7
        jsonl = httpx.get(f"{url}/v1/jobs/{info['id']}/results")
        assert jsonl.headers["x-crop-partial"] == "false" and jsonl.headers["content-type"] == JSONL
        conll = httpx.get(f"{url}/v1/jobs/{info['id']}/results", params={"format": "conll"})
        metrics = httpx.get(f"{url}/metrics").text
    assert jsonl.content == ref_jsonl
    assert conll.content == ref_conll
    failed = [json.loads(line) for line in jsonl.content.splitlines() if json.loads(line)["status"] == "failed"]
    assert len(failed) == 1 and "not UTF-8" in failed[0]["reason"]
    assert "crop_job_sentences_processed_total 7.0" in metrics


def test_a_type_vote_job_equals_crop_project_type_vote(worker_jobs: JobSettings, tmp_path: Path) -> None:
    """A job with type_vote over several batches: its results are those of `crop project --type-vote` on the same
    input (the vote counts every batch's entities, then re-types each batch), the vote is the job's last step and
    its summary is in the job's record; until it is done, the results are the projected prefix."""
    names = ["Marbella", "Valencia", "Google", "Sevilla"]
    lines = [f"{a} y {b} aparecen en la noticia de {c} sobre {d}." for a, b, c, d in
             (names, names[1:] + names[:1], names[2:] + names[:2], names[3:] + names[:3])] * 2 + SPANISH
    data = ("\n".join(lines) + "\n").encode()
    (tmp_path / "es.txt").write_bytes(data)
    ref_jsonl, ref_conll = crop_project(tmp_path, "es.txt", "--src-lang", "es", "--type-vote",
                                        "--type-vote-min-count", "1")
    with projector(worker_jobs) as url:
        resp = upload(url, data, src_lang="es", name="es.txt", type_vote="true", type_vote_min_count=1)
        assert resp.status_code == 201, resp.text
        assert resp.json()["type_vote"] == {"state": "waiting", "surface_forms": None, "retyped": None,
                                            "retyped_lines": None}
        info = wait_done(url, resp.json()["id"])
        assert info["state"] == "succeeded", info
        assert info["batches_done"] == info["batches"] > 1 and info["done"] == info["total"] == len(lines) - 1
        vote = info["type_vote"]
        assert vote["state"] == "done" and vote["surface_forms"] > 0 and vote["retyped"] >= 0
        jsonl = httpx.get(f"{url}/v1/jobs/{info['id']}/results")
        conll = httpx.get(f"{url}/v1/jobs/{info['id']}/results", params={"format": "conll"})
    assert jsonl.headers["x-crop-type-vote"] == "done" and jsonl.headers["x-crop-partial"] == "false"
    assert jsonl.content == ref_jsonl
    assert conll.content == ref_conll
    retyped = sum(json.loads(line).get("retyped", 0) for line in jsonl.content.splitlines())
    assert retyped == vote["retyped"]


def test_a_mixed_language_jsonl_job_equals_crop_project(worker_jobs: JobSettings, tmp_path: Path) -> None:
    records = [{"id": "a", "text": "Barack Obama visitó Madrid.", "lang": "es"},
               {"id": "b", "text": "La Maria viu a Barcelona.", "lang": "ca"},
               {"id": "c", "text": "Juan trabaja en Google.", "lang": "es"},
               {"id": "d", "text": "sen lingua"}]
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    (tmp_path / "mixed.jsonl").write_bytes(data)
    subprocess.run([CROP, "project", "--input", "mixed.jsonl", "--output", "ref.jsonl", "--src-lang", "es"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=600)
    with projector(worker_jobs) as url:
        resp = upload(url, data, content_type=JSONL, name="mixed.jsonl")
        assert resp.status_code == 201, resp.text
        info = wait_done(url, resp.json()["id"])
        results = httpx.get(f"{url}/v1/jobs/{info['id']}/results").content
    ref = [json.loads(line) for line in (tmp_path / "ref.jsonl").read_bytes().splitlines()]
    got = [json.loads(line) for line in results.splitlines()]
    assert [r["id"] for r in got] == ["a", "b", "c", "d"]
    # the last record has no language: crop project used --src-lang es for it, the job fails it in its place
    assert got[:3] == ref[:3]
    assert got[3]["status"] == "failed" and "lang" in got[3]["reason"]


def test_a_cancelled_job_runs_no_more_batches(worker_jobs: JobSettings, tmp_path: Path) -> None:
    """One batch in flight at a time: after cancel, at most the batch in flight then finishes, the others never run;
    a job submitted after it, run by the same single worker, proves the queue has moved past it."""
    lines = [f"{s} ({i})" for i in range(20) for s in SPANISH if s]
    with projector(worker_jobs) as url:
        big = upload(url, "\n".join(lines).encode(), src_lang="es", name="big.txt").json()
        assert big["batches"] == 50
        cancelled = httpx.delete(f"{url}/v1/jobs/{big['id']}").json()
        assert cancelled["state"] == "cancelled"
        small = upload(url, SPANISH[0].encode(), src_lang="es").json()
        assert wait_done(url, small["id"])["state"] == "succeeded"
        after = httpx.get(f"{url}/v1/jobs/{big['id']}").json()
        # what was done before the cancel stays; of the rest, at most the one batch in flight then finished
        assert after["state"] == "cancelled" and after["batches_done"] <= cancelled["batches_done"] + 1
        assert after["batches_done"] < big["batches"]
        results = httpx.get(f"{url}/v1/jobs/{big['id']}/results")
        assert results.headers["x-crop-partial"] == "true"
        assert len(results.content.splitlines()) == 2 * after["batches_done"]


# -- documentation -----------------------------------------------------------------------------------------------------


def test_the_projector_readme_documents_every_job_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each job setting in the projector README's tables, with its real default (parsed as the environment is)."""
    import re

    from test_deploy import readme_table

    from crop.jobs.settings import env_name

    table = readme_table("projector")
    for var in [k for k in os.environ if k.startswith("CROP_")]:
        monkeypatch.delenv(var)
    for field in JobSettings.model_fields:
        var = env_name(field)
        assert var in table, f"services/projector/README.md does not document {var}"
        literal = re.fullmatch(r"`([^`]*)`", table[var][0])
        assert literal, f"{var}: give the default as a literal"
        monkeypatch.setenv(var, literal.group(1))
        assert getattr(JobSettings(), field) == JobSettings.model_fields[field].get_default(call_default_factory=True)
        monkeypatch.delenv(var)


def test_crop_serve_projector_checks_the_job_settings_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROP_")} | {"CROP_JOB_ENGINES": "{}"}
    proc = subprocess.run([CROP, "serve", "projector", "--port", str(free_port())], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "CROP_JOB_ENGINES: names no engine" in proc.stderr
