"""`crop models`: the versions of a trained student in a model registry (the folder `crop train --output` wrote, or
an fsspec URL such as s3://bucket/models/ner).

    crop models list [--json]          versions, created, kind, student F1 per dev language, which one is current
    crop models show [VERSION]         a version's meta.json (default: the current version)
    crop models promote VERSION        make VERSION current, whatever its metrics

The registry is --registry or CROP_MODELS (default models/ner). `promote` announces the new current version on Redis
(channel crop:models) when --redis-url or CROP_REDIS_URL is set, so that taggers reload it at once (they also poll).
Exit status: 0 done, 1 an unknown version, a broken registry or one that cannot be reached.
"""

from __future__ import annotations

import json
import os
from datetime import UTC
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from crop.cli_common import ENGINE_ERROR, fail, warn
from crop.train.registry import ModelMeta, ModelRegistry, RegistryError, redis_announcer

models_app = typer.Typer(help="Versions of a trained student in a model registry (`crop train --output`).",
                         no_args_is_help=True)

DEFAULT_REGISTRY = "models/ner"

Registry = Annotated[str, typer.Option("--registry", envvar="CROP_MODELS",
                                       help="the model registry: a folder or an fsspec URL (s3://bucket/models/ner)")]


def _registry(location: str) -> ModelRegistry:
    if "://" not in location and not os.path.isdir(location):
        fail(f"no model registry at {location} (no such folder): give --registry or set CROP_MODELS", ENGINE_ERROR)
    try:
        return ModelRegistry.at(location)
    except (ImportError, ValueError) as exc:
        fail(f"--registry {location}: {exc}", ENGINE_ERROR)
        raise


def _meta_json(meta: ModelMeta) -> dict:
    return meta.model_dump(mode="json")


@models_app.command("list")
def list_versions(registry: Registry = DEFAULT_REGISTRY,
                  as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of the metadata")] = False,
                  ) -> None:
    """The published versions, oldest first; the current one is marked."""
    reg = _registry(registry)
    try:
        versions = reg.versions()
    except (RegistryError, OSError) as exc:
        fail(str(exc), ENGINE_ERROR)
        return
    if as_json:
        typer.echo(json.dumps([_meta_json(m) for m in versions], indent=2, ensure_ascii=False))
        return
    if not versions:
        warn(f"no published version in {reg.location}")
        return
    langs = sorted({lang for m in versions for lang, scores in m.metrics.items() if "student" in scores})
    table = Table(title=f"{reg.name} ({reg.location})")
    table.add_column("current", justify="center")
    table.add_column("version")
    table.add_column("created (UTC)")
    table.add_column("kind")
    for lang in langs:
        table.add_column(f"{lang} F1", justify="right")
    for m in versions:
        f1 = [m.metrics.get(lang, {}).get("student") for lang in langs]
        created = m.created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row("*" if m.promoted else "", m.version, created, m.kind,
                      *("-" if v is None else f"{v:.4f}" for v in f1))
    Console(soft_wrap=True).print(table)


@models_app.command()
def show(version: Annotated[str | None, typer.Argument(help="the version (default: the current one)")] = None,
         registry: Registry = DEFAULT_REGISTRY) -> None:
    """A version's meta.json (data, config, metrics per language and round, parent, created, crop version)."""
    reg = _registry(registry)
    try:
        meta = reg.meta(version)
    except (RegistryError, OSError) as exc:
        fail(str(exc), ENGINE_ERROR)
        return
    typer.echo(json.dumps(_meta_json(meta), indent=2, ensure_ascii=False))


@models_app.command()
def promote(version: Annotated[str, typer.Argument(help="the version to make current (v0003)")],
            registry: Registry = DEFAULT_REGISTRY,
            redis_url: Annotated[str | None, typer.Option("--redis-url", envvar="CROP_REDIS_URL", show_default=False,
                                                          help="announce the new current version there")] = None,
            ) -> None:
    """Make VERSION the current version (whatever its metrics)."""
    reg = _registry(registry)
    try:
        meta = reg.promote(version)
    except (RegistryError, OSError) as exc:
        fail(str(exc), ENGINE_ERROR)
        return
    typer.echo(f"{meta.version} is now the current version of {reg.location}")
    if redis_url:
        try:
            redis_announcer(redis_url, reg)(meta)
        except Exception as exc:  # current has moved; taggers that poll will see it
            warn(f"could not announce {meta.version} on {redis_url}: {exc}")
