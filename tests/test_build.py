"""The installed crop is the one the project builds: its hot modules compiled (scripts/setup.sh, the default
expectation), or plain Python when the developer installed it so and says CROP_EXPECT_COMPILED=0."""

from __future__ import annotations

import importlib
import os

import pytest

HOT = ["crop.text", "crop.labels", "crop.project.matching", "crop.project.projector"]


@pytest.mark.parametrize("name", HOT)
def test_hot_modules_are_built_as_expected(name: str) -> None:
    compiled = os.environ.get("CROP_EXPECT_COMPILED", "1") != "0"
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert module.__file__.endswith(".so") == compiled, module.__file__
