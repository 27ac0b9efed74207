"""The translator protocol: plain and labeled translation, batches in, batches out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from crop.types import AlignedTranslation, LabeledItem, LabeledResult


class UnsupportedPair(ValueError):
    """The engine cannot translate this language pair."""


@runtime_checkable
class Translator(Protocol):
    name: str

    def pairs(self) -> list[tuple[str, str]]:
        """Language pairs (ISO 639-1 where known) this engine translates."""
        ...

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]: ...

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]: ...


@runtime_checkable
class AligningTranslator(Translator, Protocol):
    """An engine that can also say which source tokens produced each output word."""

    def translate_aligned(
        self, sentences: Sequence[Sequence[str]], src: str, tgt: str
    ) -> list[AlignedTranslation]: ...
