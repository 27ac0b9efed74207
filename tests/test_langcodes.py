"""Language codes as users write them (issue 10, item 11): `spa`, `spa_Latn`, `es-ES` and `ES` are all Spanish,
on the translator and tagger services (real uvicorn servers over the real Apertium and spaCy) and in `crop tag`;
a malformed code is 422, a well-formed one that is not served 400 listing what is."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from servers import running
from typer.testing import CliRunner

from crop.api import tagger as tagger_api
from crop.api import translator as translator_api
from crop.api.settings import ProjectorSettings, TaggerSettings, TranslatorSettings
from crop.cli import app as cli_app
from crop.langcodes import normalize_lang
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig

SPANISH = ("es", "spa", "spa_Latn", "es-ES", "ES", "Es-es", "SPA_LATN")
ENGLISH = ("en", "eng", "eng_Latn", "en-GB", "EN")
SENTENCE = "Pedro Sánchez visitó Berlín con Angela Merkel."


@pytest.mark.parametrize("code", SPANISH)
def test_spanish_codes_normalize_to_es(code: str):
    assert normalize_lang(code) == "es"


def test_other_codes():
    assert [normalize_lang(c) for c in ("zh-Hant-TW", "cmn_Hans", "ast", "ast_Latn", "ger", "fra", "en-US")] == [
        "zh", "zh", "ast", "ast", "de", "fr", "en"]
    for bad in ("", "e", "e s", "español", "12", "es_", "es\n", "toolong"):
        with pytest.raises(ValueError, match="is not a language code"):
            normalize_lang(bad)


@pytest.fixture(scope="module")
def translator_url(translator) -> Iterator[str]:
    with running(translator_api.create_app(TranslatorSettings(api_keys=[]), engine=translator)) as url:
        yield url


@pytest.fixture(scope="module")
def tagger_url(translator, tagger) -> Iterator[str]:
    projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False))
    engines = tagger_api.TaggerEngines(tagger, CropPipeline(translator, tagger, projector))
    with running(tagger_api.create_app(TaggerSettings(api_keys=[]), engines=engines)) as url:
        yield url


@pytest.mark.integration
def test_translator_accepts_every_spelling(translator_url: str):
    want = httpx.post(translator_url + "/v1/translate", json={"text": SENTENCE, "src": "es", "tgt": "en"})
    assert want.status_code == 200, want.text
    for src, tgt in zip(SPANISH, ENGLISH * 2, strict=False):
        r = httpx.post(translator_url + "/v1/translate", json={"text": SENTENCE, "src": src, "tgt": tgt})
        assert r.status_code == 200, (src, tgt, r.text)
        assert r.json() == want.json()
    labeled = {"items": [{"text": "Angela Merkel visited Berlin.", "spans": [{"start": 0, "end": 13,
                                                                             "label": "PER"}]}]}
    r = httpx.post(translator_url + "/v1/translate/labeled", json={**labeled, "src": "EN-us", "tgt": "spa_Latn"})
    assert r.status_code == 200 and r.json()["results"][0]["spans"], r.text
    r = httpx.post(translator_url + "/v1/translate/aligned", json={"sentences": [["Hola", "."]], "src": "ES",
                                                                   "tgt": "eng"})
    assert r.status_code == 200, r.text


@pytest.mark.integration
def test_translator_unknown_and_malformed_codes(translator_url: str):
    r = httpx.post(translator_url + "/v1/translate", json={"text": "Hola.", "src": "kor", "tgt": "en"})
    assert r.status_code == 400 and "ko->en is not served" in r.text and "es->en" in r.text, r.text
    for bad in ("e s", "español", "es_", "1"):
        r = httpx.post(translator_url + "/v1/translate", json={"text": "Hola.", "src": bad, "tgt": "en"})
        assert r.status_code == 422, (bad, r.text)
        assert [e["loc"] for e in r.json()["detail"]] == [["body", "src"]]


@pytest.mark.integration
def test_tagger_accepts_every_spelling(tagger_url: str):
    want = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "mode": "crop"})
    assert want.status_code == 200 and want.json()["results"][0]["entities"], want.text
    for code in SPANISH:
        r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": code, "mode": "crop"})
        assert r.status_code == 200, (code, r.text)
        assert r.json() == want.json()
    english = "Angela Merkel visited Berlin."
    want = httpx.post(tagger_url + "/v1/tag", json={"text": english, "lang": "en", "mode": "model"}).json()
    for code in ENGLISH:
        for mode in ("model", "crop"):  # English in mode crop is the model's own answer
            r = httpx.post(tagger_url + "/v1/tag", json={"text": english, "lang": code, "mode": mode})
            assert r.status_code == 200 and r.json() == want, (code, mode, r.text)
    r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "kor", "mode": "crop"})
    assert r.status_code == 400 and "'ko' is not served" in r.text and "it serves: " in r.text, r.text
    r = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "Spanish"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lang"], r.text


@pytest.mark.integration
def test_projector_accepts_every_spelling():
    from crop.api import projector as projector_api

    item = {"text": "Juan vive en Londres .", "source_text": "Juan lives in London.",
            "source": [{"start": 0, "end": 4, "label": "PER", "text": "Juan"}]}
    with running(projector_api.create_app(ProjectorSettings(langid=False, api_keys=[]))) as url:
        r = httpx.post(url + "/v1/project", json={"items": [{**item, "lang": code} for code in SPANISH]})
        assert r.status_code == 200, r.text
        assert {res["lang"] for res in r.json()["results"]} == {"es"}


@pytest.mark.integration
@pytest.mark.parametrize("code", ["ES", "spa_Latn", "es-ES"])
def test_cli_tag_accepts_every_spelling(code: str):
    result = CliRunner().invoke(cli_app, ["tag", "--lang", code, "Pedro Sánchez visitó Berlín."])
    assert result.exit_code == 0, result.output
    assert "Berlín\tLOC" in result.output


def test_cli_refuses_a_malformed_code():
    result = CliRunner().invoke(cli_app, ["tag", "--lang", "e s", "Hola."])
    assert result.exit_code == 2 and "--lang" in result.output, result.output
