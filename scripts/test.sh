#!/usr/bin/env bash
# The test suite: ruff, then pytest (unit and integration tests with the real Apertium and spaCy) against the
# installed crop; its hot modules must be the compiled ones unless CROP_EXPECT_COMPILED=0.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks setup.py
CROP_EXPECT_COMPILED=${CROP_EXPECT_COMPILED:-1} .venv/bin/pytest -q
