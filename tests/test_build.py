"""The installed crop is the one the project builds: its hot modules compiled (scripts/setup.sh), unless the
developer chose plain Python (CROP_EXPECT_COMPILED=0, for an editable install)."""

from __future__ import annotations

import importlib
import os

import pytest

HOT = ["crop.text", "crop.labels", "crop.project.matching", "crop.project.projector"]


@pytest.mark.parametrize("name", HOT)
def test_hot_modules_are_compiled(name: str) -> None:
    if os.environ.get("CROP_EXPECT_COMPILED", "0") != "1":
        pytest.skip("plain-Python install (CROP_EXPECT_COMPILED is not 1)")
    module = importlib.import_module(name)
    assert module.__file__ is not None and module.__file__.endswith(".so"), module.__file__
