"""Data types shared by the library, the services and the jobs."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Span(BaseModel):
    """An entity mention: character offsets into a text and, when known, token offsets (end exclusive)."""

    model_config = ConfigDict(frozen=True)

    start: int = Field(ge=0, description="first character")
    end: int = Field(ge=0, description="one past the last character")
    label: str
    text: str = ""
    token_start: int | None = None
    token_end: int | None = None
    score: float = 1.0
    ref: int | None = Field(default=None, description="index of the source span this one was carried from")


class TaggedSentence(BaseModel):
    """A sentence with its tokens (and their character offsets in `text`) and entity spans."""

    id: str = ""
    lang: str
    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    spans: list[Span] = Field(default_factory=list)


class LabeledItem(BaseModel):
    """Input of labeled translation: a sentence and the spans whose markers must survive translation."""

    text: str
    spans: list[Span] = Field(default_factory=list)


class LabeledResult(BaseModel):
    """A labeled translation: the plain translated text, the spans recovered in it (`ref` = index of the
    input span) and the indices of input spans whose markers were lost."""

    text: str
    spans: list[Span] = Field(default_factory=list)
    lost: list[int] = Field(default_factory=list)
    fragments: list[Span] = Field(
        default_factory=list,
        description="further pieces of a recovered span whose markers the engine split (same ref), e.g. "
        "an entity reordered around other words",
    )
    raw: str = Field(default="", description="the engine's output with markers, for debugging")
    alternatives: list[LabeledResult] = Field(
        default_factory=list,
        description="the engine's further hypotheses (n-best, best first), which the projector tries when this "
        "one loses markers or leaves entities unmatched",
    )


class AlignedTranslation(BaseModel):
    """A translation whose words are aligned to the source tokens: `alignment[j]` lists the indices of the
    source tokens that produced target token j (empty when unknown)."""

    text: str
    tokens: list[str]
    alignment: list[list[int]]


class Status(StrEnum):
    kept = "kept"
    discarded = "discarded"
    failed = "failed"  # an engine failed on this sentence; `reason` says how


class ProjectedEntity(BaseModel):
    token_start: int
    token_end: int
    start: int
    end: int
    label: str
    text: str
    method: str
    score: float
    ref: int | None = None


class ProjectionResult(BaseModel):
    """The projection of one sentence: BIO tags over its tokens, the entities with how each was matched,
    the source entities that could not be placed, and the verdict."""

    id: str = ""
    lang: str = ""
    text: str = ""
    tokens: list[str]
    tags: list[str]
    entities: list[ProjectedEntity] = Field(default_factory=list)
    unmatched: list[dict] = Field(default_factory=list)
    status: Status = Status.kept
    reason: str | None = None
    hypothesis: int = Field(default=0, description="which back-translation hypothesis the entities were placed "
                            "through: 0 the best, k the k-th alternative (n-best)")


# -- explain: the CROP steps of one sentence ----------------------------------------------------------------------

EntityOutcome = Literal["placed", "filtered", "marker_lost", "no_match", "overlap"]


class Placement(BaseModel):
    """Where an English entity was placed in the sentence (offsets into the text as sent) and by which method."""

    start: int
    end: int
    text: str
    token_start: int
    token_end: int
    method: str
    score: float


class EntityStep(BaseModel):
    """What became of one English entity: placed (where, how, how sure), or why not."""

    ref: int = Field(description="index of the entity in `english_entities`")
    label: str
    text: str = Field(description="the entity in the English sentence")
    marked: str | None = Field(default=None, description="the words its markers enclosed in the back-translation; "
                               "null when the translation lost its markers")
    outcome: EntityOutcome = Field(description="placed; filtered (placed, but the sentence was discarded: see "
                                   "`reason`); marker_lost (its markers did not survive the back-translation and "
                                   "the methods that need none did not find it); no_match (no method found its "
                                   "words in the sentence); overlap (its words are inside another placed entity)")
    placed: Placement | None = Field(default=None, description="placed or filtered: the target span")
    reason: str | None = Field(default=None, description="why it was not placed (or not kept), in words")


class CropSteps(BaseModel):
    """The CROP steps of one sentence, as they ran: English sentence, English entities, labeled back-translation,
    and what became of each entity. Steps a sentence did not reach are null or empty (see `reason`)."""

    english: str | None = Field(default=None, description="the English sentence that was tagged: the forward "
                                "translation, or the English given with the sentence")
    english_given: bool = Field(default=False, description="the English sentence and its labels came with the "
                                "input (no forward translation, no tagging)")
    english_entities: list[Span] = Field(default_factory=list, description="entities of the English sentence "
                                         "(character offsets into `english`)")
    back: str | None = Field(default=None, description="the back-translation into the sentence's language, without "
                             "markers; null when there was nothing to translate back (no English entity)")
    back_marked: str | None = Field(default=None, description="the back-translation as the engine produced it, "
                                    "with the markers around each entity")
    hypothesis: int = Field(default=0, description="the back-translation hypothesis shown (0: the best, k: the k-th "
                            "alternative, when it placed more entities)")
    lost: list[int] = Field(default_factory=list, description="English entities whose markers the back-translation "
                            "lost (indices in `english_entities`)")
    entities: list[EntityStep] = Field(default_factory=list, description="one per English entity, in order")
    status: Status = Status.kept
    reason: str | None = Field(default=None, description="why the sentence was discarded or failed, if it was")
