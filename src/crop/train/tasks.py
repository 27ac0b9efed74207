"""Training runs from the pool: the Celery task `crop.train` (queue `train`, run by `crop trainer`), the state of a
run in Redis, and the resolution of its data (source L_src, dev sets).

A run `<id>` (`crop:train:<id>`, a hash like a job's): owner, state (queued -> running -> succeeded | failed),
the request (JSON), progress (round/rounds, epoch/epochs, loss, dev_f1, eta_seconds, message), heartbeat,
version and promoted (once published), metrics (JSON), error, timestamps. `crop:trains` and
`crop:trains:owner:<owner>`: sorted sets of run ids by creation time.

The task: exports the pool of the requested languages (kept and discarded lines: only kept ones train, the
discarded ones are relabelled by the student), fetches the source and dev files, runs
`crop.train.selftrain.run_selftraining` into a temporary folder, and publishes the student into the registry
`models/<name>` of the job storage (`crop.train.registry.ModelRegistry`), announced on the Redis channel
`crop:models` as {name, version, prefix}. The message is acknowledged late: a trainer killed mid-run leaves it to
be delivered again after the broker's visibility timeout; the run then starts over (the registry never shows a
half-published version). A delivery of a run that another trainer is running (fresh heartbeat) is dropped, one of
a finished run too. Set CROP_JOB_VISIBILITY_TIMEOUT above the longest training for the trainers.

Data references (`source`, `dev` in the request): a URL or absolute path under `CROP_JOB_INPUT_PREFIXES` (as a
job's input_url), or a key of the job storage (`dev/es.jsonl`, `source/en.jsonl`). By default the source is every
`.jsonl` under `source/` in the storage, and the dev set of a language `dev/<lang>.jsonl` when it exists."""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import redis
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crop.jobs.celery_app import app
from crop.jobs.settings import JobSettings, env_name
from crop.langcodes import normalize_lang
from crop.storage import Storage, check_key, storage_from_url
from crop.train.students.base import StudentConfig

log = logging.getLogger(__name__)

QUEUE = "train"
TASK = "crop.train"
RUNS = "crop:trains"
HEARTBEAT_EVERY = 15.0  # seconds between the heartbeats of a running training
HEARTBEAT_STALE = 120.0  # a running training without a heartbeat this long is taken to be dead
NAME_RE = r"[a-z0-9][a-z0-9._-]{0,63}"
PROGRESS_FIELDS = ("round", "rounds", "epoch", "epochs", "loss", "dev_f1", "eta_seconds", "message")


class TrainState(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"


FINISHED = (TrainState.succeeded, TrainState.failed)


class TrainRequest(BaseModel):
    """A training run from the pool (POST /v1/train, `crop train submit`)."""

    model_config = ConfigDict(extra="forbid")

    languages: list[str] = Field(min_length=1, description="target languages: their pool trains the student")
    name: str = Field(default="ner", pattern=f"^{NAME_RE}$", description="the model: registry models/<name>")
    student: StudentConfig = Field(default_factory=StudentConfig)
    rounds: int = Field(default=1, ge=1, le=20)
    source: list[str] = Field(default_factory=list, description="L_src JSONL files (tokens, tags): URLs under "
                              "CROP_JOB_INPUT_PREFIXES or storage keys; default: every .jsonl under source/")
    dev: dict[str, str] = Field(default_factory=dict, description="lang -> gold JSONL (URL or storage key); "
                                "default: dev/<lang>.jsonl of the storage")
    source_ratio: float = Field(default=1.0, ge=0.0, le=100.0)
    combine: Literal["projection-first", "agreement"] = "projection-first"
    relabel_kept: bool = False
    crop_f1: dict[str, float] = Field(default_factory=dict, description="the teacher's dev F1 per language")
    promote: Literal["auto", "always", "never"] = "auto"

    @field_validator("languages")
    @classmethod
    def _langs(cls, value: list[str]) -> list[str]:
        out: list[str] = []
        for code in value:
            lang = normalize_lang(code.strip())
            if lang not in out:
                out.append(lang)
        return out

    @field_validator("dev", "crop_f1")
    @classmethod
    def _dev_langs(cls, value: dict[str, Any]) -> dict[str, Any]:
        return {normalize_lang(k.strip()): v for k, v in value.items()}


class TrainInfo(BaseModel):
    id: str
    owner: str
    state: TrainState
    name: str
    languages: list[str]
    request: dict[str, Any]
    round: int | None = None
    rounds: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    dev_f1: float | None = None
    eta_seconds: float | None = None
    message: str = ""
    pool: dict[str, dict[str, int]] = Field(default_factory=dict, description="the pool when the run was submitted")
    version: str | None = None
    promoted: bool | None = None
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    created: datetime
    started: datetime | None = None
    finished: datetime | None = None
    heartbeat: datetime | None = Field(default=None, description="last sign of life of the trainer running it "
                                       "(every 15 s): an old one on a running run means its trainer died")
    error: str | None = None


def run_key(run_id: str) -> str:
    return f"crop:train:{run_id}"


# queued|running -> running (a stale or absent heartbeat only); returns {state, taken (1/0)}
_BEGIN = """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'', 0} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started', ARGV[1], 'heartbeat', ARGV[1], 'worker', ARGV[3])
  return {'running', 1}
end
if state == 'running' then
  local hb = tonumber(redis.call('HGET', KEYS[1], 'heartbeat') or '0')
  if tonumber(ARGV[1]) - hb > tonumber(ARGV[2]) then
    redis.call('HSET', KEYS[1], 'heartbeat', ARGV[1], 'worker', ARGV[3], 'restarts',
               tonumber(redis.call('HGET', KEYS[1], 'restarts') or '0') + 1)
    return {'running', 1}
  end
end
return {state, 0}
"""

# a terminal state, from queued or running only
_FINISH = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return state or '' end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'finished', ARGV[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return ARGV[1]
"""


class TrainStore:
    """The training runs' state in Redis (the job store's server)."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)

    @classmethod
    def from_url(cls, redis_url: str) -> TrainStore:
        from crop.jobs.state import JobStore

        return cls(JobStore(redis_url).redis)

    def create(self, owner: str, request: TrainRequest, pool: dict[str, dict[str, int]]) -> TrainInfo:
        run_id = uuid.uuid4().hex
        now = time.time()
        fields = {"id": run_id, "owner": owner, "state": TrainState.queued.value, "name": request.name,
                  "languages": ",".join(request.languages), "request": request.model_dump_json(),
                  "rounds": request.rounds, "epochs": request.student.epochs, "pool": json.dumps(pool),
                  "created": repr(now), "message": "queued"}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(run_key(run_id), mapping=fields)
        pipe.zadd(RUNS, {run_id: now})
        pipe.zadd(f"{RUNS}:owner:{owner}", {run_id: now})
        pipe.execute()
        info = self.get(run_id)
        assert info is not None
        return info

    def get(self, run_id: str) -> TrainInfo | None:
        fields = self.redis.hgetall(run_key(run_id))
        return _info(_decoded(fields)) if fields else None

    def request(self, run_id: str) -> TrainRequest:
        raw = self.redis.hget(run_key(run_id), "request")
        if raw is None:
            raise KeyError(run_id)
        return TrainRequest.model_validate_json(raw)

    def begin(self, run_id: str, worker: str) -> tuple[str, bool]:
        """(state, whether this worker takes the run): a queued run, or a running one whose trainer died."""
        state, taken = self._begin(keys=[run_key(run_id)], args=[repr(time.time()), HEARTBEAT_STALE, worker])
        return _text(state), bool(taken)

    def update(self, run_id: str, **fields: Any) -> None:
        values = {k: _field(v) for k, v in fields.items()}
        values["heartbeat"] = repr(time.time())
        self.redis.hset(run_key(run_id), mapping=values)

    def finish(self, run_id: str, state: TrainState, **fields: Any) -> str:
        args: list[Any] = [state.value, repr(time.time())]
        for k, v in fields.items():
            args += [k, _field(v)]
        return _text(self._finish(keys=[run_key(run_id)], args=args))


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _decoded(fields: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


def _when(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(float(value), UTC) if value else None


def _num(value: str | None, kind: type = float) -> Any:
    return kind(float(value)) if value not in (None, "") else None


def _info(f: dict[str, str]) -> TrainInfo:
    return TrainInfo(
        id=f["id"], owner=f["owner"], state=TrainState(f["state"]), name=f.get("name", ""),
        languages=[x for x in f.get("languages", "").split(",") if x], request=json.loads(f.get("request") or "{}"),
        round=_num(f.get("round"), int), rounds=_num(f.get("rounds"), int), epoch=_num(f.get("epoch"), int),
        epochs=_num(f.get("epochs"), int), loss=_num(f.get("loss")), dev_f1=_num(f.get("dev_f1")),
        eta_seconds=_num(f.get("eta_seconds")), message=f.get("message", ""),
        pool=json.loads(f.get("pool") or "{}"), version=f.get("version") or None,
        promoted=(f["promoted"] == "1") if f.get("promoted") else None, metrics=json.loads(f.get("metrics") or "{}"),
        created=_when(f["created"]), started=_when(f.get("started")),  # type: ignore[arg-type]
        finished=_when(f.get("finished")), heartbeat=_when(f.get("heartbeat")), error=f.get("error") or None)


# ---------------------------------------------------------------------------------------------------- data


class DataError(ValueError):
    """A source or dev reference that cannot be used: (field, value) and why."""

    def __init__(self, loc: tuple[str, ...], value: Any, message: str) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value


def resolve_ref(ref: str, settings: JobSettings, storage: Storage, loc: tuple[str, ...]) -> tuple[Storage, str]:
    """The storage and key of a data reference: a URL or absolute path inside a folder of job_input_prefixes, or a
    key of the job storage. DataError when it is neither or does not exist."""
    if "://" in ref or ref.startswith("/"):
        prefixes = settings.job_input_prefixes
        inside = any(ref.startswith(p.rstrip("/") + "/") for p in prefixes)
        if ".." in ref.replace("\\", "/").split("/") or not inside:
            allowed = ", ".join(prefixes) or "none"
            raise DataError(loc, ref, f"{ref!r} is not under an allowed prefix ({env_name('job_input_prefixes')}: "
                                      f"{allowed}); upload it to the job storage and give its key (dev/es.jsonl)")
        try:
            source, key = storage_from_url(ref)
        except ValueError as exc:
            raise DataError(loc, ref, f"{ref!r} cannot be read: {exc}") from None
    else:
        try:
            source, key = storage, check_key(ref)
        except ValueError as exc:
            raise DataError(loc, ref, str(exc)) from None
    if not source.exists(key):
        raise DataError(loc, ref, f"{ref!r} does not exist")
    return source, key


def resolve_data(request: TrainRequest, settings: JobSettings, storage: Storage
                 ) -> tuple[dict[str, tuple[Storage, str]], dict[str, tuple[Storage, str]]]:
    """({reference: (storage, key)} of the source files, {lang: (storage, key)} of the dev sets). DataError for a
    reference that cannot be used, no source at all, or no dev set at all (the best epoch is chosen on dev)."""
    if request.source:
        sources = {ref: resolve_ref(ref, settings, storage, ("body", "source", str(i)))
                   for i, ref in enumerate(request.source)}
    else:
        keys = [k for k in storage.list("source") if k.endswith(".jsonl")]
        if not keys:
            raise DataError(("body", "source"), None, "no source data: give `source` (L_src JSONL files) or upload "
                                                      "them to the job storage under source/")
        sources = {k: (storage, k) for k in keys}
    dev: dict[str, tuple[Storage, str]] = {}
    for lang, ref in request.dev.items():
        dev[lang] = resolve_ref(ref, settings, storage, ("body", "dev", lang))
    for lang in request.languages:
        if lang not in dev and storage.exists(f"dev/{lang}.jsonl"):
            dev[lang] = (storage, f"dev/{lang}.jsonl")
    if not dev:
        raise DataError(("body", "dev"), None, "no dev set: give `dev` ({lang: file}) or upload dev/<lang>.jsonl to "
                                               f"the job storage for one of {', '.join(request.languages)}")
    return sources, dev


def check_pool(request: TrainRequest, counts: dict[str, dict[str, int]]) -> None:
    """DataError for a language with no kept sentence in the pool."""
    empty = [lang for lang in request.languages if not counts.get(lang, {}).get("kept")]
    if empty:
        has = ", ".join(f"{k}: {v.get('kept', 0)} kept" for k, v in counts.items()) or "nothing"
        raise DataError(("body", "languages"), empty, f"the pool has no kept sentence in {', '.join(empty)} (it has "
                                                      f"{has}); run bulk jobs in that language first")


def _fetch(source: Storage, key: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with source.open_read(key) as f, open(path, "wb") as out:
        shutil.copyfileobj(f, out, 1 << 20)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-100:] or "file"


# ---------------------------------------------------------------------------------------------------- the run


class _Heartbeat:
    """Marks the run alive every HEARTBEAT_EVERY seconds while it trains (an epoch may last longer)."""

    def __init__(self, store: TrainStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="crop-train-heartbeat")

    def _beat(self) -> None:
        while not self.done.wait(HEARTBEAT_EVERY):
            try:
                self.store.redis.hset(run_key(self.run_id), "heartbeat", repr(time.time()))
            except redis.RedisError:
                log.warning("heartbeat failed", extra={"run": self.run_id}, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.done.set()
        self.thread.join(5)


def run_training(run_id: str, settings: JobSettings, worker: str = "") -> TrainInfo | None:
    """Run training `run_id` (see the module's doc); its final info, or None when this delivery had nothing to do."""
    from crop.train.pool import Pool

    pool = Pool.from_settings(settings.redis_url, settings.storage_root)
    store = TrainStore(pool.redis)
    state, taken = store.begin(run_id, worker)
    if not taken:
        log.info("training delivery dropped", extra={"run": run_id, "state": state})
        return None
    try:
        request = store.request(run_id)
        with _Heartbeat(store, run_id), tempfile.TemporaryDirectory(prefix=f"crop-train-{run_id[:8]}-") as tmp:
            meta = _train(run_id, request, settings, pool, store, Path(tmp))
    except Exception as exc:
        log.exception("training failed", extra={"run": run_id})
        store.finish(run_id, TrainState.failed, error=f"{type(exc).__name__}: {exc}"[:2000], message="failed")
        return store.get(run_id)
    store.finish(run_id, TrainState.succeeded, version=meta["version"], promoted=meta["promoted"],
                 metrics=meta["metrics"], message=f"published {request.name} {meta['version']}")
    log.info("training succeeded", extra={"run": run_id, "version": meta["version"], "promoted": meta["promoted"]})
    return store.get(run_id)


def _train(run_id: str, request: TrainRequest, settings: JobSettings, pool: Any, store: TrainStore, tmp: Path
           ) -> dict[str, Any]:
    from crop.train.selftrain import Progress, SelfTrainConfig, run_selftraining

    store.update(run_id, message="exporting the pool")
    targets = pool.export_all(request.languages, tmp / "pool")
    sources, dev = resolve_data(request, settings, pool.storage)
    store.update(run_id, message="fetching the source and dev data")
    names: dict[str, str] = {str(p): f"pool:{lang}" for lang, p in targets.items()}
    source_paths = []
    for i, (ref, (st, key)) in enumerate(sources.items()):
        path = _fetch(st, key, tmp / "source" / f"{i:03d}-{_safe(key)}")
        names[str(path)] = ref
        source_paths.append(str(path))
    dev_paths = {}
    for lang, (st, key) in dev.items():
        path = _fetch(st, key, tmp / "dev" / f"{lang}.jsonl")
        names[str(path)] = request.dev.get(lang, key)
        dev_paths[lang] = str(path)
    config = SelfTrainConfig(source=source_paths, targets={lang: [str(p)] for lang, p in targets.items()},
                             dev=dev_paths, student=request.student, rounds=request.rounds,
                             source_ratio=request.source_ratio, combine=request.combine,
                             relabel_kept=request.relabel_kept, crop_f1=request.crop_f1)

    def progress(p: Progress) -> None:
        # a report without loss or dev F1 (the start of a round, the end) keeps the last ones known
        fields = {k: v for k, v in p.model_dump().items() if v is not None and k in PROGRESS_FIELDS}
        store.update(run_id, **fields)

    store.update(run_id, message="training")
    report = run_selftraining(config, tmp / "model", progress=progress)
    return _publish(run_id, request, settings, pool, report, tmp / "model", names)


def _publish(run_id: str, request: TrainRequest, settings: JobSettings, pool: Any, report: Any, folder: Path,
             names: dict[str, str]) -> dict[str, Any]:
    from crop.train.registry import ModelRegistry, redis_announcer

    prefix = f"models/{request.name}"
    registry = ModelRegistry(Storage(settings.storage_root), prefix)
    data = [{**d, "path": names.get(str(d.get("path")), d.get("path"))} for d in report.data]
    config = report.config.model_dump(mode="json")
    config.update(source=[names.get(p, p) for p in config.get("source", [])],
                  targets={k: [names.get(p, p) for p in v] for k, v in config.get("targets", {}).items()},
                  dev={k: names.get(v, v) for k, v in config.get("dev", {}).items()},
                  run=run_id)
    meta = {"name": request.name, "kind": request.student.kind, "config": config, "data": data,
            "metrics": report.metrics, "rounds": [r.model_dump(mode="json") for r in report.rounds]}

    # the registry's announcer: {name, version, prefix, location, promoted} on crop:models
    announce = redis_announcer(settings.redis_url, registry)
    published = registry.publish(folder, meta, promote=request.promote, announce=announce)
    return {"version": published.version, "promoted": published.promoted, "metrics": report.metrics}


# ---------------------------------------------------------------------------------------------------- Celery


def queue_training(broker_url: str, run_id: str) -> None:
    """Send run `run_id` to the queue "train" of the broker at `broker_url`."""
    from crop.jobs.dispatch import send

    send(broker_url, TASK, [run_id], QUEUE)


@app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=0, queue=QUEUE)
def train(self: Any, run_id: str) -> None:
    """Celery task `crop.train`: run training `run_id` (failures end the run as failed, never retried)."""
    from crop.jobs.settings import job_settings

    run_training(run_id, job_settings(), worker=str(self.request.hostname or ""))
