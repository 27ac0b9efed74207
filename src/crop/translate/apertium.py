"""Apertium: rule-based, offline, CPU. Each mode's stages run as long-lived null-flush pipelines, pooled
(crop.translate.apertium_pool); batches of CROP_APERTIUM_ONESHOT_MIN_BATCH blocks or more, and an engine built with
`persistent=False` (CROP_APERTIUM_PERSISTENT=0), run one Apertium process pipeline per batch instead.

Every sentence travels as its own HTML block (`<p>…</p>`) in Apertium's HTML format, so sentences never merge
(plain-text mode joins lines without final punctuation) and inline tags travel with the words they wrap: that is
how labeled translation (entity markers) and word alignment (one tag per source word) are carried.

A run whose output is not a translation is never returned: crop runs the same pipeline as `apertium -u -f html`
with every stage's exit status visible, and each batch ends with a canary block whose translation is known. A
broken run is retried with a fresh process, and one that keeps breaking is `EngineUnavailable`. A persistent
pipeline that dies, hangs past the request's deadline or answers out of step or with a wrong canary is killed
(its process group) and the request retried once on a fresh one, then `EngineUnavailable`.

Settings (constructor arguments, else the environment): CROP_APERTIUM_PERSISTENT (1), CROP_APERTIUM_POOL
(pipelines per mode, 1), CROP_APERTIUM_REQUEST_TIMEOUT (seconds a request may take on a persistent pipeline, plus
10 ms per block; 10), CROP_APERTIUM_ONESHOT_MIN_BATCH (batches of this many blocks or more run one-shot; 0: never).
"""

from __future__ import annotations

import atexit
import contextlib
import html
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from crop.errors import EngineUnavailable
from crop.langcodes import to_iso1, to_iso3
from crop.markers import get_codec
from crop.text import detokenize, tokenize
from crop.translate.apertium_pool import (
    BrokenOutput,
    NullFlushPipeline,
    PipelinePool,
    TransfuseCodec,
    block_id_of,
    next_block_ids,
)
from crop.translate.base import UnsupportedPair
from crop.types import AlignedTranslation, LabeledItem, LabeledResult

log = logging.getLogger(__name__)

_BLOCK_RE = re.compile(r"<p>(.*?)</p>", re.DOTALL | re.IGNORECASE)
# '#' marks a word Apertium could not generate, '@' one its transfer could not translate ('*', unknown words,
# is removed by -u); a mark is dropped only where the source did not have that character there.
_MARK_RE = re.compile(r"(?<![\w#@])[#@](?=\w)")
_WORD_TAG_RE = re.compile(r"<\s*span\s+id\s*=\s*\"?w(\d+)\"?\s*>|<\s*/\s*span\s*>", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")
# characters a stream cannot carry: NUL is the null-flush mark of the stages, the other controls and line
# separators break the deformatter's blocks, and transfuse's own private-use marks (U+E010-U+E02F) made tf-inject
# abort; one space each keeps every offset (spans, aligned tokens) in place
_UNSAFE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ue010-\ue02f]")
_STATUS_MARK = "crop-pipestatus:"
_ATTEMPTS = 3  # one run and two retries, each with a fresh process
# canary candidates, one everyday sentence per language (ISO 639-3): a mode's canary is its source language's,
# or else the first one the mode changes
_CANARY_TEXTS = {
    "eng": "The dog eats the meat in the house.",
    "spa": "El perro come la carne en la casa.",
    "cat": "El gos menja la carn a la casa.",
    "glg": "O can come a carne na casa.",
    "por": "O cão come a carne na casa.",
    "fra": "Le chien mange la viande dans la maison.",
    "ita": "Il cane mangia la carne nella casa.",
    "deu": "Der Hund frisst das Fleisch im Haus.",
    "oci": "Lo can manja la carn dins l'ostal.",
    "eus": "Txakurrak haragia jaten du etxean.",
}


class ApertiumError(RuntimeError):
    pass


@dataclass(frozen=True)
class Canary:
    """A block sent last in every batch of a mode, whose translation by that mode is known: a batch whose canary
    does not come back as `expected` was not (entirely) translated."""

    source: str
    expected: str  # whitespace-normalized


@dataclass(frozen=True)
class _Pipeline:
    script: str  # bash: the stages as one pipeline, then their exit statuses on stderr
    stages: tuple[str, ...]  # each stage's program, in order
    mode_stages: str  # the mode's own stages (null-flush), without the deformatter around them


_PERSISTENT_ATTEMPTS = 2  # one run and one retry, on a fresh pipeline
_LIVE: weakref.WeakSet[ApertiumTranslator] = weakref.WeakSet()


def _close_all() -> None:
    for translator in list(_LIVE):
        translator.close()


atexit.register(_close_all)  # no stage outlives the process (the services' SIGTERM ends in a normal exit)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


class ApertiumTranslator:
    name = "apertium"

    def __init__(self, binary: str = "apertium", modes_dir: str | None = None, timeout: float = 3600.0,
                 persistent: bool | None = None, pool_size: int | None = None, request_timeout: float | None = None,
                 oneshot_min_batch: int | None = None) -> None:
        path = shutil.which(binary)
        if path is None:
            raise ApertiumError(
                f"{binary!r} not found: install Apertium (Debian: apt-get install apertium apertium-eng-spa "
                "apertium-eng-cat apertium-en-gl)"
            )
        self.binary = path
        self.modes_dir = modes_dir
        self.timeout = timeout
        self._codec = get_codec("html")
        self._env = _pipeline_env(path)
        for tool in ("tf-extract", "tf-inject", "apertium-wblank-mode", "bash"):
            if shutil.which(tool, path=self._env["PATH"]) is None:
                raise ApertiumError(f"{tool!r} not found: install Apertium with transfuse (Debian: apt-get install "
                                    "apertium transfuse), which moves inline tags with their words")
        self._pipelines: dict[str, _Pipeline] = {}
        self._canaries: dict[str, Canary | None] = {}
        if persistent is None:
            persistent = os.environ.get("CROP_APERTIUM_PERSISTENT", "1").strip().lower() not in ("0", "false", "no")
        self.persistent = persistent
        self.pool_size = int(pool_size if pool_size is not None else _env_number("CROP_APERTIUM_POOL", 1))
        self.request_timeout = (request_timeout if request_timeout is not None
                                else _env_number("CROP_APERTIUM_REQUEST_TIMEOUT", 10.0))
        self.oneshot_min_batch = int(oneshot_min_batch if oneshot_min_batch is not None
                                     else _env_number("CROP_APERTIUM_ONESHOT_MIN_BATCH", 0))
        self._pools: dict[str, PipelinePool] = {}
        self._owner = os.getpid()  # a forked child starts its own pipelines: the parent's streams are not its
        self._lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)

    # -- language pairs -------------------------------------------------------------------------------------

    @cached_property
    def _modes(self) -> list[str]:
        cmd = [self.binary] + (["-d", self.modes_dir] if self.modes_dir else []) + ["-l"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return [m.strip() for m in out.stdout.split() if m.strip()]

    def pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for mode in self._modes:
            src, _, tgt = mode.partition("-")
            if tgt and "_" not in tgt:
                pairs.append((to_iso1(src), to_iso1(tgt)))
        return sorted(set(pairs))

    def mode(self, src: str, tgt: str) -> str:
        """The installed Apertium mode for src -> tgt, whichever code style the pair's package uses."""
        for a in dict.fromkeys((to_iso3(src), to_iso1(src), src)):
            for b in dict.fromkeys((to_iso3(tgt), to_iso1(tgt), tgt)):
                if f"{a}-{b}" in self._modes:
                    return f"{a}-{b}"
        installed = ", ".join(f"{a}-{b}" for a, b in self.pairs()) or "none"
        raise UnsupportedPair(
            f"Apertium has no {src}->{tgt} pair installed (installed: {installed}); on Debian the pairs are "
            f"packages such as apertium-{to_iso3(src)}-{to_iso3(tgt)} or apertium-{to_iso3(tgt)}-{to_iso3(src)}"
        )

    # -- running --------------------------------------------------------------------------------------------

    @cached_property
    def _datadir(self) -> str:
        """Where `apertium` finds `modes/MODE.mode`: -d, else $APERTIUM_DATADIR, else its script's default."""
        if self.modes_dir:
            return self.modes_dir
        if os.environ.get("APERTIUM_DATADIR"):
            return os.environ["APERTIUM_DATADIR"]
        try:
            head = Path(self.binary).read_text(encoding="utf-8", errors="replace")[:4000]
        except OSError:
            head = ""
        found = re.search(r'APERTIUM_DATADIR:-([^}"]+)', head)
        return found.group(1) if found else "/usr/share/apertium"

    def _pipeline(self, mode: str) -> _Pipeline:
        """What `apertium -u -f html MODE` runs (transfuse around the mode's stages in null-flush mode), as one
        pipeline whose stages report their exit statuses: Apertium's own script runs it without pipefail and
        exits 0 whatever a stage did, and tf-inject then puts the source text back for what it did not get."""
        if mode not in self._pipelines:
            mode_file = os.path.join(self._datadir, "modes", f"{mode}.mode")
            proc = subprocess.run(["apertium-wblank-mode", "-z", mode_file], capture_output=True, text=True,
                                  env=self._env, timeout=60)
            stages = proc.stdout.strip()
            if proc.returncode != 0 or not stages:
                raise ApertiumError(f"apertium-wblank-mode could not read {mode_file}: {proc.stderr.strip()[:300]}")
            # "$1": the generator's option (-n, no marks: what -u selects), "$2": the tagger's (none), "$3": the
            # transfuse state folder, which crop removes even when a stage died before tf-inject could
            script = (f'tf-extract -f html -d "$3" | {stages} | tf-inject -d "$3"\n'
                      f'echo "{_STATUS_MARK} ${{PIPESTATUS[*]}}" >&2\n')
            self._pipelines[mode] = _Pipeline(script, ("tf-extract", *_programs(stages), "tf-inject"), stages)
        return self._pipelines[mode]

    def run_pipeline(self, mode: str, blocks: Sequence[str]) -> str:
        """One run of the mode over HTML blocks (already escaped), in a fresh process: its output HTML.
        Raises BrokenOutput when a stage died or failed."""
        pipeline = self._pipeline(mode)
        payload = "".join(f"<p>{_WS_RE.sub(' ', _UNSAFE_RE.sub(' ', b))}</p>\n" for b in blocks).encode()
        with tempfile.TemporaryDirectory(prefix="crop-apertium-") as state:
            proc = subprocess.Popen(["bash", "-c", pipeline.script, "bash", "-n", "", state], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._env,
                                    start_new_session=True)
            try:
                out, err = proc.communicate(payload, timeout=self.timeout)
            except BaseException:  # a timeout or an interrupt: no stage outlives the batch
                _kill_group(proc)
                raise
        check_stage_statuses(err.decode("utf-8", errors="replace"), proc.returncode, pipeline.stages)
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BrokenOutput(f"the output is not UTF-8 ({e})") from None

    # -- persistent pipelines -------------------------------------------------------------------------------

    def _pool(self, mode: str) -> PipelinePool:
        with self._lock:
            if self._closed:
                raise EngineUnavailable("apertium: the engine is closed")
            if self._owner != os.getpid():
                self._pools, self._owner = {}, os.getpid()
            if mode not in self._pools:
                # the mode's stages only: the deformatting around them is TransfuseCodec's
                self._pools[mode] = PipelinePool(mode, self._pipeline(mode).mode_stages, self._env, self.pool_size)
            return self._pools[mode]

    def _uses_persistent(self, blocks: Sequence[str]) -> bool:
        if not self.persistent or (self.oneshot_min_batch and len(blocks) >= self.oneshot_min_batch):
            return False
        return all(TransfuseCodec.supports(_WS_RE.sub(" ", _UNSAFE_RE.sub(" ", b))) for b in blocks)

    def _run_persistent_once(self, pipe: NullFlushPipeline, blocks: Sequence[str], canary: Canary | None) -> list[str]:
        """One pass of checked blocks through a persistent pipeline: each block's output HTML."""
        clean = [_WS_RE.sub(" ", _UNSAFE_RE.sub(" ", b)) for b in blocks]
        ids = next_block_ids(len(clean))
        encoded = [TransfuseCodec.encode(b, i) for b, i in zip(clean, ids, strict=True)]
        todo = [k for k, e in enumerate(encoded) if e.chunk]
        timeout = self.request_timeout + 0.01 * len(todo)
        answers = pipe.run([encoded[k].chunk for k in todo], timeout)
        outs = [e.prefix + e.suffix for e in encoded]  # blocks without text come back as they are
        for k, answer in zip(todo, answers, strict=True):
            if block_id_of(answer) != ids[k]:
                raise BrokenOutput(f"an answer came back for block {block_id_of(answer)!r}, not {ids[k]!r}: the "
                                   "pipeline is out of step", pipe.stderr())
            outs[k] = TransfuseCodec.decode(encoded[k], answer)
        return validate_batch("".join(f"<p>{o}</p>\n" for o in outs), canary)

    def _run_persistent(self, mode: str, blocks: Sequence[str], canary: Canary | None) -> list[str]:
        sent = [*blocks, canary.source] if canary else list(blocks)
        pool = self._pool(mode)
        reasons: list[str] = []
        for attempt in range(1, _PERSISTENT_ATTEMPTS + 1):
            # a busy pool is waited for: each holder gives its pipeline back within its own deadline
            pipe = pool.acquire(timeout=max(60.0, 6 * self.request_timeout) + 0.01 * len(sent))
            broken = True
            try:
                outs = self._run_persistent_once(pipe, sent, canary)
                broken = False
                return outs
            except BrokenOutput as e:
                reasons.append(str(e))
                log.warning("apertium pipeline broken, restarted", extra={
                    "mode": mode, "attempt": attempt, "reason": str(e), "stderr": e.stderr[-2000:]})
            finally:
                pool.release(pipe, broken)  # a broken pipeline (or one interrupted) is killed, never reused
        raise EngineUnavailable(f"apertium {mode}: {_PERSISTENT_ATTEMPTS} runs in a row on fresh pipelines did not "
                                "translate: " + " / ".join(dict.fromkeys(reasons)))

    def pipeline_pids(self) -> list[int]:
        """The process-group leaders of the running persistent pipelines (for tests and diagnostics)."""
        with self._lock:
            pools = list(self._pools.values())
        return [pid for pool in pools for pid in pool.pids()]

    def close(self) -> None:
        """Stop every persistent pipeline (their whole process groups). Idempotent; the engine refuses work after."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
            if self._owner != os.getpid():
                return  # a forked child's copy: the pipelines are its parent's
        for pool in pools:
            pool.close()

    def __enter__(self) -> ApertiumTranslator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run_checked(self, mode: str, blocks: Sequence[str], canary: Canary | None,
                     allow_persistent: bool = True) -> list[str]:
        """The output blocks of a checked run (the canary, if any, sent last and taken off again). A broken run
        is retried with a fresh process; `_ATTEMPTS` broken runs in a row mean the engine is down."""
        sent = [*blocks, canary.source] if canary else list(blocks)
        if allow_persistent and self._uses_persistent(sent):
            return self._run_persistent(mode, blocks, canary)
        reasons: list[str] = []
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return validate_batch(self.run_pipeline(mode, sent), canary)
            except BrokenOutput as e:
                reasons.append(str(e))
                log.warning("apertium run broken", extra={"mode": mode, "attempt": attempt, "reason": str(e),
                                                          "stderr": e.stderr[-2000:]})
        raise EngineUnavailable(f"apertium {mode}: {_ATTEMPTS} runs in a row did not translate: "
                                + " / ".join(dict.fromkeys(reasons)))

    def canary(self, mode: str) -> Canary | None:
        """The mode's canary, computed once: the first of `_CANARY_TEXTS` (its source language's first) that the
        mode changes; None, with a warning, where it changes none (then only the stage statuses are checked)."""
        if mode not in self._canaries:
            own = _CANARY_TEXTS.get(to_iso3(mode.partition("-")[0]))
            texts = sorted(_CANARY_TEXTS.values(), key=lambda t: t != own)
            # one-shot: the canary sentences do not go through (and leave no state in) the persistent pipelines
            outs = self._run_checked(mode, texts, None, allow_persistent=False)
            if len(outs) != len(texts):
                raise ApertiumError(f"apertium {mode} returned {len(outs)} blocks for {len(texts)} canary sentences")
            changed = [Canary(t, _normalize(o)) for t, o in zip(texts, outs, strict=True) if _normalize(o) != t]
            if not changed:
                log.warning("apertium mode without a canary: untranslated output is not detected", extra={"mode": mode})
            self._canaries[mode] = changed[0] if changed else None
        return self._canaries[mode]

    def _run(self, mode: str, blocks: Sequence[str]) -> list[str]:
        """Translate HTML blocks (already escaped) with one checked process; returns each block's output HTML."""
        if not blocks:
            return []
        outs = self._run_checked(mode, blocks, self.canary(mode))
        if len(outs) != len(blocks):
            if len(blocks) == 1:
                raise ApertiumError(f"apertium {mode} returned no block for {blocks[0][:80]!r}")
            # a block structure the deformatter did not keep: fall back to halves so that nothing is lost
            log.warning("apertium block count mismatch", extra={"mode": mode, "blocks": len(blocks)})
            mid = len(blocks) // 2
            return self._run(mode, blocks[:mid]) + self._run(mode, blocks[mid:])
        return outs

    @staticmethod
    def _clean(out: str, source: str) -> str:
        text = _MARK_RE.sub(lambda m: m.group() if m.group() in source else "", out)
        return text

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        mode = self.mode(src, tgt)
        outs = self._run(mode, [html.escape(t, quote=False) for t in texts])
        return [_WS_RE.sub(" ", html.unescape(self._clean(o, t))).strip() for o, t in zip(outs, texts, strict=True)]

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        mode = self.mode(src, tgt)
        blocks = [self._codec.encode(it.text, it.spans) for it in items]
        outs = self._run(mode, blocks)
        return [
            self._codec.decode(self._clean(o, it.text), it.spans) for o, it in zip(outs, items, strict=True)
        ]

    def translate_aligned(
        self, sentences: Sequence[Sequence[str]], src: str, tgt: str
    ) -> list[AlignedTranslation]:
        """Translate tokenized sentences with every token wrapped in its own inline tag; the tags come back
        around the words each token produced, which aligns output words to source tokens."""
        mode = self.mode(src, tgt)
        blocks = []
        for tokens in sentences:
            text, offsets = detokenize(tokens, src)
            parts, pos = [], 0
            for i, (s, e) in enumerate(offsets):
                parts.append(html.escape(text[pos:s], quote=False))
                parts.append(f'<span id="w{i}">{html.escape(text[s:e], quote=False)}</span>')
                pos = e
            blocks.append("".join(parts))
        results = []
        for out, tokens in zip(self._run(mode, blocks), sentences, strict=True):
            results.append(_parse_aligned(self._clean(out, " ".join(tokens)), tgt))
        return results


def validate_batch(output: str, canary: Canary | None) -> list[str]:
    """The output blocks of one batch (a one-shot run's output, or one flush of a long-running pipeline), the
    canary taken off. Raises BrokenOutput when the canary, sent last, did not come back as its known translation:
    the stream was cut before it, or the text came back untranslated."""
    outs = _BLOCK_RE.findall(output)
    if canary is None:
        return outs
    if not outs:
        raise BrokenOutput("the output has no block, not even the canary: the stream was cut")
    last = _normalize(outs[-1])
    if last != canary.expected:
        raise BrokenOutput(f"the canary block came back as {last[:80]!r}, not as its translation "
                           f"{canary.expected[:80]!r}: the output was cut or not translated")
    return outs[:-1]


def check_stage_statuses(stderr: str, returncode: int, stages: Sequence[str]) -> None:
    """Raise BrokenOutput unless the pipeline's shell (return code `returncode`) reported on stderr that every
    stage exited 0. The cause comes first: a stage killed by a signal or failing, then the SIGPIPEs it caused."""
    reports = [line for line in stderr.splitlines() if line.startswith(_STATUS_MARK)]
    if not reports:
        raise BrokenOutput(f"the pipeline's shell {_describe(returncode)} and reported no stage statuses", stderr)
    statuses = [int(s) for s in reports[-1][len(_STATUS_MARK):].split()]
    failed = [(status, f"{stages[i] if i < len(stages) else '?'} (stage {i + 1}) {_describe(status)}")
              for i, status in enumerate(statuses) if status != 0]
    if returncode != 0:
        failed.append((returncode, f"the pipeline's shell {_describe(returncode)}"))
    if failed:
        failed.sort(key=lambda f: f[0] == 128 + signal.SIGPIPE)
        raise BrokenOutput("; ".join(text for _, text in failed), stderr)


def _describe(status: int) -> str:
    """A shell's status (128 + N: killed by signal N) or a Python return code (-N) in words."""
    sig = -status if status < 0 else status - 128 if status > 128 else 0
    if not sig:
        return f"exited with status {status}"
    try:
        return f"was killed by {signal.Signals(sig).name}"
    except ValueError:
        return f"was killed by signal {sig}"


def _programs(pipeline: str) -> list[str]:
    """The program of each stage of a shell pipeline, in order."""
    lexer = shlex.shlex(pipeline, posix=True, punctuation_chars="|")
    programs, at_start = [], True
    for token in lexer:
        if at_start:
            programs.append(os.path.basename(token))
        at_start = token == "|"
    return programs


def _pipeline_env(binary: str) -> dict[str, str]:
    """The environment `apertium` gives its stages: its own folder first on PATH, a UTF-8 character type."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(binary), env.get("PATH", os.defpath)])
    env.pop("LC_ALL", None)
    env["LC_CTYPE"] = "C.UTF-8"
    return env


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _normalize(block: str) -> str:
    return _WS_RE.sub(" ", block).strip()


def _parse_aligned(out: str, lang: str) -> AlignedTranslation:
    chars: list[str] = []
    owner: list[int] = []
    stack: list[int] = []
    pos = 0
    for m in _WORD_TAG_RE.finditer(out):
        piece = html.unescape(out[pos : m.start()])
        chars.append(piece)
        owner.extend([stack[-1] if stack else -1] * len(piece))
        if m.group(1) is not None:
            stack.append(int(m.group(1)))
        elif stack:
            stack.pop()
        pos = m.end()
    piece = html.unescape(out[pos:])
    chars.append(piece)
    owner.extend([stack[-1] if stack else -1] * len(piece))
    raw = "".join(chars)
    # collapse whitespace while keeping each character's owner
    text_chars, text_owner = [], []
    for ch, o in zip(raw, owner, strict=True):
        if ch.isspace():
            if not text_chars or text_chars[-1] == " ":
                continue
            ch = " "
        text_chars.append(ch)
        text_owner.append(o)
    while text_chars and text_chars[-1] == " ":
        text_chars.pop()
        text_owner.pop()
    text = "".join(text_chars)
    tokens, offsets = tokenize(text, lang)
    alignment = [sorted({o for o in text_owner[s:e] if o >= 0}) for s, e in offsets]
    return AlignedTranslation(text=text, tokens=tokens, alignment=alignment)
