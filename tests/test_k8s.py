"""The Kubernetes manifests (k8s/), checked offline: each overlay builds with kustomize (`kustomize`, else
`kubectl kustomize`: kustomize v5, which has components), every object validates strictly against the OpenAPI
schemas of pinned Kubernetes releases (kubernetes-validate, which ships them) and the KEDA ScaledObjects against
the fields KEDA documents; every environment variable a container gets is one its program reads, every probe
path and port is one the app serves, every container meets the production rules (non-root, read-only root
filesystem with emptyDir for what it writes, no privilege escalation, no capabilities, requests and limits,
startup/liveness/readiness probes, pinned images), and the prod overlay holds what the deployment needs (KEDA
autoscalers, GPU limits, PodDisruptionBudgets, NetworkPolicies) while dev holds no GPU request.

Needs kubectl (or kustomize) v5 and `pip install kubernetes-validate` (scripts/setup.sh installs both); a missing
tool fails the test, it never skips."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("dev", "prod")
# the releases the manifests must be valid for: the oldest supported and the newest kubernetes-validate knows
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
NAMESPACE = "crop"
PORTS = {"translator": 8101, "tagger": 8102, "projector": 8103}
APIS = tuple(PORTS)
CELERY = ("worker", "trainer")
CROP_IMAGES = {f"crop-{n}" for n in (*APIS, "trainer")}
# the image each crop workload runs (the worker runs the projector's, as in docker-compose.yml)
IMAGE_OF = {"translator": "crop-translator", "tagger": "crop-tagger", "projector": "crop-projector",
            "worker": "crop-projector", "trainer": "crop-trainer"}
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


# -- tools -----------------------------------------------------------------------------------------------------------


@cache
def kustomize() -> list[str]:
    """The kustomize command: `kustomize build` or `kubectl kustomize`, version 5 or newer (components)."""
    if shutil.which("kustomize"):
        out = subprocess.run(["kustomize", "version"], capture_output=True, text=True, timeout=60).stdout
        cmd = ["kustomize", "build"]
    elif shutil.which("kubectl"):
        proc = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True, text=True,
                              timeout=60)
        out = json.loads(proc.stdout or "{}").get("kustomizeVersion", "")
        cmd = ["kubectl", "kustomize"]
    else:
        pytest.fail("neither kustomize nor kubectl is installed (scripts/setup.sh installs kubectl)")
    m = re.search(r"v?(\d+)\.(\d+)", out)
    assert m and int(m.group(1)) >= 5, f"kustomize {out!r}: components need kustomize v5 (kubectl 1.27 or newer)"
    return cmd


def validator() -> Any:
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed (pip install kubernetes-validate; scripts/setup.sh)")
    return kubernetes_validate


def build_dir(path: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([*kustomize(), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"kustomize {path}: {proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@cache
def build(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(build_dir(K8S / "overlays" / overlay))


@cache
def build_with_vllm() -> tuple[dict[str, Any], ...]:
    """prod plus components/vllm (the README's LLM translator), as an overlay of the user's own would add it."""
    folder = Path(tempfile.mkdtemp(prefix="crop-k8s-"))
    try:
        up = Path(os.path.relpath(K8S, folder))
        (folder / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NAMESPACE,
            "resources": [str(up / "overlays" / "prod")], "components": [str(up / "components" / "vllm")]}))
        return tuple(build_dir(folder))
    finally:
        shutil.rmtree(folder)


BUILDS = [*OVERLAYS, "prod+vllm"]


def objects(name: str) -> tuple[dict[str, Any], ...]:
    return build_with_vllm() if name == "prod+vllm" else build(name)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    """Deployments and StatefulSets by name."""
    return {**of_kind(docs, "Deployment"), **of_kind(docs, "StatefulSet")}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def image_name(image: str) -> str:
    return image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]


# -- builds and schemas ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_into_one_namespace(overlay: str) -> None:
    docs = build(overlay)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for name in (*APIS, *CELERY):
        assert ("Deployment", name) in names, f"{overlay}: no Deployment {name}"
    for name in APIS:
        assert ("Service", name) in names, f"{overlay}: no Service {name}"
    assert ("StatefulSet", "redis") in names and ("Service", "redis") in names
    assert ("Namespace", NAMESPACE) in names
    for d in docs:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']}/{d['metadata']['name']}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", BUILDS)
def test_objects_validate_against_the_kubernetes_schemas(name: str, version: str) -> None:
    kv = validator()
    errors = []
    for d in objects(name):
        if d["apiVersion"].startswith("keda.sh/"):
            continue  # a custom resource: test_scaledobjects_match_kedas_documented_fields
        try:
            kv.validate(d, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {exc}")
        except kv.SchemaNotFoundError:
            errors.append(f"{d['kind']}/{d['metadata']['name']}: {d['apiVersion']} is not in Kubernetes {version}")
    assert not errors, "\n".join(errors)


def test_the_validators_catch_what_they_are_for() -> None:
    """A misspelled field, a number where Kubernetes wants a string, a ScaledObject field KEDA does not have."""
    kv = validator()
    deployment = json.loads(json.dumps(of_kind(build("dev"), "Deployment")["projector"]))
    pod_spec(deployment)["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    config = json.loads(json.dumps(of_kind(build("dev"), "ConfigMap")["crop-jobs"]))
    config["data"]["CROP_JOB_BATCH_LINES"] = 256
    with pytest.raises(kv.ValidationError):
        kv.validate(config, KUBERNETES_VERSIONS[-1], strict=True)
    scaled = json.loads(json.dumps(of_kind(build("prod"), "ScaledObject")["worker"]))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = 1  # KEDA's metadata is strings only
    assert list(jsonschema.Draft202012Validator(SCALED_OBJECT).iter_errors(scaled))
    scaled["spec"]["triggers"][0]["metadata"]["listLength"] = "1"
    scaled["spec"]["minReplicas"] = 1  # the HPA's name, not KEDA's
    assert list(jsonschema.Draft202012Validator(SCALED_OBJECT).iter_errors(scaled))


# KEDA 2.x ScaledObject (keda.sh/v1alpha1): the fields these manifests use, as KEDA documents them
# (keda.sh/docs/2.x: reference/scaledobject-spec, scalers/redis-lists, scalers/prometheus). Strict: a field KEDA
# does not document is an error; trigger metadata is a map of strings.
_STR = {"type": "string"}
_INT_STR = {"type": "string", "pattern": r"^\d+$"}
_NUM_STR = {"type": "string", "pattern": r"^\d+(\.\d+)?$"}
_BOOL_STR = {"type": "string", "enum": ["true", "false"]}
_HPA_POLICY = {"type": "object", "additionalProperties": False, "required": ["type", "value", "periodSeconds"],
               "properties": {"type": {"enum": ["Pods", "Percent"]}, "value": {"type": "integer", "minimum": 1},
                              "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800}}}
_HPA_RULES = {"type": "object", "additionalProperties": False,
              "properties": {"stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
                             "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
                             "policies": {"type": "array", "items": _HPA_POLICY}}}
REDIS_METADATA = {
    "type": "object", "additionalProperties": False, "required": ["listName", "listLength"],
    "oneOf": [{"required": ["address"]}, {"required": ["host", "port"]}, {"required": ["addressFromEnv"]}],
    "properties": {"address": {"type": "string", "pattern": r"^[a-z0-9.-]+:\d+$"}, "host": _STR, "port": _INT_STR,
                   "addressFromEnv": _STR, "usernameFromEnv": _STR, "passwordFromEnv": _STR, "listName": _STR,
                   "listLength": _INT_STR, "activationListLength": _INT_STR, "databaseIndex": _INT_STR,
                   "enableTLS": _BOOL_STR, "unsafeSsl": _BOOL_STR}}
PROMETHEUS_METADATA = {
    "type": "object", "additionalProperties": False, "required": ["serverAddress", "query", "threshold"],
    "properties": {"serverAddress": {"type": "string", "pattern": r"^https?://"}, "query": _STR,
                   "threshold": _NUM_STR, "activationThreshold": _NUM_STR, "namespace": _STR,
                   "customHeaders": _STR, "ignoreNullValues": _BOOL_STR, "unsafeSsl": _BOOL_STR,
                   "queryParameters": _STR}}
SCALED_OBJECT = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"}, "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["scaleTargetRef", "triggers"],
            "properties": {
                "scaleTargetRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                                   "properties": {"apiVersion": _STR, "kind": _STR, "name": _STR,
                                                  "envSourceContainerName": _STR}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object", "additionalProperties": False,
                             "required": ["failureThreshold", "replicas"],
                             "properties": {"failureThreshold": {"type": "integer", "minimum": 1},
                                            "replicas": {"type": "integer", "minimum": 0}}},
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False, "properties": {
                        "name": _STR,
                        "behavior": {"type": "object", "additionalProperties": False,
                                     "properties": {"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES}}}}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["type", "metadata"],
                    "properties": {"type": {"enum": ["redis", "prometheus"]}, "name": _STR,
                                   "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                   "useCachedMetrics": {"type": "boolean"},
                                   "authenticationRef": {"type": "object", "required": ["name"]},
                                   "metadata": {"type": "object"}},
                    "allOf": [
                        {"if": {"properties": {"type": {"const": "redis"}}},
                         "then": {"properties": {"metadata": REDIS_METADATA}}},
                        {"if": {"properties": {"type": {"const": "prometheus"}}},
                         "then": {"properties": {"metadata": PROMETHEUS_METADATA}}}]}}}}}}


def scaled_objects(name: str) -> dict[str, dict[str, Any]]:
    return of_kind(objects(name), "ScaledObject")


@pytest.mark.parametrize("name", ["prod", "prod+vllm"])
def test_scaledobjects_match_kedas_documented_fields(name: str) -> None:
    validator_ = jsonschema.Draft202012Validator(SCALED_OBJECT)
    errors = [f"ScaledObject/{n}: {'/'.join(map(str, e.absolute_path))}: {e.message}"
              for n, so in scaled_objects(name).items() for e in validator_.iter_errors(so)]
    assert not errors, "\n".join(errors)


def test_scaledobjects_scale_what_they_watch() -> None:
    """Each ScaledObject targets a Deployment of the build, with sane bounds and a slow scale-down; the workers
    and the trainer on the Redis lists of their Celery queues in the broker's database, on the Redis Service of
    the namespace; translator and tagger on the crop_queue_depth their /metrics exports, for their own pods."""
    from crop.api.service import ServiceState
    from crop.api.settings import ServiceSettings
    from crop.jobs.dispatch import QUEUE as PROJECTION
    from crop.train.tasks import QUEUE as TRAIN

    docs = build("prod")
    deployments = of_kind(docs, "Deployment")
    broker = of_kind(docs, "ConfigMap")["crop-jobs"]["data"]["CROP_REDIS_URL"]
    m = re.fullmatch(r"redis://([a-z0-9-]+):(\d+)/(\d+)", broker)
    assert m, broker
    service, port, db = m.groups()
    assert service in of_kind(docs, "Service")
    metrics = {metric.name for metric in ServiceState("x", ServiceSettings()).registry.collect()}
    assert "crop_queue_depth" in metrics

    objs = scaled_objects("prod")
    assert set(objs) == {"worker", "trainer", "translator", "tagger"}
    for name, so in objs.items():
        spec = so["spec"]
        target = spec["scaleTargetRef"]["name"]
        assert target == name and target in deployments
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 60, f"{name}: scale-down must be stabilised"
        (trigger,) = spec["triggers"]
        meta = trigger["metadata"]
        if name in CELERY:
            assert trigger["type"] == "redis"
            assert meta["listName"] == {"worker": PROJECTION, "trainer": TRAIN}[name]
            assert meta["address"] == f"{service}.{NAMESPACE}.svc.cluster.local:{port}"
            assert meta["databaseIndex"] == db
        else:
            assert trigger["type"] == "prometheus"
            labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
            q = re.fullmatch(r'sum\((\w+)\{namespace="([^"]+)", app_kubernetes_io_name="([^"]+)"\}\)', meta["query"])
            assert q, meta["query"]
            assert q.group(1) in metrics and q.group(2) == NAMESPACE
            assert q.group(3) == labels["app.kubernetes.io/name"] == name
            # Prometheus finds the pods through their annotations (the usual kubernetes-pods scrape job)
            annotations = deployments[name]["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/scrape"] == "true"
            assert annotations["prometheus.io/port"] == str(PORTS[name])
            assert annotations["prometheus.io/path"] == "/metrics"


# -- what the overlays hold ------------------------------------------------------------------------------------------


def _gpu_limit(container: dict[str, Any]) -> Any:
    return container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


def test_prod_holds_autoscalers_gpus_budgets_and_policies() -> None:
    docs = build("prod")
    deployments = of_kind(docs, "Deployment")
    for name in ("translator", "tagger", "trainer"):
        spec = pod_spec(deployments[name])
        assert _gpu_limit(spec["containers"][0]) == 1, name
        assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"]), name
        assert spec["containers"][0]["image"].endswith(f":{VERSION}-cuda"), "the CUDA image on GPU nodes"
    for name in ("projector", "worker"):
        assert _gpu_limit(pod_spec(deployments[name])["containers"][0]) is None, name
    env = {e["name"]: e.get("value") for e in pod_spec(deployments["translator"])["containers"][0]["env"]}
    assert env["CROP_TRANSLATOR_DEVICE"] == "cuda"
    assert {"worker", "trainer", "translator", "tagger"} <= set(scaled_objects("prod"))
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert set(pdbs) >= {*APIS, *CELERY}
    for name, pdb in pdbs.items():
        assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        if "minAvailable" in pdb["spec"]:
            # a budget the autoscaler's minimum can meet, or a drain would wait forever
            objs = scaled_objects("prod")
            least = objs[name]["spec"]["minReplicaCount"] if name in objs else deployments[name]["spec"]["replicas"]
            assert least > pdb["spec"]["minAvailable"], f"{name}: {least} replicas, minAvailable " \
                                                        f"{pdb['spec']['minAvailable']}"
    assert of_kind(docs, "NetworkPolicy")


def test_dev_is_cpu_only_one_replica_each_and_not_autoscaled() -> None:
    docs = build("dev")
    text = yaml.safe_dump_all(docs)
    assert "nvidia.com/gpu" not in text
    assert not of_kind(docs, "ScaledObject") and not of_kind(docs, "PodDisruptionBudget")
    for name, w in workloads(docs).items():
        assert w["spec"].get("replicas", 1) == 1, name
    env = of_kind(docs, "ConfigMap")
    assert env["crop-translator"]["data"]["CROP_TRANSLATOR_ENGINE"] == "apertium"
    assert env["crop-tagger"]["data"]["CROP_TAGGER_ENGINE"] == "spacy"


def test_vllm_component_points_the_translator_at_its_server() -> None:
    docs = build_with_vllm()
    from crop.translate.openai import parse_model_spec

    vllm = of_kind(docs, "Deployment")["vllm"]
    container = pod_spec(vllm)["containers"][0]
    args = container["args"]
    served = args[args.index("--served-model-name") + 1] if "--served-model-name" in args else \
        args[args.index("--model") + 1]
    env = {e["name"]: e.get("value") for e in pod_spec(of_kind(docs, "Deployment")["translator"])["containers"][0]
           ["env"]}
    engine, _, arg = env["CROP_TRANSLATOR_ENGINE"].partition(":")
    model, base_url = parse_model_spec(arg)
    assert engine == "openai" and model == served
    port = of_kind(docs, "Service")["vllm"]["spec"]["ports"][0]["port"]
    assert base_url == f"http://vllm:{port}/v1"
    assert _gpu_limit(container) == 1


# -- environment variables: each one read by the program it is given to ----------------------------------------------


class _Captured(Exception):
    pass


def _engine_option_vars(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """The CROP_<PREFIX>_<OPTION> variables the engine registries read, by what reads them, found by calling the
    registries with a recorder in place of `options_from_env` (no engine is built)."""
    import crop.tag.registry as tag_registry
    import crop.translate.registry as translate_registry
    from crop.tag import load_tagger
    from crop.translate import load_translator

    seen: set[str] = set()

    def record(options: dict[str, Any], prefix: str, types: dict[str, type]) -> dict[str, Any]:
        seen.update(f"{prefix}_{key.upper()}" for key in types)
        raise _Captured

    monkeypatch.setattr(translate_registry, "options_from_env", record)
    monkeypatch.setattr(tag_registry, "options_from_env", record)
    out: dict[str, set[str]] = {}
    for what, load, specs in (("translator", load_translator, ["transformers:m", "ctranslate2:m"]),
                              ("tagger", load_tagger, ["transformers:m"]),
                              ("remote", load_translator, ["remote:http://x"])):
        seen = set()
        for spec in specs:
            with pytest.raises(_Captured):
                load(spec)
        out[what] = set(seen)
    seen = set()
    with pytest.raises(_Captured):
        load_tagger("remote:http://x")
    assert seen == out["remote"], "the remote translator and tagger read the same options"
    return out


def _settings_vars(cls: type) -> set[str]:
    """The environment variables a pydantic-settings class reads."""
    from pydantic import AliasChoices

    prefix = cls.model_config.get("env_prefix", "")
    names = set()
    for field, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str) and c.startswith("CROP_")}
        else:
            names.add(f"{prefix}{field}".upper())
    return names


def _trainer_consumer_reads(var: str, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Whether `crop trainer`'s stream consumer reads `var` (its value changes the settings it builds)."""
    from crop.train.consumer import ConsumerSettings, settings_from_env

    with monkeypatch.context() as m:
        m.setenv(var, "7")
        return settings_from_env() != ConsumerSettings()


def _log_level_is_read(monkeypatch: pytest.MonkeyPatch) -> bool:
    import logging

    from crop.log import configure

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with monkeypatch.context() as m:
            m.setenv("CROP_LOG_LEVEL", "ERROR")
            configure()
            return root.level == logging.ERROR
    finally:
        root.handlers[:], root.level = handlers, level


def readers(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """The variables each crop workload's program reads: its settings classes, the engines it may load, the
    storage, the log level."""
    from crop.api.settings import ProjectorSettings, TaggerSettings, TranslatorSettings
    from crop.jobs.settings import JobSettings
    from crop.remote_http import API_KEY_ENV
    from crop.storage import OPTIONS_ENV
    from crop.train.registry import CACHE_ENV

    assert _log_level_is_read(monkeypatch)
    options = _engine_option_vars(monkeypatch)
    common = {"CROP_LOG_LEVEL"}
    openai = {"CROP_OPENAI_API_KEY", "CROP_OPENAI_BASE_URL"}  # crop.translate.openai reads them (checked below)
    remote = options["remote"] | {API_KEY_ENV}
    jobs = _settings_vars(JobSettings) | {OPTIONS_ENV}
    return {
        "translator": common | _settings_vars(TranslatorSettings) | options["translator"] | openai,
        "tagger": common | _settings_vars(TaggerSettings) | options["tagger"] | options["translator"] | openai
        | remote | {CACHE_ENV},
        "projector": common | _settings_vars(ProjectorSettings) | jobs,
        "worker": common | jobs | options["translator"] | options["tagger"] | openai | remote,
        "trainer": common | jobs | {CACHE_ENV},
    }


def test_the_openai_engine_reads_its_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from crop.translate.openai import OpenAITranslator

    monkeypatch.setenv("CROP_OPENAI_BASE_URL", "http://vllm:8000/v1")
    monkeypatch.setenv("CROP_OPENAI_API_KEY", "k")
    t = OpenAITranslator("m")
    assert (t.base_url, t.api_key) == ("http://vllm:8000/v1", "k")


def container_env(docs: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str]:
    """Every variable the container gets -> where from: `env` entries and the keys of the ConfigMaps it takes whole
    (envFrom). A ConfigMap or Secret it names must be in the build, or referenced as optional (a Secret)."""
    maps = of_kind(docs, "ConfigMap")
    out = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            assert name in maps, f"envFrom ConfigMap {name} is not in the build"
            out.update({k: f"ConfigMap {name}" for k in maps[name]["data"]})
        else:
            assert source["secretRef"].get("optional") is True, f"{source}: Secrets are created by hand: optional"
    for e in container.get("env", []):
        ref = e.get("valueFrom", {})
        if "secretKeyRef" in ref:
            assert ref["secretKeyRef"].get("optional") is True, f"{e['name']}: a Secret key must be optional"
        if "configMapKeyRef" in ref:
            cm = ref["configMapKeyRef"]
            assert cm["key"] in maps[cm["name"]]["data"], f"{e['name']}: {cm} is not in the build"
        out[e["name"]] = "env"
    return out


@pytest.mark.parametrize("name", BUILDS)
def test_every_variable_is_read_by_the_program_it_is_given_to(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    read = readers(monkeypatch)
    docs = objects(name)
    stray = []
    for workload_name, w in workloads(docs).items():
        for container in pod_spec(w)["containers"]:
            if image_name(container["image"]) not in CROP_IMAGES:
                continue  # redis, vllm: their own programs' variables
            for var, origin in container_env(docs, container).items():
                ok = var in read[workload_name] or (workload_name == "trainer" and var.startswith("CROP_TRAINER_")
                                                    and _trainer_consumer_reads(var, monkeypatch))
                if not ok:
                    stray.append(f"{workload_name}: {var} ({origin})")
    assert not stray, "set but read by nothing:\n" + "\n".join(stray)
    assert not of_kind(docs, "Secret"), "Secrets are never committed: created by hand (README)"


@pytest.mark.parametrize("name", BUILDS)
def test_every_value_parses_as_its_settings_class_reads_it(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings classes accept what the manifests give them (a value the service would refuse at start
    fails here)."""
    from crop.api.settings import ProjectorSettings, TaggerSettings, TranslatorSettings, load_settings
    from crop.jobs.settings import load_job_settings

    docs = objects(name)
    maps = of_kind(docs, "ConfigMap")
    classes = {"translator": [TranslatorSettings], "tagger": [TaggerSettings], "projector": [ProjectorSettings],
               "worker": [], "trainer": []}
    for workload_name, w in of_kind(docs, "Deployment").items():
        if workload_name not in classes:
            continue
        container = pod_spec(w)["containers"][0]
        with monkeypatch.context() as m:
            for k in [k for k in os.environ if k.startswith("CROP_")]:
                m.delenv(k)
            for source in container.get("envFrom", []):
                for k, v in maps.get(source.get("configMapRef", {}).get("name", ""), {}).get("data", {}).items():
                    m.setenv(k, v)
            for e in container.get("env", []):
                if "value" in e:
                    m.setenv(e["name"], e["value"])
                elif "configMapKeyRef" in e.get("valueFrom", {}):
                    ref = e["valueFrom"]["configMapKeyRef"]
                    m.setenv(e["name"], maps[ref["name"]]["data"][ref["key"]])
            for cls in classes[workload_name]:
                load_settings(cls)
            if workload_name in ("projector", "worker", "trainer"):
                settings = load_job_settings()
                assert settings.redis_url.startswith("redis://redis:"), workload_name
                if workload_name != "trainer":
                    specs = settings.job_engines["default"]
                    assert specs == {"translator": f"remote:http://translator:{PORTS['translator']}",
                                     "tagger": f"remote:http://tagger:{PORTS['tagger']}"}


# -- probes and ports ------------------------------------------------------------------------------------------------


@cache
def app_paths(service: str) -> frozenset[str]:
    import importlib

    app = importlib.import_module(f"crop.api.{service}").create_app()
    return frozenset(getattr(r, "path", "") for r in app.routes)


def dockerfile_targets() -> dict[str, str]:
    """The stages of the one Dockerfile (a target per role) -> their text and the text of the stages they are
    built FROM, down to the base image."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    parts = re.split(r"^FROM (\S+) AS (\S+)[ \t]*$", text, flags=re.MULTILINE | re.IGNORECASE)
    own = {name: (base, body) for base, name, body in zip(parts[1::3], parts[2::3], parts[3::3], strict=True)}

    def whole(name: str) -> str:
        base, body = own[name]
        return (whole(base) if base in own else "") + body

    return {name: whole(name) for name in own}


def _image_port(service: str) -> int:
    """The port the service's image serves (the CMD of its Dockerfile target)."""
    cmd = json.loads(re.findall(r"^CMD (.*)$", dockerfile_targets()[service], re.MULTILINE)[-1])
    return int(cmd[cmd.index("--port") + 1])


@pytest.mark.parametrize("name", BUILDS)
def test_images_are_the_dockerfile_targets_compose_builds(name: str) -> None:
    """Every crop image is a target of the Dockerfile, the CUDA tag only on the roles whose target has torch, and
    each image (name and pinned tag) is the one docker-compose.yml (CPU) or docker-compose.gpu.yml (CUDA: the
    same target) builds from that target."""
    targets = dockerfile_targets()
    base = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text(encoding="utf-8"))["services"]
    built = {s["image"]: s["build"]["target"] for s in base.values() if "build" in s}
    built |= {s["image"]: base[n]["build"]["target"] for n, s in gpu.items()}
    seen = set()
    for w in workloads(objects(name)).values():
        for c in pod_spec(w)["containers"]:
            image = c["image"]
            if image_name(image) not in CROP_IMAGES:
                continue
            role = image_name(image).removeprefix("crop-")
            assert role in targets, f"{image}: the Dockerfile has no target {role}"
            if image.endswith("-cuda"):
                assert "--from=venv-torch /opt/venv" in targets[role], f"{image}: a CUDA tag on an image without torch"
            seen.add(image)
            if image in built:
                assert built[image] == role, f"{image}: compose builds it from the target {built[image]}"
            elif not (image.endswith("-cuda") and role == "trainer"):  # compose has no GPU trainer
                pytest.fail(f"{image}: docker-compose builds no such image ({sorted(built)})")
    assert seen


@pytest.mark.parametrize("name", BUILDS)
def test_probes_and_services_reach_what_the_apps_serve(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from crop.api.settings import ProjectorSettings, TaggerSettings, TranslatorSettings

    for k in [k for k in os.environ if k.startswith("CROP_")]:
        monkeypatch.delenv(k)
    docs = objects(name)
    deployments = of_kind(docs, "Deployment")
    services = of_kind(docs, "Service")
    defaults = {"translator": TranslatorSettings().port, "tagger": TaggerSettings().port,
                "projector": ProjectorSettings().port}
    for service in APIS:
        container = pod_spec(deployments[service])["containers"][0]
        assert "command" not in container and "args" not in container, "the image's CMD serves the port"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports == {"http": PORTS[service]} and _image_port(service) == defaults[service] == PORTS[service]
        paths = app_paths(service)
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready"),
                            ("startupProbe", "/health/ready")):
            get = container[probe]["httpGet"]
            assert get["path"] == path and path in paths, f"{service} {probe}: {get}"
            assert get["port"] in ("http", PORTS[service]), f"{service} {probe}: {get}"
        svc = services[service]
        assert svc["spec"]["selector"] == deployments[service]["spec"]["selector"]["matchLabels"]
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(PORTS[service], "http")]
    for worker in CELERY:
        container = pod_spec(deployments[worker])["containers"][0]
        assert container["command"] == ["crop", worker]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            command = " ".join(container[probe]["exec"]["command"])
            # Celery's node name is celery@<host name>, the pod's name in Kubernetes
            assert "celery -A crop.jobs inspect ping" in command and "celery@$HOSTNAME" in command, command
    import crop.jobs

    assert crop.jobs.app.main == "crop"  # the app `-A crop.jobs` names


# -- production rules on every pod -----------------------------------------------------------------------------------


def _compose_grace(service: str) -> int:
    value = str(yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]["stop_grace_period"])
    assert value.endswith("s"), value
    return int(value[:-1])


@pytest.mark.parametrize("name", BUILDS)
def test_every_pod_meets_the_production_rules(name: str) -> None:
    from crop.api.settings import ServiceSettings

    docs = objects(name)
    problems = []
    for wname, w in workloads(docs).items():
        spec = pod_spec(w)
        where = f"{w['kind']}/{wname}"
        pod_sc = spec.get("securityContext", {})
        if not (pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser", 0) > 0):
            problems.append(f"{where}: runAsNonRoot with a non-root runAsUser")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: no service account token (nothing calls the Kubernetes API)")
        grace = spec.get("terminationGracePeriodSeconds")
        if not isinstance(grace, int):
            problems.append(f"{where}: terminationGracePeriodSeconds")
        elif wname in APIS and grace < ServiceSettings().request_timeout + 10:
            problems.append(f"{where}: grace {grace} s does not cover a request (timeout "
                            f"{ServiceSettings().request_timeout:g} s) and the preStop pause")
        elif wname in (*APIS, *CELERY) and grace < _compose_grace(wname):
            problems.append(f"{where}: grace {grace} s is shorter than compose's stop_grace_period")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            cw = f"{where}/{c['name']}"
            image = c["image"]
            if "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
                problems.append(f"{cw}: image {image} is not pinned to a tag")
            if image_name(image) in CROP_IMAGES and image_name(image) != IMAGE_OF.get(wname):
                problems.append(f"{cw}: runs {image}, not {IMAGE_OF.get(wname)}")
            if image_name(image) in CROP_IMAGES and not re.search(rf":{re.escape(VERSION)}(-cuda)?$", image):
                problems.append(f"{cw}: {image} is not the project's version {VERSION}")
            sc = c.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cw}: allowPrivilegeEscalation false")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cw}: readOnlyRootFilesystem")
            if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
                problems.append(f"{cw}: capabilities drop ALL, add none")
            if sc.get("privileged") or sc.get("runAsUser") == 0:
                problems.append(f"{cw}: privileged or root")
            res = c.get("resources", {})
            for kind in ("requests", "limits"):
                missing = {"cpu", "memory"} - set(res.get(kind, {}))
                if missing:
                    problems.append(f"{cw}: no {kind} for {sorted(missing)}")
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{cw}: no {probe}")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            if "/tmp" not in mounts:
                problems.append(f"{cw}: /tmp is not mounted (the root filesystem is read-only)")
            if image_name(image) in CROP_IMAGES and "/home/crop" not in mounts:
                problems.append(f"{cw}: HOME (/home/crop: the model caches, ~/.config) is not mounted")
            for path, m in mounts.items():
                v = volumes.get(m["name"])
                if v is None:
                    if m["name"] not in claims:
                        problems.append(f"{cw}: mount {path}: no volume {m['name']}")
                    continue
                if "emptyDir" in v and not v["emptyDir"].get("sizeLimit"):
                    problems.append(f"{cw}: emptyDir {v['name']} has no sizeLimit (it fills the node's disk)")
                if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in \
                        of_kind(docs, "PersistentVolumeClaim"):
                    problems.append(f"{cw}: claim {v['persistentVolumeClaim']['claimName']} is not in the build")
        if wname in APIS:
            c = spec["containers"][0]
            if c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [None])[0] != "sleep":
                problems.append(f"{where}: a preStop pause, so that the endpoints drop the pod before it stops")
            if c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] < 300:
                problems.append(f"{where}: the startup probe gives a model load less than 5 minutes")
    assert not problems, "\n".join(problems)


def _selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def _reads_redis(docs: tuple[dict[str, Any], ...], container: dict[str, Any]) -> bool:
    return "CROP_REDIS_URL" in container_env(docs, container)


@pytest.mark.parametrize("name", BUILDS)
def test_network_policies_let_in_only_who_needs_it(name: str) -> None:
    """Every pod is under a default deny; Redis takes connections from the pods that have its URL, and those are
    the pods its policy selects; each API takes its port from the ingress namespace."""
    docs = objects(name)
    policies = list(of_kind(docs, "NetworkPolicy").values())
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")]
    assert deny and deny[0]["spec"]["policyTypes"] == ["Ingress"], "a default deny of ingress"
    pods = {n: w["spec"]["template"]["metadata"]["labels"] for n, w in workloads(docs).items()}

    def allowed_from(target: str) -> list[dict[str, Any]]:
        return [peer for p in policies if p["spec"].get("ingress") and _selected(p["spec"]["podSelector"],
                                                                               pods[target])
                for rule in p["spec"]["ingress"] for peer in rule["from"]]

    redis_peers = [peer for peer in allowed_from("redis") if "podSelector" in peer]
    clients = {n for n, labels in pods.items() if any(_selected(peer["podSelector"], labels) for peer in redis_peers)}
    readers_ = {n for n, w in workloads(docs).items() if any(_reads_redis(docs, c) for c in pod_spec(w)["containers"])}
    assert clients == readers_, f"Redis lets in {sorted(clients)}; its clients are {sorted(readers_)}"
    namespaces = [peer["namespaceSelector"]["matchLabels"] for peer in allowed_from("redis")
                  if "namespaceSelector" in peer]
    assert all(ns.get("kubernetes.io/metadata.name") == "keda" for ns in namespaces), namespaces
    for api in APIS:
        peers = allowed_from(api)
        assert {"kubernetes.io/metadata.name": "ingress-nginx"} in [p.get("namespaceSelector", {}).get("matchLabels")
                                                                    for p in peers], f"{api}: no ingress"
        for p in policies:
            if _selected(p["spec"]["podSelector"], pods[api]):
                for rule in p["spec"].get("ingress", []):
                    assert [port["port"] for port in rule["ports"]] == [PORTS[api]], f"{api}: {rule['ports']}"


def test_the_validator_is_pinned() -> None:
    """CI installs the schemas at a pinned release (the extra "test" of pyproject.toml), the one these tests were
    written against."""
    from importlib.metadata import version

    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pinned = re.search(r"kubernetes-validate==(\d+\.\d+\.\d+)", pyproject)
    assert pinned, "pin kubernetes-validate in pyproject.toml"
    assert version("kubernetes-validate") == pinned.group(1)
