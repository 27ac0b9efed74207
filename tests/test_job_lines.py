"""A job's input read batch by batch gives exactly what `crop project` reads from the same file: the same items,
ids, texts, tokens and reasons, whatever the batch size (non-UTF-8 lines, lone surrogates, blank lines, a BOM,
CRLF, a last line without line break, per-line languages)."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from crop.io import InvalidLine, read_input, stem, write_conll
from crop.jobs.lines import (
    READ_BYTES,
    BatchRange,
    parse_batch,
    plan_batches,
    raw_lines,
    result_lines_to_conll,
    sniff_format,
    sniff_key,
)
from crop.storage import Storage


def job_items(path: Path, lang: str | None, lines_per_batch: int, name: str | None = None) -> list:
    """The items of `path` read as a job reads them: planned, then batch by batch from its byte ranges."""
    storage = Storage(str(path.parent))
    batches, total = plan_batches(storage, path.name, lines_per_batch)
    assert [b.index for b in batches] == list(range(len(batches)))
    assert sum(b.lines for b in batches) == total
    assert all(0 < b.lines <= lines_per_batch for b in batches)
    assert all(b.lines == lines_per_batch for b in batches[:-1])
    # the ranges cover the whole input, with no gap and no overlap, each starting a line
    size = path.stat().st_size
    assert [(b.start, b.end) for b in batches] == [
        (batches[i - 1].end if i else 0, b.end) for i, b in enumerate(batches)]
    assert not batches or batches[-1].end == size
    fmt = sniff_key(storage, path.name, name or path.name)
    items: list = []
    for b in batches:
        data = storage.read_range(path.name, b.start, b.end)
        items += parse_batch(data, b, fmt, lang, stem(name or path.name), name=str(path))
    assert len(items) == total
    return items


def dump(items: list) -> list[tuple[str, dict]]:
    return [(type(i).__name__, i.model_dump()) for i in items]


def expected(path: Path, lang: str | None) -> list:
    return list(read_input(path, lang, on_error="keep"))


# ------------------------------------------------------------------------------------------------ the property

_TEXT_LINES = st.sampled_from([
    b"Hola, soy Ana de Barcelona.", b"  El Real Madrid gan\xc3\xb3 en Par\xc3\xads.  ", b"", b"   ", b"\t",
    b"\xff\xfe not UTF-8", b"caf\xe9 latin-1", b"\xed\xa0\x80 a surrogate in UTF-8 bytes", b"\x01\x02",
    b"{\"text\": \"a JSON line in a text file\"}", b"\xc2\xa0", b"\x1c", b"line\r", b"\xe2\x80\xa8 sep",
    "日本語のテキスト。".encode(), b"l'Ajuntament d'Olot",
])
_RECORDS = st.sampled_from([
    {"text": "Angela Merkel visitó Berlín."}, {"text": "Hola.", "lang": "ca"}, {"id": "given", "text": "Sí."},
    {"tokens": ["El", "Barça", "guanya", "."], "lang": "ca"}, {"text": "\ud800 lone"}, {"tokens": []},
    {"text": "x", "tags": ["B-PER", "O"]}, {"id": 7, "tokens": ["Hola"]}, {"text": "   "}, {"lang": "gl"},
])
_JSON_LINES = st.one_of(
    _RECORDS.map(lambda r: json.dumps(r, ensure_ascii=True).encode()),
    _RECORDS.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b"  ", b"[1, 2]", b"{not json", b"\"a string\"", b"\xff{}", b"null", b"{}"]),
)


@st.composite
def input_files(draw: st.DrawFn, lines: st.SearchStrategy[bytes]) -> bytes:
    body = draw(st.lists(st.tuples(lines, st.sampled_from([b"\n", b"\r\n"])), min_size=0, max_size=25))
    data = b"".join(line + end for line, end in body)
    if body and draw(st.booleans()):  # a last line without its line break
        data = data.rstrip(b"\r\n")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=input_files(_TEXT_LINES), lines_per_batch=st.integers(1, 6))
def test_text_batches_read_exactly_as_crop_project(data: bytes, lines_per_batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_bytes(data)
        assert dump(job_items(path, "es", lines_per_batch)) == dump(expected(path, "es"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=input_files(_JSON_LINES), lines_per_batch=st.integers(1, 6), lang=st.sampled_from([None, "es"]),
       suffix=st.sampled_from([".jsonl", ""]))
@example(data=b'\xff{}\n{"text": "x"}\n', lines_per_batch=1, lang=None, suffix="")  # sniffed past a bad line
def test_jsonl_batches_read_exactly_as_crop_project(data: bytes, lines_per_batch: int, lang: str | None,
                                                    suffix: str) -> None:
    """Per-line `lang`, a job-level language or none; the format by suffix, or sniffed from the content when the
    name has none (then a file whose first line is not a JSON object is text, as for crop project)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"mixed{suffix}"
        path.write_bytes(data)
        try:
            want = dump(expected(path, lang))
        except Exception as exc:  # text without a language: crop project refuses it whole
            assert "needs a language" in str(exc)
            return
        assert dump(job_items(path, lang, lines_per_batch)) == want


def test_the_shared_raw_text_reads_the_same(shared_data: Path) -> None:
    path = shared_data / "raw" / "es.txt"
    want = expected(path, "es")
    assert len(want) > 1000
    assert dump(job_items(path, "es", 256)) == dump(want)


def test_a_dev_jsonl_with_per_line_languages_reads_the_same(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "dev" / "es.dev.jsonl"
    assert dump(job_items(path, None, 100)) == dump(expected(path, None))
    # and mixed: lines of three languages, some without `lang` (with no job language: each a failed line)
    mixed = tmp_path / "mixed.jsonl"
    rows = []
    for lang in ("es", "ca", "gl"):
        for i, line in enumerate((shared_data / "dev" / f"{lang}.dev.jsonl").read_text(encoding="utf-8").splitlines()):
            rec = json.loads(line)
            if i % 7 == 3:
                del rec["lang"]
            rows.append(json.dumps(rec, ensure_ascii=False))
    mixed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    items = job_items(mixed, None, 64)
    assert dump(items) == dump(expected(mixed, None))
    assert {i.lang for i in items if not isinstance(i, InvalidLine)} == {"es", "ca", "gl"}
    assert any(isinstance(i, InvalidLine) and "no 'lang'" in i.reason for i in items)


# ------------------------------------------------------------------------------------------------ regressions


def test_a_line_of_control_characters_is_a_failed_line_not_a_hole(tmp_path: Path) -> None:
    """A text line with no token (only control characters) is not blank: it was skipped, so a job's count of
    lines (and `crop project`'s one output line per input line) missed it; now it is an InvalidLine in place."""
    path = tmp_path / "c.txt"
    path.write_bytes(b"Hola.\n\x01\x02\x1b\nAdi\xc3\xb3s.\n")
    items = expected(path, "es")
    assert [type(i).__name__ for i in items] == ["InputSentence", "InvalidLine", "InputSentence"]
    assert items[1].id == "c-000002" and "no tokens" in items[1].reason and items[1].lang == "es"
    assert plan_batches(Storage(str(tmp_path)), "c.txt", 10)[1] == 3


# ------------------------------------------------------------------------------------------------ plan_batches


def test_blank_lines_go_with_the_batch_after_them_and_trailing_ones_with_the_last(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes(b"\n\na\nb\n\n\nc\n\n")
    batches, total = plan_batches(Storage(str(tmp_path)), "b.txt", 2)
    assert total == 3
    assert batches == [BatchRange(0, 0, 6, 1, 2), BatchRange(1, 6, 11, 5, 1)]
    (tmp_path / "e.txt").write_bytes(b"\n \r\n\t\n")
    assert plan_batches(Storage(str(tmp_path)), "e.txt", 2) == ([], 0)
    (tmp_path / "z.txt").write_bytes(b"")
    assert plan_batches(Storage(str(tmp_path)), "z.txt", 2) == ([], 0)
    with pytest.raises(ValueError, match="at least 1"):
        plan_batches(Storage(str(tmp_path)), "b.txt", 0)


class _Reads(io.BufferedReader):
    """A real file that notes the size of every read (the plan must stream, not read the input whole)."""

    sizes: list[int]

    def read(self, n: int | None = -1) -> bytes:
        self.sizes.append(-1 if n is None else n)
        return super().read(n)


def test_plan_streams_the_input_in_bounded_reads(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"Una frase de prueba.\n" * 150_000)  # about 3 MiB
    storage = Storage(str(tmp_path))
    files: list[_Reads] = []

    def open_read(key: str) -> BinaryIO:
        f = _Reads(open(storage.url(key), "rb", buffering=0))  # noqa: SIM115
        f.sizes = []
        files.append(f)
        return f

    storage.open_read = open_read  # type: ignore[method-assign]
    batches, total = plan_batches(storage, "big.txt", 1000)
    assert total == 150_000 and len(batches) == 150
    (f,) = files
    assert len(f.sizes) > 3 and all(0 < n <= READ_BYTES for n in f.sizes)


def test_raw_lines_gives_offsets_across_chunk_boundaries() -> None:
    data = b"ab\ncdefgh\n\nij\r\nk"
    for chunk in (1, 2, 3, 5, 100):
        got = list(raw_lines(io.BytesIO(data), chunk))
        assert got == [(0, b"ab\n"), (3, b"cdefgh\n"), (10, b"\n"), (11, b"ij\r\n"), (15, b"k")]


def test_parse_batch_refuses_data_that_does_not_match_its_plan(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(b"a\nb\n")
    (rng,), _ = plan_batches(Storage(str(tmp_path)), "p.txt", 5)
    with pytest.raises(ValueError, match=r"6 bytes for the range \[0, 4\)"):
        parse_batch(b"a\nb\nc\n", rng, "text", "es", "p")
    with pytest.raises(ValueError, match="plan counted 2"):
        parse_batch(b"a\n\n\n", rng, "text", "es", "p")
    with pytest.raises(ValueError, match="'text' or 'jsonl'"):
        parse_batch(b"a\nb\n", rng, "conll", "es", "p")
    (a, b) = parse_batch(b"a\nb\n", rng, "text", "es", "p")
    assert (a.id, b.id) == ("p-000001", "p-000002")


def test_text_with_no_language_is_a_failed_line_per_line(tmp_path: Path) -> None:
    (tmp_path / "n.txt").write_bytes(b"Hola.\n")
    (rng,), _ = plan_batches(Storage(str(tmp_path)), "n.txt", 5)
    (item,) = parse_batch(b"Hola.\n", rng, "text", None, "n", name="n.txt")
    assert isinstance(item, InvalidLine) and item.reason == "n.txt:1: no language: plain text needs one"


# ------------------------------------------------------------------------------------------------ sniffing


@pytest.mark.parametrize(("head", "name", "fmt"), [
    (b'{"text": "x"}\n', None, "jsonl"), (b"\n\n  \xef\xbb\xbf", None, "text"),
    (b'\xef\xbb\xbf{"a": 1}\n', None, "jsonl"),
    (b"\xff\n[1]\n", None, "text"), (b"\xff\n{\"a\": 1}\n", None, "jsonl"), (b"{bad\n", None, "text"),
    (b'{"text": "x"}\n', "corpus.txt", "text"), (b"Hola\n", "corpus.jsonl.gz", "jsonl"), (b"", None, "text"),
])
def test_sniff_format_as_crop_project_sniffs_files(head: bytes, name: str | None, fmt: str, tmp_path: Path) -> None:
    from crop.io import sniff_format as sniff_file

    assert sniff_format(head, name) == fmt
    if name is None or not name.endswith(".gz"):
        path = tmp_path / (name or "input")
        path.write_bytes(head)
        assert sniff_file(path) == fmt


def test_sniff_key_reads_to_the_end_of_a_long_first_line(tmp_path: Path) -> None:
    line = json.dumps({"text": "palabra " * 20_000}).encode()  # 160 kB: more than a small head
    (tmp_path / "long").write_bytes(b"\n" + line + b"\n")
    assert sniff_format((b"\n" + line)[:65536]) == "text"  # a cut head cannot tell
    assert sniff_key(Storage(str(tmp_path)), "long") == "jsonl"


# ------------------------------------------------------------------------------------------------ CoNLL


def test_result_lines_to_conll_writes_the_kept_sentences_as_crop_project_does() -> None:
    results = [
        {"id": "a", "status": "kept", "tokens": ["Ana", "vive", "en", "Vigo", "."],
         "tags": ["B-PER", "O", "O", "B-LOC", "O"]},
        {"id": "b", "status": "discarded", "tokens": ["x"], "tags": ["O"], "reason": "no_entities"},
        {"id": "c", "status": "failed", "tokens": [], "tags": [], "reason": "invalid input: ..."},
        {"id": "d", "status": "kept", "tokens": ["Olot"], "tags": ["B-LOC"]},
    ]
    lines = [json.dumps(r).encode() + b"\n" for r in results] + [b"\n"]
    want = io.StringIO()
    write_conll(want, results[0]["tokens"], results[0]["tags"])
    write_conll(want, results[3]["tokens"], results[3]["tags"])
    assert "".join(result_lines_to_conll(lines)) == want.getvalue()
    assert want.getvalue().startswith("Ana\tB-PER\nvive\tO\n")
