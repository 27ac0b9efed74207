"""CropPipeline with the real engines (Apertium, spaCy) on the shared dev data: gold-English and end-to-end
modes, quality, statistics, failure isolation and streaming."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from crop.io import InputSentence, read_jsonl, sentence_from_record
from crop.pipeline import STAGES, CropPipeline, english_spans
from crop.project import Projector
from crop.train.evaluate import evaluate
from crop.translate.apertium import ApertiumTranslator
from crop.types import LabeledItem, LabeledResult, ProjectionResult, Status

pytestmark = pytest.mark.integration

N_DEV = 30


@pytest.fixture(scope="module")
def dev_es(shared_data: Path) -> list[InputSentence]:
    return list(itertools.islice(read_jsonl(shared_data / "dev" / "es.dev.jsonl"), N_DEV))


@pytest.fixture(scope="module")
def gold_run(translator, tagger, dev_es) -> tuple[CropPipeline, list[ProjectionResult]]:
    pipe = CropPipeline(translator, tagger, Projector())
    return pipe, list(pipe.run(dev_es))


@pytest.fixture(scope="module")
def e2e_input(dev_es) -> list[InputSentence]:
    return [s.model_copy(update={"en_tokens": None, "en_tags": None}) for s in dev_es]


@pytest.fixture(scope="module")
def e2e_run(translator, tagger, e2e_input) -> tuple[CropPipeline, list[ProjectionResult]]:
    pipe = CropPipeline(translator, tagger, Projector(), batch_size=16)
    return pipe, list(pipe.run(e2e_input))


def check_result(s: InputSentence, r: ProjectionResult) -> None:
    assert r.id == s.id
    assert r.lang == s.lang
    assert r.tokens == s.tokens
    assert len(r.tags) == len(s.tokens)
    if r.status == Status.kept:
        assert r.reason is None
    else:
        assert r.reason, f"{r.id} is {r.status} without a reason"
    for e in r.entities:
        assert r.text[e.start:e.end] == e.text
        assert r.tags[e.token_start] == f"B-{e.label}"


def f1(sentences: Sequence[InputSentence], results: Sequence[ProjectionResult]) -> float:
    gold = {s.id: (s.tokens, s.tags) for s in sentences}
    pred = {r.id: (r.tokens, r.tags) for r in results}
    return evaluate(gold, pred).f1


def test_english_spans() -> None:
    text, spans = english_spans(["The", "European", "Union", "met", "in", "Rome", "."],
                                ["O", "B-ORG", "I-ORG", "O", "O", "B-LOC", "O"])
    assert text == "The European Union met in Rome."
    assert [(s.text, s.label, s.token_start, s.token_end) for s in spans] == [("European Union", "ORG", 1, 3),
                                                                              ("Rome", "LOC", 5, 6)]


def test_gold_mode_quality(gold_run, dev_es) -> None:
    pipe, results = gold_run
    assert len(results) == len(dev_es)
    for s, r in zip(dev_es, results, strict=True):
        check_result(s, r)
        assert r.status in (Status.kept, Status.discarded)
    score = f1(dev_es, results)
    assert score >= 0.85, score
    kept = [r for r in results if r.status == Status.kept]
    assert len(kept) >= N_DEV * 2 // 3
    kept_ids = {r.id for r in kept}
    assert f1([s for s in dev_es if s.id in kept_ids], kept) >= 0.9
    # the English side was given: no forward translation, no tagging
    seconds = pipe.stats.seconds
    assert seconds["forward"] == 0 and seconds["tag"] == 0
    assert seconds["align"] > 0 and seconds["back"] > 0 and seconds["project"] > 0
    stats = pipe.stats.as_dict()
    assert stats["sentences"] == N_DEV
    assert sum(stats["status"].values()) == N_DEV
    assert sum(stats["methods"].values()) == sum(len(r.entities) for r in results)
    assert stats["methods"].get("exact", 0) > 0


def test_e2e_mode(e2e_run, e2e_input) -> None:
    pipe, results = e2e_run
    assert [r.id for r in results] == [s.id for s in e2e_input]
    for s, r in zip(e2e_input, results, strict=True):
        check_result(s, r)
        assert r.status in (Status.kept, Status.discarded)
    assert sum(r.status == Status.kept for r in results) >= N_DEV // 2
    # with spaCy as the English tagger the projection is still reasonable (gold target tags kept in `tags`)
    assert all(s.tags for s in e2e_input)
    assert f1(e2e_input, results) >= 0.5
    for stage in STAGES:
        assert pipe.stats.seconds[stage] > 0, stage
    assert pipe.stats.as_dict()["sentences_per_second"] > 0


def test_mixed_languages_in_one_batch(translator, tagger, shared_data: Path) -> None:
    es = list(itertools.islice(read_jsonl(shared_data / "dev" / "es.dev.jsonl"), 4))
    ca = list(itertools.islice(read_jsonl(shared_data / "dev" / "ca.dev.jsonl"), 4))
    gl = list(itertools.islice(read_jsonl(shared_data / "dev" / "gl.dev.jsonl"), 4))
    mixed = [s for trio in zip(es, ca, gl, strict=True) for s in trio]
    pipe = CropPipeline(translator, tagger, Projector())
    results = pipe.project_batch(mixed)
    assert [r.id for r in results] == [s.id for s in mixed]
    assert [r.lang for r in results] == [s.lang for s in mixed]
    for s, r in zip(mixed, results, strict=True):
        check_result(s, r)
    # one language at a time gives the same results
    by_lang = {r.id: r for group in (es, ca, gl) for r in pipe.project_batch(group)}
    assert [r.model_dump() for r in results] == [by_lang[r.id].model_dump() for r in results]


class ExplodingTranslator(ApertiumTranslator):
    """The real Apertium translator, except that labeled translation fails on any batch with "BOOM"."""

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        if any("BOOM" in it.text for it in items):
            raise RuntimeError("engine exploded on BOOM")
        return super().translate_labeled(items, src, tgt)


def test_failing_sentence_is_isolated(tagger, dev_es, gold_run) -> None:
    _, baseline = gold_run
    sents = dev_es[:8]
    bomb = sents[3]
    assert bomb.en_tokens and bomb.en_tags and any(t != "O" for t in bomb.en_tags)
    sents[3] = bomb.model_copy(update={"en_tokens": ["BOOM", *bomb.en_tokens], "en_tags": ["O", *bomb.en_tags]})
    pipe = CropPipeline(ExplodingTranslator(), tagger, Projector(), batch_size=8)
    results = list(pipe.run(sents))
    assert [r.id for r in results] == [s.id for s in sents]
    failed = results[3]
    assert failed.status == Status.failed
    assert failed.reason is not None and "RuntimeError" in failed.reason and "BOOM" in failed.reason
    assert failed.tokens == bomb.tokens and failed.tags == ["O"] * len(bomb.tokens)
    for i, (r, base) in enumerate(zip(results, baseline[:8], strict=True)):
        if i != 3:
            assert r.model_dump() == base.model_dump()
    assert pipe.stats.status[Status.failed] == 1
    assert pipe.stats.reasons["RuntimeError"] == 1


def test_streaming_is_lazy(translator, tagger, shared_data: Path) -> None:
    with open(shared_data / "raw" / "es.txt", encoding="utf-8") as f:
        lines = [line.strip() for line in itertools.islice(f, 200) if line.strip()]
    assert len(lines) >= 100
    consumed = 0

    def source() -> Iterator[InputSentence]:
        nonlocal consumed
        for i, line in enumerate(lines):
            consumed += 1
            yield sentence_from_record({"id": f"raw-{i}", "text": line}, "es")

    seen: list[str] = []
    pipe = CropPipeline(translator, tagger, Projector(), batch_size=16)
    stream = pipe.run(source(), on_result=lambda r: seen.append(r.id))
    first = next(stream)
    assert first.id == "raw-0"
    assert consumed == 16, "the pipeline read more than one batch before yielding"
    rest = list(itertools.islice(stream, 16))
    assert [r.id for r in rest] == [f"raw-{i}" for i in range(1, 17)]
    assert consumed == 32
    assert seen == [f"raw-{i}" for i in range(17)]
    assert pipe.stats.sentences == 17
    stream.close()
    assert consumed == 32


def test_check_refuses_a_language_the_engines_do_not_serve(translator, tagger) -> None:
    from crop.translate.base import UnsupportedPair

    pipe = CropPipeline(translator, tagger, Projector())
    pipe.check("es")
    with pytest.raises(UnsupportedPair, match="no xx->en pair"):
        pipe.check("xx")


class CountingTranslator:
    """A real translator behind a wrapper that records every engine call (method and the texts it carried)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[str, list[str]]] = []

    def pairs(self) -> list[tuple[str, str]]:
        return self.inner.pairs()

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        self.calls.append(("translate", list(texts)))
        return self.inner.translate(texts, src, tgt)

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        self.calls.append(("labeled", [it.text for it in items]))
        return self.inner.translate_labeled(items, src, tgt)

    def translate_aligned(self, sentences: Sequence[Sequence[str]], src: str, tgt: str):
        self.calls.append(("aligned", [" ".join(s) for s in sentences]))
        return self.inner.translate_aligned(sentences, src, tgt)


def test_a_sentence_with_an_absurd_token_never_reaches_an_engine(translator, tagger) -> None:
    from crop.text import MAX_TOKEN_CHARS

    huge = "a" * 5000
    sents = [sentence_from_record({"id": f"s{i}", "text": text}, "es") for i, text in enumerate([
        "Pedro Sánchez visitó Berlín.", f"El código es {huge} y nada más.", "La ONU se reunió en Ginebra."])]
    counting = CountingTranslator(translator)
    pipe = CropPipeline(counting, tagger, Projector())
    results = list(pipe.run(sents))
    assert [r.id for r in results] == ["s0", "s1", "s2"]
    absurd = results[1]
    assert absurd.status == Status.discarded
    assert absurd.reason == f"token_too_long: token 3 has 5000 characters (limit {MAX_TOKEN_CHARS})"
    assert absurd.tokens == sents[1].tokens and absurd.tags == ["O"] * len(sents[1].tokens)
    assert counting.calls and not any(huge in text for _, texts in counting.calls for text in texts)
    assert pipe.stats.reasons["token_too_long"] == 1
    assert results[0].status != Status.failed and results[2].status != Status.failed
    # the limit is a parameter; the English side given with a sentence is bounded too
    strict = CropPipeline(counting, tagger, Projector(), max_token_chars=6)
    [r] = strict.project_batch([sents[0]])
    assert r.status == Status.discarded and r.reason == "token_too_long: token 1 has 7 characters (limit 6)"
    gold = sentence_from_record({"id": "g", "tokens": ["Hola", "."], "en_tokens": ["Hello", "Bartholomew"],
                                 "en_tags": ["O", "B-PER"]}, "es")
    [r] = strict.project_batch([gold])
    assert r.reason == "token_too_long: English token 1 has 11 characters (limit 6)"


def unreachable_translator(calls_per_request: int = 0):
    """A remote translator whose service is not there (nothing listens on its port), no retries."""
    from servers import free_port

    from crop.translate.remote import RemoteTranslator

    return RemoteTranslator(f"http://127.0.0.1:{free_port()}", max_retries=calls_per_request)


def test_an_unreachable_translator_stops_the_run_instead_of_failing_every_sentence(tagger) -> None:
    from crop.errors import EngineUnavailable

    counting = CountingTranslator(unreachable_translator())
    sents = [sentence_from_record({"id": f"s{i}", "text": f"Pedro Sánchez visitó Berlín {i} veces."}, "es")
             for i in range(16)]
    pipe = CropPipeline(counting, tagger, Projector(), batch_size=16)
    with pytest.raises(EngineUnavailable, match="connection failed|Connection refused|unreachable") as info:
        list(pipe.run(sents))
    # the whole batch and its two halves at most, not ~2n calls sentence by sentence
    assert 1 <= len(counting.calls) <= 3, counting.calls
    assert "127.0.0.1" in str(info.value)
    assert pipe.stats.status[Status.failed] == 0


def test_the_same_error_on_every_half_stops_isolation(tagger, dev_es) -> None:
    """An engine that fails whatever it is given: its error comes back on the batch and on both halves."""
    from crop.errors import EngineUnavailable

    class BrokenTranslator(ExplodingTranslator):
        def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
            raise RuntimeError("engine broke")

    counting = CountingTranslator(BrokenTranslator())
    pipe = CropPipeline(counting, tagger, Projector(), batch_size=8)
    with pytest.raises(EngineUnavailable, match="RuntimeError: engine broke"):
        list(pipe.run(dev_es[:8]))
    assert [name for name, _ in counting.calls].count("labeled") == 3


def test_input_errors_are_still_isolated_sentence_by_sentence(tagger, dev_es) -> None:
    """A ValueError says the input is wrong: two bad sentences in different halves are failed, not a stop."""

    class PickyTranslator(ExplodingTranslator):
        def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
            if any("BOOM" in it.text for it in items):
                raise ValueError("refused a BOOM")
            return super().translate_labeled(items, src, tgt)

    sents = list(dev_es[:8])
    for i in (1, 6):
        s = sents[i]
        sents[i] = s.model_copy(update={"en_tokens": ["BOOM", *s.en_tokens], "en_tags": ["O", *s.en_tags]})
    results = list(CropPipeline(PickyTranslator(), tagger, Projector(), batch_size=8).run(sents))
    assert [r.status == Status.failed for r in results] == [i in (1, 6) for i in range(8)]
