"""The trainer's consumer of `crop:projected`: every finished batch of a bulk job enters the training pool.

Consumer group `crop-trainer` (created at id 0 with MKSTREAM when missing, so that batches announced before the
first trainer started are read too); each trainer reads as `<hostname>-<pid>`. For an entry: read its batch
output (the `path` URL) from storage, add its kept and discarded lines to the pool (`crop.train.pool.Pool.add`,
persisted when it returns), THEN XACK. A trainer killed between the two leaves the entry pending; another trainer
(or itself, restarted under a new name) re-claims it with XAUTOCLAIM once it has been idle `claim_idle_ms`, and
adding it again is idempotent (the same segment, nothing counted twice).

An entry that fails (storage down, unreadable output) stays pending and is retried by the claim sweep; after
`max_failures` failures (counted in the hash `crop:trainer:failures`: a consumer that dies holding an entry does not
count as a failure of it) it is acknowledged and recorded in the list `crop:trainer:dead` (entry id, path, error),
so one poisoned batch never blocks the others forever. An entry delivered more than `max_deliveries` times (its
consumers keep dying on it: a batch that kills the process) goes there too.

`CROP_TEST_CONSUMER_ACK_DELAY` (seconds, tests only) sleeps between persisting and acknowledging, which makes the
window of a crash observable."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from crop.jobs.state import STREAM
from crop.storage import storage_from_url
from crop.train.pool import Pool

log = logging.getLogger(__name__)

GROUP = "crop-trainer"
DEAD = "crop:trainer:dead"
FAILURES = "crop:trainer:failures"
DEAD_KEPT = 1000
ACK_DELAY_ENV = "CROP_TEST_CONSUMER_ACK_DELAY"


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class ConsumerSettings:
    claim_idle_ms: int = 60_000  # an entry pending this long (its consumer presumably dead) is re-claimed
    claim_every: float = 10.0  # seconds between claim sweeps
    block_ms: int = 2000  # XREADGROUP waits this long for new entries (and the stop flag is checked between)
    count: int = 16  # entries read at once
    max_failures: int = 5  # failed attempts of an entry before it is given up
    max_deliveries: int = 50  # deliveries (crashed consumers included) before it is given up
    stats_every: float = 60.0  # seconds between lag/pending log lines


@dataclass
class ConsumerStats:
    entries: int = 0
    sentences: dict[str, dict[str, int]] = field(default_factory=dict)
    claimed: int = 0
    dead: int = 0


class StreamConsumer:
    """Reads `crop:projected` into `pool` until `stop()`."""

    def __init__(self, redis_client: redis.Redis, pool: Pool, settings: ConsumerSettings | None = None,
                 name: str | None = None) -> None:
        self.redis = redis_client
        self.pool = pool
        self.settings = settings or ConsumerSettings()
        self.name = name or consumer_name()
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._ack_delay = float(os.environ.get(ACK_DELAY_ENV, "0") or 0)

    # -- the loop ------------------------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
            log.info("consumer group created", extra={"stream": STREAM, "group": GROUP})
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> None:
        """Consume until `stop()`: a claim sweep at start and every `claim_every` seconds, new entries between.
        Redis errors are logged and retried after a pause (the loop never dies of them)."""
        log.info("stream consumer started", extra={"consumer": self.name, "group": GROUP, "stream": STREAM})
        next_claim = next_stats = 0.0
        while not self._stop.is_set():
            try:
                if next_claim == 0.0:
                    self.ensure_group()
                now = time.monotonic()
                if now >= next_claim:
                    self.claim_stale()
                    next_claim = now + self.settings.claim_every
                if now >= next_stats:
                    self.log_stats()
                    next_stats = now + self.settings.stats_every
                self.read_new()
            except redis.RedisError as exc:
                log.warning("stream consumer: Redis error, retrying", extra={"error": repr(exc)})
                next_claim = 0.0
                self._stop.wait(1.0)
        log.info("stream consumer stopped", extra={"consumer": self.name, "entries": self.stats.entries})

    def read_new(self) -> int:
        """Read and handle new entries (blocking up to block_ms); how many were handled."""
        reply = self.redis.xreadgroup(GROUP, self.name, {STREAM: ">"}, count=self.settings.count,
                                      block=self.settings.block_ms)
        n = 0
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                if self._stop.is_set():
                    return n  # left pending: claimed later, by this trainer restarted or another
                self.handle(_text(entry_id), fields)
                n += 1
        return n

    def claim_stale(self) -> int:
        """XAUTOCLAIM the entries pending longer than claim_idle_ms (of dead consumers, or this one's failures)
        and handle them; how many."""
        start = "0-0"
        n = 0
        while not self._stop.is_set():
            reply = self.redis.xautoclaim(STREAM, GROUP, self.name, self.settings.claim_idle_ms, start_id=start,
                                          count=self.settings.count)
            start, entries = _text(reply[0]), reply[1]
            for entry_id, fields in entries:
                if fields is None:  # trimmed away from the stream: nothing to read
                    self.redis.xack(STREAM, GROUP, entry_id)
                    continue
                eid = _text(entry_id)
                log.info("entry claimed", extra={"entry": eid, "consumer": self.name})
                self.stats.claimed += 1
                delivered = self._delivered(eid)
                if delivered > self.settings.max_deliveries:
                    self._give_up(eid, fields, f"delivered {delivered} times (more than max_deliveries): its "
                                               "consumers died on it")
                else:
                    self.handle(eid, fields)
                n += 1
            if start == "0-0":
                break
        return n

    # -- one entry -----------------------------------------------------------------------------------------------

    def handle(self, entry_id: str, fields: dict[Any, Any]) -> bool:
        """Add the entry's batch to the pool, then acknowledge it; False when it failed (left pending)."""
        f = {_text(k): _text(v) for k, v in fields.items()}
        path = f.get("path", "")
        try:
            report = self._add(entry_id, f) if path else {}
        except Exception as exc:  # noqa: BLE001 - left pending, retried by the claim sweep, then given up
            failures = int(self.redis.hincrby(FAILURES, entry_id, 1))
            if failures >= self.settings.max_failures:
                self._give_up(entry_id, fields, f"failed {failures} times; last: {exc!r}")
            else:
                log.warning("entry failed, left pending", extra={"entry": entry_id, "path": path,
                                                                 "failures": failures, "error": repr(exc)})
            return False
        if self._ack_delay:
            time.sleep(self._ack_delay)
        self.redis.pipeline(transaction=True).xack(STREAM, GROUP, entry_id).hdel(FAILURES, entry_id).execute()
        self.stats.entries += 1
        for lang, c in report.items():
            mine = self.stats.sentences.setdefault(lang, {"kept": 0, "discarded": 0, "duplicates": 0})
            for k, v in c.items():
                mine[k] = mine.get(k, 0) + v
        log.info("entry pooled", extra={"entry": entry_id, "job": f.get("job"), "batch": f.get("batch"),
                                        "added": report})
        return True

    def _add(self, entry_id: str, f: dict[str, str]) -> dict[str, dict[str, int]]:
        storage, key = storage_from_url(f["path"])
        with storage.open_read(key) as fh:
            lines = [json.loads(raw) for raw in fh if raw.strip()]
        batch: int | str = int(f["batch"]) if f.get("batch", "").isdigit() else f.get("batch", "")
        return self.pool.add(entry_id, lines, job=f.get("job", ""), batch=batch)

    def _delivered(self, entry_id: str) -> int:
        info = self.redis.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 0

    def _give_up(self, entry_id: str, fields: dict[Any, Any], why: str) -> None:
        f = {_text(k): _text(v) for k, v in fields.items()}
        record = json.dumps({"entry": entry_id, "job": f.get("job"), "batch": f.get("batch"), "path": f.get("path"),
                             "error": why, "time": time.time()})
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(DEAD, record).ltrim(DEAD, -DEAD_KEPT, -1).xack(STREAM, GROUP, entry_id).hdel(FAILURES, entry_id)
        pipe.execute()
        self.stats.dead += 1
        log.error("entry given up", extra={"entry": entry_id, "path": f.get("path"), "error": why})

    # -- observability -------------------------------------------------------------------------------------------

    def lag(self) -> dict[str, int | None]:
        """The group's `pending` (delivered, not acknowledged) and `lag` (not yet delivered; None when Redis
        cannot tell)."""
        for group in self.redis.xinfo_groups(STREAM):
            if _text(group["name"]) == GROUP:
                lag = group.get("lag")
                return {"pending": int(group["pending"]), "lag": int(lag) if lag is not None else None}
        return {"pending": 0, "lag": None}

    def log_stats(self) -> None:
        log.info("stream consumer stats", extra={"consumer": self.name, **self.lag(), "entries": self.stats.entries,
                                                 "claimed": self.stats.claimed, "dead": self.stats.dead,
                                                 "pool": self.pool.counts()})


def _text(value: Any) -> Any:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def consumer_from_settings(settings: ConsumerSettings | None = None, name: str | None = None) -> StreamConsumer:
    """A consumer on the job settings' Redis and storage (CROP_REDIS_URL, CROP_STORAGE_ROOT), with the
    CROP_TRAINER_* settings."""
    from crop.jobs.settings import job_settings

    js = job_settings()
    pool = Pool.from_settings(js.redis_url, js.storage_root)
    return StreamConsumer(pool.redis, pool, settings or settings_from_env(), name)


def settings_from_env() -> ConsumerSettings:
    """CROP_TRAINER_CLAIM_IDLE_MS, CROP_TRAINER_CLAIM_EVERY, CROP_TRAINER_BLOCK_MS, CROP_TRAINER_MAX_FAILURES,
    CROP_TRAINER_MAX_DELIVERIES, CROP_TRAINER_STATS_EVERY (defaults: ConsumerSettings')."""
    s = ConsumerSettings()
    for attr, env, kind in (("claim_idle_ms", "CLAIM_IDLE_MS", int), ("claim_every", "CLAIM_EVERY", float),
                            ("block_ms", "BLOCK_MS", int), ("max_failures", "MAX_FAILURES", int),
                            ("max_deliveries", "MAX_DELIVERIES", int),
                            ("stats_every", "STATS_EVERY", float)):
        raw = os.environ.get(f"CROP_TRAINER_{env}", "").strip()
        if raw:
            try:
                value = kind(raw)
            except ValueError:
                raise ValueError(f"CROP_TRAINER_{env}={raw!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"CROP_TRAINER_{env} must be positive, got {raw!r}")
            setattr(s, attr, value)
    return s


def run_forever() -> None:
    """The consumer in this process's main thread until SIGTERM or SIGINT (`python -m crop.train.consumer`)."""
    import signal

    from crop import log as crop_log

    crop_log.configure()
    consumer = consumer_from_settings()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("stopping on signal", extra={"signal": signum})
        consumer.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    consumer.run()


class ConsumerThread:
    """The consumer in a daemon thread of the trainer worker: `start()`, `stop()` (waits for the entry under
    way, never interrupts a write)."""

    def __init__(self, consumer: StreamConsumer) -> None:
        self.consumer = consumer
        self.thread = threading.Thread(target=consumer.run, name="crop-stream-consumer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.consumer.stop()
        self.thread.join(timeout)


if __name__ == "__main__":
    run_forever()
