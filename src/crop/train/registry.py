"""The model registry: versions of a trained student under a `crop.storage.Storage` (a local folder or an fsspec URL)
and a prefix, and which of them is `current`.

Layout (`<p>` is the prefix; "" puts the registry at the storage's root):

    <p>/v0001/meta.json         crop's metadata (ModelMeta), written LAST: a version without it does not exist
    <p>/v0001/model/...         the student as its library saved it (a spaCy folder, a `save_pretrained` folder);
                                in a subfolder because a spaCy folder has a meta.json of its own
    <p>/current                 text: the current version ("v0001"), replaced atomically
    <p>/.claims/v0001/<token>   who claimed a version number (kept, so that a number is never handed out twice)

Publishing: claim a number, copy the files (each written atomically), check that every file is there with its size,
then write meta.json (atomically) and, by the promotion rule, `current`. A publish that dies half-way leaves a
folder without meta.json: invisible, and removed by a later publish once nothing in it (nor its claim, which the
publisher touches every `HEARTBEAT` seconds while it copies) has changed for `stale_after` seconds, so that a publish
still under way on another machine is never destroyed. Its number stays used (versions may have gaps).

Claiming a number, the guarantee:
- a local folder: `os.mkdir(<p>/.claims/vNNNN)`, atomic on POSIX file systems (NFS included): two publishers never
  get the same version;
- an object store (S3, GCS, Azure, memory): there is no create-if-absent in fsspec, so a publisher writes its own
  marker `<p>/.claims/vNNNN/<random token>` and then lists `<p>/.claims/vNNNN/`: it holds the number only if its
  marker is the only one there. With a strongly consistent store (S3 since 2020, GCS, Azure) two publishers never
  both win: the later writer's listing sees the earlier marker. Both may lose (each sees the other): both then try
  the next number. A store with eventually consistent listings gives no such guarantee.
Moving `current` is a compare-then-write under a file lock (fcntl) on a local folder; on an object store it is not
atomic: two publishes that finish at the same instant may leave either one current (each passed the rule against
the current version it read).

Auto promotion: the new version becomes current when there is none, or when, for every dev language the current
version has a student F1 for (`metrics[lang]["student"]`), the new version's is at least as high (a language the new
version has no F1 for counts as worse).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

import crop
from crop.storage import Storage, check_key
from crop.train.students.base import model_kind

log = logging.getLogger(__name__)

META = "meta.json"
MODEL = "model"
CURRENT = "current"
CLAIMS = ".claims"
VERSION_RE = re.compile(r"^v(\d{4,})$")
HEARTBEAT = 30.0  # seconds between touches of a publish's claim while it copies
STALE_AFTER = 900.0  # seconds without a change before a version without meta.json counts as abandoned
CACHE_ENV = "CROP_MODELS_CACHE"
ANNOUNCE_CHANNEL = "crop:models"
_CHUNK = 1 << 20

Promote = Literal["auto", "always", "never"]
Announce = Callable[["ModelMeta"], None]


class RegistryError(Exception):
    """A registry that cannot be read as asked (an unknown version, a broken meta.json, no current version)."""


class VersionNotFound(RegistryError):
    """No such version (nothing under its name)."""


class IncompleteVersion(RegistryError):
    """Files under a version's name but no meta.json: a publish under way, or one that died."""


class ModelMeta(BaseModel):
    name: str
    version: str
    kind: str
    created: datetime
    crop_version: str
    parent: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    data: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)  # lang -> {"student": f1, "crop": f1}
    rounds: list[dict[str, Any]] = Field(default_factory=list)
    files: dict[str, int] = Field(default_factory=dict)  # path under model/ -> size in bytes (completeness check)
    promoted: bool = False  # computed when read (whether it is the current version), never stored


def version_name(number: int) -> str:
    return f"v{number:04d}"


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise VersionNotFound(f"{version!r} is not a version name (v0001, v0002, ...)")
    return version


def better_or_equal(new: dict[str, dict[str, float]], current: dict[str, dict[str, float]]) -> bool:
    """The auto-promotion rule: `new` is at least as good as `current` on every language `current` has a student
    F1 for; a language missing from `new` counts as worse."""
    for lang, scores in current.items():
        if "student" not in scores:
            continue
        theirs = new.get(lang, {}).get("student")
        if theirs is None or theirs < scores["student"]:
            return False
    return True


class _Heartbeat:
    """Touches a publish's claim every `interval` seconds until stopped, so that other publishers see that the
    publish is alive however long one file takes to copy."""

    def __init__(self, touch: Callable[[], None], interval: float) -> None:
        self.touch = touch
        self.interval = interval
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="crop-registry-heartbeat", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.touch()
            except Exception:  # a missed beat only makes the publish look older
                log.warning("could not touch the publish's claim", exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()


class ModelRegistry:
    """Versions of a model under `storage` and `prefix` (see the module's docstring)."""

    def __init__(self, storage: Storage, prefix: str = "models/ner", *, name: str | None = None,
                 cache_dir: Path | None = None, stale_after: float = STALE_AFTER,
                 heartbeat: float = HEARTBEAT) -> None:
        self.storage = storage
        self.prefix = prefix.strip("/")
        if self.prefix:
            check_key(self.prefix, "registry prefix")
        self.name = name or (self.prefix.rsplit("/", 1)[-1] if self.prefix else
                             storage.root.rstrip("/").rsplit("/", 1)[-1]) or "model"
        self.cache_dir = cache_dir
        self.stale_after = stale_after
        self.heartbeat = heartbeat

    @classmethod
    def at(cls, location: str, **kwargs: Any) -> ModelRegistry:
        """The registry at a folder or URL (`models/ner`, `s3://bucket/models/ner`): Storage(location), prefix ""."""
        return cls(Storage(location), "", **kwargs)

    def __repr__(self) -> str:
        return f"ModelRegistry({self.location!r})"

    # ------------------------------------------------------------------------------------------------- paths

    @property
    def location(self) -> str:
        """The registry's folder or URL."""
        return self._url("")

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _url(self, rel: str) -> str:
        key = self._key(rel)
        if key:
            return self.storage.url(key)
        return self.storage.url("x")[:-2]  # the storage's root itself (url() takes keys only)

    def _children(self, rel: str = "") -> list[str]:
        """Names of the entries right under `rel` (files and folders), [] when there is nothing."""
        path = self._url(rel)
        if self.storage.local:
            try:
                return sorted(os.listdir(path))
            except (FileNotFoundError, NotADirectoryError):
                return []
        fs = self.storage.fs
        fs.invalidate_cache()
        try:
            found = fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({str(p).rstrip("/").rsplit("/", 1)[-1] for p in found} - {""})

    def _sizes(self, rel: str) -> dict[str, int]:
        """Every file under `rel` (temporary files of writes under way left out) -> its size."""
        top = self._url(rel)
        if self.storage.local:
            found = {}
            for folder, _, names in os.walk(top):
                for name in names:
                    if not (name.startswith(".") and name.endswith(".tmp")):
                        path = os.path.join(folder, name)
                        found[os.path.relpath(path, top).replace(os.sep, "/")] = os.path.getsize(path)
            return found
        fs = self.storage.fs
        fs.invalidate_cache()
        base = fs._strip_protocol(top).rstrip("/")
        try:
            details = fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {p[len(base) + 1:]: int(info.get("size") or 0) for p, info in details.items()
                if p.startswith(base + "/") and info.get("type", "file") == "file"}

    def _newest_change(self, rel: str) -> float | None:
        """The latest modification time (epoch seconds) of anything under `rel`, temporary files included."""
        top = self._url(rel)
        times: list[float] = []
        if self.storage.local:
            for folder, dirs, names in os.walk(top):
                for name in [*names, *dirs, ""]:
                    with contextlib.suppress(FileNotFoundError):
                        times.append(os.stat(os.path.join(folder, name) if name else folder).st_mtime)
            return max(times, default=None)
        fs = self.storage.fs
        fs.invalidate_cache()
        try:
            paths = fs.find(fs._strip_protocol(top).rstrip("/"))
        except FileNotFoundError:
            return None
        for path in paths:
            try:
                times.append(fs.modified(path).timestamp())
            except (NotImplementedError, FileNotFoundError, AttributeError):
                times.append(time.time())  # unknown age: assume it is alive
        return max(times, default=None)

    # ------------------------------------------------------------------------------------------------- reading

    def _read_meta(self, version: str) -> ModelMeta:
        check_version(version)
        key = self._key(version, META)
        try:
            raw = self.storage.read_bytes(key)
        except FileNotFoundError:
            if self._children(version):
                raise IncompleteVersion(f"version {version} has no {META} at {self.storage.url(key)}: it is "
                                        "incomplete (a publish under way or one that died)") from None
            raise VersionNotFound(f"no version {version} in the model registry {self.location}") from None
        try:
            meta = ModelMeta.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "the document"
            raise RegistryError(f"{self.storage.url(key)} is not a valid {META} ({where}: {first['msg']})") from None
        if meta.version != version:
            raise RegistryError(f"{self.storage.url(key)} says version {meta.version!r}, not {version!r}")
        return meta

    def current(self) -> str | None:
        """The current version, None when none was promoted yet."""
        key = self._key(CURRENT)
        try:
            text = self.storage.read_bytes(key).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None
        if not VERSION_RE.match(text):
            raise RegistryError(f"{self.storage.url(key)} does not hold a version name (v0001, ...): {text[:40]!r}")
        return text

    def meta(self, version: str | None = None) -> ModelMeta:
        """A version's metadata (None: the current version's); `promoted` says whether it is current."""
        current = self.current()
        if version is None:
            if current is None:
                raise RegistryError(f"the model registry {self.location} has no current version")
            version = current
        meta = self._read_meta(version)
        meta.promoted = meta.version == current
        return meta

    def _version_names(self) -> list[str]:
        names = [n for n in self._children() if VERSION_RE.match(n)]
        return sorted(names, key=lambda n: int(n[1:]))

    def versions(self) -> list[ModelMeta]:
        """Every visible version (one with a meta.json), oldest first; a broken meta.json is logged and left out."""
        current = self.current()
        found = []
        for version in self._version_names():
            try:
                meta = self._read_meta(version)
            except (VersionNotFound, IncompleteVersion):
                continue
            except RegistryError as exc:
                log.warning("%s", exc)
                continue
            meta.promoted = version == current
            found.append(meta)
        return found

    # ------------------------------------------------------------------------------------------------- publishing

    def publish(self, folder: Path, meta: dict[str, Any], promote: Promote = "auto", *,
                announce: Announce | None = None) -> ModelMeta:
        """Copy the model in `folder` as a new version, write its meta.json last, move `current` by `promote`
        (auto: the promotion rule; always; never), then call `announce` with the new version's metadata
        (`promoted` true when it became current; an announce that fails is logged, not raised). Keys of `meta`:
        kind (else detected), config, data, metrics, rounds, parent (default: the current version), name (default:
        the registry's); version, created, crop_version and files are the registry's own."""
        folder = Path(folder)
        if promote not in ("auto", "always", "never"):
            raise ValueError(f"promote must be auto, always or never, got {promote!r}")
        if not folder.is_dir():
            raise FileNotFoundError(f"no model folder at {folder}")
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        if not files:
            raise ValueError(f"the model folder {folder} is empty")
        for rel in files:
            check_key(rel, "model file")
        try:
            previous = self.current()
        except RegistryError as exc:
            log.warning("%s", exc)
            previous = None
        fields = {k: v for k, v in meta.items() if k not in ("version", "created", "promoted", "files",
                                                              "crop_version")}
        if isinstance(fields.get("metrics"), dict):  # an F1 not known (None) is left out rather than refused
            fields["metrics"] = {lang: {k: v for k, v in scores.items() if v is not None} if isinstance(scores, dict)
                                 else scores for lang, scores in fields["metrics"].items()}
        fields.setdefault("name", self.name)
        fields.setdefault("kind", model_kind(folder) or "unknown")
        fields.setdefault("parent", previous)
        # validated before anything is written: a bad meta must not cost a version number
        new = ModelMeta(version="v0000", created=datetime.now(UTC), crop_version=crop.__version__,
                        files={rel: path.stat().st_size for rel, path in files.items()}, **fields)

        self.clean_up()
        number, touch = self._claim()
        new.version = version_name(number)
        try:
            with _Heartbeat(touch, self.heartbeat):
                for rel, path in files.items():
                    with open(path, "rb") as f:
                        self.storage.write_stream(self._key(new.version, MODEL, rel), iter(lambda: f.read(_CHUNK), b""))
                missing = _differences(new.files, self._sizes(f"{new.version}/{MODEL}"))
                if missing:  # a cleaner took this publish for dead (it stalled longer than stale_after)
                    raise RegistryError(f"files of {new.version} went missing while it was published: {missing}")
                new.created = datetime.now(UTC)
                self.storage.write_bytes(self._key(new.version, META),
                                         new.model_dump_json(indent=2, exclude={"promoted"}).encode())
        except BaseException:
            with contextlib.suppress(Exception):
                self.storage.delete(self._key(new.version))
            raise
        log.info("published %s in %s", new.version, self.location)

        if promote == "always":
            self._set_current(new.version)
            new.promoted = True
        elif promote == "auto":
            new.promoted = self._promote_if_better(new)
        self._announce(announce, new)
        return new

    def promote(self, version: str, *, announce: Announce | None = None) -> ModelMeta:
        """Make `version` current (whatever its metrics); VersionNotFound / RegistryError when it is not a
        complete version."""
        meta = self._read_meta(check_version(version))
        self._set_current(version)
        meta.promoted = True
        self._announce(announce, meta)
        return meta

    def _announce(self, announce: Announce | None, meta: ModelMeta) -> None:
        """Call `announce`; a failure is logged, not raised: the version is there all the same, and taggers that
        poll the registry find it."""
        if announce is None:
            return
        try:
            announce(meta)
        except Exception:
            log.warning("could not announce %s of %s", meta.version, self.location, exc_info=True)

    def _set_current(self, version: str) -> None:
        with self._current_lock():
            self.storage.write_bytes(self._key(CURRENT), f"{version}\n".encode())
        log.info("current version of %s: %s", self.location, version)

    def _promote_if_better(self, new: ModelMeta) -> bool:
        with self._current_lock():
            current = self.current()
            if current is not None:
                try:
                    theirs = self._read_meta(current)
                except VersionNotFound:
                    theirs = None
                except RegistryError as exc:  # a current that cannot be read cannot be served either
                    log.warning("replacing a current version that cannot be read: %s", exc)
                    theirs = None
                if theirs is not None and not better_or_equal(new.metrics, theirs.metrics):
                    log.info("%s stays current: %s is worse on some dev language", current, new.version)
                    return False
            self.storage.write_bytes(self._key(CURRENT), f"{new.version}\n".encode())
        log.info("current version of %s: %s", self.location, new.version)
        return True

    @contextlib.contextmanager
    def _current_lock(self) -> Iterator[None]:
        """An exclusive lock around reading and moving `current` (local folders only; see the module docstring)."""
        if not self.storage.local:
            yield
            return
        import fcntl

        path = self._url(".current.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _claim(self) -> tuple[int, Callable[[], None]]:
        """A version number no other publisher gets, and a function that marks the claim alive."""
        used = [int(n[1:]) for n in [*self._children(), *self._children(CLAIMS)] if VERSION_RE.match(n)]
        number = max(used, default=0) + 1
        token = f"{os.getpid()}-{uuid.uuid4().hex}"
        for _ in range(1000):
            version = version_name(number)
            if self.storage.local:
                claims = self._url(CLAIMS)
                os.makedirs(claims, exist_ok=True)
                try:
                    os.mkdir(os.path.join(claims, version))
                except FileExistsError:
                    number += 1
                    continue
                marker = os.path.join(claims, version, token)
                Path(marker).touch()
                return number, functools.partial(os.utime, marker)
            key = self._key(CLAIMS, version, token)
            self.storage.write_bytes(key, b"")
            if self._children(f"{CLAIMS}/{version}") == [token]:
                return number, functools.partial(self.storage.write_bytes, key, b"")
            number += 1  # another publisher claims it too: leave it to them (or to nobody) and try the next
        raise RegistryError(f"could not claim a version number in {self.location} after 1000 tries")

    def clean_up(self) -> list[str]:
        """Remove the leftovers of publishes that died (version folders without meta.json) when nothing of them
        changed for `stale_after` seconds; returns the versions removed."""
        removed = []
        now = time.time()
        for version in self._version_names():
            if META in self._children(version):
                continue
            times = [t for t in (self._newest_change(version), self._newest_change(f"{CLAIMS}/{version}"))
                     if t is not None]
            if times and now - max(times) < self.stale_after:
                continue  # a publish may be under way
            log.warning("removing %s/%s: a publish that did not finish", self.location, version)
            try:
                self.storage.delete(self._key(version))
            except Exception:
                log.warning("could not remove the leftovers of %s", version, exc_info=True)
                continue
            removed.append(version)
        return removed

    # ------------------------------------------------------------------------------------------------- local copies

    def local_copy(self, version: str | None = None) -> Path:
        """A local folder with the version's model files, what the student's library loads (None: the current
        version): the folder in the registry itself for a local storage, else a verified copy in the cache
        (`$CROP_MODELS_CACHE` or ~/.cache/crop/models, then a hash of the registry's URL, then the version)."""
        meta = self.meta(version)
        if self.storage.local:
            path = Path(self._url(f"{meta.version}/{MODEL}"))
            missing = _differences(meta.files, self._sizes(f"{meta.version}/{MODEL}"))
            if missing:
                raise RegistryError(f"version {meta.version} at {path} is incomplete: {missing}")
            return path
        return self._download(meta)

    def _cache_root(self) -> Path:
        base = self.cache_dir or Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "crop" / "models")
        return Path(base) / hashlib.sha256(self.location.encode()).hexdigest()[:16]

    @staticmethod
    def _cached(meta: ModelMeta, target: Path) -> bool:
        return (target / META).is_file() and not _differences(meta.files, _local_sizes(target / MODEL))

    def _download(self, meta: ModelMeta) -> Path:
        target = self._cache_root() / meta.version
        model = target / MODEL
        if self._cached(meta, target):
            return model
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{meta.version}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            for rel, size in meta.files.items():
                dest = tmp / MODEL / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with self.storage.open_read(self._key(meta.version, MODEL, rel)) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                if dest.stat().st_size != size:
                    raise RegistryError(f"{self._url(f'{meta.version}/{MODEL}/{rel}')} has "
                                        f"{dest.stat().st_size} bytes, its {META} says {size}")
            (tmp / META).write_text(meta.model_dump_json(indent=2, exclude={"promoted"}))
            if not self._cached(meta, target):  # else another process finished a copy meanwhile: keep that one
                shutil.rmtree(target, ignore_errors=True)  # a broken copy (a download that died)
                try:
                    os.rename(tmp, target)
                except OSError:  # another process renamed its copy into place first
                    if not self._cached(meta, target):
                        raise
        except FileNotFoundError as exc:
            raise RegistryError(f"version {meta.version} in {self.location} is missing a file: {exc}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return model


def _local_sizes(folder: Path) -> dict[str, int]:
    if not folder.is_dir():
        return {}
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


def _differences(expected: dict[str, int], found: dict[str, int]) -> str:
    """'' when every expected file is found with its size, else what is wrong (a few examples)."""
    wrong = [f"{rel} missing" if rel not in found else f"{rel} has {found[rel]} bytes, not {size}"
             for rel, size in sorted(expected.items()) if found.get(rel) != size]
    return ", ".join(wrong[:5]) + (f" and {len(wrong) - 5} more" if len(wrong) > 5 else "")


def redis_announcer(redis_url: str, registry: ModelRegistry, channel: str = ANNOUNCE_CHANNEL) -> Announce:
    """An `announce` callback that PUBLISHes on `channel` the JSON {name, version, prefix, location, promoted}
    (prefix: the registry's prefix in its storage; location: the registry's folder or URL)."""
    import redis

    def announce(meta: ModelMeta) -> None:
        message = json.dumps({"name": meta.name, "version": meta.version, "prefix": registry.prefix,
                              "location": registry.location, "promoted": meta.promoted})
        with redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=5) as client:
            client.publish(channel, message)

    return announce


def model_folder(location: str) -> Path:
    """A student's local folder from a model folder or a registry (a folder or URL holding `current`): the
    registry's current version (a local copy for an object store)."""
    if "://" not in location and not (Path(location) / CURRENT).is_file():
        return Path(location)
    return ModelRegistry.at(location).local_copy()
