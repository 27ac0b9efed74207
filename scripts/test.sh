#!/usr/bin/env bash
# The test suite: ruff, then pytest (unit and integration tests with the real Apertium and spaCy).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks
.venv/bin/pytest -q
