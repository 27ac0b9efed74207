"""Service settings from the environment (pydantic-settings), one prefix per service: CROP_TRANSLATOR_...,
CROP_TAGGER_..., CROP_PROJECTOR_... Engine options with the same prefix (CROP_TRANSLATOR_DEVICE, ...) are read by
the engine registries."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


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
    max_items: int = Field(default=256, ge=1, description="most sentences in one request")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value


class TranslatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CROP_TRANSLATOR_", extra="ignore")

    port: int = 8101
    engine: str = "apertium"


class TaggerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CROP_TAGGER_", extra="ignore")

    port: int = 8102
    engine: str = "spacy"
    # the translation engine of mode "crop" (a spec: apertium, ctranslate2:/models/x, remote:http://translator:8101)
    translator: str = "apertium"
    pivot: str = "en"


class ProjectorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="CROP_PROJECTOR_", extra="ignore")

    port: int = 8103
    policy: str = "strict"
    methods: str = "all"
    langid: bool = True
    max_tokens: int = 128
