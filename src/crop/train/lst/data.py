"""Training examples for LST fine-tuning, streamed from the JSONL of `crop lst prepare`.

Two views of the same corpus feed the two objectives: `plain` (the sentence pair as it is) and `slot` (the pair
with `__SLOT{i}__` around aligned phrases; only records that got slots). Each view is an endless, seeded stream:
epoch after epoch, shuffled within a buffer, so a corpus larger than memory trains with a bounded footprint, and
the same seed gives the same batches (which is what lets a resumed run continue where it stopped).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crop.io import InputError, iter_jsonl

View = Literal["plain", "slot"]
Direction = Literal["forward", "backward", "both"]


@dataclass(frozen=True)
class Example:
    source: str
    target: str
    src_lang: str
    tgt_lang: str


@dataclass
class Batch:
    """Encoded examples of one objective: source and target id sequences (unpadded)."""

    view: View
    sources: list[list[int]]
    targets: list[list[int]]

    @property
    def target_tokens(self) -> int:
        return sum(len(t) for t in self.targets)


def _record_examples(rec: object, view: View, direction: Direction, where: str) -> list[Example]:
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object from `crop lst prepare`")
    try:
        src_lang, tgt_lang = rec["src_lang"], rec["tgt_lang"]
        if view == "plain":
            src, tgt = rec["src"], rec["tgt"]
        else:
            if not rec.get("phrases"):
                return []
            src, tgt = rec["src_marked"], rec["tgt_marked"]
    except KeyError as exc:
        raise InputError(f"{where}: missing key {exc} (expected the output of `crop lst prepare`)") from exc
    if not (isinstance(src, str) and isinstance(tgt, str)) or not src.strip() or not tgt.strip():
        return []
    out = []
    if direction in ("forward", "both"):
        out.append(Example(src, tgt, src_lang, tgt_lang))
    if direction in ("backward", "both"):
        out.append(Example(tgt, src, tgt_lang, src_lang))
    return out


def read_examples(paths: Sequence[Path], view: View, direction: Direction) -> Iterator[Example]:
    """One pass over the corpus, in file order."""
    for path in paths:
        for lineno, rec in iter_jsonl(path):
            yield from _record_examples(rec, view, direction, f"{path}:{lineno}")


def example_stream(paths: Sequence[Path], view: View, direction: Direction, seed: int,
                   buffer: int = 10_000) -> Iterator[Example]:
    """Endless shuffled stream: each epoch reads the files again and shuffles within a buffer of `buffer`
    examples (seeded by seed, view and epoch)."""
    epoch = 0
    while True:
        rng = random.Random(f"{seed}:{view}:{epoch}")
        pool: list[Example] = []
        seen = False
        for ex in read_examples(paths, view, direction):
            seen = True
            pool.append(ex)
            if len(pool) >= buffer:
                rng.shuffle(pool)
                yield from pool[buffer // 2:]
                del pool[buffer // 2:]
        rng.shuffle(pool)
        yield from pool
        if not seen:
            raise InputError(f"no {view} training pairs in {', '.join(map(str, paths))}")
        epoch += 1


class BatchStream:
    """Batches of one view: up to `batch_size` examples and `max_tokens` padded pieces (the longer of source
    and target, times the batch's rows). Examples longer than `max_length` pieces are skipped and counted.
    `consumed` counts the batches handed out, so that a resumed run can skip exactly as many."""

    def __init__(self, examples: Iterator[Example], encode: Callable[[Example], tuple[list[int], list[int]]],
                 view: View, batch_size: int, max_tokens: int, max_length: int) -> None:
        self.examples = examples
        self.encode = encode
        self.view = view
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.max_length = max_length
        self.consumed = 0
        self.too_long = 0
        self._held: tuple[list[int], list[int]] | None = None

    def __next__(self) -> Batch:
        sources: list[list[int]] = []
        targets: list[list[int]] = []
        width = 0
        while len(sources) < self.batch_size:
            if self._held is not None:
                pair, self._held = self._held, None
            else:
                pair = self.encode(next(self.examples))
                if max(len(pair[0]), len(pair[1])) > self.max_length:
                    self.too_long += 1
                    continue
            longest = max(width, len(pair[0]), len(pair[1]))
            if sources and longest * (len(sources) + 1) > self.max_tokens:
                self._held = pair  # starts the next batch
                break
            width = longest
            sources.append(pair[0])
            targets.append(pair[1])
        self.consumed += 1
        return Batch(self.view, sources, targets)

    def __iter__(self) -> BatchStream:
        return self

    def skip(self, n: int) -> None:
        """Hand out `n` batches into the void (resuming)."""
        for _ in range(n):
            next(self)


def uses_slots(step: int, alpha: float) -> bool:
    """Whether optimizer step `step` (0-based) trains the slot objective: the steps are interleaved so that the
    share of slot steps after any number of steps is as close to `alpha` as it can be (deterministic, so a
    resumed run keeps the same schedule)."""
    return int((step + 1) * alpha) > int(step * alpha)
