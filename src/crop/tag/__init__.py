"""NER engines behind one protocol (see `crop.tag.base`)."""

from crop.tag.base import Tagger
from crop.tag.registry import load_tagger

__all__ = ["Tagger", "load_tagger"]
