"""crop.train.registry on a real folder and on a real S3-compatible server (test_storage's moto server): versions
appear whole or not at all, `current` moves by the promotion rule or by hand, a publish killed half-way leaves no
version and is cleaned up later, concurrent publishes get distinct versions; and `crop models list|show|promote`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pytest
import typer
from test_storage import BUCKET, s3_endpoint, s3_options  # noqa: F401 - s3_endpoint is a fixture
from typer.testing import CliRunner

from crop.cli_models import models_app
from crop.storage import Storage
from crop.train.registry import (
    IncompleteVersion,
    ModelMeta,
    ModelRegistry,
    RegistryError,
    VersionNotFound,
    better_or_equal,
    model_folder,
    redis_announcer,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def make_model(folder: Path, seed: str = "a", big: int = 0) -> Path:
    """A model folder shaped like a spaCy pipeline (config.cfg, its own meta.json, a component folder)."""
    (folder / "ner").mkdir(parents=True, exist_ok=True)
    (folder / "config.cfg").write_text(f"[nlp]\nlang = xx\n# {seed}\n")
    (folder / "meta.json").write_text(json.dumps({"lang": "xx", "name": seed}))  # spaCy's, not the registry's
    (folder / "ner" / "model").write_bytes(os.urandom(1000) + seed.encode())
    if big:
        (folder / "ner" / "weights.bin").write_bytes(os.urandom(big))
    return folder


def metrics(**f1: float) -> dict:
    return {"metrics": {lang: {"student": value, "crop": 0.5} for lang, value in f1.items()}}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(params=["local", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> ModelRegistry:
    if request.param == "local":
        return ModelRegistry(Storage(str(tmp_path / "root")), "models/ner")
    endpoint = request.getfixturevalue("s3_endpoint")
    storage = Storage(f"s3://{BUCKET}/{uuid.uuid4().hex}", **s3_options(endpoint))
    return ModelRegistry(storage, "models/ner", cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------------------------ publish and read


def test_publish_list_show_and_local_copy(registry: ModelRegistry, tmp_path: Path) -> None:
    model = make_model(tmp_path / "m1")
    meta = {"kind": "spacy", "config": {"epochs": 3}, "data": [{"path": "es.jsonl", "sentences": 10, "sha256": "ab"}],
            "rounds": [{"round": 1, "dev": {"es": 0.5}}], **metrics(es=0.5, ca=0.4)}
    announced: list[ModelMeta] = []
    first = registry.publish(model, meta, announce=announced.append)
    assert (first.version, first.promoted, first.parent, first.name, first.kind) == ("v0001", True, None, "ner",
                                                                                      "spacy")
    assert announced == [first]
    assert registry.current() == "v0001"
    assert first.files == {rel: len(data) for rel, data in files_of(model).items()}

    stored = json.loads(registry.storage.read_bytes("models/ner/v0001/meta.json"))
    assert "promoted" not in stored  # computed when read, never stored
    assert stored["config"] == {"epochs": 3} and stored["metrics"]["es"]["student"] == 0.5
    assert stored["crop_version"] and stored["data"][0]["sha256"] == "ab"
    # the model's own meta.json (spaCy's) is kept intact under model/
    assert json.loads(registry.storage.read_bytes("models/ner/v0001/model/meta.json")) == {"lang": "xx", "name": "a"}

    second = registry.publish(make_model(tmp_path / "m2", "b"), metrics(es=0.6, ca=0.4))
    assert (second.version, second.parent, second.promoted, second.kind) == ("v0002", "v0001", True, "spacy")
    listed = registry.versions()
    assert [(m.version, m.promoted) for m in listed] == [("v0001", False), ("v0002", True)]
    assert registry.meta("v0001").config == {"epochs": 3} and not registry.meta("v0001").promoted
    assert registry.meta().version == "v0002"

    copy = registry.local_copy("v0001")
    assert copy.name == "model" and files_of(copy) == files_of(model)
    assert files_of(registry.local_copy()) == files_of(tmp_path / "m2")
    if registry.storage.local:
        assert copy == Path(registry.storage.url("models/ner/v0001/model"))  # the folder itself, no copy
    else:
        assert str(copy).startswith(str(tmp_path / "cache"))


def test_a_registry_at_a_location_and_model_folder(tmp_path: Path) -> None:
    location = str(tmp_path / "models" / "ner")
    reg = ModelRegistry.at(location)
    published = reg.publish(make_model(tmp_path / "m"), metrics(es=0.5))
    assert (tmp_path / "models/ner/v0001/meta.json").is_file()
    assert (tmp_path / "models/ner/current").read_text().strip() == published.version == "v0001"
    assert reg.name == "ner"
    assert model_folder(location) == tmp_path / "models/ner/v0001/model"
    assert model_folder(str(tmp_path / "m")) == tmp_path / "m"  # a plain model folder is itself


def test_local_copy_from_an_object_store_is_cached_and_checked(s3_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    storage = Storage(f"s3://{BUCKET}/{uuid.uuid4().hex}", **s3_options(s3_endpoint))
    reg = ModelRegistry(storage, "m", cache_dir=tmp_path / "cache")
    reg.publish(make_model(tmp_path / "m1"), {})
    reg.publish(make_model(tmp_path / "m2", "b"), {})
    copy = reg.local_copy("v0001")
    storage.delete("m/v0001/model/ner/model")  # the cached copy stays usable: versions never change
    assert reg.local_copy("v0001") == copy and files_of(copy) == files_of(tmp_path / "m1")
    storage.delete("m/v0002/model/config.cfg")
    with pytest.raises(RegistryError, match="missing a file"):
        reg.local_copy("v0002")
    (cache,) = (tmp_path / "cache").iterdir()  # one registry: one folder
    assert [p.name for p in cache.iterdir()] == ["v0001"]  # no half copy, no temporary folder left


def test_local_copy_of_an_incomplete_local_version_is_refused(tmp_path: Path) -> None:
    reg = ModelRegistry.at(str(tmp_path / "reg"))
    reg.publish(make_model(tmp_path / "m"), {})
    (tmp_path / "reg/v0001/model/ner/model").unlink()
    with pytest.raises(RegistryError, match="incomplete: ner/model missing"):
        reg.local_copy()


def test_broken_or_missing_meta_json_names_the_path(tmp_path: Path) -> None:
    reg = ModelRegistry.at(str(tmp_path / "reg"))
    reg.publish(make_model(tmp_path / "m"), metrics(es=0.5))
    reg.publish(make_model(tmp_path / "m"), metrics(es=0.5))
    path = tmp_path / "reg/v0001/meta.json"
    path.write_text("{not json")
    with pytest.raises(RegistryError, match=f"{path} is not a valid meta.json"):
        reg.meta("v0001")
    assert [m.version for m in reg.versions()] == ["v0002"]  # left out of the listing
    (tmp_path / "reg/v0002/meta.json").unlink()
    with pytest.raises(IncompleteVersion, match=f"no meta.json at {tmp_path / 'reg/v0002/meta.json'}"):
        reg.meta("v0002")
    with pytest.raises(VersionNotFound, match="no version v0009"):
        reg.meta("v0009")
    with pytest.raises(VersionNotFound, match="not a version name"):
        reg.meta("../etc")
    assert reg.versions() == []


def test_a_failing_announce_does_not_fail_the_publish(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def announce(meta: ModelMeta) -> None:
        raise ConnectionError("redis is down")

    reg = ModelRegistry.at(str(tmp_path / "reg"))
    assert reg.publish(make_model(tmp_path / "m"), {}, announce=announce).version == "v0001"
    assert reg.current() == "v0001" and "could not announce v0001" in caplog.text


def test_a_bad_meta_is_refused_before_a_version_is_claimed(tmp_path: Path) -> None:
    reg = ModelRegistry.at(str(tmp_path / "reg"))
    with pytest.raises(ValueError, match="metrics"):
        reg.publish(make_model(tmp_path / "m"), {"metrics": {"es": {"student": "high"}}})
    assert not (tmp_path / "reg/.claims").exists()
    # an F1 that is not known (None) is left out
    meta = reg.publish(make_model(tmp_path / "m"), {"metrics": {"es": {"student": 0.5, "crop": None}}})
    assert meta.version == "v0001" and reg.meta("v0001").metrics == {"es": {"student": 0.5}}


def test_no_current_version(tmp_path: Path) -> None:
    reg = ModelRegistry.at(str(tmp_path / "reg"))
    assert reg.current() is None and reg.versions() == []
    with pytest.raises(RegistryError, match="has no current version"):
        reg.local_copy()


# ------------------------------------------------------------------------------------------------ promotion


@pytest.mark.parametrize(("new", "promoted"), [
    ({"es": 0.6, "ca": 0.5}, True),            # better on one, equal on the other
    ({"es": 0.5, "ca": 0.5}, True),            # equal everywhere
    ({"es": 0.7, "ca": 0.49}, False),          # worse on one language
    ({"es": 0.9}, False),                      # a language missing counts as worse
    ({"es": 0.5, "ca": 0.5, "gl": 0.1}, True),  # a language the current one lacks does not count
])
def test_auto_promotion(tmp_path: Path, new: dict[str, float], promoted: bool) -> None:
    reg = ModelRegistry.at(str(tmp_path / "reg"))
    assert reg.publish(make_model(tmp_path / "m"), metrics(es=0.5, ca=0.5)).promoted  # no current: it becomes one
    announced: list[ModelMeta] = []
    meta = reg.publish(make_model(tmp_path / "m"), metrics(**new), announce=announced.append)
    assert meta.promoted is promoted
    assert reg.current() == ("v0002" if promoted else "v0001")
    assert [m.promoted for m in announced] == [promoted] and announced[0].version == "v0002"
    assert better_or_equal(metrics(**new)["metrics"], metrics(es=0.5, ca=0.5)["metrics"]) is promoted


def test_promote_always_never_and_explicit(registry: ModelRegistry, tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    assert not registry.publish(model, metrics(es=0.9), promote="never").promoted
    assert registry.current() is None
    assert registry.publish(model, metrics(es=0.1), promote="always").promoted
    assert registry.current() == "v0002"
    assert not registry.publish(model, metrics(es=0.05)).promoted  # auto: worse
    announced: list[ModelMeta] = []
    meta = registry.promote("v0003", announce=announced.append)
    assert meta.promoted and announced == [meta] and registry.current() == "v0003"
    assert [m.version for m in registry.versions() if m.promoted] == ["v0003"]
    with pytest.raises(VersionNotFound, match="no version v0042"):
        registry.promote("v0042")
    assert registry.current() == "v0003"


# ------------------------------------------------------------------------------------------------ failures


class FailingStorage(Storage):
    """A real folder whose second file write fails (a full disk, a dropped connection)."""

    writes = 0

    def write_stream(self, key: str, chunks: Iterable[bytes], max_bytes: int | None = None) -> int:
        FailingStorage.writes += 1
        if FailingStorage.writes == 2:
            raise OSError(28, "No space left on device")
        return super().write_stream(key, chunks, max_bytes)


def test_a_publish_whose_copy_fails_leaves_nothing(tmp_path: Path) -> None:
    reg = ModelRegistry.at(str(tmp_path / "reg"))
    reg.publish(make_model(tmp_path / "m"), metrics(es=0.5))
    failing = ModelRegistry(FailingStorage(str(tmp_path / "reg")), "")
    with pytest.raises(OSError, match="No space left"):
        failing.publish(make_model(tmp_path / "m"), metrics(es=0.9))
    assert not (tmp_path / "reg/v0002").exists()  # removed at once
    assert [m.version for m in reg.versions()] == ["v0001"] and reg.current() == "v0001"
    assert reg.publish(make_model(tmp_path / "m"), metrics(es=0.9)).version == "v0003"  # numbers are not reused


SLOW_PUBLISH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from crop.storage import Storage
    from crop.train.registry import ModelRegistry

    class SlowStorage(Storage):  # a real folder, written slowly so that the test can kill the copy half-way
        def write_stream(self, key, chunks, max_bytes=None):
            def slow():
                for chunk in chunks:
                    time.sleep(0.05)
                    yield chunk
            return super().write_stream(key, slow(), max_bytes)

    reg = ModelRegistry(SlowStorage(sys.argv[1]), "", heartbeat=0.2)
    reg.publish(Path(sys.argv[2]), {"metrics": {"es": {"student": 0.99}}})
    print("finished")
""")


def test_a_publish_killed_mid_way_is_invisible_then_cleaned_up(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = ModelRegistry.at(str(root))
    reg.publish(make_model(tmp_path / "m"), metrics(es=0.5))
    big = make_model(tmp_path / "big", "big", big=40 * 2**20)  # 40 chunks of 1 MiB: about 2 s at 0.05 s each
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PUBLISH, str(root), str(big)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in (root / "v0002").rglob(".weights.bin.*.tmp") if p.stat().st_size > 2**20]:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the publish never started copying the large file"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        out, _ = proc.communicate()
    assert b"finished" not in out

    # nothing visible, current unchanged; the leftover is recognised as incomplete
    assert [m.version for m in reg.versions()] == ["v0001"] and reg.current() == "v0001"
    with pytest.raises(IncompleteVersion):
        reg.meta("v0002")
    with pytest.raises(RegistryError):
        reg.promote("v0002")

    # a publish right after keeps the leftover (it could be a publish still under way elsewhere)
    assert reg.publish(make_model(tmp_path / "m"), metrics(es=0.6)).version == "v0003"
    assert (root / "v0002").exists()
    # once it has not changed for stale_after, the next publish removes it
    patient = ModelRegistry.at(str(root), stale_after=0.5)
    time.sleep(0.6)
    published = patient.publish(make_model(tmp_path / "m"), metrics(es=0.7))
    assert published.version == "v0004" and published.promoted
    assert not (root / "v0002").exists()
    assert [m.version for m in reg.versions()] == ["v0001", "v0003", "v0004"] and reg.current() == "v0004"


def test_cleanup_spares_a_publish_whose_claim_is_alive(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    reg = ModelRegistry.at(str(root), stale_after=0.5)
    reg.publish(make_model(tmp_path / "m"), {})
    # a publish elsewhere, copying one long file: its folder is old but its claim was touched just now
    (root / "v0002/model").mkdir(parents=True)
    (root / "v0002/model/config.cfg").write_text("x")
    (root / ".claims/v0002").mkdir(parents=True)
    old = time.time() - 3600
    for path in [root / "v0002/model/config.cfg", root / "v0002/model", root / "v0002"]:
        os.utime(path, (old, old))
    (root / ".claims/v0002/123-token").touch()
    assert reg.clean_up() == [] and (root / "v0002/model/config.cfg").exists()
    for path in [root / ".claims/v0002/123-token", root / ".claims/v0002"]:
        os.utime(path, (old, old))
    assert reg.clean_up() == ["v0002"] and not (root / "v0002").exists()


def test_leftovers_are_cleaned_only_once_stale(registry: ModelRegistry, tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    registry.publish(model, metrics(es=0.5))
    # what a publish that died leaves: a claim and some model files, no meta.json
    registry.storage.write_bytes("models/ner/.claims/v0002/999-dead", b"")
    registry.storage.write_bytes("models/ner/v0002/model/config.cfg", b"half")
    assert [m.version for m in registry.versions()] == ["v0001"]
    assert registry.publish(model, metrics(es=0.6)).version == "v0003"  # fresh: it may be a publish under way
    assert registry.storage.exists("models/ner/v0002/model/config.cfg")
    time.sleep(2.1)  # object stores date objects to the second
    patient = ModelRegistry(registry.storage, "models/ner", stale_after=2.0)
    assert patient.publish(model, metrics(es=0.7)).version == "v0004"
    assert not registry.storage.exists("models/ner/v0002/model/config.cfg")
    assert [m.version for m in registry.versions()] == ["v0001", "v0003", "v0004"]
    assert registry.current() == "v0004"


# ------------------------------------------------------------------------------------------------ concurrency


CONCURRENT_PUBLISH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from crop.train.registry import ModelRegistry

    start = float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))  # every process publishes at the same instant
    print(ModelRegistry.at(sys.argv[1]).publish(Path(sys.argv[2]), {}).version)
""")


def test_concurrent_publishes_in_processes_get_distinct_versions(tmp_path: Path) -> None:
    root = tmp_path / "reg"
    model = make_model(tmp_path / "m")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    start = time.time() + 4.0  # after every interpreter has started
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_PUBLISH, str(root), str(model), str(start)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    versions = sorted(out.strip() for out, _ in outputs)
    assert versions == ["v0001", "v0002", "v0003", "v0004"]
    reg = ModelRegistry.at(str(root))
    assert [m.version for m in reg.versions()] == versions and reg.current() in versions


def test_concurrent_publishes_in_threads_get_distinct_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    model = make_model(tmp_path / "m")
    barrier = threading.Barrier(4)
    results: list[str] = []
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            barrier.wait()
            results.append(registry.publish(model, {}).version)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 4
    listed = registry.versions()
    assert sorted(m.version for m in listed) == sorted(results)
    assert registry.current() in results and sum(m.promoted for m in listed) == 1


# ------------------------------------------------------------------------------------------------ announcing


def test_redis_announcer_publishes_on_the_channel(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/15"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2)
        client.ping()
    except redis.RedisError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    channel = f"crop:models:test:{uuid.uuid4().hex}"  # pub/sub is server-wide: a channel of this test's own
    pubsub = client.pubsub()
    pubsub.subscribe(channel)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    reg = ModelRegistry.at(str(tmp_path / "models" / "ner"))
    reg.publish(make_model(tmp_path / "m"), {}, announce=redis_announcer(url, reg, channel))
    message = pubsub.get_message(timeout=5)
    pubsub.close()
    client.close()
    assert message is not None and message["type"] == "message"
    assert json.loads(message["data"]) == {"name": "ner", "version": "v0001", "prefix": "",
                                           "location": str(tmp_path / "models" / "ner"), "promoted": True}


# ------------------------------------------------------------------------------------------------ the CLI


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(models_app, name="models")
    return app


def test_cli_list_show_promote(cli: typer.Typer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    location = str(tmp_path / "models" / "ner")
    reg = ModelRegistry.at(location)
    reg.publish(make_model(tmp_path / "m"), {"kind": "spacy", **metrics(es=0.5123, ca=0.4)})
    reg.publish(make_model(tmp_path / "m"), {"kind": "spacy", **metrics(es=0.6, ca=0.3)})  # worse on ca
    runner = CliRunner()

    result = runner.invoke(cli, ["models", "list", "--registry", location])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "v000" in line]
    assert len(lines) == 2 and "*" in lines[0] and "*" not in lines[1]
    assert "0.5123" in lines[0] and "0.4000" in lines[0] and "spacy" in lines[0]
    assert "es F1" in result.output and "ca F1" in result.output

    monkeypatch.setenv("CROP_MODELS", location)  # the default registry
    listed = json.loads(runner.invoke(cli, ["models", "list", "--json"]).output)
    assert [(m["version"], m["promoted"]) for m in listed] == [("v0001", True), ("v0002", False)]

    shown = runner.invoke(cli, ["models", "show"])
    assert shown.exit_code == 0 and json.loads(shown.output)["version"] == "v0001"
    assert json.loads(runner.invoke(cli, ["models", "show", "v0002"]).output)["metrics"]["ca"]["student"] == 0.3

    promoted = runner.invoke(cli, ["models", "promote", "v0002"])
    assert promoted.exit_code == 0 and "v0002 is now the current version" in promoted.output
    assert reg.current() == "v0002"

    unknown = runner.invoke(cli, ["models", "promote", "v0007"])
    assert unknown.exit_code == 1 and "no version v0007" in unknown.output
    assert reg.current() == "v0002"

    (tmp_path / "models/ner/v0001/meta.json").write_text("[]")
    broken = runner.invoke(cli, ["models", "show", "v0001"])
    assert broken.exit_code == 1 and "v0001/meta.json" in broken.output.replace("\n", "")

    missing = runner.invoke(cli, ["models", "list", "--registry", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and "no model registry" in missing.output


def test_cli_registry_on_an_object_store(cli: typer.Typer, s3_endpoint: str, tmp_path: Path,  # noqa: F811
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"s3://{BUCKET}/{uuid.uuid4().hex}/models/ner"
    options = s3_options(s3_endpoint)
    ModelRegistry(Storage(url, **options), "").publish(make_model(tmp_path / "m"), metrics(es=0.5))
    monkeypatch.setenv("CROP_STORAGE_OPTIONS", json.dumps(options))
    result = CliRunner().invoke(cli, ["models", "list", "--json", "--registry", url])
    assert result.exit_code == 0, result.output
    assert [m["version"] for m in json.loads(result.output)] == ["v0001"]
