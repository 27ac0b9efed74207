"""Build a tagger from a spec string: `spacy`, `spacy:<pipeline name or path>`."""

from __future__ import annotations

from crop.labels import get_scheme
from crop.tag.base import Tagger


def load_tagger(spec: str = "spacy", scheme: str = "conll") -> Tagger:
    engine, _, arg = spec.partition(":")
    if engine == "spacy":
        from crop.tag.spacy import DEFAULT_PIPELINE, SpacyTagger

        return SpacyTagger(arg or DEFAULT_PIPELINE, scheme=get_scheme(scheme))
    raise ValueError(f"unknown tagger engine {engine!r} in {spec!r}; available: spacy")
