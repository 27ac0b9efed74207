"""The state of bulk jobs in Redis.

Keys of a job `<id>`:

- `crop:job:<id>`: hash of the job (owner, state, options, totals, timestamps) and of its dispatch (`next`: how
  many batches were released to the queue so far);
- `crop:job:<id>:ranges`: batch index -> "start end first_lineno lines" (its byte range of the input);
- `crop:job:<id>:counts`: `status:<status>`, `reason:<reason>` (integers) and `seconds:<stage>` (floats), summed
  over the finished batches;
- `crop:job:<id>:done`: batch index -> JSON counts of the batch. Written with HSETNX in the same Lua script as
  the sums, so a batch that is delivered twice (a worker that died before acknowledging it) counts once;
- `crop:job:<id>:released`: batch index -> the index of the batch its completion released;
  `crop:job:<id>:queued`: set of the batch indices sent to the queue;
- `crop:job:<id>:missing`: batch index -> when the sweeper first found it released, not done and in no broker
  list (`crop.jobs.sweeper`); `requeued` in the job's hash counts the batches it queued again;
- `crop:job:<id>:errors`: list of job-level errors;
- `crop:jobs` and `crop:jobs:owner:<owner>`: sorted sets of job ids by creation time;
  `crop:jobs:active:<owner>`: set of the owner's queued and running jobs;
- `crop:projected`: stream with an entry per finished batch (job, batch, langs, counts, path), capped.

State moves queued -> running (a worker starts the first batch) -> succeeded | failed | cancelled; the three
last never change again. Every transition is a Lua script, so two workers never both finish a job.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

import redis
from pydantic import BaseModel
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

if TYPE_CHECKING:
    from crop.jobs.lines import BatchRange

STREAM = "crop:projected"
ERRORS_KEPT = 100  # job-level errors kept per job
# a Redis that restarts (or fails over) is waited for, with backoff, about this long before an operation fails
REDIS_RETRIES = 30
REDIS_BACKOFF_CAP = 2.0


class JobState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = (JobState.queued, JobState.running)


class TypeVoteStatus(BaseModel):
    """The vote step of a job with `type_vote` (crop.project.type_vote over the whole job): "waiting" for the
    batches, "running", or "done" with what it re-typed."""

    state: Literal["waiting", "running", "done"]
    surface_forms: int | None = None
    retyped: int | None = None
    retyped_lines: int | None = None


class JobInfo(BaseModel):
    id: str
    owner: str
    state: JobState
    name: str
    src_lang: str | None
    format: str
    engine: str
    options: dict[str, Any]
    total: int
    done: int
    batches: int
    batches_done: int
    requeued: int = 0  # batches queued again by the sweeper (their message was lost)
    type_vote: TypeVoteStatus | None = None  # jobs with the option type_vote only
    counts: dict[str, int]
    reasons: dict[str, int]
    seconds: dict[str, float]
    rate: float | None
    eta_seconds: float | None
    created: datetime
    started: datetime | None
    finished: datetime | None
    errors: list[str]


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_key(job_id: str) -> str:
    return f"crop:job:{job_id}"


def _keys(job_id: str) -> dict[str, str]:
    k = job_key(job_id)
    return {"job": k, "ranges": f"{k}:ranges", "counts": f"{k}:counts", "done": f"{k}:done",
            "released": f"{k}:released", "queued": f"{k}:queued", "errors": f"{k}:errors", "missing": f"{k}:missing",
            "announced": f"{k}:announced"}


# queued -> running, when a worker starts a batch; returns {state, whether batch ARGV[2] is done already}
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', 0} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started', ARGV[1])
  state = 'running'
end
return {state, redis.call('HEXISTS', KEYS[2], ARGV[2])}
"""

# a terminal state, from queued or running only; returns the state the job is in afterwards
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return state or '' end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', ARGV[2])
redis.call('SREM', KEYS[2], ARGV[3])
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('LTRIM', KEYS[3], -tonumber(ARGV[5]), -1)
end
return ARGV[1]
"""

# the first `ARGV[1]` batches, once (a second call releases nothing); returns their indices
_RELEASE_FIRST = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return {} end
local batches = tonumber(redis.call('HGET', KEYS[1], 'batches'))
local n = math.min(tonumber(ARGV[1]), batches)
if redis.call('HSETNX', KEYS[1], 'next', n) == 0 then return {} end
local out = {}
for i = 0, n - 1 do out[#out + 1] = i end
return out
"""

# A finished batch, exactly once (HSETNX on the done hash): sums its counts, announces it on the stream,
# releases the job's next batch or ends the job. A job with `type_vote` has one step more, index `batches`: it is
# released once every batch is done, and it announces the batches (re-typed) itself.
# KEYS: job, counts, done, released, errors, active set, stream, queued.
# ARGV: index, batch JSON, sentences, now, stream maxlen, #increments, increments (field, value)..., stream fields.
# Returns {recorded (1) or not (0), index of the batch to queue (-1: none), state}. A batch done already
# returns the batch its first completion released when that one is neither done nor known to be queued (its
# worker died before queueing it: queueing it twice is harmless, never queueing it would stall the job; queueing
# it when it is known to be queued would start a chain of duplicates, each redelivery queueing the next).
_COMPLETE = """
local job, counts, done, released = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local errors, active, stream, queued = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local idx = ARGV[1]
if redis.call('EXISTS', job) == 0 then return {0, -1, ''} end
local state = redis.call('HGET', job, 'state')
if redis.call('HSETNX', done, idx, ARGV[2]) == 0 then
  local rel = redis.call('HGET', released, idx)
  if rel and (state == 'queued' or state == 'running') and redis.call('HEXISTS', done, rel) == 0
      and redis.call('SISMEMBER', queued, rel) == 0 then
    return {0, tonumber(rel), state}
  end
  return {0, -1, state}
end
local vote = redis.call('HGET', job, 'type_vote') == '1'
local pos = 7
for i = 1, tonumber(ARGV[6]) do
  local field, value = ARGV[pos], ARGV[pos + 1]
  if string.sub(field, 1, 8) == 'seconds:' then
    redis.call('HINCRBYFLOAT', counts, field, value)
  else
    redis.call('HINCRBY', counts, field, value)
  end
  pos = pos + 2
end
local sentences = redis.call('HINCRBY', job, 'done', ARGV[3])
local batches_done = redis.call('HINCRBY', job, 'batches_done', 1)
local fields = {}
for i = pos, #ARGV do fields[#fields + 1] = ARGV[i] end
if not vote then redis.call('XADD', stream, 'MAXLEN', '~', ARGV[5], '*', unpack(fields)) end
if state ~= 'queued' and state ~= 'running' then return {1, -1, state} end
local batches = tonumber(redis.call('HGET', job, 'batches'))
local steps = batches
if vote then steps = batches + 1 end
if batches_done >= steps then
  local failed = tonumber(redis.call('HGET', counts, 'status:failed') or '0')
  state = 'succeeded'
  if sentences > 0 and failed >= sentences then
    state = 'failed'
    redis.call('RPUSH', errors, 'every sentence failed (' .. failed .. ' of ' .. sentences .. '); ' ..
                'the reasons are in the results')
  end
  redis.call('HSET', job, 'state', state, 'finished', ARGV[4])
  redis.call('SREM', active, redis.call('HGET', job, 'id'))
  return {1, -1, state}
end
if vote and batches_done == batches then
  redis.call('HSET', released, idx, batches)
  return {1, batches, state}
end
local n = redis.call('HINCRBY', job, 'next', 1)
if n <= batches then
  redis.call('HSET', released, idx, n - 1)
  return {1, n - 1, state}
end
return {1, -1, state}
"""


# A batch of a type-vote job announced by its vote step, once (HSETNX on the announced hash): a vote step
# delivered again announces only what its first delivery did not. KEYS: announced, stream. ARGV: index, maxlen,
# stream fields. Returns 1 when announced now.
_ANNOUNCE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], 1) == 0 then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
return 1
"""


class BatchOutcome(BaseModel):
    """What `JobStore.complete_batch` did: whether this call recorded the batch, the batch to queue next."""

    recorded: bool
    release: int | None
    state: str


class JobStore:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(
            redis_url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=REDIS_BACKOFF_CAP, base=0.1), REDIS_RETRIES),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self._begin = self.redis.register_script(_BEGIN)
        self._finish = self.redis.register_script(_FINISH)
        self._release_first = self.redis.register_script(_RELEASE_FIRST)
        self._complete = self.redis.register_script(_COMPLETE)
        self._announce = self.redis.register_script(_ANNOUNCE)

    def close(self) -> None:
        self.redis.close()

    # -- the API's side --------------------------------------------------------------------------------------

    def create(self, job_id: str, owner: str, name: str, src_lang: str | None, fmt: str, engine: str,
               options: dict[str, Any], batches: list[BatchRange], total: int, *, in_flight: int | None = None,
               input_url: str | None = None) -> JobInfo:
        """A queued job over `batches` of its input (`jobs/<id>/input` in the storage, or `input_url`).
        `in_flight` defaults to the setting `job_in_flight`."""
        if in_flight is None:
            from crop.jobs.settings import job_settings

            in_flight = job_settings().job_in_flight
        now = time.time()
        k = _keys(job_id)
        fields = {"id": job_id, "owner": owner, "state": JobState.queued.value, "name": name,
                  "src_lang": src_lang or "", "format": fmt, "engine": engine, "options": json.dumps(options),
                  "total": total, "done": 0, "batches": len(batches), "batches_done": 0, "in_flight": in_flight,
                  "created": repr(now), "input_url": input_url or ""}
        if options.get("type_vote"):
            fields["type_vote"] = 1  # one step more after the batches: the vote (see _COMPLETE)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(k["job"], mapping=fields)
        for b in batches:
            pipe.hset(k["ranges"], str(b.index), f"{b.start} {b.end} {b.first_lineno} {b.lines}")
        pipe.zadd("crop:jobs", {job_id: now})
        pipe.zadd(f"crop:jobs:owner:{owner}", {job_id: now})
        pipe.sadd(f"crop:jobs:active:{owner}", job_id)
        pipe.execute()
        info = self.get(job_id)
        assert info is not None
        return info

    def get(self, job_id: str) -> JobInfo | None:
        k = _keys(job_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k["job"])
        pipe.hgetall(k["counts"])
        pipe.lrange(k["errors"], 0, -1)
        fields, counts, errors = pipe.execute()
        if not fields:
            return None
        return _info(fields, counts, errors, time.time())

    def list(self, owner: str, offset: int = 0, limit: int = 50) -> tuple[list[JobInfo], int]:
        """The owner's jobs, newest first, and how many there are."""
        key = f"crop:jobs:owner:{owner}"
        ids = self.redis.zrevrange(key, offset, offset + limit - 1) if limit > 0 else []
        jobs = [info for info in (self.get(i) for i in ids) if info is not None]
        return jobs, int(self.redis.zcard(key))

    def active_count(self, owner: str) -> int:
        return int(self.redis.scard(f"crop:jobs:active:{owner}"))

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job (its batches not started never run; what is done stays); a finished
        job is returned as it is. KeyError for a job that does not exist."""
        self.finish(job_id, JobState.cancelled)
        info = self.get(job_id)
        if info is None:
            raise KeyError(job_id)
        return info

    def batch_ranges(self, job_id: str) -> list[BatchRange]:
        raw = self.redis.hgetall(_keys(job_id)["ranges"])
        return sorted((_range(int(i), v) for i, v in raw.items()), key=lambda b: b.index)

    def done_batches(self, job_id: str) -> list[int]:
        """Indices of the batches whose output file is complete, in order."""
        return sorted(int(i) for i in self.redis.hkeys(_keys(job_id)["done"]))

    def ping(self) -> bool:
        """Whether Redis answers now (no waiting for it, unlike the other operations)."""
        try:
            with redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=2) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    # -- the workers' side -----------------------------------------------------------------------------------

    def job_fields(self, job_id: str) -> dict[str, str]:
        """The raw hash of a job (empty when it does not exist)."""
        return self.redis.hgetall(job_key(job_id))

    def batch_range(self, job_id: str, index: int) -> BatchRange | None:
        raw = self.redis.hget(_keys(job_id)["ranges"], str(index))
        return _range(index, raw) if raw is not None else None

    def release_first(self, job_id: str) -> list[int]:
        """Indices of the job's first `in_flight` batches, the first time only (then [])."""
        fields = self.job_fields(job_id)
        if not fields:
            raise KeyError(job_id)
        return [int(i) for i in self._release_first(keys=[job_key(job_id)], args=[int(fields["in_flight"])])]

    def begin_batch(self, job_id: str, index: int) -> tuple[str, bool]:
        """The job's state once a worker starts batch `index` (queued becomes running; "" for a job that does
        not exist), and whether that batch is done already."""
        k = _keys(job_id)
        state, done = self._begin(keys=[k["job"], k["done"]], args=[repr(time.time()), str(index)])
        return str(state), bool(done)

    def complete_batch(self, job_id: str, index: int, counts: dict[str, Any], langs: list[str], path: str,
                       stream_maxlen: int) -> BatchOutcome:
        """Record a finished batch (`counts`: PipelineStats.as_dict() of the batch) once, whatever the number of
        calls: see `_COMPLETE`."""
        k = _keys(job_id)
        owner = self.redis.hget(k["job"], "owner") or ""
        increments: list[str | int | float] = []
        for prefix, key in (("status", "status"), ("reason", "reasons")):
            for name, n in counts.get(key, {}).items():
                increments += [f"{prefix}:{name}", int(n)]
        for stage, seconds in counts.get("seconds", {}).items():
            increments += [f"seconds:{stage}", repr(float(seconds))]
        entry = {"job": job_id, "batch": index, "langs": ",".join(langs), "path": path,
                 "counts": json.dumps(counts.get("status", {}), sort_keys=True),
                 "sentences": int(counts.get("sentences", 0))}
        flat_entry = [x for kv in entry.items() for x in kv]
        recorded, release, state = self._complete(
            keys=[k["job"], k["counts"], k["done"], k["released"], k["errors"], f"crop:jobs:active:{owner}", STREAM,
                  k["queued"]],
            args=[index, json.dumps(counts, sort_keys=True), int(counts.get("sentences", 0)), repr(time.time()),
                  stream_maxlen, len(increments) // 2, *increments, *flat_entry])
        return BatchOutcome(recorded=bool(recorded), release=None if int(release) < 0 else int(release),
                            state=str(state))

    def announce(self, job_id: str, index: int, langs: list[str], path: str, counts: dict[str, int], sentences: int,
                 stream_maxlen: int) -> bool:
        """Announce batch `index` of a type-vote job on the stream, once (its vote step does, with the re-typed
        output at `path`); True when this call announced it."""
        entry = {"job": job_id, "batch": index, "langs": ",".join(langs), "path": path,
                 "counts": json.dumps(counts, sort_keys=True), "sentences": sentences}
        k = _keys(job_id)
        return bool(self._announce(keys=[k["announced"], STREAM],
                                   args=[index, stream_maxlen, *[x for kv in entry.items() for x in kv]]))

    def set_type_vote(self, job_id: str, summary: dict[str, Any]) -> None:
        """What the vote step of a job did (surface forms, entities and lines re-typed)."""
        self.redis.hset(job_key(job_id), "type_vote_summary", json.dumps(summary, sort_keys=True))

    def release_after_redelivery(self, job_id: str, index: int) -> int | None:
        """For batch `index`, done already and delivered again: the batch its completion released, when that one
        is neither done nor known to be queued (its worker may have died before queueing it)."""
        return self.complete_batch(job_id, index, {}, [], "", 1).release  # HSETNX fails: nothing is recorded

    def mark_queued(self, job_id: str, indices: list[int]) -> None:
        """Note that these batches were sent to the queue (see `_COMPLETE`)."""
        if indices:
            self.redis.sadd(_keys(job_id)["queued"], *indices)

    def finish(self, job_id: str, state: JobState, error: str = "") -> str:
        """Move a queued or running job to a terminal `state` (with a job-level `error`); returns the state the
        job is in afterwards ("" when it does not exist)."""
        k = _keys(job_id)
        owner = self.redis.hget(k["job"], "owner") or ""
        return str(self._finish(keys=[k["job"], f"crop:jobs:active:{owner}", k["errors"]],
                                args=[state.value, repr(time.time()), job_id, error, ERRORS_KEPT]))

    def active_jobs(self) -> list[str]:
        """The ids of every owner's queued and running jobs."""
        ids: set[str] = set()
        for key in self.redis.scan_iter("crop:jobs:active:*", count=500):
            ids.update(self.redis.smembers(key))
        return sorted(ids)

    def note_missing(self, job_id: str, missing: set[int], now: float, after: float) -> list[int]:
        """Record that these batches of a job are missing from the broker now (and that the others are not);
        returns those missing since at least `after` seconds, forgetting them (they are about to be queued)."""
        key = _keys(job_id)["missing"]
        seen = {int(i): float(t) for i, t in self.redis.hgetall(key).items()}
        pipe = self.redis.pipeline(transaction=True)
        gone = [i for i in seen if i not in missing]
        new = {str(i): repr(now) for i in missing if i not in seen}
        overdue = sorted(i for i in missing if i in seen and now - seen[i] >= after)
        if gone or overdue:
            pipe.hdel(key, *(str(i) for i in gone + overdue))
        if new:
            pipe.hset(key, mapping=new)
        pipe.execute()
        return overdue

    def count_requeued(self, job_id: str) -> None:
        self.redis.hincrby(job_key(job_id), "requeued", 1)

    def add_error(self, job_id: str, error: str) -> None:
        key = _keys(job_id)["errors"]
        self.redis.pipeline().rpush(key, error).ltrim(key, -ERRORS_KEPT, -1).execute()


def _range(index: int, raw: str) -> BatchRange:
    from crop.jobs.lines import BatchRange

    start, end, first_lineno, lines = (int(x) for x in raw.split())
    return BatchRange(index=index, start=start, end=end, first_lineno=first_lineno, lines=lines)


def _when(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _info(fields: dict[str, str], counts: dict[str, str], errors: list[str], now: float) -> JobInfo:
    by: dict[str, dict[str, Any]] = {"status": {}, "reason": {}, "seconds": {}}
    for key, value in counts.items():
        kind, _, name = key.partition(":")
        if kind in by:
            by[kind][name] = round(float(value), 3) if kind == "seconds" else int(value)
    total, done = int(fields["total"]), int(fields.get("done", 0))
    batches, steps_done = int(fields["batches"]), int(fields.get("batches_done", 0))
    state = JobState(fields["state"])
    started = float(fields["started"]) if fields.get("started") else None
    end = float(fields["finished"]) if fields.get("finished") else now
    rate = done / (end - started) if started is not None and end > started and done else None
    eta = (total - done) / rate if rate and state in ACTIVE else None
    return JobInfo(id=fields["id"], owner=fields["owner"], state=state, name=fields.get("name", ""),
                   src_lang=fields.get("src_lang") or None, format=fields["format"], engine=fields["engine"],
                   options=json.loads(fields.get("options") or "{}"), total=total, done=done,
                   batches=batches, batches_done=min(steps_done, batches), type_vote=_type_vote(fields, steps_done),
                   requeued=int(fields.get("requeued", 0)),
                   counts=by["status"], reasons=by["reason"], seconds=by["seconds"],
                   rate=round(rate, 3) if rate is not None else None,
                   eta_seconds=round(eta, 1) if eta is not None else None,
                   created=_when(fields["created"]), started=_when(fields.get("started")),  # type: ignore[arg-type]
                   finished=_when(fields.get("finished")), errors=errors)


def _type_vote(fields: dict[str, str], steps_done: int) -> TypeVoteStatus | None:
    if fields.get("type_vote") != "1":
        return None
    if fields.get("type_vote_summary"):
        return TypeVoteStatus(state="done", **json.loads(fields["type_vote_summary"]))
    return TypeVoteStatus(state="running" if steps_done >= int(fields["batches"]) else "waiting")
