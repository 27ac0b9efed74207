"""Baselines the projector is compared with, in the same run."""

from __future__ import annotations

from collections.abc import Sequence
from difflib import SequenceMatcher

from crop.labels import CONLL, spans_to_bio
from crop.text import tokenize
from crop.types import LabeledResult


def exact_lowercase(tokens: Sequence[str], back: LabeledResult | None, lang: str) -> list[str]:
    """The naive matcher: each marked span of the back-translation, lowercased, must occur as a token
    sequence in the lowercased raw sentence (first free occurrence); anything else is lost."""
    if back is None:
        return ["O"] * len(tokens)
    low = [t.lower() for t in tokens]
    taken = [False] * len(tokens)
    spans: list[tuple[int, int, str]] = []
    for span in back.spans:
        needle = [t.lower() for t in tokenize(span.text, lang)[0]]
        n = len(needle)
        for i in range(len(low) - n + 1):
            if low[i:i + n] == needle and not any(taken[i:i + n]):
                spans.append((i, i + n, span.label))
                taken[i:i + n] = [True] * n
                break
    return spans_to_bio(len(tokens), spans)


def easyproject_fuzzy(tokens: Sequence[str], back: LabeledResult | None, lang: str,
                      threshold: float = 0.5) -> list[str]:
    """EasyProject-style matching: each marked entity of the back-translation goes to the raw n-gram with the
    best difflib ratio above `threshold` (n-grams of 1 to len+2 tokens, no overlaps, entities in order)."""
    tags_spans: list[tuple[int, int, str]] = []
    if back is None:
        return ["O"] * len(tokens)
    taken = [False] * len(tokens)
    for span in back.spans:
        words = tokenize(span.text, lang)[0]
        target = " ".join(words).lower()
        n = len(words)
        best, best_score = None, threshold
        for size in range(1, n + 3):
            for i in range(len(tokens) - size + 1):
                if any(taken[i:i + size]):
                    continue
                score = SequenceMatcher(None, target, " ".join(tokens[i:i + size]).lower()).ratio()
                if score > best_score:
                    best, best_score = (i, i + size), score
        if best:
            tags_spans.append((best[0], best[1], span.label))
            for i in range(*best):
                taken[i] = True
    return spans_to_bio(len(tokens), tags_spans)


def direct_spacy(nlp, tokens_list: Sequence[Sequence[str]]) -> list[list[str]]:
    """The direct baseline: the English spaCy model run on the target-language tokens as they are."""
    from spacy.tokens import Doc

    out = []
    for tokens in tokens_list:
        doc = nlp(Doc(nlp.vocab, words=list(tokens)))
        spans = []
        for ent in doc.ents:
            label = CONLL.map(ent.label_)
            if label:
                spans.append((ent.start, ent.end, label))
        out.append(spans_to_bio(len(tokens), spans))
    return out
