"""Settings of bulk jobs (API, workers and CLI alike), from CROP_* environment variables.

`job_settings()` reads them once per process. A value that cannot be used raises `SettingsError` naming the
environment variable at fault, in one line."""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from crop.api.settings import SettingsError

ENGINE_KEYS = ("translator", "tagger")


def _env(name: str, field: str) -> AliasChoices:
    """The environment variable `name` (not the prefixed field name) or the field's own name as a keyword."""
    return AliasChoices(name, field)


class JobSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CROP_", extra="ignore", populate_by_name=True)

    # broker, job state and the crop:projected stream
    redis_url: str = "redis://127.0.0.1:6379/0"
    # a folder or an fsspec URL (s3://bucket/prefix): job inputs, batch outputs, manifests
    storage_root: str = "crop-data"
    # the allow-list of engines a job may name: name -> {"translator": spec, "tagger": spec}
    job_engines: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"default": {"translator": "apertium", "tagger": "spacy"}})
    job_batch_lines: int = Field(default=256, ge=1, description="input lines per batch (one task)")
    job_in_flight: int = Field(default=4, ge=1, description="batches of one job queued or running at once")
    job_max_active: int = Field(default=8, ge=1, description="queued+running jobs per API key (429 beyond)")
    job_max_upload_bytes: int = Field(default=2 * 1024**3, ge=1, description="larger uploads get 413")
    job_input_prefixes: list[str] = Field(default_factory=list, description="URLs a job may read its input from")
    visibility_timeout: int = Field(default=3600, ge=1, validation_alias=_env("CROP_JOB_VISIBILITY_TIMEOUT",
                                                                              "visibility_timeout"),
                                    description="seconds before an unacknowledged batch is redelivered; "
                                                "above the longest batch")
    job_sweep_interval: float = Field(default=30.0, gt=0, description="seconds between two sweeps for batches whose "
                                                                      "message the broker lost (crop.jobs.sweeper)")
    job_requeue_after: float = Field(default=120.0, ge=0, description="seconds a released, unfinished batch is "
                                                                      "missing from the broker before it is queued "
                                                                      "again")
    task_retries: int = Field(default=3, ge=0, validation_alias=_env("CROP_JOB_TASK_RETRIES", "task_retries"),
                              description="retries of a batch on transient engine errors")
    stream_maxlen: int = Field(default=100_000, ge=1, validation_alias=_env("CROP_JOB_STREAM_MAXLEN",
                                                                            "stream_maxlen"),
                               description="approximate cap of the crop:projected stream")

    @field_validator("job_engines")
    @classmethod
    def _engine_specs(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        if not value:
            raise ValueError("names no engine, so no job could run; give at least one name -> "
                             '{"translator": SPEC, "tagger": SPEC}')
        for name, specs in value.items():
            missing = [k for k in ENGINE_KEYS if not specs.get(k)]
            if missing:
                raise ValueError(f"engine {name!r} has no {' or '.join(missing)} spec")
        return value


# the environment variable of each field (for messages)
def env_name(field: str) -> str:
    alias = JobSettings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"CROP_{field.upper()}"


def load_job_settings(**overrides: object) -> JobSettings:
    """`JobSettings` from the environment (and `overrides`), or SettingsError naming each variable at fault."""
    try:
        return JobSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = [str(part) for part in e["loc"]]
            field = loc[0] if loc and loc[0] in JobSettings.model_fields else ""
            name = env_name(field) if field else (loc[0] if loc else "?").upper()
            detail = "." + ".".join(loc[1:]) if len(loc) > 1 else ""
            problems.append(f"{name}{detail}: {' '.join(e['msg'].removeprefix('Value error, ').split())}")
        raise SettingsError("bad job settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def job_settings() -> JobSettings:
    """The job settings of this process (read once; `job_settings.cache_clear()` reads them again)."""
    return load_job_settings()
