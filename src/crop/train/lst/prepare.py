"""`crop lst prepare`: a parallel corpus -> slot-marked training pairs for a labeled-sequence-translation model.

Each sentence pair is tokenized (`crop.text.tokenize`), word-aligned with eflomal in both directions and
symmetrized (grow-diag-final-and by default), its consistent phrase pairs are extracted, and a random set of
non-overlapping ones is wrapped in `__SLOT{i}__` on both sides (slot ids in source order, as crop's marker
encoder numbers spans at inference). The corpus streams through in chunks of `chunk_size` pairs, each aligned on
its own, so memory does not grow with the corpus.

Output, one JSON object a line for every pair that was not skipped:

    {"id", "src_lang", "tgt_lang", "src", "tgt", "src_marked", "tgt_marked",
     "phrases": [{"slot", "src": [start, end], "tgt": [start, end], "src_text", "tgt_text"}]}

with character offsets (end exclusive) into the plain `src` / `tgt` (whitespace runs collapsed to one space).

Reproducibility: each pair's sampler is seeded from (seed, pair index), so the output does not depend on the
chunk size; eflomal seeds itself from /dev/urandom, so the alignments can be saved (`alignments_out`) and given
back (`alignments`) to reproduce a run exactly.
"""

from __future__ import annotations

import logging
import os
import random
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any, NamedTuple

from pydantic import BaseModel, Field, computed_field

from crop.io import InputError, PathLike, dumps, iter_jsonl, read_lines, sniff_format
from crop.markers import get_codec
from crop.text import detokenize, tokenize
from crop.train.lst.alignment import (
    EFLOMAL_MAX_TOKENS,
    SYMMETRIZATIONS,
    Alignment,
    eflomal_align,
    format_pharaoh,
    parse_pharaoh,
    symmetrize,
)
from crop.train.lst.phrases import PhrasePair, extract_phrase_pairs, sample_slots
from crop.types import Span

log = logging.getLogger(__name__)

_SLOT = get_codec("slot")

# reasons a pair is skipped
EMPTY = "empty"
TOO_LONG = "too_long"
MARKER_TEXT = "marker_text"  # the text already contains something the slot decoder reads as a marker
NO_ALIGNMENT = "no_alignment"


@dataclass(frozen=True)
class PrepareConfig:
    """How `prepare` builds the data. Pairs with a side longer than `max_tokens` are skipped; phrases have at most
    `max_phrase_len` words a side (`tight`: aligned edge words only, see `extract_phrase_pairs`); a pair gets slots
    with probability `slot_prob`, then 1..`max_slots` of them; `seed` seeds that choice; `chunk_size` pairs are
    aligned together; `limit` stops after that many pairs."""

    src_lang: str
    tgt_lang: str
    max_tokens: int = 128
    symmetrize: str = "grow-diag-final-and"
    max_phrase_len: int = 8
    tight: bool = True
    max_slots: int = 10
    slot_prob: float = 0.85
    seed: int = 0
    chunk_size: int = 100_000
    limit: int | None = None

    def __post_init__(self) -> None:
        if not self.src_lang or not self.tgt_lang or self.src_lang == self.tgt_lang:
            raise ValueError(f"need two different languages, got {self.src_lang!r} and {self.tgt_lang!r}")
        if self.symmetrize not in SYMMETRIZATIONS:
            raise ValueError(f"unknown symmetrization {self.symmetrize!r}; choose one of {', '.join(SYMMETRIZATIONS)}")
        if not 1 <= self.max_tokens <= EFLOMAL_MAX_TOKENS:
            raise ValueError(f"max_tokens must be in 1..{EFLOMAL_MAX_TOKENS} (eflomal's limit)")
        if not 0.0 <= self.slot_prob <= 1.0:
            raise ValueError(f"slot_prob must be in [0, 1], got {self.slot_prob}")
        for name in ("max_phrase_len", "max_slots", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must not be negative")


class PrepareStats(BaseModel):
    """Counts of a `prepare` run. Alignment and phrase measures are over the written pairs."""

    pairs_read: int = 0
    pairs_written: int = 0
    skipped: dict[str, int] = Field(default_factory=dict, description="pairs skipped, by reason")
    src_tokens: int = 0
    src_tokens_aligned: int = 0
    alignment_points: int = 0
    phrase_pairs: int = Field(default=0, description="consistent phrase pairs extracted")
    pairs_with_slots: int = 0
    slots_histogram: list[int] = Field(default_factory=list, description="pairs with 0, 1, ... slots")
    slots: int = 0
    slot_src_words: int = 0
    slot_tgt_words: int = 0
    slot_pairs: int = Field(default=0, description="pairs of slots within one sentence pair")
    reordered_slot_pairs: int = Field(default=0, description="slot pairs in the opposite order on the target side")
    align_seconds: float = Field(default=0.0, description="eflomal and symmetrization")
    seconds: float = 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def points_per_pair(self) -> float | None:
        return _ratio(self.alignment_points, self.pairs_written)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def points_per_src_token(self) -> float | None:
        return _ratio(self.alignment_points, self.src_tokens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def aligned_src_share(self) -> float | None:
        return _ratio(self.src_tokens_aligned, self.src_tokens)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def phrase_pairs_per_pair(self) -> float | None:
        return _ratio(self.phrase_pairs, self.pairs_written)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_slot_src_words(self) -> float | None:
        return _ratio(self.slot_src_words, self.slots)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean_slot_tgt_words(self) -> float | None:
        return _ratio(self.slot_tgt_words, self.slots)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reordered_share(self) -> float | None:
        return _ratio(self.reordered_slot_pairs, self.slot_pairs)

    def summary_rows(self) -> list[tuple[str, str]]:
        """(statistic, value) rows for a table."""

        def num(x: float | None, digits: int = 2) -> str:
            return "-" if x is None else f"{x:.{digits}f}"

        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "0"
        histogram = " ".join(f"{k}:{v}" for k, v in enumerate(self.slots_histogram))
        return [
            ("pairs read", str(self.pairs_read)),
            ("pairs written", str(self.pairs_written)),
            ("pairs skipped", skipped),
            ("alignment points per pair", num(self.points_per_pair)),
            ("alignment points per source token", num(self.points_per_src_token)),
            ("source tokens aligned", num(None if self.aligned_src_share is None else 100 * self.aligned_src_share,
                                          1) + " %"),
            ("phrase pairs per pair (mean)", num(self.phrase_pairs_per_pair, 1)),
            ("pairs with slots", str(self.pairs_with_slots)),
            ("pairs by slot count (0..N)", histogram),
            ("slot length in words, src / tgt", f"{num(self.mean_slot_src_words)} / {num(self.mean_slot_tgt_words)}"),
            ("reordered slot pairs", f"{self.reordered_slot_pairs} of {self.slot_pairs} "
                                     f"({num(None if self.reordered_share is None else 100 * self.reordered_share, 1)}"
                                     " %)"),
            ("seconds aligning / total", f"{self.align_seconds:.1f} / {self.seconds:.1f}"),
        ]

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def add_written(self, n_src_tokens: int, alignment: Alignment, n_phrase_pairs: int,
                    slots: list[PhrasePair]) -> None:
        self.pairs_written += 1
        self.src_tokens += n_src_tokens
        self.src_tokens_aligned += len({i for i, _ in alignment})
        self.alignment_points += len(alignment)
        self.phrase_pairs += n_phrase_pairs
        self.slots_histogram[len(slots)] += 1
        self.pairs_with_slots += bool(slots)
        self.slots += len(slots)
        self.slot_src_words += sum(p.src_end - p.src_start for p in slots)
        self.slot_tgt_words += sum(p.tgt_end - p.tgt_start for p in slots)
        for a, first in enumerate(slots):  # slots are in source order
            for second in slots[a + 1:]:
                self.slot_pairs += 1
                self.reordered_slot_pairs += second.tgt_start < first.tgt_start


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


# ----------------------------------------------------------------------------------------------------- input


class RawPair(NamedTuple):
    """A sentence pair as read, before whitespace normalization and tokenization."""

    id: str
    src: str
    tgt: str


def read_pairs(src_lang: str, tgt_lang: str, *, src: PathLike | None = None, tgt: PathLike | None = None,
               input: PathLike | None = None) -> Iterator[RawPair]:
    """Sentence pairs of two line-aligned text files (`src`, `tgt`) or of one `input` file: TSV (`src<TAB>tgt`)
    or JSONL whose records have `src`/`tgt`, keys named by the two languages, or the gold dev format
    (`en_tokens` with `tokens` in the record's `lang`; detokenized). Ids are record ids, else 1-based line
    numbers. Malformed input raises `InputError` with the file and line."""
    if (src is None) != (tgt is None) or (src is None) == (input is None):
        raise ValueError("give either src and tgt files, or one input file")
    for path in (src, tgt, input):
        if path is not None and not Path(path).is_file():
            raise InputError("no such file", path)
    if input is None:
        return _read_two_files(src, tgt)  # type: ignore[arg-type]
    if sniff_format(input) == "jsonl":
        return _read_jsonl(input, src_lang, tgt_lang)
    return _read_tsv(input)


def _read_two_files(src: PathLike, tgt: PathLike) -> Iterator[RawPair]:
    src_lines, tgt_lines = read_lines(src), read_lines(tgt)
    lineno = 0
    while True:
        a, b = next(src_lines, None), next(tgt_lines, None)
        if a is None and b is None:
            return
        if a is None or b is None:
            short, long = (src, tgt) if a is None else (tgt, src)
            raise InputError(f"no line {lineno + 1} in {short}: the two files have different line counts",
                             long, lineno + 1)
        lineno = a[0]
        yield RawPair(str(lineno), a[1], b[1])


def _read_tsv(path: PathLike) -> Iterator[RawPair]:
    for lineno, line in read_lines(path):
        columns = line.split("\t") if line.strip() else ["", ""]
        if len(columns) != 2:
            raise InputError(f"expected 2 tab-separated columns (source, target), got {len(columns)}", path, lineno)
        yield RawPair(str(lineno), columns[0], columns[1])


def _read_jsonl(path: PathLike, src_lang: str, tgt_lang: str) -> Iterator[RawPair]:
    for lineno, rec in iter_jsonl(path):
        try:
            yield _pair_from_record(rec, str(lineno), src_lang, tgt_lang)
        except ValueError as exc:
            raise InputError(str(exc), path, lineno) from None


def _pair_from_record(rec: Any, default_id: str, src_lang: str, tgt_lang: str) -> RawPair:
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    rid = rec.get("id")
    rid = default_id if rid is None or rid == "" else str(rid)
    for src_key, tgt_key in (("src", "tgt"), (src_lang, tgt_lang)):
        if src_key in rec or tgt_key in rec:
            return RawPair(rid, _text(rec, src_key), _text(rec, tgt_key))
    if "en_tokens" in rec and "tokens" in rec:
        if "en" not in (src_lang, tgt_lang):
            raise ValueError(f"a gold record (en_tokens, tokens) pairs English with its 'lang', not "
                             f"{src_lang}-{tgt_lang}")
        other = tgt_lang if src_lang == "en" else src_lang
        if rec.get("lang", other) != other:
            raise ValueError(f"the record's lang is {rec.get('lang')!r}, not {other!r}")
        english, foreign = detokenize(_tokens(rec, "en_tokens"), "en")[0], detokenize(_tokens(rec, "tokens"), other)[0]
        return RawPair(rid, *((english, foreign) if src_lang == "en" else (foreign, english)))
    raise ValueError(f"no sentence pair: expected keys src and tgt, {src_lang} and {tgt_lang}, or en_tokens and "
                     f"tokens; got {', '.join(sorted(rec)) or 'none'}")


def _text(rec: dict[str, Any], key: str) -> str:
    if key not in rec:
        raise ValueError(f"no {key!r}")
    value = rec[key]
    if not isinstance(value, str):
        raise ValueError(f"{key!r} must be a string, got {type(value).__name__}")
    return value


def _tokens(rec: dict[str, Any], key: str) -> list[str]:
    value = rec.get(key)
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"{key!r} must be a list of strings")
    return value


# ---------------------------------------------------------------------------------------------------- driver


class _Sentence:
    """A normalized sentence and its token boundaries. A chunk holds 100 000 of these, so the boundaries are one
    flat array (start, end, start, end, ...) and the tokens are sliced from the text when needed."""

    __slots__ = ("text", "_bounds")

    def __init__(self, text: str, lang: str) -> None:
        # collapsed whitespace: the slot decoder collapses it too, so character offsets survive a round trip
        self.text = " ".join(text.split())
        self._bounds = array("I", (x for span in tokenize(self.text, lang)[1] for x in span))

    def __len__(self) -> int:
        return len(self._bounds) // 2

    def tokens(self) -> list[str]:
        b = self._bounds
        return [self.text[b[k]:b[k + 1]] for k in range(0, len(b), 2)]

    def span(self, start: int, end: int) -> Span:
        """The characters of tokens start..end-1 (end exclusive)."""
        a, b = self._bounds[2 * start], self._bounds[2 * end - 1]
        return Span(start=a, end=b, label="PHRASE", text=self.text[a:b])


@dataclass
class _Pair:
    """A sentence pair on its way through a chunk; `skipped` names why it will not be written."""

    index: int  # 0-based among the pairs read: seeds its sampler and numbers its alignment line
    id: str
    src: _Sentence
    tgt: _Sentence
    skipped: str | None = None
    alignment: Alignment | None = None


def _tokenized(raw: RawPair, index: int, config: PrepareConfig) -> _Pair:
    pair = _Pair(index, raw.id, _Sentence(raw.src, config.src_lang), _Sentence(raw.tgt, config.tgt_lang))
    if not pair.src or not pair.tgt:
        pair.skipped = EMPTY
    elif max(len(pair.src), len(pair.tgt)) > config.max_tokens:
        pair.skipped = TOO_LONG
    elif _has_marker_text(pair.src.text) or _has_marker_text(pair.tgt.text):
        pair.skipped = MARKER_TEXT
    return pair


def _has_marker_text(text: str) -> bool:
    # every slot marker form has "slot" in it; the decoder is the judge of what else would read as one
    return "slot" in text.lower() and _SLOT.decode(text, []).text != text


def _check_given(pair: _Pair, line: str, path: PathLike, lineno: int) -> Alignment:
    try:
        points = parse_pharaoh(line)
    except ValueError as exc:
        raise InputError(str(exc), path, lineno) from None
    n_src, n_tgt = len(pair.src), len(pair.tgt)
    for i, j in points:
        if i >= n_src or j >= n_tgt:
            raise InputError(f"point {i}-{j} is outside pair {pair.id!r} ({n_src} x {n_tgt} tokens; alignments "
                             "must index crop.text.tokenize tokens)", path, lineno)
    return points


def _chunks(raw_pairs: Iterator[RawPair], config: PrepareConfig) -> Iterator[list[_Pair]]:
    index = 0
    while raw := list(islice(raw_pairs, config.chunk_size)):
        yield [_tokenized(r, index + k, config) for k, r in enumerate(raw)]
        index += len(raw)


def _use_given(pairs: list[_Pair], given: Iterator[tuple[int, str]], path: PathLike) -> None:
    """Take the next alignment line for each pair (the file has one line per input pair)."""
    for pair in pairs:
        if (line := next(given, None)) is None:
            raise InputError(f"fewer lines than input pairs (none for pair {pair.index + 1})", path)
        if pair.skipped is None:
            pair.alignment = _check_given(pair, line[1], path, line[0])


def _align(pairs: list[_Pair], method: str) -> None:
    todo = [p for p in pairs if p.skipped is None]
    forward, reverse = eflomal_align([p.src.tokens() for p in todo], [p.tgt.tokens() for p in todo])
    for pair, fwd, rev in zip(todo, forward, reverse, strict=True):
        pair.alignment = symmetrize(fwd, rev, method)


def _record(pair: _Pair, config: PrepareConfig, stats: PrepareStats) -> dict[str, Any]:
    assert pair.alignment is not None
    candidates = extract_phrase_pairs(pair.src.tokens(), pair.tgt.tokens(), pair.alignment,
                                      max_len=config.max_phrase_len, tight=config.tight)
    rng = random.Random(f"crop-lst:{config.seed}:{pair.index}")
    slots = sample_slots(candidates, rng, slot_prob=config.slot_prob, max_slots=config.max_slots)
    stats.add_written(len(pair.src), pair.alignment, len(candidates), slots)
    src_spans = [pair.src.span(p.src_start, p.src_end) for p in slots]
    tgt_spans = [pair.tgt.span(p.tgt_start, p.tgt_end) for p in slots]
    return {
        "id": pair.id,
        "src_lang": config.src_lang,
        "tgt_lang": config.tgt_lang,
        "src": pair.src.text,
        "tgt": pair.tgt.text,
        "src_marked": _SLOT.encode(pair.src.text, src_spans),
        "tgt_marked": _SLOT.encode(pair.tgt.text, tgt_spans),
        "phrases": [
            {"slot": k, "src": [s.start, s.end], "tgt": [t.start, t.end], "src_text": s.text, "tgt_text": t.text}
            for k, (s, t) in enumerate(zip(src_spans, tgt_spans, strict=True))
        ],
    }


@contextmanager
def _atomic_text(path: PathLike) -> Iterator[IO[str]]:
    """A text file written under a temporary name and renamed into place once complete."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            yield f
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def prepare(config: PrepareConfig, output: PathLike, *, src: PathLike | None = None, tgt: PathLike | None = None,
            input: PathLike | None = None, alignments: PathLike | None = None,
            alignments_out: PathLike | None = None,
            on_progress: Callable[[int], None] | None = None) -> PrepareStats:
    """Write the LST training pairs of a parallel corpus (`src` + `tgt` text files, or one `input`, see
    `read_pairs`) to `output` (JSONL, replaced only once complete) and return the run's statistics.

    `alignments`: final alignments to use instead of running eflomal (Pharaoh lines over
    `crop.text.tokenize` tokens, one per input pair; `config.symmetrize` does not apply to them).
    `alignments_out`: write the alignment of every input pair there (an empty line for a skipped pair).
    `on_progress(n)` is called after each chunk with the number of pairs it held.
    Raises `InputError` for malformed input or alignments."""
    started = time.perf_counter()
    stats = PrepareStats(slots_histogram=[0] * (config.max_slots + 1))
    raw_pairs = islice(read_pairs(config.src_lang, config.tgt_lang, src=src, tgt=tgt, input=input), config.limit)
    if alignments is not None and not Path(alignments).is_file():
        raise InputError("no such file", alignments)
    with ExitStack() as stack:
        out = stack.enter_context(_atomic_text(output))
        aligned_out = stack.enter_context(_atomic_text(alignments_out)) if alignments_out is not None else None
        given = stack.enter_context(closing(read_lines(alignments))) if alignments is not None else None
        for chunk in _chunks(raw_pairs, config):
            stats.pairs_read += len(chunk)
            if given is not None:
                _use_given(chunk, given, alignments)  # type: ignore[arg-type]
            else:
                align_start = time.perf_counter()
                _align(chunk, config.symmetrize)
                stats.align_seconds += time.perf_counter() - align_start
            for pair in chunk:
                if pair.skipped is None and not pair.alignment:
                    pair.skipped = NO_ALIGNMENT
                if pair.skipped is not None:
                    stats.skip(pair.skipped)
                    log.debug("pair skipped", extra={"id": pair.id, "reason": pair.skipped})
                else:
                    out.write(dumps(_record(pair, config, stats)) + "\n")
                if aligned_out is not None:
                    aligned_out.write(format_pharaoh(pair.alignment or ()) + "\n")
            log.info("chunk prepared", extra={"pairs_read": stats.pairs_read, "pairs_written": stats.pairs_written,
                                              "align_seconds": round(stats.align_seconds, 3)})
            if on_progress is not None:
                on_progress(len(chunk))
        if given is not None and config.limit is None and next(given, None) is not None:
            raise InputError(f"more lines than the {stats.pairs_read} input pairs", alignments)
    stats.seconds = time.perf_counter() - started
    log.info("lst data prepared", extra=stats.model_dump(exclude={"slots_histogram"}))
    return stats
