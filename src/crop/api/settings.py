"""Service settings from the environment (pydantic-settings), one prefix per service: CROP_TRANSLATOR_...,
CROP_TAGGER_..., CROP_PROJECTOR_... Engine options with the same prefix (CROP_TRANSLATOR_DEVICE, ...) are read by
the engine registries.

A value that would silently turn a protection off (API keys that are only separators, a projector with no
matching method) is an error at start; `load_settings` says which variable is wrong, in one line."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from crop.text import MAX_TOKEN_CHARS


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8100
    # bearer keys accepted on /v1 (comma-separated in the environment); empty: no authentication
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # batching: items of many requests gathered into one engine call (TEI-style queue)
    max_batch_size: int = Field(default=64, ge=1, description="items per engine call; 1 turns batching off")
    max_batch_tokens: int = Field(default=8192, ge=1, description="whitespace tokens per engine call")
    # 0: a batch is whatever queued while the engine was busy (no added latency for a lone client); a few ms
    # help engines with a high cost per call when clients come in bursts to an idle service
    max_wait_ms: float = Field(default=0.0, ge=0, description="how long a batch waits for more items")
    max_queue: int = Field(default=2048, ge=1, description="items waiting; beyond, 429 with Retry-After")
    request_timeout: float = Field(default=60.0, gt=0, description="seconds before a request gets 504")
    max_body_bytes: int = Field(default=512 * 1024, ge=1, description="larger request bodies get 413")
    max_text_chars: int = Field(default=5000, ge=1, description="longest sentence accepted")
    max_token_chars: int = Field(default=MAX_TOKEN_CHARS, ge=1, description="longest token accepted (422 beyond)")
    max_items: int = Field(default=256, ge=1, description="most sentences in one request")
    # engine loading: retried with exponential backoff (first wait, doubling up to the cap) until it succeeds
    load_retry_initial: float = Field(default=1.0, gt=0, description="seconds before the first retry")
    load_retry_max: float = Field(default=30.0, gt=0, description="longest wait between retries")
    # connections (uvicorn): idle keep-alive connections are closed after this; a request head (line and
    # headers) larger than max_header_bytes is refused; beyond max_connections, new requests get 503
    keep_alive_timeout: float = Field(default=5.0, gt=0, description="seconds an idle connection stays open")
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, description="largest request head")
    max_connections: int | None = Field(default=None, ge=1, description="concurrent connections; none: no limit")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            keys = [k.strip() for k in value.split(",") if k.strip()]
            if value.strip() and not keys:  # ",, ," would turn authentication off without a word
                raise ValueError(f"{value!r} holds separators but no key; give comma-separated keys, or leave it "
                                 "unset for no authentication")
            return keys
        return value


class TranslatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CROP_TRANSLATOR_", extra="ignore")

    port: int = 8101
    engine: str = "apertium"


class TaggerSettings(ServiceSettings):
    # populate_by_name: `redis_url=` as a keyword, while the environment gives it as CROP_REDIS_URL (shared)
    model_config = SettingsConfigDict(env_prefix="CROP_TAGGER_", extra="ignore", populate_by_name=True)

    port: int = 8102
    engine: str = "spacy"
    # the translation engine of mode "crop" (a spec: apertium, ctranslate2:/models/x, remote:http://translator:8101)
    translator: str = "apertium"
    pivot: str = "en"
    # the self-trained student of mode "student": a model folder, or a model registry (a folder or an fsspec URL,
    # as `crop train --output` writes it) whose current version is served and hot-reloaded; empty: no student
    student: str = ""
    student_poll: float = Field(default=30.0, ge=0, description="seconds between two looks at the registry's "
                                "`current` (0: never; announcements on Redis still reload)")
    # where trainers announce new versions (channel crop:models): CROP_TAGGER_REDIS_URL, else the CROP_REDIS_URL
    # the jobs and the trainer share; empty: polling only
    redis_url: str = Field(default="", validation_alias=AliasChoices("CROP_TAGGER_REDIS_URL", "CROP_REDIS_URL"),
                           description="Redis of the crop:models announcements")


class ProjectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CROP_PROJECTOR_", extra="ignore")

    port: int = 8103
    policy: str = "strict"
    methods: str = "all"
    langid: bool = True
    max_tokens: int = 128

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: str) -> str:
        method_names(value)
        return value

    def method_names(self) -> tuple[str, ...]:
        return method_names(self.methods)


def method_names(spec: str) -> tuple[str, ...]:
    """The matching cascade of a METHODS value ("all", or names comma-separated in order); ValueError for an
    empty one (nothing would ever match) or an unknown name."""
    from crop.project import ALL_METHODS  # not at import: it loads the projector

    if spec.strip() == "all":
        return ALL_METHODS
    names = tuple(m.strip() for m in spec.split(",") if m.strip())
    if not names:
        raise ValueError(f"{spec!r} names no matching method, so nothing would ever be matched; "
                         f"use 'all' or some of {', '.join(ALL_METHODS)}")
    unknown = [m for m in names if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown matching method(s) {', '.join(map(repr, unknown))}; "
                         f"use 'all' or some of {', '.join(ALL_METHODS)}")
    return names


class SettingsError(ValueError):
    """Settings that cannot be used; the message is one line naming each environment variable at fault."""


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S]) -> S:
    """`cls()` from the environment, or SettingsError naming the variables that are wrong and why."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = cls.model_config.get("env_prefix", "")
        problems = [f"{prefix}{'_'.join(map(str, e['loc'])).upper()}: {_reason(e['msg'])}" for e in exc.errors()]
        raise SettingsError("bad settings: " + "; ".join(problems)) from None


def _reason(msg: str) -> str:
    return " ".join(msg.removeprefix("Value error, ").split())  # one line, whatever the message held
