"""The training pool (`crop.train.pool`) and the trainer's stream consumer (`crop.train.consumer`), on a Redis server
of this module's own (jobs_harness.RedisServer: AOF, its own port) and a storage folder per test.

The stream entries are the real ones: jobs created with JobStore and their batches recorded with
`JobStore.complete_batch` (the very call a projection worker makes), over batch output files written here with
synthetic projection lines. The crash test runs the consumer as real subprocesses (`python -m
crop.train.consumer`) and SIGKILLs them between persisting a batch and acknowledging it."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from jobs_harness import RedisServer, Worker, submit, wait_for, worker_env

from crop.jobs.state import STREAM, JobStore
from crop.jobs.tasks import batch_key
from crop.storage import Storage
from crop.train.consumer import DEAD, FAILURES, GROUP, ConsumerSettings, StreamConsumer
from crop.train.pool import COUNTS_KEY, Pool, normalize_text, owner_key, segment_key, text_hash


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[JobStore]:
    s = JobStore(redis_server.url)
    s.redis.flushdb()
    yield s
    s.close()


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(str(tmp_path / "store"))


@pytest.fixture
def pool(store: JobStore, storage: Storage) -> Pool:
    return Pool(storage, store.redis)


def line(text: str, lang: str = "es", status: str = "kept", ident: str = "") -> dict[str, Any]:
    tokens = text.split()
    tags = ["B-PER"] + ["O"] * (len(tokens) - 1)
    return {"id": ident or text, "lang": lang, "text": text, "tokens": tokens, "tags": tags, "status": status,
            "reason": None if status == "kept" else "unmatched"}


# ------------------------------------------------------------------------------------------------------ the pool


def test_normalized_text_is_what_dedup_compares() -> None:
    decomposed = "Jose\u0301  vive\ten  Mo\u0301stoles "
    assert normalize_text(decomposed) == "José vive en Móstoles"
    assert text_hash(line(decomposed)) == text_hash(line("José vive en Móstoles"))
    assert text_hash({"tokens": ["José", "vive"]}) == text_hash({"text": "José vive"})
    assert text_hash(line("José vive en Madrid")) != text_hash(line("José vive en Móstoles"))


def test_dedup_by_text_and_idempotent_redelivery(pool: Pool, storage: Storage, store: JobStore) -> None:
    first = [line("Ana vive en Lugo"), line("Ana vive  en Lugo", ident="again"),  # the same text twice
             line("Pau viu a Vic", "ca"), line("Sin entidades aquí", status="discarded"),
             line("Roto", status="failed"), {"lang": "es", "tokens": [], "tags": [], "status": "kept"}]
    report = pool.add("1000-0", first, job="j1", batch=0)
    assert report == {"es": {"kept": 1, "discarded": 1, "duplicates": 0},
                      "ca": {"kept": 1, "discarded": 0, "duplicates": 0}}
    segment = storage.read_bytes(segment_key("es", "1000-0"))
    # a redelivery of the same entry: the same segment, byte for byte, and the counts do not move
    assert pool.add("1000-0", first, job="j1", batch=0) == report
    assert storage.read_bytes(segment_key("es", "1000-0")) == segment
    assert pool.counts() == {"ca": {"kept": 1, "discarded": 0}, "es": {"kept": 1, "discarded": 1}}
    # another batch with one sentence already pooled (normalized differently) and one new
    second = [line("Ana\u00a0vive en Lugo"), line("Eva vive en Ourense", status="discarded")]
    assert pool.add("1001-0", second, job="j1", batch=1)["es"] == {"kept": 0, "discarded": 1, "duplicates": 1}
    es = list(pool.read("es"))
    assert [x["text"] for x in es] == ["Ana vive en Lugo", "Sin entidades aquí", "Eva vive en Ourense"]
    assert es[0]["source"] == {"job": "j1", "batch": 0, "entry": "1000-0"}
    assert [x["text"] for x in pool.read("es", "discarded")] == ["Sin entidades aquí", "Eva vive en Ourense"]
    assert pool.counts()["es"] == {"kept": 1, "discarded": 2}
    assert pool.languages() == ["ca", "es"]
    out = pool.export_all(["es", "ca"], storage_path(storage) / "export")
    assert [json.loads(x)["text"] for x in out["ca"].read_text().splitlines()] == ["Pau viu a Vic"]
    assert len(out["es"].read_text().splitlines()) == 3
    # the index lost (a Redis that lost its data): rebuilt from the segments, to the same counts
    store.redis.delete(COUNTS_KEY, owner_key("es"), owner_key("ca"))
    assert pool.counts() == {}
    assert pool.rebuild_index() == {"ca": {"kept": 1, "discarded": 0}, "es": {"kept": 1, "discarded": 2}}
    assert pool.add("1002-0", [line("Ana vive en Lugo")])["es"]["duplicates"] == 1


def storage_path(storage: Storage) -> Path:
    return Path(storage.url("x")).parent


def test_concurrent_entries_never_both_keep_a_sentence(pool: Pool, redis_server: RedisServer,
                                                       storage: Storage) -> None:
    """Eight threads (each with its own Redis connection) add overlapping batches at once: every text once."""
    texts = [f"Frase número {i} con Pedro" for i in range(400)]
    errors: list[BaseException] = []

    def add(k: int) -> None:
        try:
            mine = Pool(storage, redis.Redis.from_url(redis_server.url))
            for b in range(5):
                chunk = texts[(k * 37 + b * 53) % 300:][:100]
                mine.add(f"{2000 + k}-{b}", [line(t) for t in chunk])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    pooled = [x["text"] for x in pool.read("es")]
    assert len(pooled) == len(set(pooled))
    assert pool.counts()["es"]["kept"] == len(pooled)


# ------------------------------------------------------------------------------------------------ the consumer


def make_job(store: JobStore, storage: Storage, batches: list[list[dict[str, Any]]], name: str = "corpus"
             ) -> str:
    """A job of len(batches) batches whose outputs are `batches`, each recorded as a worker records it (the
    stream entry included)."""
    data = "".join(x["text"] + "\n" for b in batches for x in b).encode()
    job = submit(store, storage, data, name=name, lines_per_batch=len(batches[0]), src_lang="es", start=False)
    for index, lines in enumerate(batches):
        storage.write_bytes(batch_key(job, index), "".join(json.dumps(x) + "\n" for x in lines).encode())
        counts = {"sentences": len(lines), "status": {s: sum(1 for x in lines if x["status"] == s)
                                                     for s in ("kept", "discarded")}}
        outcome = store.complete_batch(job, index, counts, sorted({x["lang"] for x in lines}),
                                       storage.url(batch_key(job, index)), 100_000)
        assert outcome.recorded
    return job


def corpus(n_batches: int, per_batch: int, overlap: int = 3) -> list[list[dict[str, Any]]]:
    """Batches of es/gl sentences; each batch repeats `overlap` sentences of the one before it (dedup at work)."""
    out: list[list[dict[str, Any]]] = []
    for b in range(n_batches):
        lines = [line(f"Oración {b}-{i} de Marta", "es" if i % 3 else "gl", "kept" if i % 4 else "discarded")
                 for i in range(per_batch - (overlap if b else 0))]
        if b:
            lines = out[-1][:overlap] + lines
        out.append(lines)
    return out


def expected(batches: list[list[dict[str, Any]]]) -> dict[str, dict[str, int]]:
    seen: dict[tuple[str, str], str] = {}
    for b in batches:
        for x in b:
            seen.setdefault((x["lang"], normalize_text(x["text"])), x["status"])
    counts: dict[str, dict[str, int]] = {}
    for (lang, _), status in seen.items():
        counts.setdefault(lang, {"kept": 0, "discarded": 0})[status] += 1
    return dict(sorted(counts.items()))


def test_consumer_pools_every_entry_and_acks(store: JobStore, storage: Storage, pool: Pool) -> None:
    batches = corpus(4, 8)
    make_job(store, storage, batches)
    consumer = StreamConsumer(store.redis, pool, ConsumerSettings(block_ms=100), name="t1")
    consumer.ensure_group()
    assert consumer.read_new() == 4
    assert pool.counts() == expected(batches)
    assert consumer.lag() == {"pending": 0, "lag": 0}
    assert consumer.read_new() == 0  # nothing new
    # the group starts at 0: a trainer started after the batches were announced reads them all
    store.redis.xgroup_destroy(STREAM, GROUP)
    other = StreamConsumer(store.redis, pool, ConsumerSettings(block_ms=100), name="t2")
    other.ensure_group()
    assert other.read_new() == 4
    assert pool.counts() == expected(batches)  # read twice, counted once


def test_unreadable_entry_stays_pending_then_is_given_up(store: JobStore, storage: Storage, pool: Pool) -> None:
    store.redis.xadd(STREAM, {"job": "gone", "batch": 0, "langs": "es", "path": storage.url("jobs/gone/b.jsonl"),
                              "counts": "{}", "sentences": 1})
    consumer = StreamConsumer(store.redis, pool, ConsumerSettings(block_ms=100, claim_idle_ms=1, max_failures=2),
                              name="t1")
    consumer.ensure_group()
    assert consumer.read_new() == 1
    assert consumer.lag()["pending"] == 1  # not acknowledged: the output could not be read
    storage.write_bytes("jobs/gone/b.jsonl", (json.dumps(line("Luis vive en Vigo")) + "\n").encode())
    wait_for(lambda: consumer.claim_stale() == 1, 5, "the claim")  # idle > 1 ms: claimed and now pooled
    assert consumer.lag()["pending"] == 0 and pool.counts()["es"]["kept"] == 1
    assert not store.redis.hgetall(FAILURES)  # its failure is forgotten once it is pooled
    store.redis.xadd(STREAM, {"job": "gone2", "batch": 0, "path": storage.url("jobs/gone2/b.jsonl")})
    consumer.read_new()
    assert store.redis.hget(FAILURES, store.redis.xrange(STREAM)[-1][0]) == "1"
    # claimed again and failing once more: max_failures reached, given up
    wait_for(lambda: (consumer.claim_stale(), consumer.lag()["pending"] == 0)[1], 10, "the entry to be given up")
    assert consumer.stats.dead == 1 and not store.redis.hgetall(FAILURES)
    dead = [json.loads(x) for x in store.redis.lrange(DEAD, 0, -1)]
    assert [d["job"] for d in dead] == ["gone2"] and "failed 2 times" in dead[0]["error"]
    # an entry its consumers keep dying on (delivered, never handled): given up after max_deliveries
    store.redis.xadd(STREAM, {"job": "killer", "batch": 0, "path": storage.url("jobs/gone/b.jsonl")})
    store.redis.xreadgroup(GROUP, "dead-0", {STREAM: ">"})
    for k in (1, 2):
        store.redis.xautoclaim(STREAM, GROUP, f"dead-{k}", 0)
    strict = StreamConsumer(store.redis, pool, ConsumerSettings(block_ms=100, claim_idle_ms=1, max_deliveries=3),
                            name="t2")
    wait_for(lambda: (strict.claim_stale(), strict.lag()["pending"] == 0)[1], 10, "the killer entry given up")
    dead = [json.loads(x) for x in store.redis.lrange(DEAD, 0, -1)]
    assert dead[-1]["job"] == "killer" and "delivered 4 times" in dead[-1]["error"]
    assert pool.counts()["es"]["kept"] == 1  # nothing of it was pooled


# ------------------------------------------------------------------------------------------ crash: SIGKILL


CONSUMER = [sys.executable, "-m", "crop.train.consumer"]  # the stream consumer alone, as a trainer runs it


def consumer(env: dict[str, str], log: Path) -> Worker:
    return Worker(env, log, command=CONSUMER)


def pending_acked(store: JobStore) -> tuple[int, int]:
    """(entries pending, entries acknowledged) of the trainers' group."""
    groups = [g for g in store.redis.xinfo_groups(STREAM) if g["name"] == GROUP]
    if not groups:
        return 0, 0
    delivered = store.redis.xlen(STREAM) - (groups[0].get("lag") or 0)
    return int(groups[0]["pending"]), int(delivered - groups[0]["pending"])


def test_consumer_survives_sigkill(store: JobStore, storage: Storage, pool: Pool, redis_server: RedisServer,
                                   tmp_path: Path) -> None:
    """A consumer is SIGKILLed with entries persisted but not acknowledged, a second one is SIGKILLed later at
    another point, and a third one claims what they left: every batch is in the pool exactly once."""
    batches = corpus(24, 10)
    job = make_job(store, storage, batches)
    root = Path(storage.url("x")).parent
    env = worker_env(redis_server.url, root, trainer_claim_idle_ms=300, trainer_claim_every=0.2,
                     trainer_block_ms=200)
    slow = {**env, "CROP_TEST_CONSUMER_ACK_DELAY": "0.3"}

    first = consumer(slow, tmp_path / "c1.log")
    # killed in the window: something acknowledged, and one persisted (its segment written) but not acknowledged
    wait_for(lambda: pending_acked(store)[1] >= 2 and _persisted_not_acked(store, storage), 60,
             "the first consumer to persist an entry it has not acknowledged")
    first.kill()
    pending, acked = pending_acked(store)
    assert pending >= 1, "the first consumer left nothing pending: the crash window was missed"

    second = consumer(slow, tmp_path / "c2.log")
    wait_for(lambda: pending_acked(store)[1] >= acked + 5, 60, "the second consumer to go on")
    second.kill()
    # then killed at random points, whatever it is doing
    rng = random.Random(12)
    killed = [first, second]
    for k in range(3):
        if pending_acked(store) == (0, 24):
            break
        proc = consumer(slow, tmp_path / f"r{k}.log")
        time.sleep(rng.uniform(0.3, 1.5))
        proc.kill()
        killed.append(proc)

    third = consumer(env, tmp_path / "c3.log")
    wait_for(lambda: pending_acked(store) == (0, 24), 60, "every entry acknowledged")
    assert third.stop() == 0
    logs = "".join(p.log.read_text() for p in (*killed, third))
    assert "entry claimed" in logs  # the pending entries of the dead were re-claimed

    # every batch's new sentences exactly once: one segment per (entry, language), none twice
    assert pool.counts() == expected(batches)
    for lang in ("es", "gl"):
        texts = [x["text"] for x in pool.read(lang)]
        assert len(texts) == len(set(texts)) == sum(expected(batches)[lang].values())
        got_batches = {x["source"]["batch"] for x in pool.read(lang)}
        assert got_batches == set(range(24))
        assert {x["source"]["job"] for x in pool.read(lang)} == {job}
    assert "stream consumer stopped" in third.log.read_text()  # SIGTERM: a clean stop


def _persisted_not_acked(store: JobStore, storage: Storage) -> bool:
    for p in store.redis.xpending_range(STREAM, GROUP, min="-", max="+", count=100):
        entry = p["message_id"]
        if any(storage.exists(segment_key(lang, entry)) for lang in ("es", "gl")):
            return True
    return False


def test_a_line_utf8_cannot_carry_is_pooled_and_read_back(pool: Pool) -> None:
    odd = line("Rosa \ud800 vive en Mieres")  # a lone surrogate: crop writes such a line in JSON escapes
    assert pool.add("3000-0", [odd, line("Rosa vive en Mieres")])["es"]["kept"] == 2
    assert [x["text"] for x in pool.read("es")] == [odd["text"], "Rosa vive en Mieres"]
