"""A job's input, line by line: its batches as byte ranges (one streaming pass, never loaded whole), the items of a
batch exactly as `crop project` reads the same lines (one function, `crop.io.parse_line`, parses a line for both),
and the kept results of batch outputs as CoNLL.

A batch holds `lines_per_batch` non-blank lines; the ranges cover the input from its first byte to its last with no
gap, each ending just after a line break, so a line is never cut and blank lines go with the batch after them (the
trailing ones with the last batch). Line numbers count every line of the input from 1, as in `crop project`'s ids
`{stem}-{lineno:06d}`."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO, Literal

from crop.io import (
    InputError,
    InputSentence,
    InvalidLine,
    decode_line,
    format_by_name,
    is_blank,
    parse_line,
    sniff_lines,
    write_conll,
)
from crop.storage import Storage

READ_BYTES = 1 << 20  # the input is read this much at a time
SNIFF_MAX_BYTES = 16 << 20  # sniff_key decides on this much when the first non-blank line is longer


@dataclass(frozen=True)
class BatchRange:
    """Batch `index` of a job: bytes [start, end) of its input, whose first line is line `first_lineno` of the
    input, holding `lines` non-blank lines (each gives one output line)."""

    index: int
    start: int
    end: int
    first_lineno: int
    lines: int


def raw_lines(f: BinaryIO, chunk_bytes: int = READ_BYTES) -> Iterator[tuple[int, bytes]]:
    """(byte offset, raw line with its b"\\n") of a binary stream read `chunk_bytes` at a time; lines end at b"\\n"
    only, as when a file is iterated (the last one may have no line break)."""
    buf = bytearray()
    pos = 0  # offset in the stream of buf[0]
    while chunk := f.read(chunk_bytes):
        search = len(buf)
        buf += chunk
        start = 0
        while (nl := buf.find(b"\n", search)) >= 0:
            yield pos + start, bytes(buf[start:nl + 1])
            start = search = nl + 1
        del buf[:start]
        pos += start
    if buf:
        yield pos, bytes(buf)


def plan_batches(storage: Storage, key: str, lines_per_batch: int) -> tuple[list[BatchRange], int]:
    """The batches of the input at `key`, of `lines_per_batch` non-blank lines each (the last one may hold
    fewer), and the number of non-blank lines (the job's total), in one streaming pass. An input with no
    non-blank line has no batch."""
    if lines_per_batch < 1:
        raise ValueError(f"lines_per_batch must be at least 1, got {lines_per_batch}")
    batches: list[BatchRange] = []
    total = count = start = end = 0
    first = 1
    with storage.open_read(key) as f:
        for lineno, (offset, raw) in enumerate(raw_lines(f), 1):
            end = offset + len(raw)
            if is_blank(decode_line(raw, lineno, key, "", on_error="keep")):
                continue
            count += 1
            total += 1
            if count == lines_per_batch:
                batches.append(BatchRange(len(batches), start, end, first, count))
                start, first, count = end, lineno + 1, 0
    if count:
        batches.append(BatchRange(len(batches), start, end, first, count))
    elif batches and end > batches[-1].end:  # blank lines after the last full batch: it takes them
        batches[-1] = replace(batches[-1], end=end)
    return batches, total


def sniff_format(first_bytes: bytes, name: str | None = None) -> Literal["text", "jsonl"]:
    """The format of an input, as `crop project` decides it for a file: by the suffix of `name` when it has a
    known one, else "jsonl" when the first non-blank UTF-8 line of `first_bytes` is a JSON object. That line
    must be whole in `first_bytes` (see `sniff_key`)."""
    by_name = format_by_name(name) if name else None
    found = by_name or sniff_lines(
        decode_line(raw, lineno, "", "", on_error="keep") for lineno, raw in enumerate(io.BytesIO(first_bytes), 1))
    return "jsonl" if found == "jsonl" else "text"


def sniff_key(storage: Storage, key: str, name: str | None = None) -> Literal["text", "jsonl"]:
    """`sniff_format` of a stored input, reading it up to the end of its first non-blank UTF-8 line (at most
    `SNIFF_MAX_BYTES`)."""
    head: list[bytes] = []
    size = 0
    with storage.open_read(key) as f:
        for lineno, (_, raw) in enumerate(raw_lines(f, 64 << 10), 1):
            head.append(raw)
            size += len(raw)
            line = decode_line(raw, lineno, key, "", on_error="keep")
            if (isinstance(line, str) and line.strip()) or size >= SNIFF_MAX_BYTES:  # as sniff_lines decides
                break
    return sniff_format(b"".join(head), name)


def parse_batch(data: bytes, rng: BatchRange, fmt: str, lang: str | None, stem: str,
                name: str | None = None) -> list[InputSentence | InvalidLine]:
    """The items of a batch's bytes (`data`, bytes [rng.start, rng.end) of the input), exactly as `crop project`
    reads these lines of a file whose stem is `stem` (ids `{stem}-{lineno:06d}`): a sentence, or an
    `InvalidLine` with its reason (not UTF-8, a lone surrogate, bad JSON, no language, ...); blank lines give
    nothing. Reasons start with `name:lineno:` (`name` defaults to `stem`: give the input's file name to get
    the very messages `crop project NAME` gives). Raises ValueError when the data does not match the plan (the
    input changed since the job was planned)."""
    if fmt not in ("text", "jsonl"):
        raise ValueError(f"input format must be 'text' or 'jsonl', got {fmt!r}")
    if len(data) != rng.end - rng.start:
        raise ValueError(f"batch {rng.index}: {len(data)} bytes for the range [{rng.start}, {rng.end})")
    items: list[InputSentence | InvalidLine] = []
    for lineno, raw in enumerate(io.BytesIO(data), rng.first_lineno):
        item = parse_line(raw, lineno, fmt, lang, name or stem, stem, on_error="keep")
        if item is not None:
            items.append(item)
    if len(items) != rng.lines:
        raise ValueError(f"batch {rng.index}: {len(items)} non-blank lines where the plan counted {rng.lines} "
                         "(the input changed since the job was planned)")
    return items


def result_lines_to_conll(lines: Iterable[bytes]) -> Iterator[str]:
    """The kept sentences of result lines (JSONL of `crop project`'s output format) as two-column CoNLL, one
    sentence (its lines and a blank line) per string, as `crop project --conll` writes them."""
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            raise InputError(f"result line is not JSON ({e.msg} at column {e.colno})", "<results>", n) from None
        if isinstance(rec, dict) and rec.get("status") == "kept":
            buf = io.StringIO()
            write_conll(buf, rec["tokens"], rec["tags"])
            yield buf.getvalue()
