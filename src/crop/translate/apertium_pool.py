"""Long-lived Apertium pipelines in null-flush mode (as Apertium's web service APy runs them), pooled per mode.

A one-shot run (`tf-extract | stages | tf-inject`, see crop.translate.apertium) costs about 150 ms of start-up:
loading every stage's transducers. Here each mode's stages (`apertium-wblank-mode -z`: `-z` on every program)
are started once and kept: each block is written as one NUL-terminated chunk and its translation read back up to
the NUL. The deformatting that transfuse's tf-extract and tf-inject do around the stages is done here, in
Python, for the only HTML crop sends (see `TransfuseCodec`): the stages see the same bytes as in a one-shot run,
so the outputs are the same (tests/test_apertium_persistent.py checks it against one-shot runs on the dev sets).

A pipeline that dies, hangs past the request's deadline, or answers out of order or with a wrong canary raises
BrokenOutput; the caller kills it (its whole process group) and retries with a fresh one.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import select
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import regex

from crop.errors import EngineUnavailable

# transfuse's private-use marks (shared.hpp): an inline tag's opening (B, names, E) and its closing
_OPEN_B, _OPEN_E, _CLOSE = "\ue011", "\ue012", "\ue013"
_PRIVATE_RE = regex.compile("[\ue000-\ue0ff]")
# the blocks crop sends: escaped text and non-nested, non-empty <span id="..."> tags
_BLOCK_GRAMMAR = regex.compile(r'(?:[^<>&]|&(?:amp|lt|gt);|<span id="[\w-]+">(?:[^<>&]|&(?:amp|lt|gt);)+</span>)*')
_PART_RE = regex.compile(r'<span id="([\w-]+)">(.*?)</span>|((?:[^<]|<(?!span ))+)', regex.DOTALL)
# transfuse's regular expressions (ICU), in the `regex` module's syntax
_SPACE = r"[\s\p{Zs}]"
_BLANK_ONLY = regex.compile(r"^[\s\r\n\p{Z}]+$")
_ANY_ALNUM = regex.compile(r"[\w\p{L}\p{N}\p{M}]")
_RX_MERGE = regex.compile(r"(\ue011[^\ue012]+\ue012)([^\ue011-\ue013]+)\ue013(" + _SPACE + r"*)(\1)")
_RX_NESTED = regex.compile(r"\ue011([^\ue012]+)\ue012\ue011([^\ue012]+)\ue012([^\ue011-\ue013]+)\ue013\ue013")
_RX_ALPHA_PREFIX = regex.compile(r"([\p{L}\p{N}\p{M}]*?[\p{L}\p{M}])(\ue011[^\ue012]+\ue012)(\p{L}+)")
_RX_ALPHA_SUFFIX = regex.compile(r"(\p{L}[\p{L}\p{M}]*)(\ue013)(\p{L}[\p{L}\p{N}\p{M}]*)")
_RX_SPC_PREFIX = regex.compile(r"(\ue011[^\ue012]+\ue012)(" + _SPACE + r"+)")
_RX_SPC_SUFFIX = regex.compile(r"(" + _SPACE + r"+)(\ue013)")
_RX_INLINE = regex.compile(r"\ue011([^\ue012]+)\ue012([^\ue011-\ue013]*)\ue013")
_BODY_ESCAPES = set("^$[]{}/\\@<>")
_ASCII_SPACE = " \t\n\v\f\r"


class BrokenOutput(Exception):
    """One run's output is not a translation: a stage died or failed, the stream was cut or came back out of
    order, or the canary block came back other than its known translation. The run is retried with a fresh
    process, never returned. `stderr`: what the stages wrote there, for the log."""

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


# -- the deformatter: tf-extract / tf-inject -f html for crop's blocks ----------------------------------------


def _cleanup_styles(s: str) -> str:
    """transfuse's cleanup_styles (dom.cpp): merge identical neighbouring inline tags, merge perfectly nested
    ones, move letters that touch a tag inside it and spaces inside a tag's edges out of it; until nothing moves."""

    def nested(m: regex.Match[str]) -> str:
        return f"{_OPEN_B}{_trim_wb(m[1])};{_trim_wb(m[2])}{_OPEN_E}{m[3]}{_CLOSE}"

    if _OPEN_B not in s and _CLOSE not in s:
        return s  # plain text: nothing to move (the common case, kept cheap)
    steps: list[tuple[regex.Pattern[str], str | Callable[[regex.Match[str]], str]]] = [
        (_RX_MERGE, r"\1\2\3"), (_RX_NESTED, nested), (_RX_ALPHA_PREFIX, r"\2\1\3"),
        (_RX_ALPHA_SUFFIX, r"\1\3\2"), (_RX_SPC_PREFIX, r"\2\1"), (_RX_SPC_SUFFIX, r"\2\1"), (_RX_MERGE, r"\1\2\3"),
    ]
    while True:
        before = s
        for rx, repl in steps:
            s = rx.sub(repl, s)
        if s == before:
            return s


def _trim_wb(s: str) -> str:
    return s.strip(_ASCII_SPACE + ";")


def _escape_body(s: str) -> str:
    """transfuse's escape_body (stream-apertium.cpp): stream meta-characters escaped, inline marks as
    word-bound blanks."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == _OPEN_B:
            end = s.index(_OPEN_E, i)
            names = s[i + 1:end].split(";")
            out.append("[[" + ";".join("t:" + n for n in names) + "]]")
            i = end + 1
            continue
        if c == _CLOSE:
            out.append("[[/]]")
        elif c in _BODY_ESCAPES:
            out.append("\\" + c)
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _unescape_entities(s: str) -> str:
    return s.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _read_block(chunk: str) -> tuple[str, str]:
    """transfuse's ApertiumStream::get_block: one NUL-terminated chunk of the stages' output as (block id, text
    with inline marks), escapes undone, blanks' contents kept, the '.' that closed the block taken off."""
    text: list[str] = []
    block_id = ""
    unesc: list[str] = []
    wbs: list[str] = []
    in_blank = in_wblank = False
    i, n = 0, len(chunk)
    while i < n:
        c = chunk[i]
        i += 1
        if c == "\\" and i < n:
            (unesc if in_blank else text).append(chunk[i])
            i += 1
            continue
        if c == "[":
            if in_blank:
                in_wblank = True
            in_blank = True
        (unesc if in_blank else text).append(c)
        if in_wblank and c == "]":
            in_wblank = False
        elif in_blank and c == "]":
            in_blank = False
            blank = "".join(unesc)
            unesc = []
            if blank.startswith("[[/]]"):
                if wbs:
                    text.append(_CLOSE)
            elif blank.startswith("[["):
                wbs = []
                for part in blank[2:-2].split(";"):
                    part = _trim_wb(part)
                    if part.startswith("t:") and part[2:] not in wbs:
                        wbs.append(part[2:])
                if wbs:
                    text.append(_OPEN_B + "".join(t + ";" for t in wbs) + _OPEN_E)
            elif "[tf-block:" in blank and "]" in blank[blank.index("[tf-block:"):]:
                start = blank.index("[tf-block:") + 10
                block_id = blank[start:blank.index("]", start)]
            elif blank == "[]":
                if text and text[-1] == ".":
                    text.pop()
            else:
                text.append(blank[1:-1])
    return block_id, "".join(text)


@dataclass(frozen=True)
class _Encoded:
    """One block as the stages get it, and what putting its translation back needs."""

    chunk: str  # the stream chunk, without its NUL; "" when the block has no text to translate
    prefix: str  # the block's HTML before the translated text (the only-child span's opening, its spaces)
    suffix: str
    tags: dict[str, str]  # inline tag name (span:ID) -> its opening tag


class TransfuseCodec:
    """What `tf-extract -f html` and `tf-inject` do with one `<p>` block of crop's HTML: escaped text with
    non-nested, non-empty `<span id="...">` tags (entity markers, word tags). `supports` says whether a block is
    of that kind; the persistent engine sends any other batch through the one-shot pipeline."""

    @staticmethod
    def supports(block: str) -> bool:
        return _BLOCK_GRAMMAR.fullmatch(block) is not None and _PRIVATE_RE.search(block) is None

    @staticmethod
    def encode(block: str, block_id: str) -> _Encoded:
        parts = []  # (span id or None, unescaped text)
        for m in _PART_RE.finditer(block):
            if m[1] is not None:
                parts.append((m[1], _unescape_entities(m[2])))
            else:
                parts.append((None, _unescape_entities(m[3])))
        spans = [i for i, (sid, _) in enumerate(parts) if sid is not None]
        tags: dict[str, str] = {}
        prefix = suffix = ""
        if len(spans) == 1 and all(_BLANK_ONLY.match(t) for sid, t in parts if sid is None):
            # a tag that is its block's only child is not inline (is_only_child): its text is the block
            k = spans[0]
            sid, content = parts[k]
            prefix = "".join(_xml_escape(t) for _, t in parts[:k]) + f'<span id="{sid}">'
            suffix = "</span>" + "".join(_xml_escape(t) for _, t in parts[k + 1:])
        else:
            pieces = []
            for sid, t in parts:
                if sid is None:
                    pieces.append(t)
                else:
                    name = f"span:{sid}"
                    tags[name] = f'<span id="{sid}">'
                    pieces.append(f"{_OPEN_B}{name}{_OPEN_E}{t}{_CLOSE}")
            content = _cleanup_styles("".join(pieces))
        if not content or _BLANK_ONLY.match(content) or not _ANY_ALNUM.search(content):
            # no block: the text stays as it is (the tags put back, as tf-inject would)
            return _Encoded("", prefix + _restore_inline(_xml_escape(content), tags), suffix, tags)
        chunk = f"\n[tf-block:{block_id}]\n\n{_escape_body(content)}.[]\n"
        return _Encoded(chunk, prefix, suffix, tags)

    @staticmethod
    def decode(encoded: _Encoded, chunk: str) -> str:
        """The HTML that tf-inject puts in the block for the stages' output `chunk` (without its NUL)."""
        _, text = _read_block(chunk)
        core = text.strip(_ASCII_SPACE)
        # tf-inject drops the line breaks around the block and keeps one space of any other leading or trailing
        # white space (the source's own white space does not matter)
        lead = text[:len(text) - len(text.lstrip(_ASCII_SPACE))]
        trail = text[len(text.rstrip(_ASCII_SPACE)):] if core else ""
        lead, trail = (" " if ws.strip("\r\n") else "" for ws in (lead, trail))
        body = _cleanup_styles(lead + _xml_escape(core) + trail)
        return encoded.prefix + _restore_inline(body, encoded.tags) + encoded.suffix


def _restore_inline(s: str, tags: dict[str, str]) -> str:
    """Inline marks back into tags, innermost first (tf-inject's rx_inlines loop)."""
    if _OPEN_B not in s:
        return s
    while True:
        def put(m: regex.Match[str]) -> str:
            opens, closes = [], []
            for part in m[1].split(";"):
                name = _trim_wb(part)
                if not name:
                    continue
                tag = tags.get(name, "")
                opens.append(tag)
                closes.insert(0, "</span>" if tag else "")
            return "".join(opens) + m[2] + "".join(closes)

        new = _RX_INLINE.sub(put, s)
        if new == s:
            return s
        s = new


def block_id_of(chunk: str) -> str:
    return _read_block(chunk)[0]


# -- one long-lived pipeline ---------------------------------------------------------------------------------


class NullFlushPipeline:
    """A mode's stages started once (`bash -c STAGES`, its own process group); `run` writes NUL-terminated
    chunks and reads as many NUL-terminated answers back, within a deadline."""

    def __init__(self, stages: str, env: dict[str, str]) -> None:
        # a file, not a pipe: a pipe nobody reads could fill up and stop a stage; closed by kill()
        self._stderr = tempfile.TemporaryFile(prefix="crop-apertium-stderr-")  # noqa: SIM115
        # "$1": the generator's option (-n, no marks: what -u selects), "$2": the tagger's (none)
        self.proc = subprocess.Popen(["bash", "-c", stages, "bash", "-n", ""], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._in, self._out = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        for fd in (self._in, self._out):
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._pending = b""  # bytes read past the last answer (none while the pipeline is in step)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, chunks: Sequence[str], timeout: float) -> list[str]:
        """The stages' answers to `chunks` (each sent with a NUL after it), in order."""
        if self._pending:
            raise BrokenOutput("the pipeline sent output nobody asked for: it is out of step", self.stderr())
        payload = b"".join(c.encode("utf-8") + b"\0" for c in chunks)
        deadline = time.monotonic() + timeout
        answers: list[bytes] = []
        buf = bytearray()
        sent = 0
        poller = select.poll()
        poller.register(self._out, select.POLLIN)
        if payload:
            poller.register(self._in, select.POLLOUT)
        while len(answers) < len(chunks):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokenOutput(f"no answer within {timeout:.1f} s ({len(answers)} of {len(chunks)} blocks): "
                                   "a stage hangs", self.stderr())
            for fd, event in poller.poll(left * 1000):
                if fd == self._in:
                    try:
                        sent += os.write(self._in, payload[sent:sent + 65536])
                    except BrokenPipeError:
                        raise BrokenOutput("the pipeline's input is closed: a stage died", self.stderr()) from None
                    except BlockingIOError:
                        continue
                    if sent >= len(payload):
                        poller.unregister(self._in)
                elif event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    try:
                        data = os.read(self._out, 1 << 16)
                    except BlockingIOError:
                        continue
                    if not data:
                        raise BrokenOutput(f"the pipeline's output ended after {len(answers)} of {len(chunks)} "
                                           f"blocks: {self._death()}", self.stderr())
                    buf += data
                    while (cut := buf.find(b"\0")) >= 0:
                        answers.append(bytes(buf[:cut]))
                        del buf[:cut + 1]
        self._pending = bytes(buf)
        if self._pending:
            raise BrokenOutput("the pipeline sent more answers than blocks: it is out of step", self.stderr())
        try:
            return [a.decode("utf-8") for a in answers]
        except UnicodeDecodeError as e:
            raise BrokenOutput(f"the output is not UTF-8 ({e})", self.stderr()) from None

    def _death(self) -> str:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=0.5)
        code = self.proc.poll()
        return "a stage died" if code is None else f"the pipeline exited with status {code}"

    def stderr(self) -> str:
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(0, size - 4000))
            return self._stderr.read().decode("utf-8", errors="replace")
        return ""

    def kill(self) -> None:
        """The whole process group, at once (a stopped stage too: SIGKILL needs no cooperation)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        _wait_group_gone(self.proc.pid, 5.0)
        self._stderr.close()


def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Until no live process (zombies aside: their parent, bash, is gone) is left in the group."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        if not _live_members(pgid):
            return
        time.sleep(0.005)


def _live_members(pgid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != b"Z":
                found.append(int(entry.name))
    return found


# -- a pool per mode ------------------------------------------------------------------------------------------


class PipelinePool:
    """Up to `size` pipelines of one mode, each used by one request at a time, started on demand."""

    def __init__(self, mode: str, stages: str, env: dict[str, str], size: int) -> None:
        self.mode, self._stages, self._env = mode, stages, env
        self.size = max(1, size)
        self._idle: list[NullFlushPipeline] = []
        self._all: set[NullFlushPipeline] = set()
        self._cond = threading.Condition()
        self._closed = False

    def acquire(self, timeout: float) -> NullFlushPipeline:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    raise EngineUnavailable(f"apertium {self.mode}: the engine is closed")
                if self._idle:
                    return self._idle.pop()
                if len(self._all) < self.size:
                    pipe = NullFlushPipeline(self._stages, self._env)
                    self._all.add(pipe)
                    return pipe
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EngineUnavailable(f"apertium {self.mode}: all {self.size} pipelines stayed busy for "
                                            f"{timeout:.0f} s", retry_after=1.0)
                self._cond.wait(left)

    def release(self, pipe: NullFlushPipeline, broken: bool) -> None:
        """Back to the pool, or (broken: it died, hung or answered wrong) killed and forgotten."""
        if broken or self._closed:
            pipe.kill()
        with self._cond:
            if broken or self._closed:
                self._all.discard(pipe)
            else:
                self._idle.append(pipe)
            self._cond.notify()

    def pids(self) -> list[int]:
        with self._cond:
            return [p.pid for p in self._all]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            for p in idle:
                self._all.discard(p)
            self._cond.notify_all()
        for p in idle:
            p.kill()
        # pipelines in use are killed by their release; a request still running past close gets BrokenOutput
        with self._cond:
            busy = list(self._all)
        for p in busy:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in busy:
            _wait_group_gone(p.pid, 5.0)


_ids = itertools.count(1)


def next_block_ids(n: int) -> list[str]:
    """Block ids unique in this process, in tf-extract's form (number-tag): an answer is matched to its block."""
    return [f"{next(_ids)}-crop" for _ in range(n)]


__all__ = ["BrokenOutput", "NullFlushPipeline", "PipelinePool", "TransfuseCodec", "block_id_of", "next_block_ids"]
