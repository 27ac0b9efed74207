"""Persistent (null-flush, pooled) Apertium pipelines against the real engine: the same outputs as one-shot runs,
recovery from killed and hung stages, no process left behind, concurrent requests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from helpers import spans_of
from servers import free_port
from test_apertium_failures import StageKiller, _cmdline, _descendants, is_analyser, is_structural_transfer

from crop.errors import EngineUnavailable
from crop.translate.apertium import ApertiumTranslator
from crop.translate.apertium_pool import TransfuseCodec
from crop.types import LabeledItem

pytestmark = pytest.mark.integration

RAW_ES = Path("/work/shared/data/raw/es.txt")


def _group_members(pgid: int) -> list[int]:
    """Live processes (zombies excluded) of a process group, from /proc/*/stat (pgrp is the 5th field)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def _stages_of(translator: ApertiumTranslator, matches) -> list[int]:  # noqa: ANN001
    return [pid for leader in translator.pipeline_pids() for pid in _group_members(leader) if matches(_cmdline(pid))]


@pytest.fixture(scope="module")
def oneshot() -> ApertiumTranslator:
    return ApertiumTranslator(persistent=False)


@pytest.fixture
def persistent():
    with ApertiumTranslator(persistent=True, pool_size=2, request_timeout=2.0) as tr:
        yield tr


@pytest.mark.parametrize("lang", ["es", "ca", "gl"])
def test_outputs_equal_one_shot_on_dev_sets(oneshot: ApertiumTranslator, shared_data, lang: str) -> None:
    """Every dev sentence, both directions crop uses, plain, labeled (entity markers) and word-aligned: the
    persistent pipelines give exactly the one-shot `apertium -u -f html` outputs. Each call gets fresh pipelines,
    as a one-shot run does: the HMM tagger of some modes (gl-en) carries a little state from one null-flushed
    block to the next, in one-shot batches as in long-lived pipelines."""
    from crop.io import read_jsonl
    from crop.pipeline import english_spans

    sents = list(read_jsonl(shared_data / "dev" / f"{lang}.dev.jsonl"))
    english = [english_spans(s.en_tokens, s.en_tags) for s in sents]
    items = [LabeledItem(text=t, spans=sp) for t, sp in english]
    calls = [
        ("translate", [s.text for s in sents], lang, "en"),
        ("translate", [t for t, _ in english], "en", lang),
        ("translate_labeled", items, "en", lang),
        ("translate_aligned", [s.tokens for s in sents], lang, "en"),
    ]
    for method, batch, src, tgt in calls:
        with ApertiumTranslator(persistent=True) as tr:
            got = getattr(tr, method)(batch, src, tgt)
            assert tr.pipeline_pids(), "the persistent pipeline was not used"
        want = getattr(oneshot, method)(batch, src, tgt)
        assert len(got) == len(want) == len(batch)
        diff = [(i, g, w) for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]
        assert not diff, (method, src, tgt, diff[:3])


TRICKY = ["", ".", " , ", "&<>", "[x] {y} \\ ^$ / @ #", "Tom & Jerry &amp; co", " a  b ", "Madrid", "  Madrid.",
          "Escribe a info@ejemplo.com #Madrid", "El 5 < 6 > 4", "¿Qué?", "Dijo <p>hola</p>", "El perro\tcome\ncarne"]


def test_outputs_equal_one_shot_on_tricky_input(oneshot: ApertiumTranslator) -> None:
    """Edge cases of the deformatter: blocks without letters, only white space, markup-like text, stream
    meta-characters, a tag that is its block's only content (an entity that is the whole sentence, a one-token
    sentence), tags at the edges."""
    labeled = [LabeledItem(text=t, spans=spans_of(t, *[(w, "LOC") for w in ("Madrid", "Jerry", "info@ejemplo.com")
                                                        if w in t])) for t in TRICKY]
    labeled.append(LabeledItem(text="Madrid", spans=spans_of("Madrid", ("Madrid", "LOC"))))
    labeled.append(LabeledItem(text=" Madrid ", spans=spans_of(" Madrid ", ("Madrid", "LOC"))))
    labeled.append(LabeledItem(text="Juan Pérez.", spans=spans_of("Juan Pérez.", ("Juan", "PER"), ("Pérez", "PER"))))
    tokens = [["Madrid"], ["."], ["&", "<", ">"], ["El", "perro", "come", "."], ["Madrid", "."], ["[", "x", "]"]]
    calls = [("translate", TRICKY, "es", "en"), ("translate", TRICKY, "en", "gl"),
             ("translate_labeled", labeled, "en", "es"), ("translate_labeled", labeled, "en", "ca"),
             ("translate_aligned", tokens, "es", "en"), ("translate_aligned", tokens, "ca", "en")]
    for method, batch, src, tgt in calls:
        with ApertiumTranslator(persistent=True) as tr:
            got = getattr(tr, method)(batch, src, tgt)
        assert got == getattr(oneshot, method)(batch, src, tgt), (method, src, tgt)


def test_one_sentence_is_fast_and_reuses_the_pipeline(persistent: ApertiumTranslator) -> None:
    persistent.translate(["Hola"], "es", "en")
    pids = persistent.pipeline_pids()
    t0 = time.perf_counter()
    for i in range(20):
        (out,) = persistent.translate([f"El perro número {i} come carne."], "es", "en")
        assert out == f"The dog number {i} eats flesh."
    per_call = (time.perf_counter() - t0) / 20
    assert persistent.pipeline_pids() == pids  # no new process per call
    assert per_call < 0.1, per_call  # a one-shot run is about 150 ms of start-up alone


def test_blocks_outside_the_codec_go_one_shot(persistent: ApertiumTranslator, oneshot: ApertiumTranslator) -> None:
    # HTML other than crop's own blocks (here a <b> tag) is left to the real deformatter
    blocks = ["<b>El perro</b> come carne", "La casa roja"]
    assert not TransfuseCodec.supports(blocks[0])
    assert persistent._run("spa-eng", blocks) == oneshot._run("spa-eng", blocks)
    assert persistent.pipeline_pids() == []


def test_transfuse_marks_in_the_text_are_not_an_outage(persistent: ApertiumTranslator,
                                                       oneshot: ApertiumTranslator) -> None:
    """transfuse's private-use marks in the input made tf-inject abort (EngineUnavailable): they travel as spaces."""
    texts = ["El perro \ue011come\ue012 carne\ue013", "La casa roja"]
    assert persistent.translate(texts, "es", "en") == oneshot.translate(texts, "es", "en")
    assert "dog" in persistent.translate(texts, "es", "en")[0]
    assert persistent.pipeline_pids()


def test_killed_stage_recovers(persistent: ApertiumTranslator) -> None:
    clean = persistent.translate(["El gato duerme en la casa."], "es", "en")
    (analyser,) = _stages_of(persistent, is_analyser)
    os.kill(analyser, signal.SIGKILL)  # between requests: the next one finds the pipeline dead
    assert persistent.translate(["El gato duerme en la casa."], "es", "en") == clean
    assert analyser not in _stages_of(persistent, is_analyser)

    lines = [line.strip() for line in RAW_ES.read_text(encoding="utf-8").splitlines() if line.strip()][:400]
    want = persistent.translate(lines, "es", "en")
    with StageKiller(is_analyser, times=1, mid_stream=True) as killer:  # during a request
        got = persistent.translate(lines, "es", "en")
    assert len(killer.killed) == 1
    assert got == want

    items = [LabeledItem(text=t, spans=spans_of(t, (t.split()[-2], "MISC"))) for t in lines[:200]]
    want_labeled = persistent.translate_labeled(items, "es", "en")
    with StageKiller(is_structural_transfer, times=1, mid_stream=True) as killer:
        got_labeled = persistent.translate_labeled(items, "es", "en")
    assert len(killer.killed) == 1
    assert [(r.text, r.spans) for r in got_labeled] == [(r.text, r.spans) for r in want_labeled]


def test_stage_that_keeps_dying_is_engine_unavailable(persistent: ApertiumTranslator) -> None:
    persistent.translate(["Hola"], "es", "en")
    with StageKiller(is_analyser, times=10, mid_stream=False) as killer:
        # the warm pipeline's analyser first; then each fresh one's, while it still loads its transducers
        deadline = time.monotonic() + 10
        while not killer.killed and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(EngineUnavailable) as info:
            persistent.translate(["El gato duerme en la casa."], "es", "en")
    assert len(killer.killed) == 2  # one run and one retry on a fresh pipeline, no more
    assert "spa-eng" in str(info.value) and "2 runs in a row" in str(info.value)
    assert persistent.translate(["El gato duerme."], "es", "en") == ["The cat sleeps."]


def test_hung_stage_times_out_and_is_replaced(persistent: ApertiumTranslator) -> None:
    persistent.translate(["Hola"], "es", "en")
    (transfer,) = _stages_of(persistent, is_structural_transfer)
    os.kill(transfer, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        assert persistent.translate(["El gato duerme en la casa."], "es", "en") == ["The cat sleeps in the house."]
        assert time.monotonic() - t0 < 2.0 + 5.0  # the request's deadline, then a fresh pipeline
        assert not Path(f"/proc/{transfer}").exists() or "Z" in Path(f"/proc/{transfer}/stat").read_text()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(transfer, signal.SIGCONT)


def test_stage_that_keeps_hanging_is_engine_unavailable(persistent: ApertiumTranslator) -> None:
    persistent.translate(["Hola"], "es", "en")
    stop = threading.Event()
    stopped: set[int] = set()

    def stopper() -> None:  # stops the analyser of every pipeline as soon as it exists
        while not stop.is_set():
            for pid in _descendants(os.getpid()):
                if pid not in stopped and is_analyser(_cmdline(pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGSTOP)
                    stopped.add(pid)
            time.sleep(0.002)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not stopped and time.monotonic() < deadline:  # the warm pipeline's first
            time.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(EngineUnavailable, match="hangs"):
            persistent.translate(["El gato duerme en la casa."], "es", "en")
        assert time.monotonic() - t0 < 2 * 2.0 + 5.0
    finally:
        stop.set()
        thread.join()
    assert len(stopped) >= 2
    time.sleep(0.2)
    assert all(not Path(f"/proc/{p}").exists() or " Z " in Path(f"/proc/{p}/stat").read_text() for p in stopped)
    assert persistent.translate(["El gato duerme."], "es", "en") == ["The cat sleeps."]


def test_close_leaves_no_process() -> None:
    tr = ApertiumTranslator(persistent=True, pool_size=2)
    threads = [threading.Thread(target=tr.translate, args=([f"La casa número {i}"] * 50, "es", "en"))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tr.translate_labeled([LabeledItem(text="Maria lives in Madrid.")], "en", "es")
    leaders = tr.pipeline_pids()
    assert len(leaders) >= 2
    members = [p for leader in leaders for p in _group_members(leader)]
    assert len(members) > 2 * len(leaders)  # bash and its stages
    tr.close()
    assert [p for leader in leaders for p in _group_members(leader)] == []
    assert tr.pipeline_pids() == []
    with pytest.raises(EngineUnavailable):
        tr.translate(["Hola"], "es", "en")


def test_no_process_left_after_sigterm_of_the_service() -> None:
    port = free_port()
    env = {**os.environ, "CROP_LOG_LEVEL": "WARNING", "CROP_APERTIUM_POOL": "2"}
    proc = subprocess.Popen([sys.executable, "-c", "from crop.cli import main; main()", "serve", "translator",
                             "--port", str(port)], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the translator service did not start"
            time.sleep(0.2)
        for src, tgt, text in [("es", "en", "El perro come."), ("en", "es", "The dog eats.")]:
            r = httpx.post(url + "/v1/translate", json={"texts": [text], "src": src, "tgt": tgt}, timeout=60)
            assert r.status_code == 200, r.text
        assert r.json()["translations"] == ["El perro come."]
        children = _descendants(proc.pid)
        assert sum(is_analyser(_cmdline(p)) for p in children) == 2  # the two modes' persistent pipelines
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    time.sleep(0.2)
    left = [p for p in children if Path(f"/proc/{p}").exists() and " Z " not in Path(f"/proc/{p}/stat").read_text()]
    assert left == [], [(p, _cmdline(p)) for p in left]


def test_stages_end_when_their_owner_is_killed() -> None:
    """Even without close() or atexit (the owner SIGKILLed), the stages see their input end and exit."""
    code = ("from crop.translate.apertium import ApertiumTranslator\n"
            "tr = ApertiumTranslator(persistent=True)\n"
            "print(tr.translate(['Hola'], 'es', 'en')[0], tr.pipeline_pids()[0], flush=True)\n"
            "import time; time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        answer, leader = proc.stdout.readline().split()
        assert answer == "Hello"
        assert _group_members(int(leader))
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while _group_members(int(leader)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _group_members(int(leader)) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_concurrent_requests_get_their_own_translations() -> None:
    with ApertiumTranslator(persistent=True, pool_size=2) as tr:
        errors: list[str] = []

        def client(k: int) -> None:
            for j in range(8):
                n = 100 * k + j
                batch = [f"El perro número {n} come carne en la casa", f"El gato {n + 5000} duerme"]
                out = tr.translate(batch, "es", "en")
                if [o.split()[3] if i == 0 else o.split()[2] for i, o in enumerate(out)] != [str(n), str(n + 5000)]:
                    errors.append(f"{n}: {out}")
                (lab,) = tr.translate_labeled([LabeledItem(text=f"Maria {n} lives in Madrid.", spans=spans_of(
                    f"Maria {n} lives in Madrid.", ("Madrid", "LOC")))], "en", "es")
                if str(n) not in lab.text or [s.text for s in lab.spans] != ["Madrid"]:
                    errors.append(f"{n}: {lab}")

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(tr.pipeline_pids()) <= 4  # two modes, two pipelines each at most
