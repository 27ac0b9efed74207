"""Request and response bodies of the services (shared with the remote engines that call them)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from crop.io import lone_surrogate  # one copy: the CLI's readers refuse the same lines
from crop.langcodes import LANG_CODE_PATTERN, normalize_lang
from crop.types import AlignedTranslation, CropSteps, LabeledResult, ProjectionResult, Span

# every language field of every request: normalized before the engines see it (spa, spa_Latn, es-ES, ES -> es)
Lang = Annotated[str, Field(min_length=2, max_length=35, pattern=LANG_CODE_PATTERN,
                            description="language: ISO 639-1 or 639-3 code in any case (es, spa, ES), optionally "
                            "with a BCP-47 region or script (es-ES) or a FLORES script (spa_Latn); crop uses it as "
                            "ISO 639-1 where there is one"),
                 AfterValidator(normalize_lang)]

_BIO_PREFIX = re.compile(r"^[BI]-", re.IGNORECASE)


def check_label(label: str) -> str:
    """An entity type (PER, LOC, ...) as the projector writes it into BIO tags: not empty, not "O", no BIO
    prefix (the projector adds it: "B-PER" would become the tag "B-B-PER"), no whitespace or control characters."""
    if not label:
        raise ValueError("`label` is empty")
    if label.upper() == "O":
        raise ValueError(f"`label` {label!r} is the outside tag, not an entity type")
    if _BIO_PREFIX.match(label):
        raise ValueError(f"`label` {label!r} has a BIO prefix: give the entity type ({label[2:]!r})")
    if not label.isprintable() or any(c.isspace() for c in label):
        raise ValueError(f"`label` {label!r} has whitespace or control characters")
    return label


Label = Annotated[str, Field(min_length=1, max_length=32, description="entity type (PER, LOC, ...), without a BIO "
                             "prefix"), AfterValidator(check_label)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        found = lone_surrogate(data)
        if found:
            raise ValueError(found)
        return data


class TextsRequest(_Strict):
    """One sentence (`text`) or several (`texts`)."""

    text: str | None = Field(default=None, description="one sentence")
    texts: list[str] | None = Field(default=None, description="several sentences, answered in order")

    @model_validator(mode="after")
    def _one_of(self) -> TextsRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of `text` or `texts`")
        if self.texts is not None and not self.texts:
            raise ValueError("`texts` is empty")
        for i, t in enumerate(self.all_texts()):
            if not t.strip():
                raise ValueError("`text` is empty" if self.text is not None else f"`texts[{i}]` is empty")
        return self

    def all_texts(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


# -- translator ---------------------------------------------------------------------------------------------------


class TranslateRequest(TextsRequest):
    src: Lang
    tgt: Lang


class TranslateResponse(BaseModel):
    translations: list[str]


class SpanIn(_Strict):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: Label


class LabeledItemIn(_Strict):
    text: str = Field(min_length=1)
    spans: list[SpanIn] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _inside(self) -> LabeledItemIn:
        for i, s in enumerate(self.spans):
            if not s.start < s.end <= len(self.text):
                raise ValueError(f"span {i} [{s.start}, {s.end}) is empty or outside the text "
                                 f"(length {len(self.text)})")
        return self


class LabeledTranslateRequest(_Strict):
    items: list[LabeledItemIn] = Field(min_length=1)
    src: Lang
    tgt: Lang


class LabeledTranslateResponse(BaseModel):
    results: list[LabeledResult]


class AlignedTranslateRequest(_Strict):
    sentences: list[list[str]] = Field(min_length=1, description="tokenized sentences")
    src: Lang
    tgt: Lang

    @model_validator(mode="after")
    def _not_empty(self) -> AlignedTranslateRequest:
        for i, s in enumerate(self.sentences):
            if not s or not all(t.strip() for t in s):
                raise ValueError(f"sentence {i} is empty or has an empty token")
        return self


class AlignedTranslateResponse(BaseModel):
    results: list[AlignedTranslation]


class TranslatorInfo(BaseModel):
    service: Literal["translator"] = "translator"
    engine: str
    pairs: list[tuple[str, str]]
    aligned: bool = Field(description="whether /v1/translate/aligned is served (word-aligned translation)")
    ready: bool


# -- tagger -------------------------------------------------------------------------------------------------------


TagMode = Literal["crop", "model", "student"]


class TagRequest(TextsRequest):
    lang: Lang
    mode: TagMode | None = Field(
        default=None, description="crop: translate to English, tag, project back (any language the translator "
        "serves); model: the tagger's own model on the text (the languages it tags); student: the self-trained "
        "multilingual student on the text, no translation (any language). Unset: student for a language where the "
        "current student's dev F1 is at least crop's (see /v1/info `student.default_languages`), else crop; with "
        "`explain`, crop")
    explain: bool = Field(
        default=False, description="also return the CROP steps of each sentence (`results[i].steps`): the English "
        "translation, its entities, the labeled back-translation with its markers, and for each English entity "
        "where it was placed and how, or why not. Mode crop only: with mode model or student, or a text in the "
        "pivot language (answered by the model alone), there are no steps and the request is refused (422)")

    @model_validator(mode="after")
    def _explain_needs_crop(self) -> TagRequest:
        if self.explain and self.mode in ("model", "student"):
            raise ValueError(f"`explain` shows the steps of mode crop (translate, tag in English, project back); "
                             f"mode {self.mode} tags the text directly and has none: use mode crop, or leave "
                             "`explain` out")
        return self


class Entity(BaseModel):
    start: int
    end: int
    text: str
    label: str
    score: float
    method: str | None = Field(default=None, description="how the entity was placed (mode crop)")


class TagResult(BaseModel):
    text: str
    entities: list[Entity]
    status: str = Field(default="kept", description="mode crop: kept, discarded (partial projection) or failed")
    reason: str | None = None
    # absent (not null) without `explain`: the answer to a request without it is as it always was
    steps: CropSteps | None = Field(default=None, exclude_if=lambda v: v is None,
                                    description="with `explain`: the CROP steps that produced these entities")


class ModelRef(BaseModel):
    """A model version that answered (mode student: the student's registry name and version)."""

    name: str
    version: str


class TagResponse(BaseModel):
    results: list[TagResult]
    mode: TagMode = Field(default="crop", description="the mode that answered (the request's, or the default for "
                          "its language)")
    model: ModelRef | None = Field(default=None, description="mode student: the student version that tagged every "
                                   "sentence of this request")


class UpstreamInfo(BaseModel):
    """A service this one calls (the tagger's remote translator), as seen from here."""

    url: str
    state: Literal["connecting", "up", "down"] = Field(
        description="connecting: not reached yet since start (retried with backoff); up: answering; down: its "
        "last request failed (calls fail at once with 503 for a few seconds, then it is tried again)")
    since: datetime = Field(description="when it entered this state")
    last_error: str | None = Field(default=None, description="the latest failure, if any")


class StudentInfo(BaseModel):
    """The student the tagger serves in mode student, and where it comes from."""

    source: str = Field(description="the model folder or registry (CROP_TAGGER_STUDENT)")
    loaded: bool = Field(description="a version is loaded (mode student works)")
    name: str | None = None
    version: str | None = Field(default=None, description="the version answering now")
    kind: str | None = Field(default=None, description="spacy or transformers")
    languages: list[str] = Field(default_factory=list, description="languages it was evaluated on (its metrics); "
                                 "mode student also tags any other")
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict, description="dev F1 per language: "
                                                 "student, and crop's when known")
    default_languages: list[str] = Field(default_factory=list, description="languages whose default mode is "
                                         "student (its dev F1 there at least crop's)")
    loaded_at: datetime | None = None
    reloads: int = Field(default=0, description="versions swapped in since start")
    last_error: str | None = Field(default=None, description="the last failed reload (the previous version kept "
                                   "serving)")


class TaggerInfo(BaseModel):
    service: Literal["tagger"] = "tagger"
    engine: str
    model_languages: list[str] = Field(description="languages mode model tags ('*': any)")
    crop_languages: list[str] = Field(description="languages mode crop serves (through the pivot); empty while "
                                      "a remote translator is not connected yet")
    translator: str
    pivot: str
    ready: bool = Field(description="the tagger's model is loaded (mode model works; mode crop also needs the "
                        "translator: see `upstream`)")
    upstream: UpstreamInfo | None = Field(default=None, description="the remote translator of mode crop "
                                          "(CROP_TAGGER_TRANSLATOR=remote:...); null for an in-process one")
    student: StudentInfo | None = Field(default=None, description="the student of mode student "
                                        "(CROP_TAGGER_STUDENT); null when none is configured")


# -- projector ----------------------------------------------------------------------------------------------------


def _source_span(span: Span) -> Span:
    check_label(span.label)
    if span.start >= span.end:
        raise ValueError(f"span [{span.start}, {span.end}) is empty: `start` must be before `end`")
    return span


def _check_source(spans: Sequence[Span], source_text: str | None) -> None:
    """Source spans inside `source_text` (when given) and neither duplicated nor overlapping: a second span over
    the same words would place (and relabel) the same entity twice."""
    for i, s in enumerate(spans):
        if source_text is not None and s.end > len(source_text):
            raise ValueError(f"`source[{i}]` [{s.start}, {s.end}) is outside `source_text` (length "
                             f"{len(source_text)})")
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    for a, b in zip(order, order[1:], strict=False):
        sa, sb = spans[a], spans[b]
        if (sa.start, sa.end) == (sb.start, sb.end):
            raise ValueError(f"`source[{max(a, b)}]` repeats the offsets [{sa.start}, {sa.end}) of "
                             f"`source[{min(a, b)}]`: each entity once")
        if sb.start < sa.end:
            raise ValueError(f"`source[{b}]` [{sb.start}, {sb.end}) overlaps `source[{a}]` [{sa.start}, {sa.end})")


def _check_back(back: LabeledResult, n_source: int, where: str) -> None:
    """The references of a labeled back-translation (and of its alternatives) point at source spans, and its
    spans lie inside its text."""
    for kind, spans in (("spans", back.spans), ("fragments", back.fragments)):
        for i, s in enumerate(spans):
            if s.ref is not None and not 0 <= s.ref < n_source:
                raise ValueError(f"`{where}.{kind}[{i}].ref` is {s.ref}, but `source` has {n_source} spans")
            if not s.start <= s.end <= len(back.text):
                raise ValueError(f"`{where}.{kind}[{i}]` [{s.start}, {s.end}) is outside `{where}.text` (length "
                                 f"{len(back.text)})")
    for i, ref in enumerate(back.lost):
        if not 0 <= ref < n_source:
            raise ValueError(f"`{where}.lost[{i}]` is {ref}, but `source` has {n_source} spans")
    for k, alt in enumerate(back.alternatives):
        _check_back(alt, n_source, f"{where}.alternatives[{k}]")


class ProjectItem(_Strict):
    id: str = ""
    lang: Lang
    tokens: list[str] | None = Field(default=None, description="the raw sentence's tokens (or give `text`)")
    text: str | None = Field(default=None, description="the raw sentence (tokenized by crop when no tokens)")
    source: list[Annotated[Span, AfterValidator(_source_span)]] = Field(
        description="entities of the English sentence (character offsets into `source_text`; labels are entity "
        "types without a BIO prefix; no two spans overlap)")
    source_text: str | None = Field(default=None, description="the English sentence")
    back: LabeledResult | None = Field(default=None, description="the labeled back-translation (`ref`: index in "
                                       "`source`)")
    forward: AlignedTranslation | None = Field(default=None, description="word-aligned forward translation")
    source_is_translation: bool = False

    @model_validator(mode="after")
    def _sentence(self) -> ProjectItem:
        if not self.tokens and not (self.text and self.text.strip()):
            raise ValueError("give the raw sentence as `tokens` or `text`")
        _check_source(self.source, self.source_text)
        if self.back is not None:
            _check_back(self.back, len(self.source), "back")
        return self


class ProjectRequest(_Strict):
    items: list[ProjectItem] = Field(min_length=1)


class ProjectResponse(BaseModel):
    results: list[ProjectionResult]


class ProjectorInfo(BaseModel):
    service: Literal["projector"] = "projector"
    methods: list[str]
    policy: str
    langid: bool
    ready: bool
