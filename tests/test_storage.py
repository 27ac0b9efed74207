"""crop.storage on a local folder and on a real S3-compatible server (moto in server mode, a subprocess on a
loopback port, spoken to by s3fs over HTTP): writes are atomic, a failed or too large write leaves nothing behind,
keys never leave the root."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from servers import free_port

from crop.storage import OPTIONS_ENV, Storage, TooLarge, storage_from_url

BUCKET = "crop-test"
PART = 5 * 2**20  # S3's smallest multipart part: the test storage uploads a part every PART bytes


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server of the test session's own, with a bucket."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with status {proc.returncode}")
            try:
                httpx.get(url, timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            pytest.fail("moto server did not answer in 30 s")
        httpx.put(f"{url}/{BUCKET}", timeout=10.0).raise_for_status()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def s3_options(endpoint: str) -> dict:
    return {"key": "x", "secret": "x", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            "default_block_size": PART, "skip_instance_cache": True}


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return Storage(str(tmp_path / "root"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return Storage(f"s3://{BUCKET}/{uuid.uuid4().hex}", **s3_options(endpoint))


def leftovers(storage: Storage) -> list[str]:
    """Everything under the root, temporary files and pending multipart uploads included."""
    if storage.local:
        root = Path(storage.url("x")).parent
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []
    storage.fs.invalidate_cache()
    prefix = storage.root.removeprefix(f"s3://{BUCKET}/")
    found = [p for p in storage.fs.find(f"{BUCKET}/{prefix}")]
    uploads = storage.fs.list_multipart_uploads(BUCKET)
    return sorted(found + [f"upload:{u['Key']}" for u in uploads if u["Key"].startswith(prefix)])


# ------------------------------------------------------------------------------------------------ reading/writing


def test_write_read_ranges_size_and_url(storage: Storage) -> None:
    storage.write_bytes("jobs/a/input", b"0123456789")
    assert storage.read_bytes("jobs/a/input") == b"0123456789"
    assert storage.exists("jobs/a/input") and not storage.exists("jobs/a/other") and not storage.exists("jobs/a")
    assert storage.size("jobs/a/input") == 10
    assert storage.read_range("jobs/a/input", 2, 5) == b"234"
    assert storage.read_range("jobs/a/input", 8, 100) == b"89"  # past the end: what there is
    assert storage.read_range("jobs/a/input", 4, 4) == b""
    with pytest.raises(ValueError, match="start <= end"):
        storage.read_range("jobs/a/input", 5, 2)
    with storage.open_read("jobs/a/input") as f:
        assert f.read(3) == b"012" and f.read() == b"3456789"
    assert storage.url("jobs/a/input").endswith("/jobs/a/input")
    storage.write_bytes("jobs/a/input", b"new")  # a rewrite replaces it whole
    assert storage.read_bytes("jobs/a/input") == b"new"
    with pytest.raises(FileNotFoundError):
        storage.read_bytes("jobs/missing")


def test_list_is_by_folder_and_delete_takes_a_key_or_a_prefix(storage: Storage) -> None:
    for key in ("jobs/1/input", "jobs/1/batches/000000.jsonl", "jobs/1/batches/000001.jsonl", "jobs/10/input"):
        storage.write_bytes(key, b"x")
    assert storage.list("jobs/1") == ["jobs/1/batches/000000.jsonl", "jobs/1/batches/000001.jsonl", "jobs/1/input"]
    assert storage.list("jobs/1/") == storage.list("jobs/1")
    assert storage.list("jobs/1/input") == ["jobs/1/input"]
    assert storage.list("nothing/here") == []
    storage.delete("jobs/1/batches/000000.jsonl")
    assert storage.list("jobs/1/batches") == ["jobs/1/batches/000001.jsonl"]
    storage.delete("jobs/1/")
    assert storage.list("jobs") == ["jobs/10/input"]  # jobs/10 is not under jobs/1
    storage.delete("jobs/1")  # already gone: not an error
    storage.delete("jobs/10/input")
    assert leftovers(storage) == []


def test_write_stream_returns_its_size_and_streams_in_parts(storage: Storage) -> None:
    seen_during: list[list[str]] = []

    def chunks() -> Iterator[bytes]:
        for i in range(3):
            yield bytes([65 + i]) * PART
            seen_during.append(storage.list("big"))
        yield b"end"

    assert storage.write_stream("big/input", chunks()) == 3 * PART + 3
    assert seen_during == [[], [], []]  # readers never see a half-written object
    with storage.open_read("big/input") as f:
        assert f.read(1) == b"A"
    assert storage.read_range("big/input", 3 * PART - 1, 3 * PART + 3) == b"Cend"
    assert [p.split("/", 1)[-1] if storage.local else p.rsplit("/", 2)[-2:] for p in leftovers(storage)] == [
        "input" if storage.local else ["big", "input"]]


# ------------------------------------------------------------------------------------------------ atomicity


def test_a_failed_stream_leaves_nothing_and_keeps_the_old_object(storage: Storage) -> None:
    storage.write_bytes("jobs/x/out.jsonl", b"old\n")

    def chunks() -> Iterator[bytes]:
        yield b"a" * PART
        yield b"b" * PART  # past a part: on S3 a multipart upload is under way here
        raise RuntimeError("client went away")

    with pytest.raises(RuntimeError, match="client went away"):
        storage.write_stream("jobs/x/out.jsonl", chunks())
    with pytest.raises(RuntimeError):
        storage.write_stream("jobs/x/new.jsonl", chunks())
    assert storage.read_bytes("jobs/x/out.jsonl") == b"old\n"
    assert not storage.exists("jobs/x/new.jsonl")
    assert [p.rsplit("/", 1)[-1] for p in leftovers(storage)] == ["out.jsonl"]  # no temp file, no open upload


def test_too_large_leaves_nothing(storage: Storage) -> None:
    with pytest.raises(TooLarge) as info:
        storage.write_stream("jobs/y/input", iter([b"12345", b"67890", b"1"]), max_bytes=10)
    assert info.value.max_bytes == 10 and "more than 10 bytes" in str(info.value)
    with pytest.raises(TooLarge):
        storage.write_stream("jobs/y/input", iter([b"a" * PART, b"b" * PART]), max_bytes=PART + 1)
    assert leftovers(storage) == []
    assert storage.write_stream("jobs/y/input", iter([b"12345", b"67890"]), max_bytes=10) == 10  # at the limit


# ------------------------------------------------------------------------------------------------ async


async def _agen(chunks: list[bytes], error: BaseException | None = None, gate: asyncio.Event | None = None,
                reached: asyncio.Event | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk
    if reached is not None:
        reached.set()
    if gate is not None:
        await gate.wait()
    if error is not None:
        raise error


def test_async_stream_writes_as_it_goes(storage: Storage) -> None:
    """The upload is written while it comes: before its end, a temporary file (or a multipart upload) holds the
    first megabytes; the object appears only at the end."""

    async def main() -> tuple[list[str], int]:
        gate, reached = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(storage.write_async_stream(
            "up/input", _agen([b"x" * (1 << 20)] * 6, gate=gate, reached=reached), max_bytes=10 << 20))
        await reached.wait()
        await asyncio.sleep(0.2)  # let the last piece's thread finish
        during = await asyncio.to_thread(leftovers, storage)
        gate.set()
        return during, await task

    during, n = asyncio.run(main())
    assert n == 6 << 20
    assert during and not any(p.endswith("up/input") and not p.startswith("upload:") for p in during)
    assert storage.size("up/input") == 6 << 20


async def _cancelling(chunks: list[bytes], at: int) -> AsyncIterator[bytes]:
    """Yields the chunks, and asks for the task reading it to be cancelled as soon as the writer awaits the write
    of chunk `at` in its thread (the thread goes on with it meanwhile)."""
    task = asyncio.current_task()
    assert task is not None
    for i, chunk in enumerate(chunks):
        if i == at:
            asyncio.get_running_loop().call_soon(task.cancel)
        yield chunk
    await asyncio.sleep(3600)


@pytest.mark.parametrize("how", ["too large", "error", "cancelled", "cancelled while a write is awaited"])
def test_async_stream_that_fails_leaves_nothing(storage: Storage, how: str) -> None:
    async def main() -> None:
        chunks = [b"y" * (1 << 20)] * 6
        if how == "too large":
            await storage.write_async_stream("up/input", _agen(chunks), max_bytes=(5 << 20) + 7)
        elif how == "error":
            await storage.write_async_stream("up/input", _agen(chunks, error=ConnectionResetError("gone")))
        elif how == "cancelled while a write is awaited":
            # chunk 4 fills the first part (PART = 5 MiB): its write would start the multipart upload on S3
            await storage.write_async_stream("up/input", _cancelling(chunks, at=4))
        else:  # the client disconnects: the server cancels the handler while it waits for the body
            gate, reached = asyncio.Event(), asyncio.Event()
            task = asyncio.create_task(storage.write_async_stream("up/input", _agen(chunks, gate=gate,
                                                                                    reached=reached)))
            await reached.wait()
            await asyncio.sleep(0.2)
            task.cancel()
            await task

    expected = TooLarge if how == "too large" else ConnectionResetError if how == "error" else asyncio.CancelledError
    with pytest.raises(expected):
        asyncio.run(main())
    assert leftovers(storage) == []


class _GatedProxy:
    """A TCP forwarder to the S3 server that holds the first CreateMultipartUpload request (`POST ...?uploads`)
    until `release` is set: the upload thread is then stuck in the middle of starting its multipart upload."""

    def __init__(self, target: str) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.seen, self.release = threading.Event(), threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if requests and data.startswith(b"POST ") and b"?uploads" in data.split(b"\r\n", 1)[0]:
                    self.seen.set()
                    self.release.wait(60)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.release.set()
        self.server.close()


def test_a_cancelled_upload_aborts_the_multipart_upload_its_thread_was_starting(s3_endpoint: str) -> None:
    """The client goes away while the upload's thread is starting the multipart upload: the discard waits for
    that thread, then aborts the upload (a discard that did not wait would find no upload yet, and leave one)."""
    proxy = _GatedProxy(s3_endpoint)
    storage = Storage(f"s3://{BUCKET}/{uuid.uuid4().hex}", **s3_options(proxy.url))
    never = asyncio.Event()

    async def main() -> None:
        task = asyncio.create_task(storage.write_async_stream("up/input", _agen([b"z" * (1 << 20)] * 6, gate=never)))
        await asyncio.to_thread(proxy.seen.wait, 60)  # the 5th MiB filled a part: the thread is in CreateMultipart
        task.cancel()
        for _ in range(5):  # let the task take the cancellation and start its discard
            await asyncio.sleep(0)
        proxy.release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
        assert proxy.seen.is_set()
        assert leftovers(Storage(storage.root, **s3_options(s3_endpoint))) == []
    finally:
        proxy.close()


# ------------------------------------------------------------------------------------------------ keys


@pytest.mark.parametrize("key", ["../escape", "jobs/../../escape", "/etc/passwd", "jobs//x", "jobs/./x", "", ".",
                                 "jobs\\..\\x", "jobs/x\n"])
def test_keys_that_could_leave_the_root_are_refused(storage: Storage, key: str, tmp_path: Path) -> None:
    for call in (lambda: storage.write_bytes(key, b"x"), lambda: storage.read_bytes(key), lambda: storage.url(key),
                 lambda: storage.exists(key), lambda: storage.read_range(key, 0, 1), lambda: storage.open_read(key)):
        with pytest.raises(ValueError, match="storage key"):
            call()
    with pytest.raises(ValueError, match="storage prefix"):
        storage.delete(key or "/")
    with pytest.raises(ValueError, match="storage prefix"):
        storage.list(key or "/")
    assert leftovers(storage) == [] and not (tmp_path / "escape").exists()


def test_glob_characters_are_refused_where_they_would_be_expanded(storage: Storage) -> None:
    storage.write_bytes("jobs/a/input", b"x")
    with pytest.raises(ValueError, match="glob"):
        storage.delete("jobs/*")
    assert storage.list("jobs") == ["jobs/a/input"]


# ------------------------------------------------------------------------------------------------ configuration


def test_s3_options_from_the_environment(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPTIONS_ENV, json.dumps(s3_options(s3_endpoint)))
    root = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    Storage(root).write_bytes("jobs/e/input", b"from env")
    assert Storage(root, **s3_options(s3_endpoint)).read_bytes("jobs/e/input") == b"from env"
    storage, key = storage_from_url(f"{root}/jobs/e/input")
    assert (storage.root, key) == (f"{root}/jobs/e", "input")
    assert storage.read_bytes(key) == b"from env"


def test_s3_endpoint_from_the_standard_aws_variables(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No CROP_STORAGE_OPTIONS: s3fs (botocore) reads AWS_ENDPOINT_URL and the credentials itself."""
    monkeypatch.delenv(OPTIONS_ENV, raising=False)
    for name, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    root = f"s3://{BUCKET}/{uuid.uuid4().hex}"
    storage = Storage(root)
    storage.fs.clear_instance_cache()  # a client made before this test would not have read these variables
    storage = Storage(root)
    storage.write_bytes("jobs/aws/input", b"standard variables")
    assert Storage(root, **s3_options(s3_endpoint)).read_bytes("jobs/aws/input") == b"standard variables"


def test_bad_storage_options_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPTIONS_ENV, "{not json")
    with pytest.raises(ValueError, match=f"{OPTIONS_ENV} is not valid JSON"):
        Storage(f"s3://{BUCKET}/x")
    monkeypatch.setenv(OPTIONS_ENV, "[1]")
    with pytest.raises(ValueError, match=f"{OPTIONS_ENV} must be a JSON object"):
        Storage(f"s3://{BUCKET}/x")


def test_storage_from_url_on_local_paths(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_bytes(b"Hola.\n")
    for url in (str(tmp_path / "corpus.txt"), f"file://{tmp_path}/corpus.txt"):
        storage, key = storage_from_url(url)
        assert key == "corpus.txt" and storage.read_bytes(key) == b"Hola.\n"
    for bad in ("", f"{tmp_path}/", "s3://bucket-only"):
        with pytest.raises(ValueError, match="does not name a file"):
            storage_from_url(bad)


def test_a_relative_local_root_is_a_folder_of_the_working_directory(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = Storage("crop-data")
    storage.write_bytes("jobs/r/input", b"x")
    assert (tmp_path / "crop-data" / "jobs" / "r" / "input").read_bytes() == b"x"
    assert storage.url("jobs/r/input") == os.path.join(tmp_path, "crop-data", "jobs", "r", "input")
