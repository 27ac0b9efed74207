#!/usr/bin/env bash
# Install crop and its offline engines on Debian: Apertium with the eng-spa, eng-cat and en-gl pairs (apt),
# a virtual environment in .venv with crop, the CPU build of its dependencies and the English spaCy pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need_apt=0
for p in apertium apertium-eng-spa apertium-eng-cat apertium-en-gl; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt=1
done
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || need_apt=1
if [ "$need_apt" = 1 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq apertium apertium-eng-spa apertium-eng-cat apertium-en-gl python3-venv >/dev/null
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[spacy-en,test]'
