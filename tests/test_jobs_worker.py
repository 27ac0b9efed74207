"""Bulk jobs on the worker side: settings and options, the job state in Redis, and jobs run by a real `crop worker`
(Celery, the offline engines Apertium + spaCy) on a Redis server of this module's own, created at the library
level (storage + JobStore + start_job) as the API creates them.

The worker tests wait on counts and states with generous timeouts, never on wall-clock durations."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_harness import (
    CROP,
    RedisServer,
    Worker,
    results,
    submit,
    wait_finished,
    wait_for,
    worker_env,
)
from servers import free_port

from crop.api.settings import SettingsError
from crop.jobs.dispatch import queue_depth, start_job
from crop.jobs.lines import BatchRange
from crop.jobs.options import ProjectionOptions, build_pipeline, build_projector
from crop.jobs.settings import load_job_settings
from crop.jobs.state import STREAM, JobState, JobStore
from crop.jobs.tasks import batch_key
from crop.pipeline import STAGES
from crop.storage import Storage

DOWN_PORT = free_port()  # nothing listens there: the "down" engine's translator service
ENGINES = {"default": {"translator": "apertium", "tagger": "spacy"},
           "down": {"translator": f"remote:http://127.0.0.1:{DOWN_PORT}", "tagger": "spacy"}}
TASK_RETRIES = 1


def raw_lines(shared: Path, lang: str, n: int, skip: int = 0) -> list[str]:
    lines = [line for line in (shared / "raw" / f"{lang}.txt").read_text().splitlines() if line.strip()]
    return lines[skip:skip + n]


# ------------------------------------------------------------------------------------- settings and options


def test_settings_name_the_variable_at_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROP_JOB_VISIBILITY_TIMEOUT", "0")
    monkeypatch.setenv("CROP_JOB_ENGINES", json.dumps({"x": {"translator": "apertium"}}))
    with pytest.raises(SettingsError) as exc:
        load_job_settings()
    assert "CROP_JOB_VISIBILITY_TIMEOUT" in str(exc.value) and "CROP_JOB_ENGINES" in str(exc.value)
    assert "'x' has no tagger" in str(exc.value)
    monkeypatch.setenv("CROP_JOB_VISIBILITY_TIMEOUT", "7")
    monkeypatch.setenv("CROP_JOB_ENGINES", json.dumps(ENGINES))
    monkeypatch.setenv("CROP_JOB_IN_FLIGHT", "3")
    s = load_job_settings()
    assert (s.visibility_timeout, s.job_in_flight, s.job_engines) == (7, 3, ENGINES)


def test_worker_refuses_bad_settings(tmp_path: Path) -> None:
    env = worker_env("redis://127.0.0.1:1/0", tmp_path, job_task_retries="-1")
    r = subprocess.run([CROP, "worker"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "CROP_JOB_TASK_RETRIES" in r.stderr


def test_options_validate_and_build_the_projector() -> None:
    with pytest.raises(ValueError, match="unknown matching method.*'nope'"):
        ProjectionOptions(methods="exact,nope")
    with pytest.raises(ValueError):
        ProjectionOptions(max_tokens=0)
    with pytest.raises(ValueError):
        ProjectionOptions(colour="red")  # type: ignore[call-arg]
    opts = ProjectionOptions(methods="exact, fuzzy", policy="partial", keep_all_o=True, langid=False,
                             max_tokens=9)
    config = build_projector(opts).config
    assert (config.methods, config.policy, config.drop_all_o, config.langid, config.max_tokens) == (
        ("exact", "fuzzy"), "partial", False, False, 9)


def test_cli_project_builds_its_projector_with_the_job_options(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("Hola Juan.\n")
    r = subprocess.run([CROP, "project", "--src-lang", "es", "--input", str(src), "--output",
                        str(tmp_path / "out.jsonl"), "--methods", "exact,nope"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "--methods 'exact,nope': unknown matching method(s) 'nope'" in r.stderr


def test_build_pipeline_applies_the_pipeline_options(translator, tagger) -> None:
    pipe = build_pipeline(ProjectionOptions(align=False, max_token_chars=12), translator, tagger)
    assert (pipe.use_alignment, pipe.max_token_chars) == (False, 12)
    assert build_pipeline(ProjectionOptions(), translator, tagger).use_alignment


# ------------------------------------------------------------------------------------------------ job state


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[JobStore]:
    s = JobStore(redis_server.url)
    yield s
    s.close()


def ranges(n: int, lines: int = 2) -> list[BatchRange]:
    return [BatchRange(index=i, start=i * 10, end=(i + 1) * 10, first_lineno=i * lines + 1, lines=lines)
            for i in range(n)]


def stats(kept: int, failed: int = 0) -> dict:
    return {"sentences": kept + failed, "status": {"kept": kept, "failed": failed} if failed else {"kept": kept},
            "reasons": {"engine": failed} if failed else {}, "seconds": dict.fromkeys(STAGES, 0.5)}


def test_a_batch_delivered_twice_counts_once(store: JobStore) -> None:
    job = store.create("j-once", "alice", "in.txt", "es", "text", "default", {}, ranges(3), 6, in_flight=1)
    assert job.state == JobState.queued and store.active_count("alice") >= 1
    assert store.release_first("j-once") == [0]
    assert store.release_first("j-once") == []  # start_job twice queues nothing more
    assert store.begin_batch("j-once", 0) == ("running", False)
    first = store.complete_batch("j-once", 0, stats(2), ["es"], "p0", 1000)
    again = store.complete_batch("j-once", 0, stats(2), ["es"], "p0", 1000)
    assert (first.recorded, first.release) == (True, 1)
    # the second delivery counts nothing; its worker may have died before queueing the batch the first
    # delivery released: it queues it, unless that batch was queued already
    assert (again.recorded, again.release) == (False, 1)
    assert store.release_after_redelivery("j-once", 0) == 1
    store.mark_queued("j-once", [1])
    assert store.release_after_redelivery("j-once", 0) is None
    info = store.get("j-once")
    assert info is not None
    assert (info.done, info.batches_done, info.counts, info.state) == (2, 1, {"kept": 2}, JobState.running)
    assert info.seconds == dict.fromkeys(STAGES, 0.5)
    entries = [e for _, e in store.redis.xrange(STREAM) if e["job"] == "j-once"]
    assert len(entries) == 1 and entries[0]["batch"] == "0" and json.loads(entries[0]["counts"]) == {"kept": 2}
    assert store.begin_batch("j-once", 0) == ("running", True)
    store.complete_batch("j-once", 1, stats(1, failed=1), ["es"], "p1", 1000)
    # batch 0's successor is done now: a late redelivery of batch 0 queues nothing
    assert store.complete_batch("j-once", 0, stats(2), ["es"], "p0", 1000).release is None
    last = store.complete_batch("j-once", 2, stats(2), ["es", "ca"], "p2", 1000)
    assert (last.recorded, last.release, last.state) == (True, None, "succeeded")
    info = store.get("j-once")
    assert info is not None
    assert (info.done, info.total, info.counts, info.reasons) == (6, 6, {"kept": 5, "failed": 1}, {"engine": 1})
    assert info.finished is not None and info.rate is not None and info.eta_seconds is None
    assert store.done_batches("j-once") == [0, 1, 2]
    assert "j-once" not in store.redis.smembers("crop:jobs:active:alice")


def test_states_and_cancel(store: JobStore) -> None:
    store.create("j-cancel", "bob", "a.txt", "es", "text", "default", {"policy": "partial"}, ranges(4), 8,
                 in_flight=2)
    assert store.active_count("bob") == 1
    cancelled = store.cancel("j-cancel")
    assert cancelled.state == JobState.cancelled and cancelled.finished is not None
    assert store.active_count("bob") == 0
    assert store.release_first("j-cancel") == []  # nothing of a cancelled job is queued
    assert store.begin_batch("j-cancel", 0) == ("cancelled", False)
    # a batch that was running when the job was cancelled is kept, and releases nothing
    outcome = store.complete_batch("j-cancel", 0, stats(2), ["es"], "p", 1000)
    assert (outcome.recorded, outcome.release, outcome.state) == (True, None, "cancelled")
    assert store.finish("j-cancel", JobState.succeeded) == "cancelled"  # terminal states never change
    with pytest.raises(KeyError):
        store.cancel("no-such-job")
    jobs, total = store.list("bob")
    assert total == 1 and jobs[0].id == "j-cancel" and jobs[0].options == {"policy": "partial"}
    assert store.batch_ranges("j-cancel") == ranges(4)


def test_every_sentence_failed_fails_the_job(store: JobStore) -> None:
    store.create("j-failed", "carol", "a.txt", "es", "text", "default", {}, ranges(1), 2, in_flight=1)
    store.release_first("j-failed")
    assert store.complete_batch("j-failed", 0, stats(0, failed=2), [], "p", 1000).state == "failed"
    info = store.get("j-failed")
    assert info is not None and info.state == JobState.failed
    assert info.errors == ["every sentence failed (2 of 2); the reasons are in the results"]


def test_start_job_queues_in_flight_batches_once(redis_server: RedisServer) -> None:
    # db 1: no worker listens there, so the queue keeps what start_job sent
    store = JobStore(redis_server.url.removesuffix("/0") + "/1")
    store.redis.flushdb()
    store.create("j-queue", "erin", "a.txt", "es", "text", "default", {}, ranges(5), 10, in_flight=3)
    start_job(store, "j-queue")
    start_job(store, "j-queue")
    assert queue_depth(store) == 3
    assert sorted(store.redis.smembers("crop:job:j-queue:queued")) == ["0", "1", "2"]
    bodies = [json.loads(m) for m in store.redis.lrange("projection", 0, -1)]
    assert sorted(json.loads(base64.b64decode(b["body"]))[0][1] for b in bodies) == [0, 1, 2]
    store.close()


def test_a_job_without_lines_succeeds_at_once(store: JobStore) -> None:
    store.create("j-empty", "dave", "a.txt", "es", "text", "default", {}, [], 0)
    start_job(store, "j-empty")
    info = store.get("j-empty")
    assert info is not None and info.state == JobState.succeeded


# ------------------------------------------------------------------------------------ jobs run by a worker


@pytest.fixture(scope="module")
def storage_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def worker(redis_server: RedisServer, storage_root: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    env = worker_env(redis_server.url, storage_root, job_engines=json.dumps(ENGINES),
                     job_task_retries=TASK_RETRIES, job_visibility_timeout=60)
    w = Worker(env, tmp_path_factory.mktemp("logs") / "worker.log", "w1")
    yield w
    w.stop()


@pytest.fixture
def storage(storage_root: Path) -> Storage:
    return Storage(str(storage_root))


def crop_project(tmp_path: Path, name: str, data: bytes, src_lang: str) -> list[str]:
    """`crop project` (the in-process pipeline) on `data` saved as `name` in tmp_path."""
    (tmp_path / name).write_bytes(data)
    r = subprocess.run([CROP, "project", "--src-lang", src_lang, "--input", name, "--output", "out.jsonl"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return (tmp_path / "out.jsonl").read_text().splitlines()


@pytest.mark.integration
def test_job_results_equal_crop_project(store: JobStore, storage: Storage, worker: Worker, shared_data: Path,
                                        tmp_path: Path) -> None:
    lines = [s.encode() for s in raw_lines(shared_data, "es", 13)]
    # blank lines, a line that is not UTF-8, a line with no token: each as crop project reads it
    data = b"\n".join([*lines[:3], b"", *lines[3:7], b"caf\xe9 con leche", b"   ", *lines[7:], b"\x01"]) + b"\n"
    job_id = submit(store, storage, data, name="small.txt", lines_per_batch=4, src_lang="es")
    info = wait_finished(store, job_id, workers=[worker])
    assert info.state == JobState.succeeded, info
    expected = crop_project(tmp_path, "small.txt", data, "es")
    assert results(storage, store, job_id) == expected
    assert (info.total, info.done, info.batches, info.batches_done) == (15, 15, 4, 4)
    statuses = [json.loads(line)["status"] for line in expected]
    assert info.counts == {s: statuses.count(s) for s in set(statuses)}
    assert info.counts["failed"] == 2 and info.reasons["invalid input"] == 2
    assert set(info.seconds) == set(STAGES) and info.seconds["forward"] > 0
    assert info.started is not None and info.finished is not None and info.rate is not None
    # one stream entry per batch, naming the batch's output
    entries = [e for _, e in store.redis.xrange(STREAM) if e["job"] == job_id]
    assert sorted(int(e["batch"]) for e in entries) == [0, 1, 2, 3]
    for e in entries:
        assert e["path"] == storage.url(batch_key(job_id, int(e["batch"]))) and Path(e["path"]).is_file()
        assert e["langs"] == "es"
    assert sum(int(e["sentences"]) for e in entries) == 15


@pytest.mark.integration
def test_mixed_language_jsonl_job_equals_crop_project(store: JobStore, storage: Storage, worker: Worker,
                                                      shared_data: Path, tmp_path: Path) -> None:
    records = [json.dumps({"lang": lang, "text": text}, ensure_ascii=False)
               for i in range(4) for lang in ("es", "ca", "gl")
               for text in raw_lines(shared_data, lang, 1, skip=i)]
    records.insert(5, '{"lang": "es", "text": ')  # bad JSON: a failed line in its place
    data = ("\n".join(records) + "\n").encode()
    job_id = submit(store, storage, data, name="mixed.jsonl", lines_per_batch=5, src_lang="es")
    info = wait_finished(store, job_id, workers=[worker])
    assert results(storage, store, job_id) == crop_project(tmp_path, "mixed.jsonl", data, "es")
    assert info.state == JobState.succeeded and info.total == 13 and info.counts.get("failed") == 1
    langs = {lang for _, e in store.redis.xrange(STREAM) if e["job"] == job_id for lang in e["langs"].split(",")}
    assert langs == {"es", "ca", "gl"}


@pytest.mark.integration
def test_engine_down_retries_then_records_every_sentence_as_failed(store: JobStore, storage: Storage,
                                                                   worker: Worker, shared_data: Path) -> None:
    data = "\n".join(raw_lines(shared_data, "es", 3)).encode()
    job_id = submit(store, storage, data, name="down.txt", lines_per_batch=2, src_lang="es", engine="down")
    info = wait_finished(store, job_id, workers=[worker])
    out = [json.loads(line) for line in results(storage, store, job_id)]
    assert [r["status"] for r in out] == ["failed"] * 3  # never dropped
    assert all("RemoteUnavailable" in r["reason"] and str(DOWN_PORT) in r["reason"] for r in out)
    assert info.state == JobState.failed and info.done == 3
    assert info.errors == ["every sentence failed (3 of 3); the reasons are in the results"]
    retried = [line for line in worker.log.read_text().splitlines() if "batch failed, retrying" in line
               and job_id in line]
    assert len(retried) == TASK_RETRIES * info.batches


@pytest.mark.integration
def test_an_engine_not_in_the_allow_list_fails_the_job(store: JobStore, storage: Storage, worker: Worker) -> None:
    job_id = submit(store, storage, b"Hola Juan.\n", name="x.txt", lines_per_batch=2, src_lang="es",
                    engine="/tmp/my-model")
    info = wait_finished(store, job_id, workers=[worker])
    assert info.state == JobState.failed
    assert "engine '/tmp/my-model' is not in CROP_JOB_ENGINES" in info.errors[0]


@pytest.mark.integration
def test_cancel_stops_new_batches(store: JobStore, storage: Storage, worker: Worker, shared_data: Path) -> None:
    data = "\n".join(raw_lines(shared_data, "ca", 40)).encode()
    job_id = submit(store, storage, data, name="big.txt", lines_per_batch=2, src_lang="ca", in_flight=2)
    wait_for(lambda: store.done_batches(job_id), 180, "a first batch to be done")
    cancelled = store.cancel(job_id)
    assert cancelled.state == JobState.cancelled
    at_cancel = len(store.done_batches(job_id))
    # a job submitted after the cancel runs behind whatever the cancelled one had queued: once it is done,
    # the queue holds nothing of the cancelled job
    after = submit(store, storage, b"Hola Juan.\n", name="after.txt", lines_per_batch=2, src_lang="es")
    assert wait_finished(store, after, workers=[worker]).state == JobState.succeeded
    done = store.done_batches(job_id)
    assert len(done) <= at_cancel + 2  # at most the batches queued or running when it was cancelled
    assert len(done) < 20
    info = store.get(job_id)
    assert info is not None and info.state == JobState.cancelled and info.batches_done == len(done)
    assert len(results(storage, store, job_id)) == 2 * len(done)  # the results so far stay readable


@pytest.mark.integration
def test_a_small_job_behind_a_large_one_finishes_first(store: JobStore, storage: Storage, worker: Worker,
                                                       shared_data: Path) -> None:
    large = submit(store, storage, "\n".join(raw_lines(shared_data, "gl", 60)).encode(), name="large.txt",
                   lines_per_batch=2, src_lang="gl", in_flight=2)
    small = submit(store, storage, "\n".join(raw_lines(shared_data, "es", 2)).encode(), name="small.txt",
                   lines_per_batch=2, src_lang="es", in_flight=2)
    assert wait_finished(store, small, workers=[worker]).state == JobState.succeeded
    info = store.get(large)
    assert info is not None and info.state == JobState.running
    assert info.batches_done < info.batches / 2, info
    store.cancel(large)


@pytest.mark.integration
def test_an_input_that_cannot_be_read_fails_the_job_after_the_retries(store: JobStore, storage: Storage,
                                                                      worker: Worker) -> None:
    job_id = submit(store, storage, b"Hola Juan.\nAdios.\n", name="gone.txt", lines_per_batch=1, src_lang="es",
                    start=False)
    storage.delete(f"jobs/{job_id}/input")  # as a storage that lost it
    start_job(store, job_id)
    info = wait_finished(store, job_id, workers=[worker])
    assert info.state == JobState.failed and info.done == 0
    assert info.errors and "FileNotFoundError" in info.errors[0] and info.errors[0].startswith("batch ")
    retried = [line for line in worker.log.read_text().splitlines() if "batch failed, retrying" in line
               and job_id in line]
    assert len(retried) >= TASK_RETRIES
