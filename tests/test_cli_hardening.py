"""`crop project` against hostile and unlucky input (issue 10): lines that are not text, outputs that are the
input, an engine that goes down mid-run, absurd tokens, and the help and warnings users read."""

from __future__ import annotations

import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click.testing
import httpx
import pytest
import typer.main
import uvicorn
from servers import free_port
from test_cli import assert_clean_error, flat, invoke, read_lines

from crop.cli import app


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def leftovers(folder: Path) -> list[str]:
    """Temporary files an output left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# -- item 6: lines that are not text become failed lines in their place ----------------------------------------


@pytest.mark.integration
def test_a_lone_surrogate_line_is_failed_in_its_place(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    # the JSON escape "\ud800": valid JSON, no text
    src.write_text('{"id": "a", "text": "Pedro Sánchez visitó Berlín."}\n{"id": "x", "text": "\\ud800"}\n'
                   '{"id": "b", "text": "La ONU se reunió en Ginebra."}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--keep-all-o")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    records = read_lines(out)
    assert [r["id"] for r in records] == ["a", "x", "b"]
    assert records[1]["status"] == "failed"
    assert "in.jsonl:2" in records[1]["reason"] and "lone surrogate (U+D800)" in records[1]["reason"]
    assert records[0]["status"] != "failed" and records[2]["status"] != "failed"


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["jsonl", "txt"])
def test_a_line_that_is_not_utf8_is_failed_in_its_place(tmp_path: Path, fmt: str) -> None:
    lines = ["Pedro Sánchez visitó Berlín.", "El niño comió.", "La ONU se reunió en Ginebra."]
    encode = [str.encode, lambda s: s.encode("latin-1"), str.encode]
    if fmt == "jsonl":
        lines = [json.dumps({"id": f"s{i}", "text": t}, ensure_ascii=False) for i, t in enumerate(lines)]
    src = tmp_path / f"in.{fmt}"
    src.write_bytes(b"".join(enc(line + "\n") for enc, line in zip(encode, lines, strict=True)))
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--keep-all-o")
    assert result.exit_code == 0, result.output
    records = read_lines(out)
    assert len(records) == 3
    assert records[1]["status"] == "failed" and f"in.{fmt}:2: not UTF-8" in records[1]["reason"]
    assert records[1]["id"] == "in-000002"
    assert records[0]["status"] != "failed" and records[2]["status"] != "failed"


# -- item 7: an output never destroys the input, and appears whole or not at all --------------------------------


@pytest.mark.parametrize("how", ["same path", "symlink", "hard link", "conll", "stats"])
def test_an_output_that_is_the_input_is_refused(tmp_path: Path, how: str) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Hola."}])
    before = src.read_bytes()
    target = src
    if how == "symlink":
        target = tmp_path / "link.jsonl"
        target.symlink_to(src)
    elif how == "hard link":
        target = tmp_path / "hard.jsonl"
        os.link(src, target)
    option = {"conll": "--conll", "stats": "--stats"}.get(how, "--output")
    extra = [] if option == "--output" else [option, target]
    output = target if option == "--output" else tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", output, *extra)
    assert_clean_error(result, option, "is the input file")
    assert result.exit_code == 2
    assert src.read_bytes() == before


def test_two_outputs_that_are_one_file_are_refused(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Hola."}])
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--conll",
                    tmp_path / "." / "out.jsonl")
    assert_clean_error(result, "--conll", "--output", "same file")
    assert not out.exists()


@contextmanager
def translator_service(engine) -> Iterator[tuple[str, Callable[[], None]]]:
    """A real translator service (uvicorn, loopback) and a function that stops it (then: connection refused)."""
    from crop.api.settings import TranslatorSettings
    from crop.api.translator import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(TranslatorSettings(max_wait_ms=1.0, api_keys=[]), engine=engine),
                                           host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()

    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert thread.is_alive() and time.monotonic() < deadline, f"{url} did not become ready"
        time.sleep(0.05)
    try:
        yield url, stop
    finally:
        if thread.is_alive():
            stop()


class StdinThatStopsFirst(io.RawIOBase):
    """Standard input whose first read runs `before` (here: the translator goes down once the CLI has loaded its
    engines and starts reading sentences)."""

    def __init__(self, data: bytes, before: Callable[[], None]) -> None:
        self._data = io.BytesIO(data)
        self._before: Callable[[], None] | None = before

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._before is not None:
            before, self._before = self._before, None
            before()
        chunk = self._data.read(len(buffer))
        buffer[:len(chunk)] = chunk
        return len(chunk)


@pytest.mark.integration
def test_a_translator_that_goes_down_stops_the_run_with_no_partial_output(
        translator, tagger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROP_REMOTE_MAX_RETRIES", "0")
    out, conll = tmp_path / "out.jsonl", tmp_path / "out.conll"
    out.write_text('{"id": "from an earlier run"}\n', encoding="utf-8")
    sentences = "".join(f"Pedro Sánchez visitó Berlín {i} veces.\n" for i in range(6)).encode()
    with translator_service(translator) as (url, stop):
        stdin = io.BufferedReader(StdinThatStopsFirst(sentences, stop))
        # click's runner takes a stream as standard input (typer's wants bytes)
        args = ["project", "--src-lang", "es", "--input", "-", "--output", str(out), "--conll", str(conll),
                "--translator", f"remote:{url}"]
        result = click.testing.CliRunner().invoke(typer.main.get_command(app), args, input=stdin)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    message = flat(result.output)
    assert "Traceback" not in message
    assert "error" in message and "engine unavailable" in message and url in message, message
    # it says how far it got, and that the outputs were left as they were
    assert "after 0 sentence(s)" in message and "nothing written" in message and "out.jsonl" in message, message
    assert out.read_text(encoding="utf-8") == '{"id": "from an earlier run"}\n'
    assert not conll.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.integration
def test_an_unreachable_translator_is_an_engine_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROP_REMOTE_MAX_RETRIES", "0")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Hola."}])
    url = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--translator", f"remote:{url}")
    assert_clean_error(result, url)
    assert result.exit_code == 1
    assert not out.exists()


@pytest.mark.integration
def test_a_run_where_every_sentence_failed_exits_non_zero(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "tokens": [}\n{"id": "b", "text": 3}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out)
    assert_clean_error(result, "every sentence failed", "2 of 2")
    assert result.exit_code == 1
    assert [r["status"] for r in read_lines(out)] == ["failed", "failed"]  # the reasons are kept


# -- item 3: an absurd token never reaches an engine -----------------------------------------------------------


@pytest.mark.integration
def test_a_sentence_with_an_absurd_token_is_discarded(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text(f"Pedro Sánchez visitó Berlín.\nEl código {'x' * 5000} falló.\n", encoding="utf-8")
    out, stats = tmp_path / "out.jsonl", tmp_path / "stats.json"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--stats", stats)
    assert result.exit_code == 0, result.output
    records = read_lines(out)
    assert records[1]["status"] == "discarded"
    assert records[1]["reason"] == "token_too_long: token 2 has 5000 characters (limit 200)"
    assert json.loads(stats.read_text())["reasons"]["token_too_long"] == 1
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--max-token-chars", "6")
    assert result.exit_code == 0, result.output
    assert read_lines(out)[0]["reason"] == "token_too_long: token 1 has 7 characters (limit 6)"


# -- the help and warnings users read ---------------------------------------------------------------------------


def test_boolean_flags_read_as_expected() -> None:
    result = invoke("project", "--help")
    assert result.exit_code == 0
    text = flat(result.output)
    assert "--no-no-" not in text
    for flag in ("langid", "align"):
        assert re.search(rf"--{flag}\s*/?\s*--no-{flag}\b", text), flag
    assert "--keep-all-o" in text and "--strict-input" in text
    assert "--no-keep-all-o" not in text and "--no-strict-input" not in text


@pytest.mark.integration
def test_duplicate_ids_are_warned_about_once(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Hola."}, {"id": "b", "text": "Adiós."},
                                              {"id": "a", "text": "Otra vez."}, {"id": "b", "text": "Y otra."},
                                              {"id": "a", "text": "Ya."}])
    out = tmp_path / "out.jsonl"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--keep-all-o", "--no-langid",
                    "--no-align")
    assert result.exit_code == 0, result.output
    message = flat(result.output)
    assert message.count("repeat an earlier id") == 1, message
    assert "3 line(s) repeat an earlier id, first 'a' on lines 1 and 3" in message
    assert len(read_lines(out)) == 5


@pytest.mark.integration
def test_tag_refuses_an_absurd_token() -> None:
    result = invoke("tag", "--lang", "es", f"Pedro {'x' * 300} Berlín")
    assert_clean_error(result, "token_too_long: token 1 has 300 characters (limit 200)")


@pytest.mark.integration
def test_a_token_that_conll_cannot_carry_is_a_failed_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "a", "tokens": ["Pedro\tSánchez", "visitó", "Berlín", "."]},
        {"id": "b", "tokens": ["Pedro", "Sánchez", "visitó", "Berlín", "."]}])
    out, conll = tmp_path / "out.jsonl", tmp_path / "out.conll"
    result = invoke("project", "--src-lang", "es", "--input", src, "--output", out, "--conll", conll,
                    "--policy", "partial")
    assert result.exit_code == 0, result.output
    records = read_lines(out)
    assert records[0]["status"] == "failed" and "tokens[0] has a tab or line break" in records[0]["reason"]
    assert records[1]["status"] == "kept" and conll.exists()


def test_an_output_that_cannot_be_written_is_a_clean_error(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "Hola."}])
    (tmp_path / "folder").mkdir()
    assert_clean_error(invoke("project", "--src-lang", "es", "--input", src, "--output", tmp_path / "folder"),
                       "--output", "is a folder")
