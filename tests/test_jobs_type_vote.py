"""The vote step of a job with the option type_vote (crop.jobs.vote) on a Redis server of the test's own, with
batch outputs written by the test: it is released only once every batch is done, re-types the entities whose
form the rest of the job typed otherwise, announces each batch once with its re-typed output, runs the same when
delivered again, and is queued again by the sweeper when its message is lost. A real worker runs it end to end in
test_jobs_api.py (the results equal `crop project --type-vote`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from jobs_harness import own_redis, submit

from crop.jobs.settings import JobSettings
from crop.jobs.state import STREAM, JobState, JobStore
from crop.jobs.sweeper import sweep
from crop.jobs.tasks import batch_key, run_batch
from crop.jobs.vote import voted_key
from crop.storage import Storage

INPUT = "".join(f"Frase {i} .\n" for i in range(6)).encode()  # 3 batches of 2 lines


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[JobStore, Storage, JobSettings]]:
    with own_redis(tmp_path) as env:
        yield env


def line(job: str, n: int, name: str, label: str) -> dict:
    text = f"{name} ganó ."
    return {"id": f"{job}-{n}", "lang": "es", "text": text, "tokens": [name, "ganó", "."],
            "tags": [f"B-{label}", "O", "O"], "status": "kept",
            "entities": [{"token_start": 0, "token_end": 1, "start": 0, "end": len(name), "label": label,
                          "text": name, "method": "exact", "score": 1.0}]}


def finish_batch(store: JobStore, storage: Storage, job: str, index: int, lines: list[dict]):
    """What a worker does for a batch, with these result lines."""
    store.begin_batch(job, index)
    storage.write_bytes(batch_key(job, index), "".join(json.dumps(x) + "\n" for x in lines).encode())
    return store.complete_batch(job, index, {"sentences": len(lines), "status": {"kept": len(lines)}}, ["es"],
                                storage.url(batch_key(job, index)), 1000)


def announced(store: JobStore, job: str) -> list[dict]:
    return [e for _, e in store.redis.xrange(STREAM) if e["job"] == job]


def test_the_vote_runs_after_every_batch_once(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, storage, settings = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=3,
                 options={"type_vote": True, "type_vote_min_count": 2})
    batches = [[line(job, 0, "Marbella", "LOC"), line(job, 1, "Marbella", "ORG")],
               [line(job, 2, "Marbella", "LOC"), line(job, 3, "Pepe", "PER")],
               [line(job, 4, "Marbella", "LOC"), line(job, 5, "Pepe", "ORG")]]
    assert finish_batch(store, storage, job, 0, batches[0]).release is None  # 3 in flight: all released already
    assert finish_batch(store, storage, job, 2, batches[2]).release is None  # batch 1 is not done: no vote yet
    info = store.get(job)
    assert info is not None and info.type_vote is not None and info.type_vote.state == "waiting"
    last = finish_batch(store, storage, job, 1, batches[1])
    assert last.release == 3 and last.state == JobState.running  # every batch done: the vote step, index 3
    info = store.get(job)
    assert info is not None and info.type_vote is not None and info.type_vote.state == "running"
    assert (info.batches, info.batches_done, info.done) == (3, 3, 6)
    assert announced(store, job) == []  # a type-vote job's batches are announced by the vote, re-typed

    run_batch(store, settings, job, 3)
    info = store.get(job)
    assert info is not None and info.state == JobState.succeeded and info.batches_done == 3
    assert info.type_vote is not None and info.type_vote.model_dump() == {
        "state": "done", "surface_forms": 2, "retyped": 1, "retyped_lines": 1}
    voted = [json.loads(x) for i in range(3) for x in storage.read_bytes(voted_key(job, i)).splitlines()]
    # Marbella: LOC 3 times, ORG once -> LOC; Pepe: one other mention each, under min_count -> left alone
    assert [(x["entities"][0]["label"], x["tags"][0]) for x in voted] == [
        ("LOC", "B-LOC"), ("LOC", "B-LOC"), ("LOC", "B-LOC"), ("PER", "B-PER"), ("LOC", "B-LOC"), ("ORG", "B-ORG")]
    assert voted[1]["entities"][0]["retyped_from"] == "ORG" and voted[1]["retyped"] == 1
    assert json.loads(storage.read_bytes(batch_key(job, 0)).splitlines()[1])["tags"][0] == "B-ORG"  # kept as projected
    entries = announced(store, job)
    assert sorted((int(e["batch"]), e["path"], e["sentences"], e["langs"]) for e in entries) == [
        (i, storage.url(voted_key(job, i)), "2", "es") for i in range(3)]

    run_batch(store, settings, job, 3)  # delivered again: nothing changes, nothing is announced twice
    again = store.get(job)
    assert again is not None and again.model_dump(exclude={"rate"}) == info.model_dump(exclude={"rate"})
    assert len(announced(store, job)) == 3
    assert [json.loads(x) for i in range(3) for x in storage.read_bytes(voted_key(job, i)).splitlines()] == voted


def test_a_lost_vote_message_is_queued_again(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, storage, settings = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=3,
                 options={"type_vote": True})
    store.redis.delete("projection")  # the batches' messages: the test finishes the batches itself
    for i in range(3):
        finish_batch(store, storage, job, i, [line(job, 2 * i, "Ana", "PER"), line(job, 2 * i + 1, "Ana", "PER")])
    # the worker that released the vote step died before queueing it: no message anywhere
    first = sweep(store, settings, now=1000.0, force=True)
    assert first is not None and first.missing == 1 and first.requeued == {}
    late = sweep(store, settings, now=1000.0 + settings.job_requeue_after, force=True)
    assert late is not None and late.requeued == {job: [3]}
    run_batch(store, settings, job, 3)
    info = store.get(job)
    assert info is not None and info.state == JobState.succeeded
    assert info.type_vote is not None and info.type_vote.state == "done" and info.type_vote.retyped == 0


def test_a_job_without_the_option_has_no_vote_step(env: tuple[JobStore, Storage, JobSettings]) -> None:
    store, storage, _ = env
    job = submit(store, storage, INPUT, name="in.txt", lines_per_batch=2, src_lang="es", in_flight=3)
    for i in range(3):
        outcome = finish_batch(store, storage, job, i, [line(job, 2 * i, "Ana", "PER")])
    assert outcome.release is None and outcome.state == JobState.succeeded
    info = store.get(job)
    assert info is not None and info.type_vote is None and len(announced(store, job)) == 3
