"""Apertium whose process dies mid-batch: a translation that is not one is never returned.

The stages of real Apertium runs are killed with SIGKILL while they translate (found among this test process's
descendants through /proc). Apertium's own `apertium -f html` script runs its pipeline without pipefail, so a dead
stage used to give exit 0 and tf-inject put the untranslated source text in place of the translation."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import spans_of

from crop.errors import EngineUnavailable
from crop.translate.apertium import ApertiumTranslator, BrokenOutput, Canary, check_stage_statuses, validate_batch
from crop.types import LabeledItem

pytestmark = pytest.mark.integration

RAW_ES = Path("/work/shared/data/raw/es.txt")


def _children_of() -> dict[int, list[int]]:
    """Parent pid -> child pids, from /proc/*/stat (the parent is the 4th field, after the command in parens)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> list[int]:
    tree, found, todo = _children_of(), [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _bytes_written(pid: int) -> int:
    try:
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    except OSError:
        return 0
    return int(io["wchar"])


def is_analyser(cmd: str) -> bool:
    return cmd.startswith("lt-proc ") and "automorf" in cmd


def is_structural_transfer(cmd: str) -> bool:
    return cmd.startswith("apertium-transfer ") and " -b " in f" {cmd} "


class StageKiller:
    """Kills, with SIGKILL, the stage that `matches` of every Apertium run this process starts, up to `times`
    runs. With `mid_stream` it waits until the stage has written output (it has read part of the batch and is
    translating), else it kills the stage as soon as it exists. Each run's stage is killed once."""

    def __init__(self, matches: Callable[[str], bool], times: int, mid_stream: bool) -> None:
        self.matches, self.times, self.mid_stream = matches, times, mid_stream
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> StageKiller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set() and len(self.killed) < self.times:
            for pid in _descendants(os.getpid()):
                if pid in self.killed or not self.matches(_cmdline(pid)):
                    continue
                if self.mid_stream and _bytes_written(pid) == 0:
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                self.killed.append(pid)
            time.sleep(0.002)


@pytest.fixture(scope="module")
def long_batch() -> list[str]:
    """Enough Spanish news sentences that a run lasts long enough for the killer to find its stages mid-batch."""
    lines = [line.strip() for line in RAW_ES.read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:800]


@pytest.fixture(scope="module")
def clean_translation(translator: ApertiumTranslator, long_batch: list[str]) -> list[str]:
    return translator.translate(long_batch, "es", "en")


def test_stage_killed_mid_batch_is_retried_never_returned(translator: ApertiumTranslator, long_batch: list[str],
                                                          clean_translation: list[str]) -> None:
    assert sum(o != s for o, s in zip(clean_translation, long_batch, strict=True)) > 0.95 * len(long_batch)
    with StageKiller(is_analyser, times=1, mid_stream=True) as killer:
        outs = translator.translate(long_batch, "es", "en")
    assert len(killer.killed) == 1
    assert outs == clean_translation  # the dead run's output (source text past the kill) was not returned


def test_labeled_batch_with_a_killed_stage_keeps_its_entities(translator: ApertiumTranslator,
                                                              long_batch: list[str]) -> None:
    items = [LabeledItem(text=text, spans=spans_of(text, (text.split()[-2], "MISC"))) for text in long_batch[:400]]
    clean = translator.translate_labeled(items, "es", "en")
    with StageKiller(is_structural_transfer, times=1, mid_stream=True) as killer:
        results = translator.translate_labeled(items, "es", "en")
    assert len(killer.killed) == 1
    assert [r.text for r in results] == [r.text for r in clean]
    assert [r.spans for r in results] == [r.spans for r in clean]


def test_stage_that_keeps_dying_is_engine_unavailable(translator: ApertiumTranslator, long_batch: list[str],
                                                      clean_translation: list[str]) -> None:
    translator.translate(long_batch[:2], "es", "en")  # the mode's pipeline and canary are ready before killing
    with StageKiller(is_analyser, times=10, mid_stream=False) as killer, pytest.raises(EngineUnavailable) as info:
        translator.translate(long_batch, "es", "en")
    assert len(killer.killed) == 3  # one run and two retries, each with a fresh process; no halving
    msg = str(info.value)
    assert "spa-eng" in msg and "lt-proc" in msg and "SIGKILL" in msg, msg
    assert info.value.retry_after > 0
    # the engine itself was fine: the next batch is translated
    assert translator.translate(long_batch[:3], "es", "en") == clean_translation[:3]


def _payload(blocks: list[str]) -> str:
    return "".join(f"<p>{b}</p>\n" for b in blocks)


def _untranslated(payload: str) -> str:
    """What tf-inject writes when the mode between it and tf-extract translated nothing: the source again."""
    return subprocess.run("tf-extract -f html | tf-inject", shell=True, input=payload, capture_output=True,
                          text=True, check=True).stdout


def test_validate_batch_refuses_untranslated_and_truncated_output(translator: ApertiumTranslator) -> None:
    canary = translator.canary("spa-eng")
    assert canary is not None and canary.expected != canary.source
    blocks = ["El gato duerme en la casa.", "Vivo en Madrid desde hace años", canary.source]
    good = translator.run_pipeline("spa-eng", blocks)
    assert validate_batch(good, canary) == ["The cat sleeps in the house.", "Alive in Madrid from does years"]

    with pytest.raises(BrokenOutput, match="canary"):
        validate_batch(_untranslated(_payload(blocks)), canary)
    cut = good[: good.rindex("<p>")]  # the stream ends before the last block
    with pytest.raises(BrokenOutput, match="canary"):
        validate_batch(cut, canary)
    with pytest.raises(BrokenOutput, match="canary"):
        validate_batch("", canary)
    # without a canary (a mode that changes none of the canary sentences) every block is returned
    assert validate_batch(good, None) == [*validate_batch(good, canary), canary.expected]


def test_check_stage_statuses_names_the_dead_stage() -> None:
    stages = ("tf-extract", "lt-proc", "apertium-tagger", "tf-inject")
    check_stage_statuses("crop-pipestatus: 0 0 0 0\n", 0, stages)
    with pytest.raises(BrokenOutput) as info:
        check_stage_statuses("crop-pipestatus: 141 137 0 0\n", 0, stages)
    msg = str(info.value)
    assert "lt-proc (stage 2) was killed by SIGKILL" in msg
    assert "tf-extract (stage 1) was killed by SIGPIPE" in msg
    with pytest.raises(BrokenOutput, match=r"apertium-tagger \(stage 3\) exited with status 1"):
        check_stage_statuses("some warning\ncrop-pipestatus: 0 0 1 0\n", 0, stages)
    with pytest.raises(BrokenOutput, match="no stage statuses"):
        check_stage_statuses("", -9, stages)  # the shell itself was killed


def test_canary_is_computed_once_per_mode(translator: ApertiumTranslator) -> None:
    first = translator.canary("eng-spa")
    assert isinstance(first, Canary)
    assert translator.canary("eng-spa") is first
    assert first.expected != first.source
    # the source-language sentence is chosen: English for eng-spa, Galician for gl-en
    assert "dog" in first.source and "perro" in first.expected
    gl = translator.canary("gl-en")
    assert gl is not None and "dog" in gl.expected


def test_control_characters_in_the_input_are_not_an_outage(translator: ApertiumTranslator) -> None:
    """NUL is the stages' null-flush mark and other controls break the deformatter's blocks: as input they must
    not look like a dead engine (the canary check once answered EngineUnavailable for them). Seen by fuzzing."""
    texts = ["<", "b}", "\x00", "la casa\x00 roja", "\x0c<##/", "Hola\u2028mundo\x1b[0m", "\x7f\x85 Madrid\u2029"]
    out = translator.translate(texts, "es", "en")
    assert len(out) == len(texts) and "house" in out[3].lower() and "Madrid" in out[6]
    text = "Pedro\x00 lives in Madrid\x0b."
    item = LabeledItem(text=text, spans=spans_of(text, ("Madrid", "LOC")))
    result = translator.translate_labeled([item], "en", "es")[0]
    assert not result.lost and result.text[result.spans[0].start:result.spans[0].end] == "Madrid"
