"""Label schemes, label maps and BIO <-> span conversion."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class LabelScheme:
    name: str
    labels: tuple[str, ...]
    # a label of another inventory -> a label of this scheme, or None to drop the entity
    maps: dict[str, str | None] = field(default_factory=dict)

    def map(self, label: str) -> str | None:
        """Map a label of any known inventory (CoNLL, WikiANN, OntoNotes, spaCy) into this scheme."""
        key = label.upper().removeprefix("B-").removeprefix("I-")
        if key in self.labels:
            return key
        if key in self.maps:
            return self.maps[key]
        return None


# OntoNotes 5 (spaCy's English pipelines) -> CoNLL-2003. Dates, times, numbers, money, percentages, ordinals,
# quantities are not CoNLL entities; nationalities, religious and political groups (NORP), events, works of art,
# laws, languages and products are MISC; facilities are LOC (CoNLL tags buildings and airports as LOC).
ONTONOTES_TO_CONLL: dict[str, str | None] = {
    "PERSON": "PER",
    "PER": "PER",
    "ORG": "ORG",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
    "NORP": "MISC",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
    "PRODUCT": "MISC",
    "MISC": "MISC",
    "DATE": None,
    "TIME": None,
    "PERCENT": None,
    "MONEY": None,
    "QUANTITY": None,
    "ORDINAL": None,
    "CARDINAL": None,
}

CONLL = LabelScheme("conll", ("PER", "ORG", "LOC", "MISC"), ONTONOTES_TO_CONLL)
WIKIANN = LabelScheme(
    "wikiann",
    ("PER", "ORG", "LOC"),
    {**ONTONOTES_TO_CONLL, "MISC": None, "NORP": None, "EVENT": None, "WORK_OF_ART": None, "LAW": None,
     "LANGUAGE": None, "PRODUCT": None},
)
SCHEMES = {s.name: s for s in (CONLL, WIKIANN)}


def get_scheme(name: str) -> LabelScheme:
    try:
        return SCHEMES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown label scheme {name!r}; known: {', '.join(SCHEMES)}") from None


TokenSpan = tuple[int, int, str]  # token start, token end (exclusive), label


def bio_to_spans(tags: Sequence[str]) -> list[TokenSpan]:
    """Entity spans of a BIO (IOB2) sequence. A stray I- starts an entity, as seqeval does."""
    spans: list[TokenSpan] = []
    start, label = -1, ""
    for i, tag in enumerate(tags):
        if tag == "O" or not tag:
            if start >= 0:
                spans.append((start, i, label))
            start = -1
            continue
        prefix, _, typ = tag.partition("-")
        if prefix not in ("B", "I") or not typ:
            raise ValueError(f"not a BIO tag: {tag!r} at position {i}")
        if prefix == "B" or start < 0 or typ != label:
            if start >= 0:
                spans.append((start, i, label))
            start, label = i, typ
    if start >= 0:
        spans.append((start, len(tags), label))
    return spans


def spans_to_bio(n: int, spans: Iterable[TokenSpan]) -> list[str]:
    """BIO tags over n tokens; spans must not overlap."""
    tags = ["O"] * n
    for start, end, label in spans:
        if not 0 <= start < end <= n:
            raise ValueError(f"span ({start}, {end}) outside 0..{n}")
        if tags[start:end].count("O") != end - start:
            raise ValueError(f"span ({start}, {end}, {label}) overlaps another span")
        tags[start] = "B-" + label
        if end - start > 1:
            tags[start + 1 : end] = ["I-" + label] * (end - start - 1)
    return tags


def valid_bio(tags: list[str]) -> list[str]:
    """The tags as valid BIO (IOB2), in place: an I- after O or after another type begins an entity (B-)."""
    prev = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tags[i] = "B-" + tag[2:]
        prev = tags[i]
    return tags
