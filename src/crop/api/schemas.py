"""Request and response bodies of the services (shared with the remote engines that call them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from crop.types import AlignedTranslation, LabeledResult, ProjectionResult, Span

Lang = Field(min_length=2, max_length=12, pattern=r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]+)?$",
             description="ISO 639-1 or -3 code (es, spa); FLORES-style codes (spa_Latn) are accepted too")


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in a decoded JSON value a string holds a lone surrogate (`"\\ud800"` is valid JSON but no text:
    neither UTF-8 nor the engines can carry it), as a message; None when there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"`{where or 'body'}` has a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                    f"{exc.start}: text must be valid Unicode")
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{where}.{k}" if where else str(k)
            found = lone_surrogate(k, f"a key of {where or 'body'}") or lone_surrogate(v, path)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = lone_surrogate(v, f"{where}[{i}]")
            if found:
                return found
    return None


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
    src: str = Lang
    tgt: str = Lang


class TranslateResponse(BaseModel):
    translations: list[str]


class SpanIn(_Strict):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    label: str = Field(min_length=1, max_length=32)


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
    src: str = Lang
    tgt: str = Lang


class LabeledTranslateResponse(BaseModel):
    results: list[LabeledResult]


class AlignedTranslateRequest(_Strict):
    sentences: list[list[str]] = Field(min_length=1, description="tokenized sentences")
    src: str = Lang
    tgt: str = Lang

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


class TagRequest(TextsRequest):
    lang: str = Lang
    mode: Literal["crop", "model"] = Field(
        default="crop", description="crop: translate to English, tag, project back (any language the translator "
        "serves); model: the tagger's own model on the text (the languages it tags)")


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


class TagResponse(BaseModel):
    results: list[TagResult]


class TaggerInfo(BaseModel):
    service: Literal["tagger"] = "tagger"
    engine: str
    model_languages: list[str] = Field(description="languages mode model tags ('*': any)")
    crop_languages: list[str] = Field(description="languages mode crop serves (through the pivot)")
    translator: str
    pivot: str
    ready: bool


# -- projector ----------------------------------------------------------------------------------------------------


class ProjectItem(_Strict):
    id: str = ""
    lang: str = Lang
    tokens: list[str] | None = Field(default=None, description="the raw sentence's tokens (or give `text`)")
    text: str | None = Field(default=None, description="the raw sentence (tokenized by crop when no tokens)")
    source: list[Span] = Field(description="entities of the English sentence")
    source_text: str | None = Field(default=None, description="the English sentence")
    back: LabeledResult | None = Field(default=None, description="the labeled back-translation")
    forward: AlignedTranslation | None = Field(default=None, description="word-aligned forward translation")
    source_is_translation: bool = False

    @model_validator(mode="after")
    def _sentence(self) -> ProjectItem:
        if not self.tokens and not (self.text and self.text.strip()):
            raise ValueError("give the raw sentence as `tokens` or `text`")
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
