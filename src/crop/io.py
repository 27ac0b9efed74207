"""Readers and writers: raw text, JSONL, two-column CoNLL, gold and predicted tags.

Every reader is a generator that holds one line at a time, so files of any size stream in constant memory
(`read_gold` / `read_predictions` build a dict by design). Bad input raises `InputError` naming the file and
the 1-based line number, or with `on_error="keep"` comes out as an `InvalidLine` in its place (a line that is not
UTF-8 or not valid Unicode included). One function, `parse_line`, reads one input line for the readers here and
for the batches of bulk jobs (`crop.jobs.lines`), so both give the same items. Files are UTF-8 (a leading BOM is
ignored); names ending in `.gz` are gzip compressed. Output files are written under a temporary name and renamed
into place (`write_jsonl`, and `JsonlWriter(atomic=True)`), and a string UTF-8 cannot carry is written as a JSON
escape.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, TextIO, overload

from pydantic import BaseModel, Field

from crop.text import detokenize, tokenize

PathLike = str | os.PathLike[str]

JSONL_SUFFIXES = frozenset({".jsonl", ".json", ".ndjson"})
_KNOWN_KEYS = frozenset({"id", "lang", "text", "tokens", "offsets", "tags", "en_tokens", "en_tags"})


class InputError(ValueError):
    """Malformed input; the message starts with `file:line:` when the line is known."""

    def __init__(self, message: str, path: PathLike | None = None, lineno: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.lineno = lineno
        self.reason = message
        where = self.path or "<input>"
        if lineno is not None:
            where = f"{where}:{lineno}"
        super().__init__(f"{where}: {message}")


class InputSentence(BaseModel):
    """One input sentence. `offsets[i]` are the character offsets of `tokens[i]` in `text`
    (`text[s:e] == tokens[i]`); `tags` are gold BIO tags of `tokens` when the input had them, `en_tokens` /
    `en_tags` an English side (e.g. a gold translation) when given; `meta` keeps any other keys of a JSONL
    record (domain, entities, ...)."""

    id: str
    lang: str
    tokens: list[str]
    text: str
    offsets: list[tuple[int, int]]
    tags: list[str] | None = None
    en_tokens: list[str] | None = None
    en_tags: list[str] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------------- opening


def _name(path: PathLike) -> str:
    return "<stdin>" if str(path) == "-" else os.fspath(path)


def stem(path: PathLike) -> str:
    """File name without directories and suffixes (`.gz`, then the format's): generated ids start with it."""
    if str(path) == "-":
        return "stdin"
    name = Path(path).name
    if name.endswith(".gz"):
        name = name[:-3]
    for suffix in (*JSONL_SUFFIXES, ".txt", ".conll", ".tsv", ".bio"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


def _open_binary(path: PathLike) -> IO[bytes]:
    if str(path) == "-":
        # a replaced sys.stdin (tests, notebooks) may be a text stream without a byte buffer
        stdin = sys.stdin
        return getattr(stdin, "buffer", None) or io.BytesIO(stdin.read().encode("utf-8"))
    if os.fspath(path).endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - closed by the caller


def _raw_lines(path: PathLike) -> Iterator[tuple[int, bytes]]:
    """(line number, raw line with its line break) of a file; "-" is stdin. Lines end at b"\\n" only."""
    name = _name(path)
    try:
        f = _open_binary(path)
    except OSError as e:
        raise InputError(f"cannot open: {e.strerror or e}", name) from e
    try:
        yield from enumerate(f, 1)
    except (OSError, EOFError) as e:  # e.g. a truncated gzip file
        raise InputError(f"cannot read: {e}", name) from e
    finally:
        if str(path) != "-":
            f.close()


@overload
def read_lines(path: PathLike, on_error: Literal["raise"] = "raise") -> Iterator[tuple[int, str]]: ...


@overload
def read_lines(path: PathLike, on_error: Literal["keep"]) -> Iterator[tuple[int, str | InvalidLine]]: ...


def read_lines(path: PathLike, on_error: Literal["raise", "keep"] = "raise") -> Iterator[tuple[int, Any]]:
    """(line number, line without its line break) for every line of a UTF-8 file; "-" is stdin. A line that
    is not UTF-8 raises `InputError`, or with `on_error="keep"` comes as an `InvalidLine` (id
    `{stem}-{lineno:06d}`) and reading goes on."""
    name, base = _name(path), stem(path)
    for lineno, raw in _raw_lines(path):
        yield lineno, decode_line(raw, lineno, name, base, on_error)


def decode_line(raw: bytes, lineno: int, name: str, base: str,
                on_error: Literal["raise", "keep"] = "raise") -> str | InvalidLine:
    """One raw line of a file (`lineno` counts from 1) as text without its line break (a BOM on line 1
    dropped); a line that is not UTF-8 raises `InputError` naming `name` and the line, or with
    `on_error="keep"` is an `InvalidLine` with id `{base}-{lineno:06d}`."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        error = InputError(f"not UTF-8 ({e.reason} at byte {e.start})", name, lineno)
        if on_error == "raise":
            raise error from None
        return InvalidLine(id=f"{base}-{lineno:06d}", lineno=lineno, reason=str(error))
    if lineno == 1:
        line = line.removeprefix("\ufeff")
    return line.rstrip("\r\n")


def is_blank(line: str | InvalidLine) -> bool:
    """Whether a decoded line gives no item to the input readers (a line that is not UTF-8 does)."""
    return isinstance(line, str) and not line.strip()


# ------------------------------------------------------------------------------------------------ validation


def lone_surrogate(value: Any, where: str = "") -> str | None:
    """Where in a decoded JSON value a string holds a lone surrogate (`"\\ud800"` is valid JSON but no text:
    neither UTF-8 nor the engines can carry it), as a message; None when there is none."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (f"`{where or 'body'}` has a lone surrogate (U+{ord(value[exc.start]):04X}) at character "
                    f"{exc.start}: text must be valid Unicode")
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{where}.{k}" if where else str(k)
            found = lone_surrogate(k, f"a key of {where or 'body'}") or lone_surrogate(v, path)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = lone_surrogate(v, f"{where}[{i}]")
            if found:
                return found
    return None


def check_tokens(value: Any, key: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"{key!r} must be a non-empty list of strings")
    for i, tok in enumerate(value):
        if not isinstance(tok, str):
            raise ValueError(f"{key}[{i}] is not a string: {tok!r}")
        if not tok.strip():
            raise ValueError(f"{key}[{i}] is empty or blank: {tok!r}")
        if not conll_safe(tok):  # CoNLL output (one token a line, a tab before its tag) could not carry it
            raise ValueError(f"{key}[{i}] has a tab or line break: {tok!r}")
    return value


def conll_safe(token: str) -> bool:
    return not any(c in token for c in "\t\n\r")


def _check_tags(value: Any, key: str, n: int, tokens_key: str) -> list[str]:
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list of strings")
    if len(value) != n:
        raise ValueError(f"{key!r} has {len(value)} tags for {n} {tokens_key}")
    for i, tag in enumerate(value):
        if not is_bio_tag(tag):
            raise ValueError(f"{key}[{i}] is not a BIO tag (O, B-TYPE, I-TYPE): {tag!r}")
    return value


def is_bio_tag(tag: Any) -> bool:
    return isinstance(tag, str) and (
        tag == "O" or (len(tag) > 2 and tag[:2] in ("B-", "I-") and tag[2:].strip() == tag[2:])
    )


def align_tokens(text: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Character offsets of `tokens` in `text`, in order, with only whitespace between (and around) them."""
    offsets: list[tuple[int, int]] = []
    pos = 0
    for i, tok in enumerate(tokens):
        start = pos
        while start < len(text) and text[start].isspace():
            start += 1
        if not text.startswith(tok, start):
            found = text.find(tok, pos)
            where = (
                f"at char {start}"
                if found < 0
                else f"at char {found}, after non-space text {text[pos:found]!r}"
            )
            raise ValueError(f"token {i} {tok!r} not found in 'text' {where}")
        pos = start + len(tok)
        offsets.append((start, pos))
    if text[pos:].strip():
        raise ValueError(f"'text' has characters after the last token: {text[pos:]!r}")
    return offsets


def _check_offsets(value: Any, text: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    if not isinstance(value, list) or len(value) != len(tokens):
        raise ValueError(f"'offsets' must be a list of {len(tokens)} [start, end] pairs")
    out: list[tuple[int, int]] = []
    for i, pair in enumerate(value):
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
        ):
            raise ValueError(f"offsets[{i}] is not a [start, end] pair: {pair!r}")
        s, e = pair
        if not 0 <= s <= e <= len(text) or text[s:e] != tokens[i]:
            raise ValueError(f"offsets[{i}] = {list(pair)} does not give token {tokens[i]!r} in 'text'")
        out.append((s, e))
    return out


def sentence_from_record(rec: Any, lang: str | None = None, default_id: str = "") -> InputSentence:
    """Validate one JSONL record and build its InputSentence (raises ValueError with the reason)."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    found = lone_surrogate(rec)
    if found:
        raise ValueError(found)
    rid = rec.get("id")
    if rid is None or rid == "":
        if not default_id:
            raise ValueError("no 'id'")
        rid = default_id
    elif isinstance(rid, int) and not isinstance(rid, bool):
        rid = str(rid)
    elif not isinstance(rid, str):
        raise ValueError(f"'id' must be a string, got {rid!r}")
    rlang = rec.get("lang") or lang
    if not rlang:
        raise ValueError("no 'lang' (give it in the record or as the reader's lang)")
    if not isinstance(rlang, str):
        raise ValueError(f"'lang' must be a string, got {rlang!r}")
    text = rec.get("text")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {type(text).__name__}")
    if "tokens" in rec and rec["tokens"] is not None:
        tokens = check_tokens(rec["tokens"], "tokens")
        if text is None:
            text, offsets = detokenize(tokens, rlang)
        elif rec.get("offsets") is not None:
            offsets = _check_offsets(rec["offsets"], text, tokens)
        else:
            offsets = align_tokens(text, tokens)
    elif text is not None:
        tokens, offsets = tokenize(text, rlang)
        if not tokens:
            raise ValueError("'text' has no tokens")
    else:
        raise ValueError("neither 'tokens' nor 'text'")
    tags = rec.get("tags")
    if tags is not None:
        tags = _check_tags(tags, "tags", len(tokens), "tokens")
    en_tokens = rec.get("en_tokens")
    en_tags = rec.get("en_tags")
    if en_tokens is not None:
        en_tokens = check_tokens(en_tokens, "en_tokens")
    if en_tags is not None:
        if en_tokens is None:
            raise ValueError("'en_tags' without 'en_tokens'")
        en_tags = _check_tags(en_tags, "en_tags", len(en_tokens), "en_tokens")
    # other keys go to meta; a "meta" object (an InputSentence written back out) is merged, not nested
    meta: dict[str, Any] = {}
    for k, v in rec.items():
        if k == "meta" and isinstance(v, dict):
            meta.update(v)
        elif k not in _KNOWN_KEYS:
            meta[k] = v
    return InputSentence(
        id=rid,
        lang=rlang,
        tokens=tokens,
        text=text,
        offsets=offsets,
        tags=tags,
        en_tokens=en_tokens,
        en_tags=en_tags,
        meta=meta,
    )


# --------------------------------------------------------------------------------------------------- readers


@overload
def read_text(path: PathLike, lang: str, on_error: Literal["raise"] = "raise") -> Iterator[InputSentence]: ...


@overload
def read_text(path: PathLike, lang: str,
              on_error: Literal["raise", "keep"]) -> Iterator[InputSentence | InvalidLine]: ...


def read_text(path: PathLike, lang: str,
              on_error: Literal["raise", "keep"] = "raise") -> Iterator[InputSentence | InvalidLine]:
    """One sentence a line ("-" is stdin). Blank lines are skipped; ids are `{stem}-{lineno:06d}` with the
    line number in the file, so they stay stable whatever is skipped. A line that is not UTF-8, or that has
    no token (only control characters), raises `InputError`, or with `on_error="keep"` comes out as an
    `InvalidLine` in its place."""
    for _, item in _parsed_lines(path, "text", lang, on_error):
        yield item


def parse_line(raw: bytes, lineno: int, fmt: str, lang: str | None, name: str, base: str,
               on_error: Literal["raise", "keep"] = "raise") -> InputSentence | InvalidLine | None:
    """The item of one raw input line (with or without its line break), as every input reader reads it (the
    files of `crop project` and the byte ranges of a job's batches): None for a blank line, an
    `InputSentence`, or with `on_error="keep"` an `InvalidLine` for a bad one (else `InputError`). `fmt` is
    "text" or "jsonl"; `name` is the file name errors give, `base` the stem of generated ids
    (`{base}-{lineno:06d}`)."""
    line = decode_line(raw, lineno, name, base, on_error)
    if isinstance(line, InvalidLine):
        return line.model_copy(update={"lang": lang or ""})
    if not line.strip():
        return None
    default_id = f"{base}-{lineno:06d}"
    rec: Any = None
    try:
        if fmt == "jsonl":
            rec = json.loads(line)
            return sentence_from_record(rec, lang, default_id=default_id)
        if not lang:
            raise ValueError("no language: plain text needs one")
        return _text_sentence(line, lang, default_id)
    except (json.JSONDecodeError, ValueError) as e:
        reason = f"invalid JSON ({e.msg} at column {e.colno})" if isinstance(e, json.JSONDecodeError) else str(e)
        error = InputError(reason, name, lineno)
        if on_error == "raise":
            raise error from None
        rec_id = rec.get("id") if isinstance(rec, dict) else None
        return InvalidLine(id=str(rec_id) if rec_id else default_id, lang=lang or "", lineno=lineno,
                           reason=str(error))


def _text_sentence(line: str, lang: str, id_: str) -> InputSentence:
    text = line.strip()
    tokens, offsets = tokenize(text, lang)
    if not tokens:
        raise ValueError("no tokens (the line has only control characters)")
    return InputSentence(id=id_, lang=lang, tokens=tokens, text=text, offsets=offsets)


def _parsed_lines(path: PathLike, fmt: str, lang: str | None,
                  on_error: Literal["raise", "keep"]) -> Iterator[tuple[int, InputSentence | InvalidLine]]:
    """(line number, item) of every line of a file that is not blank (see `parse_line`)."""
    name, base = _name(path), stem(path)
    for lineno, raw in _raw_lines(path):
        item = parse_line(raw, lineno, fmt, lang, name, base, on_error)
        if item is not None:
            yield lineno, item


def iter_jsonl(path: PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSONL file."""
    name = _name(path)
    for lineno, line in read_lines(path):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON ({e.msg} at column {e.colno})", name, lineno) from None
        yield lineno, value


class InvalidLine(BaseModel):
    """A line of the input that is not a sentence, kept in its place so that a job can report it as failed
    instead of stopping (`on_error="keep"`)."""

    id: str
    lang: str = ""
    lineno: int
    reason: str


class DuplicateIds:
    """Notes the ids of an input as it is read, to warn once about the repeated ones (`crop eval` matches by
    id). Holds every id seen: memory grows with the number of lines."""

    def __init__(self) -> None:
        self._first: dict[str, int] = {}
        self.count = 0  # lines whose id came earlier
        self.example: tuple[str, int, int] | None = None  # the first repeated id, its first two line numbers

    def add(self, id_: str, lineno: int) -> None:
        first = self._first.setdefault(id_, lineno)
        if first != lineno:
            self.count += 1
            if self.example is None:
                self.example = (id_, first, lineno)

    def message(self, name: str) -> str | None:
        """One line about the repeated ids of `name`, None when there are none."""
        if self.example is None:
            return None
        id_, first, second = self.example
        return (f"{name}: {self.count} line(s) repeat an earlier id, first {id_!r} on lines {first} and {second} "
                "(crop eval matches predictions to gold by id)")


def read_jsonl(path: PathLike, lang: str | None = None, on_error: Literal["raise", "keep"] = "raise",
               ids: DuplicateIds | None = None) -> Iterator[InputSentence | InvalidLine]:
    """Sentences of a JSONL file (the format of the dev sets): `id`, `tokens` (kept exactly as given) or
    `text` (tokenized), optional `lang` (else `lang` here), `tags`, `en_tokens`, `en_tags`, `offsets` (with
    `text`). A record without id gets `{stem}-{lineno:06d}`. A bad line raises `InputError`, or with
    `on_error="keep"` comes out as an `InvalidLine` in its place. `ids` notes the id of every line."""
    for lineno, item in _parsed_lines(path, "jsonl", lang, on_error):
        if ids is not None:
            ids.add(item.id, lineno)
        yield item


def sniff_format(path: PathLike) -> str:
    """ "jsonl" or "text": by suffix, else by whether the first non-blank line is a JSON object."""
    if str(path) == "-":
        return "text"
    by_name = format_by_name(os.fspath(path))
    return by_name or sniff_lines(line for _, line in read_lines(path, on_error="keep"))


def format_by_name(name: str) -> str | None:
    """ "jsonl" or "text" when a file name's suffix tells (`.gz` aside), else None."""
    suffix = Path(name.removesuffix(".gz")).suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    return "text" if suffix == ".txt" else None


def sniff_lines(lines: Iterable[str | InvalidLine]) -> str:
    """ "jsonl" when the first non-blank line that is UTF-8 is a JSON object, else "text"."""
    for line in lines:
        if isinstance(line, InvalidLine):  # not UTF-8: the reader reports it in its place
            continue
        if line.strip():
            if line.lstrip().startswith("{"):
                try:
                    return "jsonl" if isinstance(json.loads(line), dict) else "text"
                except json.JSONDecodeError:
                    return "text"
            return "text"
    return "text"


def read_input(path: PathLike, lang: str | None = None, on_error: Literal["raise", "keep"] = "raise",
               ids: DuplicateIds | None = None) -> Iterator[InputSentence | InvalidLine]:
    """Sentences of a JSONL file (`.jsonl`, `.json`, `.ndjson`, or content that is JSON objects) or of a text
    file, one sentence a line; "-" reads text from stdin. `lang` is required for text. `on_error` as in
    `read_jsonl` (a text line is a sentence unless it is not UTF-8); `ids` notes JSONL ids (text ids are
    line numbers, so never repeated)."""
    if sniff_format(path) == "jsonl":
        return read_jsonl(path, lang, on_error, ids)
    if not lang:
        raise InputError("reading plain text needs a language", _name(path))
    return read_text(path, lang, on_error)


def read_conll(path: PathLike) -> Iterator[tuple[list[str], list[str]]]:
    """Sentences of a CoNLL file: one token a line, its tag in the last column (tab- or space-separated, so
    the four-column CoNLL-2003 files read too), a blank line between sentences; `-DOCSTART-` lines are
    skipped."""
    name = _name(path)
    tokens: list[str] = []
    tags: list[str] = []
    for lineno, line in read_lines(path):
        if not line.strip():
            if tokens:
                yield tokens, tags
                tokens, tags = [], []
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2 or not cols[0]:
            raise InputError(f"expected a token and a tag, got {line!r}", name, lineno)
        if not is_bio_tag(cols[-1]):
            raise InputError(f"not a BIO tag (O, B-TYPE, I-TYPE): {cols[-1]!r}", name, lineno)
        tokens.append(cols[0])
        tags.append(cols[-1])
    if tokens:
        yield tokens, tags


def _read_tagged(path: PathLike, what: str) -> dict[str, tuple[list[str], list[str]]]:
    name = _name(path)
    out: dict[str, tuple[list[str], list[str]]] = {}
    seen: dict[str, int] = {}
    for lineno, rec in iter_jsonl(path):
        try:
            if not isinstance(rec, dict):
                raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
            rid = rec.get("id")
            if isinstance(rid, int) and not isinstance(rid, bool):
                rid = str(rid)
            if not isinstance(rid, str) or not rid:
                raise ValueError(f"{what} records need a string 'id'")
            if rid in seen:
                raise ValueError(f"duplicate id {rid!r} (first at line {seen[rid]})")
            if "tags" not in rec:
                raise ValueError("no 'tags'")
            tokens = check_tokens(rec.get("tokens"), "tokens")
            tags = _check_tags(rec["tags"], "tags", len(tokens), "tokens")
        except ValueError as e:
            raise InputError(str(e), name, lineno) from None
        seen[rid] = lineno
        out[rid] = (tokens, tags)
    return out


def read_gold(path: PathLike) -> dict[str, tuple[list[str], list[str]]]:
    """id -> (tokens, tags) of a JSONL file with `id`, `tokens`, `tags` on every line."""
    return _read_tagged(path, "gold")


def read_predictions(path: PathLike) -> dict[str, tuple[list[str], list[str]]]:
    """id -> (tokens, tags) of predictions in JSONL (`id`, `tokens`, `tags`; other keys are ignored)."""
    return _read_tagged(path, "prediction")


# --------------------------------------------------------------------------------------------------- writers


def _to_dict(record: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(record, BaseModel):
        return record.model_dump(mode="json")
    if isinstance(record, dict):
        return record
    raise TypeError(f"cannot write a {type(record).__name__} as a JSONL record")


def dumps(record: BaseModel | dict[str, Any]) -> str:
    """One JSONL line (without the line break), UTF-8 characters kept as they are; a record with a string
    UTF-8 cannot carry (a lone surrogate) is written all in JSON escapes, which read back to the same value."""
    data = _to_dict(record)
    line = json.dumps(data, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, ensure_ascii=True)
    return line


def temporary_name(path: Path) -> Path:
    """Where an output is written before it is renamed into place: the same folder (a rename within one file
    system is atomic), hidden, with the process id."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class AtomicFile:
    """A UTF-8 text file written under `temporary_name(path)`: `commit()` renames it into place, `discard()`
    removes it, so the final name holds a whole file or what it held before, never a truncated one."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp: Path | None = temporary_name(self.path)
        self.file: TextIO = open(self.tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115

    def commit(self) -> None:
        if self.tmp is not None:
            self.file.close()
            os.replace(self.tmp, self.path)
            self.tmp = None

    def discard(self) -> None:
        if self.tmp is not None:
            self.file.close()
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


def write_jsonl(path_or_fileobj: PathLike | TextIO, records: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write records (pydantic models or dicts) one per line; returns how many. A path is written through a
    temporary file renamed into place, so readers never see half a file ("-" is stdout)."""
    if not isinstance(path_or_fileobj, str | os.PathLike):
        return _write_lines(path_or_fileobj, records)
    if str(path_or_fileobj) == "-":
        return _write_lines(sys.stdout, records)
    path = Path(path_or_fileobj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(tmp, "wt", encoding="utf-8", newline="\n") as f:
                n = _write_lines(f, records)
        else:
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                n = _write_lines(f, records)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _write_lines(f: TextIO | IO[str], records: Iterable[BaseModel | dict[str, Any]]) -> int:
    n = 0
    for rec in records:
        f.write(dumps(rec))
        f.write("\n")
        n += 1
    f.flush()
    return n


class JsonlWriter:
    """Writes records one line at a time and flushes after each, so a crash loses at most the record being
    written and another process can tail the file.

        with JsonlWriter("out.jsonl") as w:
            for rec in records:
                w.write(rec)

    `append=True` adds to an existing file; a file object is written to and left open; "-" is stdout.
    `atomic=True` writes a path under a temporary name in its folder, renamed into place by `close()` (or the
    end of a `with` block without an exception): a run that stops early leaves the final name as it was;
    `discard()` (or an exception in the `with` block) removes the temporary file."""

    def __init__(self, path_or_fileobj: PathLike | TextIO, append: bool = False, atomic: bool = False) -> None:
        self.count = 0
        self._own = isinstance(path_or_fileobj, str | os.PathLike) and str(path_or_fileobj) != "-"
        self._atomic: AtomicFile | None = None
        if self._own:
            path = Path(path_or_fileobj)  # type: ignore[arg-type]
            self.path: Path | None = path
            if atomic:
                if append:
                    raise ValueError("JsonlWriter: atomic and append exclude each other")
                self._atomic = AtomicFile(path)
                self._f: TextIO | IO[str] = self._atomic.file
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._f = open(path, "a" if append else "w", encoding="utf-8", newline="\n")  # noqa: SIM115
        else:
            self.path = None
            self._f = sys.stdout if str(path_or_fileobj) == "-" else path_or_fileobj  # type: ignore[assignment]

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        self._f.write(dumps(record) + "\n")
        self._f.flush()
        self.count += 1

    def write_many(self, records: Iterable[BaseModel | dict[str, Any]]) -> int:
        n = 0
        for rec in records:
            self.write(rec)
            n += 1
        return n

    def close(self) -> None:
        """Close the file; in atomic mode, rename it into place (once)."""
        if self._atomic is not None:
            self._atomic.commit()
        elif self._own and not self._f.closed:
            self._f.close()

    def discard(self) -> None:
        """Close without keeping anything: in atomic mode the temporary file goes and the final name stays as
        it was (a plain file keeps what was written)."""
        if self._atomic is not None:
            self._atomic.discard()
        elif self._own and not self._f.closed:
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def write_conll(fileobj: TextIO | IO[str], tokens: Sequence[str], tags: Sequence[str]) -> None:
    """Append one sentence as two-column CoNLL (token TAB tag per line) followed by a blank line."""
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} tags")
    buf = io.StringIO()
    for i, (tok, tag) in enumerate(zip(tokens, tags, strict=True)):
        if not tok.strip() or not conll_safe(tok):
            raise ValueError(
                f"token {i} {tok!r} cannot be written as CoNLL (blank, or has a tab or line break)"
            )
        if not is_bio_tag(tag):
            raise ValueError(f"tag {i} is not a BIO tag: {tag!r}")
        buf.write(f"{tok}\t{tag}\n")
    buf.write("\n")
    fileobj.write(buf.getvalue())
