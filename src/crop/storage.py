"""Job inputs, batch outputs and manifests under one storage root: a local folder (the default) or an fsspec URL
(`s3://bucket/prefix` with s3fs, `memory://name`, ...), so that workers on several machines share a job without a
shared disk.

Keys are relative paths with `/` ("jobs/<id>/input"); one that could leave the root (`..`, an absolute path) is
refused. Writes are atomic: a local file is written under a hidden temporary name in its folder and renamed into
place; an object is written in one PUT (`write_bytes`) or uploaded with autocommit off (a multipart upload on S3)
and committed at the end, so readers see the whole object or none, and a write that fails or goes over its size
limit leaves nothing behind (no object, no temporary file, no pending multipart upload).

Options of the file system (credentials, endpoint) come as keyword arguments, else, for a root that is not a local
folder, from the environment variable `CROP_STORAGE_OPTIONS`, a JSON object given to fsspec as is, e.g.
`{"client_kwargs": {"endpoint_url": "http://minio:9000"}, "key": "...", "secret": "..."}`. s3fs also reads the
standard AWS variables itself (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL`, ...).

The methods block: from async code, call them in a thread (`write_async_stream` does so itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import PurePosixPath
from typing import IO, Any, BinaryIO, Protocol, cast

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

log = logging.getLogger(__name__)

OPTIONS_ENV = "CROP_STORAGE_OPTIONS"
_TMP_SUFFIX = ".tmp"
_FLUSH_BYTES = 1 << 20  # an async upload is written in pieces of about this size (each in a thread)
_GLOB_CHARS = frozenset("*?[")  # fsspec expands these in rm/find: never in a key or prefix


class TooLarge(Exception):
    """An upload went over its size limit; nothing was written."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        super().__init__(f"more than {max_bytes} bytes")


def storage_options_from_env() -> dict[str, Any]:
    """The fsspec options in `CROP_STORAGE_OPTIONS` (a JSON object), {} when unset."""
    raw = os.environ.get(OPTIONS_ENV, "").strip()
    if not raw:
        return {}
    try:
        options = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{OPTIONS_ENV} is not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(options, dict):
        raise ValueError(f"{OPTIONS_ENV} must be a JSON object of fsspec options, got {type(options).__name__}")
    return options


def check_key(key: str, what: str = "key") -> str:
    """`key` when it is a relative path that stays under the root, else ValueError saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"storage {what} must be a non-empty string, got {key!r}")
    if key.startswith("/") or "\\" in key or any(ord(c) < 32 for c in key):
        raise ValueError(f"storage {what} {key!r} must be a relative path with '/' and no control characters")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"storage {what} {key!r} has an empty, '.' or '..' part: it must stay under the root")
    return key


def _check_prefix(prefix: str) -> str:
    check_key(prefix.rstrip("/"), "prefix")
    if _GLOB_CHARS & set(prefix):
        raise ValueError(f"storage prefix {prefix!r} has a glob character (* ? [)")
    return prefix.rstrip("/")


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(_TMP_SUFFIX)


class _Sink(Protocol):
    def write(self, data: bytes) -> object: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...


class _LocalSink:
    """A file written under a hidden temporary name in its folder, renamed into place by commit."""

    def __init__(self, path: str) -> None:
        folder, name = os.path.split(path)
        os.makedirs(folder, exist_ok=True)
        self.path = path
        self.tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
        self.file: IO[bytes] = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit or discard

    def write(self, data: bytes) -> object:
        return self.file.write(data)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())  # the rename must not land before the data on a crash
        self.file.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


class _ObjectSink:
    """An fsspec file with autocommit off: nothing is visible until commit (S3: the multipart upload is
    completed), and discard aborts it."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str) -> None:
        # _open, not open: open would also add the file to the file system's (cached, shared) transaction list,
        # which is never emptied outside a transaction
        self.file = fs._open(path, mode="wb", autocommit=False)

    def write(self, data: bytes) -> object:
        return self.file.write(data)

    def commit(self) -> None:
        self.file.close()
        self.file.commit()

    def discard(self) -> None:
        try:
            self.file.discard()
        finally:
            if isinstance(self.file, AbstractBufferedFile):
                self.file.closed = True  # a later close (garbage collection) must not flush and upload anything
            else:
                self.file.close()


class _Guarded:
    """A sink whose calls never overlap and that ends once: a discard waits for a write still running in its
    thread (an upload being cancelled), so that nothing is created after it, and does nothing after a commit."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.lock = threading.Lock()
        self.ended = False

    def write(self, data: bytes) -> object:
        with self.lock:
            return self.sink.write(data)

    def commit(self) -> None:
        with self.lock:
            self.sink.commit()
            self.ended = True

    def discard(self) -> None:
        """Throw the write away; a failure to (an unreachable store) is logged, so that the error that made the
        write fail is the one raised."""
        with self.lock:
            if not self.ended:
                self.ended = True
                try:
                    self.sink.discard()
                except Exception:
                    log.warning("could not discard a failed write", exc_info=True)


class _Limit:
    """Counts the bytes of an upload against its limit."""

    def __init__(self, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        self.count = 0

    def add(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self.max_bytes is not None and self.count > self.max_bytes:
            raise TooLarge(self.max_bytes)


class Storage:
    """Job inputs, batch outputs and manifests under one root: a local folder (default) or an fsspec URL."""

    def __init__(self, root: str, **fs_options: Any) -> None:
        if not root:
            raise ValueError("storage root is empty: give a folder or an fsspec URL (s3://bucket/prefix)")
        self.root = root.rstrip("/") or "/"
        protocol, _ = fsspec.core.split_protocol(self.root)
        if not fs_options and protocol not in (None, "file", "local"):
            fs_options = storage_options_from_env()
        try:
            fs, path = fsspec.core.url_to_fs(self.root, **fs_options)
        except ImportError as exc:  # s3fs not installed, for one
            raise ImportError(f"storage root {self.root!r}: {exc} (s3:// needs: pip install 'crop-ner[s3]')") from exc
        self.local = isinstance(fs, LocalFileSystem)
        self.fs: fsspec.AbstractFileSystem = fs
        self._base = os.path.abspath(path) if self.local else path.rstrip("/")

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def _path(self, key: str) -> str:
        return f"{self._base}/{check_key(key)}"

    def url(self, key: str) -> str:
        """The full URL of a key (for a local root, its absolute path)."""
        if self.local:
            return self._path(key)
        return f"{self.root}/{check_key(key)}"

    # ---------------------------------------------------------------------------------------------- writing

    def _sink(self, key: str) -> _Guarded:
        path = self._path(key)
        return _Guarded(_LocalSink(path) if self.local else _ObjectSink(self.fs, path))

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object atomically: readers never see half of it."""
        if self.local:
            self.write_stream(key, [data])
        else:
            self.fs.pipe_file(self._path(key), data)  # one request (a PUT on S3), which is atomic

    def write_stream(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> int:
        """Write chunks as one object, atomically; `TooLarge` beyond `max_bytes` (nothing is left behind, nor on
        any other exception). Returns the number of bytes written."""
        limit = _Limit(max_bytes)
        sink = self._sink(key)
        try:
            for chunk in chunks:
                limit.add(chunk)
                sink.write(chunk)
            sink.commit()
        except BaseException:
            sink.discard()
            raise
        return limit.count

    async def write_async_stream(self, key: str, chunks: AsyncIterator[bytes], max_bytes: int | None = None) -> int:
        """`write_stream` for an async iterator (an HTTP request body): held about 1 MiB at a time, written in a
        thread so that the event loop never waits on the disk or the network."""
        limit = _Limit(max_bytes)
        sink = self._sink(key)  # no network yet; a local file opens at once
        pending: list[bytes] = []
        size = 0
        try:
            async for chunk in chunks:
                limit.add(chunk)
                pending.append(chunk)
                size += len(chunk)
                if size >= _FLUSH_BYTES:
                    await asyncio.to_thread(sink.write, b"".join(pending))
                    pending, size = [], 0
            if pending:
                await asyncio.to_thread(sink.write, b"".join(pending))
            await asyncio.to_thread(sink.commit)
        except BaseException:
            # in a thread, after any write still running there (a cancelled task leaves its thread running);
            # shielded, so that it completes even if this task is cancelled again meanwhile
            await asyncio.shield(asyncio.to_thread(sink.discard))
            raise
        return limit.count

    # ---------------------------------------------------------------------------------------------- reading

    def read_bytes(self, key: str) -> bytes:
        if self.local:
            with open(self._path(key), "rb") as f:
                return f.read()
        return cast(bytes, self.fs.cat_file(self._path(key)))

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of an object (fewer when it ends before `end`)."""
        if not 0 <= start <= end:
            raise ValueError(f"byte range [{start}, {end}) is not 0 <= start <= end")
        if start == end:
            return b""
        if self.local:
            with open(self._path(key), "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return cast(bytes, self.fs.cat_file(self._path(key), start=start, end=end))

    def open_read(self, key: str) -> BinaryIO:
        """A binary file to stream an object from (the caller closes it)."""
        if self.local:
            return open(self._path(key), "rb")  # noqa: SIM115 - the caller closes it
        return cast(BinaryIO, self.fs.open(self._path(key), "rb"))

    def exists(self, key: str) -> bool:
        if self.local:
            return os.path.isfile(self._path(key))
        path = self._path(key)
        self.fs.invalidate_cache(path)  # another process may have written it since this one last listed
        return bool(self.fs.isfile(path))

    def size(self, key: str) -> int:
        if self.local:
            return os.path.getsize(self._path(key))
        path = self._path(key)
        self.fs.invalidate_cache(path)
        return int(self.fs.size(path))

    def list(self, prefix: str) -> list[str]:
        """Keys under `prefix` (a folder-like prefix: "jobs/1" holds "jobs/1/input", not "jobs/10/input"), sorted;
        temporary files of writes under way are left out."""
        prefix = _check_prefix(prefix)
        top = f"{self._base}/{prefix}"
        if self.local:
            found = [top] if os.path.isfile(top) else [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs]
        else:
            self.fs.invalidate_cache()
            found = [p for p in self.fs.find(top) if p == top or p.startswith(top + "/")]
        keys = (os.path.relpath(path, self._base).replace(os.sep, "/") if self.local
                else str(PurePosixPath(path).relative_to(self._base)) for path in found)
        return sorted(key for key in keys if not _is_temporary(PurePosixPath(key).name))

    def delete(self, key_or_prefix: str) -> None:
        """Remove a key, or every key under a prefix; nothing there is not an error."""
        prefix = _check_prefix(key_or_prefix)
        path = f"{self._base}/{prefix}"
        if self.local:
            _remove_local(path)
            return
        self.fs.invalidate_cache()
        found = [p for p in self.fs.find(path) if p == path or p.startswith(path + "/")]
        if found:
            self.fs.rm(found)  # one bulk request per 1000 keys on S3
        self.fs.invalidate_cache()


def _remove_local(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def storage_from_url(url: str) -> tuple[Storage, str]:
    """A storage and key for the file at `url` (a path, file://..., s3://bucket/dir/name): the storage's root is
    the file's folder. Whether a job may read that URL (`CROP_JOB_INPUT_PREFIXES`) is the caller's check."""
    if not url or url.endswith("/"):
        raise ValueError(f"input URL {url!r} does not name a file")
    protocol, _, rest = url.rpartition("://")
    folder, _, name = rest.rpartition("/")
    if not name or (protocol and "/" not in rest):
        raise ValueError(f"input URL {url!r} does not name a file in a folder or bucket")
    if not folder:
        folder = "/" if rest.startswith("/") else "."
    root = f"{protocol}://{folder}" if protocol else folder
    return Storage(root), check_key(name)
