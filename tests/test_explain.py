"""Explain: the CROP steps of a sentence (English translation, English entities, labeled back-translation with its
markers, what became of each entity), from the pipeline (`CropPipeline.explain_batch`), the tagger
(`POST /v1/tag` with `"explain": true`) and `crop tag --explain`, over the real engines (Apertium + spaCy)."""

from __future__ import annotations

import asyncio
import json
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import running
from typer.testing import CliRunner

from crop.api.settings import TaggerSettings
from crop.api.tagger import TaggerEngines, create_app
from crop.cli import app as cli_app
from crop.io import InputSentence, sentence_from_record
from crop.pipeline import CropPipeline, SentenceTrace, explain_steps
from crop.project import Projector, ProjectorConfig
from crop.tag.base import Tagger
from crop.translate.base import Translator
from crop.types import LabeledItem, LabeledResult, Span

pytestmark = pytest.mark.integration

SENTENCE = "Pedro Sánchez se reunió con Olaf Scholz en Berlín."
# spaCy breaks "National Library of | Spain": the projector merges them, and "Spain" is then inside that entity
BROKEN = "Lula da Silva visitó la Biblioteca Nacional de España ayer con Ursula von der Leyen."


def _pipeline(translator: Translator, tagger: Tagger, **config: object) -> CropPipeline:
    # the tagger's and crop tag's projector: partial projection, no all-O or language-id discards
    cfg = {"policy": "partial", "drop_all_o": False, "langid": False, **config}
    return CropPipeline(translator, tagger, Projector(ProjectorConfig(**cfg)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pipe(translator: Translator, tagger: Tagger) -> CropPipeline:
    return _pipeline(translator, tagger)


def _es(*texts: str) -> list[InputSentence]:
    return [sentence_from_record({"id": str(i), "text": t}, "es") for i, t in enumerate(texts)]


# -- the pipeline --------------------------------------------------------------------------------------------------


def test_the_steps_are_what_the_engines_produced(pipe: CropPipeline, translator: Translator,
                                                 tagger: Tagger) -> None:
    (result, steps), = pipe.explain_batch(_es(SENTENCE))
    english = translator.translate([SENTENCE], "es", "en")[0]
    assert steps.english == english and not steps.english_given
    assert steps.english_entities == tagger.tag([english], "en")[0]
    assert {s.text for s in steps.english_entities} >= {"Pedro Sánchez", "Olaf Scholz", "Berlin"}
    back = translator.translate_labeled([LabeledItem(text=english, spans=steps.english_entities)], "en", "es")[0]
    assert steps.back == back.text
    assert steps.back_marked == back.raw  # the markers as the engine produced them
    for i, s in enumerate(steps.english_entities):
        assert f'<span id="e{i}">' in steps.back_marked, steps.back_marked
        assert s.text in english[s.start:s.end]
    assert steps.lost == [] and steps.hypothesis == 0 and steps.status == "kept" and steps.reason is None

    # each English entity once, in order; each placed one is an entity of the result, as the result has it
    assert [e.ref for e in steps.entities] == list(range(len(steps.english_entities)))
    assert [(e.text, e.label) for e in steps.entities] == [(s.text, s.label) for s in steps.english_entities]
    marked = {s.ref: s.text for s in back.spans}
    placed = [e for e in steps.entities if e.outcome == "placed"]
    assert len(placed) == len(result.entities) == 3
    for step, entity in zip(placed, sorted(result.entities, key=lambda e: e.ref or 0), strict=True):
        assert step.marked == marked[step.ref]
        assert step.placed is not None and step.reason is None
        assert (step.placed.start, step.placed.end, step.placed.text, step.placed.method, step.placed.score) == \
            (entity.start, entity.end, entity.text, entity.method, entity.score)
        assert SENTENCE[step.placed.start:step.placed.end] == step.placed.text
    berlin = next(e for e in steps.entities if e.text == "Berlin")
    assert berlin.marked == "Berlín" and berlin.placed is not None and berlin.placed.text == "Berlín"


def test_explain_changes_no_result(pipe: CropPipeline, shared_data: Path) -> None:
    """The results of explain_batch are project_batch's, sentence for sentence (dev sentences, as raw text)."""
    lines = (shared_data / "dev" / "es.dev.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    texts = [" ".join(json.loads(line)["tokens"]) for line in lines]
    plain = pipe.project_batch(_es(*texts))
    explained = pipe.explain_batch(_es(*texts))
    assert [r.model_dump() for r in plain] == [r.model_dump() for r, _ in explained]
    with_entities = [(r, s) for r, s in explained if s.english_entities]
    assert len(with_entities) > 30
    for r, s in with_entities:
        assert s.back_marked and "<span" in s.back_marked
        assert {e.ref for e in r.entities} == {e.ref for e in s.entities if e.placed is not None}
        for e in s.entities:
            assert (e.placed is None) == (e.outcome not in ("placed", "filtered"))
            assert (e.reason is None) == (e.outcome == "placed"), e


def test_an_entity_inside_another_says_so(pipe: CropPipeline) -> None:
    (result, steps), = pipe.explain_batch(_es(BROKEN))
    by_text = {e.text: e for e in steps.entities}
    assert by_text["National Library of"].placed is not None
    assert by_text["National Library of"].placed.text == "Biblioteca Nacional de España"
    spain = by_text["Spain"]
    assert spain.outcome == "overlap" and spain.placed is None and spain.marked == "España"
    ref = by_text["National Library of"].ref
    assert f"inside entity {ref} “Biblioteca Nacional de España” (ORG)" in (spain.reason or ""), spain.reason
    # the projector itself only says "no match"
    assert [u["reason"] for u in result.unmatched if u["ref"] == spain.ref] == ["no match"]


def test_an_entity_no_method_finds_is_no_match(pipe: CropPipeline) -> None:
    """English given with the sentence (no forward translation, no tagging): an English name that is not in the
    Spanish sentence is carried through the back-translation, but found by no method."""
    s = sentence_from_record({"id": "g", "text": "La casa es grande .", "en_tokens": ["John", "lives", "here", "."],
                              "en_tags": ["B-PER", "O", "O", "O"]}, "es")
    (result, steps), = pipe.explain_batch([s])
    assert steps.english == "John lives here." and steps.english_given
    assert [(x.text, x.label) for x in steps.english_entities] == [("John", "PER")]
    (john,) = steps.entities
    assert john.marked == "John" and john.outcome == "no_match" and john.placed is None
    assert "“John”" in (john.reason or "")
    assert result.entities == [] and steps.status == result.status == "discarded"
    assert steps.reason == result.reason and (steps.reason or "").startswith("unmatched entities")


def test_lost_markers_and_filtered_sentences() -> None:
    """explain_steps over the projector's own verdicts: an entity whose markers the translation lost, and
    entities placed in a sentence that a strict projector then discards."""
    tokens = ["Ana", "vive", "en", "Lugo", "."]
    english = "Ana lives in Lugo."
    spans = [Span(start=0, end=3, label="PER", text="Ana", token_start=0, token_end=1),
             Span(start=13, end=17, label="LOC", text="Lugo", token_start=3, token_end=4)]
    # the engine kept the markers of Ana only; "Lugo" cannot come from the English string "Lugo" either when
    # source_copy is off: only methods that need markers run
    back = LabeledResult(text="Ana vive en Lugo.", spans=[Span(start=0, end=3, label="PER", text="Ana", ref=0)],
                         lost=[1], raw='<span id="e0">Ana</span> vive en Lugo.')
    trace = SentenceTrace(english, False, spans, back)
    for policy, status in (("partial", "kept"), ("strict", "discarded")):
        projector = Projector(ProjectorConfig(policy=policy, drop_all_o=False, langid=False,  # type: ignore[arg-type]
                                              methods=("exact", "fuzzy")))
        result = projector.project(tokens, "es", spans, back=back, source_text=english, text="Ana vive en Lugo.")
        steps = explain_steps(result, trace)
        assert steps.lost == [1] and steps.back_marked == back.raw and steps.status == status
        ana, lugo = steps.entities
        assert lugo.outcome == "marker_lost" and lugo.marked is None and lugo.placed is None
        assert "lost its markers" in (lugo.reason or "")
        assert ana.placed is not None and (ana.placed.text, ana.placed.method) == ("Ana", "exact")
        if status == "kept":
            assert ana.outcome == "placed" and ana.reason is None
        else:  # placed, but the strict policy discarded the sentence for the unmatched one
            assert ana.outcome == "filtered" and "discarded: unmatched entities: 1 of 2" in (ana.reason or "")


def test_offsets_are_into_the_text_sent(pipe: CropPipeline) -> None:
    """A decomposed "Sánchez" and a control character: the engines see clean text, the placed spans of the steps
    are over the text as sent, as the result's entities are."""
    text = unicodedata.normalize("NFD", "Pedro Sánchez\u0007 se reunió con Olaf Scholz en Berlín.")
    (result, steps), = pipe.explain_batch(_es(text))
    placed = [e.placed for e in steps.entities if e.placed is not None]
    assert {p.text for p in placed} >= {unicodedata.normalize("NFD", "Pedro Sánchez"), "Olaf Scholz"}
    for p in placed:
        assert text[p.start:p.end] == p.text
    assert sorted((p.start, p.end) for p in placed) == sorted((e.start, e.end) for e in result.entities)


def test_a_sentence_stopped_before_the_engines_has_no_steps(pipe: CropPipeline) -> None:
    (result, steps), = pipe.explain_batch(_es("Hola " + "x" * 300 + " adiós."))
    assert steps.english is None and steps.english_entities == [] and steps.back is None and steps.entities == []
    assert steps.status == result.status == "discarded" and (steps.reason or "").startswith("token_too_long")


def test_explain_over_a_batch_with_failures_isolated(pipe: CropPipeline) -> None:
    """Several sentences in one batch (one without entities): each gets its own steps, in order."""
    out = pipe.explain_batch(_es(SENTENCE, "La casa es grande.", BROKEN))
    assert [s.english is not None for _, s in out] == [True, True, True]
    assert out[1][1].english_entities == [] and out[1][1].back is None and out[1][1].entities == []
    assert "Olaf Scholz" in (out[0][1].english or "") and "Ursula" in (out[2][1].english or "")


# -- the tagger -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tagger_url(pipe: CropPipeline, tagger: Tagger) -> Iterator[str]:
    with running(create_app(TaggerSettings(), engines=TaggerEngines(tagger, pipe))) as url:
        yield url


def test_tag_explain(tagger_url: str) -> None:
    plain = httpx.post(tagger_url + "/v1/tag", json={"texts": [SENTENCE, BROKEN], "lang": "es"}, timeout=60)
    assert plain.status_code == 200, plain.text
    assert all("steps" not in r for r in plain.json()["results"])  # absent, not null: the answer is as it was
    r = httpx.post(tagger_url + "/v1/tag", json={"texts": [SENTENCE, BROKEN], "lang": "es", "explain": True},
                   timeout=60)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["mode"] == "crop"
    for with_steps, without in zip(data["results"], plain.json()["results"], strict=True):
        steps = with_steps["steps"]
        assert {k: v for k, v in with_steps.items() if k != "steps"} == without  # same entities, status, reason
        assert steps["english"] and steps["english_entities"] and "<span" in steps["back_marked"]
        placed = sorted((e["placed"]["start"], e["placed"]["end"], e["label"], e["placed"]["method"])
                        for e in steps["entities"] if e["placed"])
        assert placed == sorted((e["start"], e["end"], e["label"], e["method"]) for e in without["entities"])
    spain = next(e for e in data["results"][1]["steps"]["entities"] if e["text"] == "Spain")
    assert spain["outcome"] == "overlap" and "Biblioteca Nacional de España" in spain["reason"]


def test_tag_explain_without_steps_is_refused(tagger_url: str) -> None:
    for body, where in (({"mode": "model"}, ["body"]), ({"mode": "student"}, ["body"]),
                        ({"lang": "en", "text": "Angela Merkel visited Paris."}, ["body", "explain"])):
        r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "explain": True, **body},
                       timeout=60)
        assert r.status_code == 422, (body, r.text)
        (detail,) = r.json()["detail"]
        assert detail["loc"] == where and "`explain` shows the steps of mode crop" in detail["msg"], detail
    # explain false with those modes is as before
    r = httpx.post(tagger_url + "/v1/tag", json={"text": "Angela Merkel visited Paris.", "lang": "en",
                                                 "explain": False}, timeout=60)
    assert r.status_code == 200 and "steps" not in r.json()["results"][0], r.text


def test_concurrent_explained_and_plain_requests_are_batched_apart(tagger_url: str) -> None:
    async def many() -> list[dict]:
        async with httpx.AsyncClient(timeout=60) as client:
            replies = await asyncio.gather(*[
                client.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "explain": i % 2 == 0})
                for i in range(8)])
        assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
        return [r.json()["results"][0] for r in replies]

    results = asyncio.run(many())
    assert ["steps" in r for r in results] == [i % 2 == 0 for i in range(8)]
    assert len({json.dumps({k: v for k, v in r.items() if k != "steps"}, sort_keys=True) for r in results}) == 1


def test_explain_overrides_the_student_default(translator: Translator, tagger: Tagger, tmp_path: Path) -> None:
    """Without a mode, a language whose default is the student is answered by mode crop when `explain` asks for
    its steps (and by the student without it)."""
    from test_student_tagger import METRICS, build_spacy_student

    from crop.tag.student import StudentHolder
    from crop.train.registry import ModelRegistry

    registry = ModelRegistry.at(str(tmp_path / "models" / "ner"))
    registry.publish(build_spacy_student(tmp_path / "student", "LOC"), {"metrics": METRICS}, promote="always")
    engines = TaggerEngines(tagger, _pipeline(translator, tagger), student=StudentHolder(registry.location,
                                                                                         poll_seconds=0))
    with running(create_app(TaggerSettings(), engines=engines)) as url:
        default = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es"}, timeout=60).json()
        assert default["mode"] == "student" and "steps" not in default["results"][0]
        explained = httpx.post(url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "explain": True},
                               timeout=60).json()
        assert explained["mode"] == "crop" and explained["model"] is None
        assert explained["results"][0]["steps"]["english"].startswith("Pedro Sánchez")


# -- crop tag --explain ---------------------------------------------------------------------------------------


def test_cli_tag_explain() -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["tag", "--lang", "es", "--explain", BROKEN])
    assert result.exit_code == 0, result.output
    out = result.stdout
    plain = runner.invoke(cli_app, ["tag", "--lang", "es", BROKEN])
    assert plain.exit_code == 0 and "steps" not in plain.stdout
    assert out.startswith(plain.stdout)  # the entity lines as without --explain, then the steps
    assert "  1. English translation: Lula" in out
    assert "  2. English entities: " in out and "Spain LOC" in out
    assert '  3. back-translation with markers: ' in out and '<span id="e2">España</span>' in out
    assert "[1] National Library of (ORG) -> “Biblioteca Nacional de España” 24-53, exact 1.00" in out
    assert "[2] Spain (LOC) -> not placed (overlap): its words are inside entity 1" in out
    assert "  verdict: kept" in out

    result = runner.invoke(cli_app, ["tag", "--lang", "es", "--explain", "--json", BROKEN])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    plain_json = json.loads(runner.invoke(cli_app, ["tag", "--lang", "es", "--json", BROKEN]).stdout)
    steps = data.pop("steps")
    assert data == plain_json
    assert [e["outcome"] for e in steps["entities"]].count("overlap") == 1
    assert steps["back_marked"].startswith("Lula da <span")

    refused = runner.invoke(cli_app, ["tag", "--lang", "es", "--explain", "--model", "/nonexistent", BROKEN])
    assert refused.exit_code == 2 and "--explain shows the steps of CROP" in " ".join(refused.output.split())
