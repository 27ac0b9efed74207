"""Projection options of a job (the API's query parameters, the CLI's flags) and the one function that turns
them into a `Projector`, used by `crop project` and the workers alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from crop.api.settings import method_names
from crop.project import ALL_METHODS, Projector, ProjectorConfig
from crop.project.type_vote import TypeVoteConfig
from crop.text import MAX_TOKEN_CHARS

if TYPE_CHECKING:
    from crop.pipeline import CropPipeline
    from crop.tag.base import Tagger
    from crop.translate.base import Translator


class ProjectionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: str = "all"
    policy: Literal["strict", "partial"] = "strict"
    max_tokens: int = Field(default=128, ge=1)
    max_token_chars: int = Field(default=MAX_TOKEN_CHARS, ge=1)
    keep_all_o: bool = False
    langid: bool = True
    align: bool = True
    # types consistent across the job (crop.project.type_vote): once every batch is projected, a last step
    # re-types each entity whose surface form a clear majority of its other mentions in the job typed otherwise
    type_vote: bool = False
    type_vote_min_count: int = Field(default=2, ge=1, description="at least this many other mentions of the form")
    type_vote_margin: float = Field(default=0.6, gt=0.0, le=1.0, description="the winning type's share of them")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: str) -> str:
        try:
            method_names(value)
        except ValueError:  # said as `crop project` always said it: the unknown ones, and the known ones
            unknown = [m.strip() for m in value.split(",") if m.strip() and m.strip() not in ALL_METHODS]
            what = (f"unknown matching method(s) {', '.join(map(repr, unknown))}" if unknown
                    else f"{value!r} names no matching method")
            raise ValueError(f"{what}; known: {', '.join(ALL_METHODS)} (or 'all')") from None
        return value


def type_vote_config(opts: ProjectionOptions) -> TypeVoteConfig:
    return TypeVoteConfig(min_count=opts.type_vote_min_count, margin=opts.type_vote_margin)


def build_projector(opts: ProjectionOptions) -> Projector:
    return Projector(ProjectorConfig(methods=method_names(opts.methods), policy=opts.policy,
                                     drop_all_o=not opts.keep_all_o, langid=opts.langid, max_tokens=opts.max_tokens))


def build_pipeline(opts: ProjectionOptions, translator: Translator, tagger: Tagger | None,
                   batch_size: int | None = None) -> CropPipeline:
    """The pipeline of these options over loaded engines (cheap: build one per batch of a job); `batch_size`
    sentences per engine call (default: the pipeline's)."""
    from crop.pipeline import DEFAULT_BATCH_SIZE, CropPipeline

    pipe = CropPipeline(translator, tagger, build_projector(opts), batch_size=batch_size or DEFAULT_BATCH_SIZE,
                        max_token_chars=opts.max_token_chars)
    pipe.use_alignment = pipe.use_alignment and opts.align
    return pipe
