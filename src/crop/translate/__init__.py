"""Translation engines behind one protocol (see `crop.translate.base`)."""

from crop.translate.base import AligningTranslator, Translator, UnsupportedPair
from crop.translate.registry import load_translator

__all__ = ["AligningTranslator", "Translator", "UnsupportedPair", "load_translator"]
