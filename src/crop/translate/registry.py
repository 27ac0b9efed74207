"""Build a translator from a spec string: `apertium`, `apertium:/path/to/modes`, `<engine>:<model>`."""

from __future__ import annotations

from crop.translate.base import Translator


def load_translator(spec: str = "apertium") -> Translator:
    engine, _, arg = spec.partition(":")
    if engine == "apertium":
        from crop.translate.apertium import ApertiumTranslator

        return ApertiumTranslator(modes_dir=arg or None)
    raise ValueError(f"unknown translation engine {engine!r} in {spec!r}; available: apertium")
