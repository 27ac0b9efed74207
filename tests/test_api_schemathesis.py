"""Property tests of the services' OpenAPI schemas (schemathesis) against real uvicorn servers over the real
engines: the translator over Apertium, the tagger over Apertium + spaCy, the projector. Whatever the generated
request (valid or not), the answer is never a 5xx and always conforms to the documented response schema; and a
request generated to be invalid (schemathesis' negative mode: wrong types, missing or extra fields, values out of
range) is refused with a 4xx, never a 5xx nor a 2xx.

The schemas are built from the apps at collection time (the apps build their engines only at start-up), one test
per operation; each server's fixture checks that the live `/openapi.json` (`schemathesis.openapi.from_url`) is
that same schema, and the cases are sent to the live server. (`schemathesis.pytest.from_fixture` would load the
schema from the live server directly, but its lazy loader breaks on pytest 9: it sets `Function._nodeid`.)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, response_schema_conformance
from servers import running

from crop.api import projector as projector_api
from crop.api import tagger as tagger_api
from crop.api import translator as translator_api
from crop.api.settings import ProjectorSettings, TaggerSettings, TranslatorSettings
from crop.jobs.settings import JobSettings
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.tag.base import Tagger
from crop.translate.base import Translator

# a few dozen generated requests per operation keep the file under a minute; every run draws new ones
# (CROP_SCHEMATHESIS_EXAMPLES=500 for a longer hunt)
PROPERTY = settings(max_examples=int(os.environ.get("CROP_SCHEMATHESIS_EXAMPLES", "50")), deadline=None,
                    suppress_health_check=list(HealthCheck))
CHECKS = [not_a_server_error, response_schema_conformance]
NEGATIVE = settings(PROPERTY, max_examples=int(os.environ.get("CROP_SCHEMATHESIS_EXAMPLES", "30")))
NEGATIVE_CHECKS = [not_a_server_error, negative_data_rejection]

TRANSLATOR_SETTINGS = TranslatorSettings(max_wait_ms=0)
TAGGER_SETTINGS = TaggerSettings(max_wait_ms=0)
PROJECTOR_SETTINGS = ProjectorSettings(max_wait_ms=0, langid=False)
# the projector's jobs API over storage of the test's own (nothing under the checkout) and a test-only Redis db
_JOB_ROOT = tempfile.TemporaryDirectory(prefix="crop-schemathesis-jobs-")
PROJECTOR_JOBS = JobSettings(storage_root=_JOB_ROOT.name, redis_url="redis://127.0.0.1:6379/9")


def _openapi(app: FastAPI) -> dict[str, Any]:
    return json.loads(json.dumps(app.openapi()))  # as the server serves it


def _homogeneous_tuples(node: Any) -> Any:
    """The schema with each tuple of like items (`prefixItems: [S, S]`, e.g. a language pair) spelled as
    `items: S` (its minItems/maxItems stay): schemathesis 4 rewrites `prefixItems` into Draft 4's `items: [...]`
    and then validates responses with a Draft 2020-12 validator that rejects that spelling."""
    if isinstance(node, list):
        return [_homogeneous_tuples(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _homogeneous_tuples(v) for k, v in node.items()}
    prefix = out.get("prefixItems")
    if isinstance(prefix, list) and prefix and all(p == prefix[0] for p in prefix) and "items" not in out:
        out["items"] = out.pop("prefixItems")[0]
    return out


OPENAPI = {"translator": _openapi(translator_api.create_app(TRANSLATOR_SETTINGS)),
           "tagger": _openapi(tagger_api.create_app(TAGGER_SETTINGS)),
           "projector": _openapi(projector_api.create_app(PROJECTOR_SETTINGS, jobs=PROJECTOR_JOBS))}


def _schema(service: str, *modes: GenerationMode) -> Any:
    schema = schemathesis.openapi.from_dict(_homogeneous_tuples(OPENAPI[service]))
    schema.config.generation.update(modes=list(modes))
    return schema


# valid and invalid requests, with the hooks below (served languages, real and odd sentences)
translator_schema = _schema("translator", GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
tagger_schema = _schema("tagger", GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
projector_schema = _schema("projector", GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
# invalid requests only, as schemathesis makes them (no hooks: they would make some of them valid), to the
# operations that take input (a GET without parameters has no invalid request)
translator_negative = _schema("translator", GenerationMode.NEGATIVE).include(method="POST")
tagger_negative = _schema("tagger", GenerationMode.NEGATIVE).include(method="POST")
projector_negative = _schema("projector", GenerationMode.NEGATIVE).include(method="POST")


# Bodies drawn from the schemas alone seldom reach the engines (language codes that match the pattern are almost
# never served; `text` and `texts`, one of the two, come both set or both unset; a projector item needs `tokens`
# or `text`), and their strings leave out control characters and lone surrogates. So half of the bodies get a
# served language, and sentences that are real ones or any code points at all.
PAIRS = [("es", "en"), ("en", "es"), ("ca", "en"), ("en", "ca"), ("gl", "en"), ("en", "gl")]
LANGS = ["es", "ca", "gl", "en"]
SENTENCES = ["Pedro Sánchez se reunió con Olaf Scholz en Berlín.", "Angela Merkel visited Paris with the UN.",
             "La Generalitat de Catalunya és a Barcelona.", "O Celta de Vigo gañou en Santiago.",
             "Berlín " + "a" * 250]  # a token over the services' limit (200 characters): a 422 of their own
# any code point, with control and format characters, separators and lone surrogates drawn often
ODD = st.characters(categories=["Cc", "Cf", "Cs", "Zl", "Zp", "Zs", "Mn", "Co", "Cn"])
ANY_TEXT = st.text(st.one_of(st.characters(exclude_categories=()), ODD), min_size=1, max_size=40)
TEXT = st.one_of(st.sampled_from(SENTENCES), ANY_TEXT)
TOKENS = st.one_of(st.sampled_from(SENTENCES).map(str.split), st.lists(ANY_TEXT, min_size=1, max_size=8))
LABELED_ITEM = st.one_of(
    st.just({"text": "Angela Merkel visited Paris.", "spans": [{"start": 0, "end": 13, "label": "PER"},
                                                                {"start": 22, "end": 27, "label": "LOC"}]}),
    ANY_TEXT.map(lambda t: {"text": t}))


def _texts(body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    rest = {k: v for k, v in body.items() if k not in ("text", "texts")}
    return st.one_of(TEXT.map(lambda t: {**rest, "text": t}),
                     st.lists(TEXT, min_size=1, max_size=4).map(lambda ts: {**rest, "texts": ts}))


def _translator_body(operation: str, body: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    served = st.sampled_from(PAIRS).map(lambda p: {**body, "src": p[0], "tgt": p[1]})
    if operation.endswith("/labeled"):
        return st.tuples(served, st.lists(LABELED_ITEM, min_size=1, max_size=3)).map(lambda b: {**b[0], "items": b[1]})
    if operation.endswith("/aligned"):
        return st.tuples(served, st.lists(TOKENS, min_size=1, max_size=3)).map(lambda b: {**b[0], "sentences": b[1]})
    return served.flatmap(_texts)


@translator_schema.hook("flatmap_body")
def _translator_bodies(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict) or context.operation is None:
        return st.just(body)
    return st.one_of(st.just(body), _translator_body(context.operation.path, body))


@tagger_schema.hook("flatmap_body")
def _tagger_bodies(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    if not isinstance(body, dict):
        return st.just(body)
    served = st.one_of(st.sampled_from(LANGS).map(lambda lang: {**body, "lang": lang, "mode": "crop"}),
                       st.just({**body, "lang": "en", "mode": "model"}))
    return st.one_of(st.just(body), served.flatmap(_texts))


@projector_schema.hook("flatmap_body")
def _projector_bodies(context: schemathesis.HookContext, body: Any) -> st.SearchStrategy[Any]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(it, dict) for it in items):
        return st.just(body)
    sentences = st.lists(st.one_of(TEXT.map(lambda t: {"text": t, "tokens": None}),
                                   TOKENS.map(lambda t: {"tokens": t})), min_size=len(items), max_size=len(items))
    with_sentences = sentences.map(lambda ss: {**body, "items": [{**it, **s} for it, s in zip(items, ss, strict=True)]})
    return st.one_of(st.just(body), with_sentences)


def _live(app: FastAPI, service: str) -> Iterator[str]:
    with running(app) as url:
        served = schemathesis.openapi.from_url(f"{url}/openapi.json")
        assert served.raw_schema == OPENAPI[service], f"{url}/openapi.json is not the schema the cases come from"
        yield url


@pytest.fixture(scope="module")
def translator_url(translator: Translator) -> Iterator[str]:
    yield from _live(translator_api.create_app(TRANSLATOR_SETTINGS, engine=translator), "translator")


@pytest.fixture(scope="module")
def tagger_url(translator: Translator, tagger: Tagger) -> Iterator[str]:
    projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False))
    engines = tagger_api.TaggerEngines(tagger, CropPipeline(translator, tagger, projector))
    yield from _live(tagger_api.create_app(TAGGER_SETTINGS, engines=engines), "tagger")


@pytest.fixture(scope="module")
def projector_url() -> Iterator[str]:
    yield from _live(projector_api.create_app(PROJECTOR_SETTINGS, jobs=PROJECTOR_JOBS), "projector")


@translator_schema.parametrize()
@PROPERTY
def test_translator_api(case: schemathesis.Case, translator_url: str) -> None:
    case.call_and_validate(base_url=translator_url, checks=CHECKS)


@tagger_schema.parametrize()
@PROPERTY
def test_tagger_api(case: schemathesis.Case, tagger_url: str) -> None:
    case.call_and_validate(base_url=tagger_url, checks=CHECKS)


@projector_schema.parametrize()
@PROPERTY
def test_projector_api(case: schemathesis.Case, projector_url: str) -> None:
    case.call_and_validate(base_url=projector_url, checks=CHECKS)


@translator_negative.parametrize()
@NEGATIVE
def test_translator_refuses_invalid_requests(case: schemathesis.Case, translator_url: str) -> None:
    case.call_and_validate(base_url=translator_url, checks=NEGATIVE_CHECKS)


@tagger_negative.parametrize()
@NEGATIVE
def test_tagger_refuses_invalid_requests(case: schemathesis.Case, tagger_url: str) -> None:
    case.call_and_validate(base_url=tagger_url, checks=NEGATIVE_CHECKS)


@projector_negative.parametrize()
@NEGATIVE
def test_projector_refuses_invalid_requests(case: schemathesis.Case, projector_url: str) -> None:
    case.call_and_validate(base_url=projector_url, checks=NEGATIVE_CHECKS)


# -- 5xx found by probing the services (generated strings seldom hold these): JSON that decodes to no text (a lone
# surrogate) or to a number no JSON answer can echo (1e400); each now gets a 422 that names where it is

SURROGATE = "\\ud800"  # valid JSON, decodes to a lone surrogate: no UTF-8, no Apertium, no JSON response
BAD_BODIES = [
    ("translator_url", "/v1/translate", f'{{"text": "a{SURROGATE}b", "src": "es", "tgt": "en"}}', "`text`"),
    ("translator_url", "/v1/translate", f'{{"texts": ["hola", "{SURROGATE}"], "src": "es", "tgt": "en"}}',
     "`texts[1]`"),
    ("translator_url", "/v1/translate/labeled",
     f'{{"items": [{{"text": "Ana {SURROGATE}", "spans": [{{"start": 0, "end": 3, "label": "PER"}}]}}], '
     '"src": "en", "tgt": "es"}', "`items[0].text`"),
    ("translator_url", "/v1/translate/aligned", f'{{"sentences": [["casa", "{SURROGATE}"]], "src": "es", "tgt": "en"}}',
     "`sentences[0][1]`"),
    ("translator_url", "/v1/translate", '{"text": 1e400, "src": "es", "tgt": "en"}', "valid string"),
    ("tagger_url", "/v1/tag", f'{{"text": "Pedro {SURROGATE}", "lang": "es"}}', "`text`"),
    ("tagger_url", "/v1/tag", f'{{"text": "{SURROGATE}", "lang": "en", "mode": "model"}}', "`text`"),
    ("projector_url", "/v1/project",
     f'{{"items": [{{"lang": "es", "tokens": ["Pedro", "{SURROGATE}"], "source": []}}]}}', "`items[0].tokens[1]`"),
    ("projector_url", "/v1/project",
     f'{{"items": [{{"id": "{SURROGATE}", "lang": "es", "text": "Pedro", "source": []}}]}}', "`items[0].id`"),
    ("projector_url", "/v1/project",
     '{"items": [{"lang": "es", "text": "Pedro", "source": [{"start": 1e400, "end": 5, "label": "PER"}]}]}',
     "finite number"),
]


@pytest.mark.parametrize(("server", "path", "raw", "named"), BAD_BODIES,
                         ids=[f"{p}-{n.strip('`')}" for _, p, _, n in BAD_BODIES])
def test_text_that_is_no_text_is_422(request: pytest.FixtureRequest, server: str, path: str, raw: str,
                                     named: str) -> None:
    url = request.getfixturevalue(server)
    r = httpx.post(url + path, content=raw.encode(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 422, r.text
    assert named in json.dumps(r.json()["detail"], ensure_ascii=False), r.text
