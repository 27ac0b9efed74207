# syntax=docker/dockerfile:1
# crop's images, one per role, from this one Dockerfile: `--target` picks the role. Build from the repository root
# (the build context is the whole repository, filtered by .dockerignore):
#   docker build --target translator -t crop-translator:0.1.0 .   port 8101, crop serve translator
#   docker build --target tagger     -t crop-tagger:0.1.0 .       port 8102, crop serve tagger
#   docker build --target projector  -t crop-projector:0.1.0 .    port 8103, crop serve projector (and `crop worker`)
#   docker build --target trainer    -t crop-trainer:0.1.0 .      no port, crop trainer
# The CUDA variant of the torch roles (translator, tagger, trainer) is the same target with a CUDA build of torch,
# tagged <version>-cuda. Its wheels bring the CUDA libraries (the nvidia-* packages), so the base stays Python's
# slim image; the host needs only the NVIDIA driver and Container Toolkit (`docker run --gpus all ...`):
#   docker build --target translator --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 \
#     -t crop-translator:0.1.0-cuda .
# (cu124 serves torch up to 2.6 and runs on drivers from 550; cu126 / cu128 serve newer torch on newer drivers.)
#
# The stages, each written once; BuildKit builds only those a target needs, and the targets share them:
#   build-env    a compiler, a virtual environment with a current pip
#   wheel        crop's wheel, its hot modules compiled with mypyc (once for every role)
#   venv-slim    crop + SLIM_EXTRAS, no torch                                  -> projector (and the workers)
#   venv-torch   torch from TORCH_INDEX, then crop + TORCH_EXTRAS               -> translator, tagger, trainer
#   runtime      Python's slim image, the non-root user, its folders, the environment (no compiler)
#   apertium     runtime + Apertium and its English pairs + venv-torch          -> translator, tagger
#   translator, tagger, projector, trainer: the port, the health check and the command of each role
# Why not one image for every role: the projector and the workers need neither torch (about 0.7 GB on CPU, 5 GB
# with CUDA) nor Apertium, and they are the pods that scale out most. Why one torch venv for three roles: the
# extras only one of them needs (the spaCy English model, httpx, s3fs) are small next to torch, and torch (CUDA
# or CPU) is then downloaded and installed once for all three.
# See services/<role>/README.md for each role's environment variables.

# ---- build-env: compilers for crop (mypyc) and for the sdists among the dependencies (seqeval has only one);
# only /opt/venv goes on to the runtime images
FROM python:3.11-slim-bookworm AS build-env

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# a current pip: it builds every sdist the PEP 517 way, in isolation, whatever setuptools the venv ends up with
# (torch brings a new one; old pips then fall back to `setup.py egg_info`, which fails there)
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
 && pip install --no-cache-dir --upgrade pip

# ---- wheel: crop built once, compiled. The check makes sure the wheel holds the compiled modules (setup.py falls
# back to plain Python silently when it cannot compile); the projector's hot modules are about 1.35x faster so.
FROM build-env AS wheel

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -c "import glob, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/crop_ner-*.whl')[0]).namelist(); mods = ['crop/text', 'crop/labels', 'crop/project/matching', 'crop/project/projector']; bad = [m for m in mods if not any(n.startswith(m + '.') and n.endswith('.so') for n in names)]; assert not bad, f'not compiled with mypyc: {bad}'"

# ---- venv-slim: crop without torch. s3: a job storage on S3 or MinIO (CROP_STORAGE_ROOT=s3://...), which the
# projector and the workers share with the trainer; SLIM_EXTRAS= leaves it out. The project itself is pinned by
# its wheel; its dependencies by pyproject.toml.
FROM build-env AS venv-slim

COPY --from=wheel /wheels /wheels
ARG SLIM_EXTRAS=s3
# hadolint ignore=DL3013
RUN set -- /wheels/crop_ner-*.whl \
 && pip install --no-cache-dir "$1${SLIM_EXTRAS:+[${SLIM_EXTRAS}]}"

# ---- venv-torch: torch first, from the index that decides its build: CPU wheels by default (small), or a CUDA
# index (https://download.pytorch.org/whl/cu124, .../cu126, .../cu128); TORCH_VERSION pins it (empty: the newest
# there). It comes before crop's wheel, so that a change to crop does not download torch again.
FROM build-env AS venv-torch

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "torch${TORCH_VERSION:+==${TORCH_VERSION}}" --index-url "${TORCH_INDEX}"

# extras, so that the engines are chosen at run time: spacy-en (the English pipeline, the tagger's default
# engine), neural (transformers and CTranslate2 translators, the transformers tagger and student; torch is already
# there, so pip keeps the build chosen above), openai (the OpenAI-compatible translator's client), s3 (the job
# storage on an object store, for the trainer)
COPY --from=wheel /wheels /wheels
ARG TORCH_EXTRAS=spacy-en,neural,openai,s3
# hadolint ignore=DL3013
RUN set -- /wheels/crop_ner-*.whl \
 && pip install --no-cache-dir "$1${TORCH_EXTRAS:+[${TORCH_EXTRAS}]}"

# ---- runtime: what every role's image has: the non-root user and the folders it writes, the environment.
# /data/jobs: the job storage (compose mounts a volume there, which takes this owner when it is created);
# /models: the neural engines' models, mounted read-only; HF_HOME: the hub cache.
FROM python:3.11-slim-bookworm AS runtime

RUN useradd --create-home --uid 10001 --user-group crop \
 && mkdir -p /data/jobs /models /home/crop/.cache/huggingface \
 && chown -R crop:crop /data/jobs /home/crop/.cache

# LD_LIBRARY_PATH: CTranslate2 on a GPU loads cuBLAS and cuDNN by name; a CUDA build of torch brings them as the
# nvidia-* packages in these folders (they do not exist in the CPU build, where the variable does nothing)
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/home/crop/.cache/huggingface \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia/cublas/lib:/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib
WORKDIR /home/crop

# ---- apertium: the translator's default engine, and the tagger's translator in mode "crop" when it runs alone
# (in compose and on Kubernetes it translates through the translator service instead), with the torch venv.
# transfuse is only a Recommends of apertium, but without it Apertium's HTML mode leaves inline tags where they
# were instead of moving them with their words, and labeled translation needs them to travel.
FROM runtime AS apertium

# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      apertium apertium-eng-spa apertium-eng-cat apertium-en-gl transfuse \
 && rm -rf /var/lib/apt/lists/*
COPY --from=venv-torch /opt/venv /opt/venv

# ---- the roles. USER is numeric, so that Kubernetes can check runAsNonRoot. The HTTP health checks: ready =
# engine loaded (503 before, which makes urlopen raise and python exit 1).

# translator: plain and labeled translation over HTTP (CROP steps 1 and 3); neural models may take a while to
# load, hence the start period
FROM apertium AS translator
USER 10001:10001
EXPOSE 8101
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8101/health/ready', timeout=4)"]
CMD ["crop", "serve", "translator", "--host", "0.0.0.0", "--port", "8101"]

# tagger: named entities over HTTP (CROP step 2), or the whole projection in mode "crop"
FROM apertium AS tagger
USER 10001:10001
EXPOSE 8102
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8102/health/ready', timeout=4)"]
CMD ["crop", "serve", "tagger", "--host", "0.0.0.0", "--port", "8102"]

# projector: entity matching and filtering (CROP steps 4-5) and the jobs API; CPU only, no model. The bulk-job
# workers run this image too, with the command `crop worker`.
FROM runtime AS projector
COPY --from=venv-slim /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8103
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8103/health/ready', timeout=4)"]
CMD ["crop", "serve", "projector", "--host", "0.0.0.0", "--port", "8103"]

# trainer: a Celery worker on queue "train" that reads the stream crop:projected into the training pool, trains
# students (spaCy on CPU; transformers on a GPU) and publishes them in the registry of the job storage. No port.
FROM runtime AS trainer
COPY --from=venv-torch /opt/venv /opt/venv
ENV CROP_STORAGE_ROOT=/data/jobs
USER 10001:10001
# alive = the worker answers a ping through the broker
HEALTHCHECK --interval=30s --timeout=20s --start-period=60s --retries=3 \
  CMD ["sh", "-c", "celery -A crop.jobs inspect ping --timeout 10 -d celery@$HOSTNAME"]
# SIGTERM: a warm shutdown (the consumer finishes the batch in hand; a training cut short is delivered again)
STOPSIGNAL SIGTERM
CMD ["crop", "trainer"]
