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
