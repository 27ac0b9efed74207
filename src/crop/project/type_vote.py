"""Types consistent across a corpus: after a corpus is projected, an entity whose surface form was given another
type by a clear majority of the form's other mentions takes that type ("Junts" tagged MISC once and ORG nine times
elsewhere is an ORG). The English tagger reads each sentence alone, through machine translation, so its type of a
name wavers from sentence to sentence; the corpus as a whole is the better judge.

Two passes over the projected lines, memory bounded by the number of distinct surface forms (a counter of types per
form, per language), never by the number of lines: `TypeVotes.add` each line, then `TypeVotes.apply` to each line.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from crop.io import AtomicFile, dumps
from crop.labels import bio_to_spans, spans_to_bio
from crop.text import normalize


class TypeVoteConfig(BaseModel):
    min_count: int = Field(default=2, ge=1, description="at least this many other mentions of the form")
    margin: float = Field(default=0.6, gt=0.0, le=1.0, description="the winning type's share of the other mentions "
                          "must be at least this, and above the entity's own type's share")


_SPACES = re.compile(r"\s+")


def surface_key(text: str) -> str:
    """The form a name is counted under: normalized (case, accents, apostrophes) and whitespace collapsed, edge
    punctuation trimmed."""
    return _SPACES.sub(" ", normalize(text)).strip(" .,;:!?\"'«»“”()[]")


class TypeVotes:
    """The types each surface form was given in a corpus, and the re-typing they call for."""

    def __init__(self, config: TypeVoteConfig | None = None) -> None:
        self.config = config or TypeVoteConfig()
        self.counts: dict[tuple[str, str], Counter[str]] = {}
        self.retyped = 0
        self.retyped_lines = 0

    def add(self, line: dict[str, Any]) -> None:
        """Count the entities of one projected line (a `ProjectionResult` as a dict); lines without any count
        nothing."""
        lang = line.get("lang") or ""
        for ent in line.get("entities") or []:
            key = surface_key(ent.get("text", ""))
            if key:
                self.counts.setdefault((lang, key), Counter())[ent["label"]] += 1

    def vote(self, lang: str, text: str, label: str) -> str | None:
        """The type the other mentions of this form call for, when it is not `label` and they agree clearly."""
        counts = self.counts.get((lang, surface_key(text)))
        if not counts:
            return None
        others = counts.copy()
        others[label] -= 1  # this mention does not vote for itself
        n = sum(others.values())
        if n < self.config.min_count:
            return None
        best, votes = max(others.items(), key=lambda kv: (kv[1], kv[0] == label))
        if best == label or votes / n < self.config.margin or votes <= others[label]:
            return None
        return best

    def apply(self, line: dict[str, Any]) -> dict[str, Any]:
        """The line with its entities re-typed where the vote says so (the tags follow); each re-typed entity gets
        `retyped_from` (its type before), and the line `retyped` (how many)."""
        lang = line.get("lang") or ""
        ents = line.get("entities") or []
        changed = 0
        for ent in ents:
            new = self.vote(lang, ent.get("text", ""), ent["label"])
            if new is None:
                continue
            ent["retyped_from"] = ent["label"]
            ent["label"] = new
            changed += 1
        if changed:
            tags = line.get("tags") or []
            spans = [(a, b, lab) for a, b, lab in bio_to_spans(tags)]
            by_span = {(e["token_start"], e["token_end"]): e["label"] for e in ents}
            spans = [(a, b, by_span.get((a, b), lab)) for a, b, lab in spans]
            line["tags"] = spans_to_bio(len(tags), spans)
            line["retyped"] = changed
            self.retyped += changed
            self.retyped_lines += 1
        return line

    def summary(self) -> dict[str, int]:
        return {"surface_forms": len(self.counts), "retyped": self.retyped, "retyped_lines": self.retyped_lines}


def type_vote_lines(lines: Iterable[dict[str, Any]], config: TypeVoteConfig | None = None) -> tuple[list, TypeVotes]:
    """Both passes over lines held in memory (small inputs, tests); files go through `type_vote_file`."""
    lines = list(lines)
    votes = TypeVotes(config)
    for line in lines:
        votes.add(line)
    return [votes.apply(line) for line in lines], votes


def _read(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for raw in f:
            if raw.strip():
                yield json.loads(raw)


def type_vote_file(path: str | Path, output: str | Path | None = None,
                   config: TypeVoteConfig | None = None, extra_counts: Iterable[str | Path] = ()) -> TypeVotes:
    """Re-type the entities of a projected JSONL file in two streaming passes, writing to `output` (default: the
    file itself, replaced when done). `extra_counts`: further projected files whose entities vote too (e.g. the
    rest of a corpus) but are not rewritten."""
    path = Path(path)
    votes = TypeVotes(config)
    for p in [path, *map(Path, extra_counts)]:
        for line in _read(p):
            votes.add(line)
    target = Path(output) if output is not None else path
    out = AtomicFile(target)  # the target holds the whole re-typed file or what it held before
    try:
        for line in _read(path):
            out.file.write(dumps(votes.apply(line)) + "\n")
    except BaseException:
        out.discard()
        raise
    out.commit()
    return votes
