"""The try-it page of the tagger (`GET /`) in headless Chromium (Debian's chromium + chromium-driver, driven by
selenium), against a real uvicorn server over the real engines (Apertium + spaCy): the language list comes from
/v1/info, the highlighted entities are those /v1/tag returns, errors show in `#status`, and an API key typed in
the page is sent. A screenshot of the tagged sentence is saved to tests/artifacts/tagger_page.png."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from servers import running

from crop.api.settings import TaggerSettings
from crop.api.tagger import TaggerEngines, create_app
from crop.pipeline import CropPipeline
from crop.project import Projector, ProjectorConfig
from crop.tag.base import Tagger
from crop.translate.base import Translator

SENTENCE = "Pedro Sánchez se reunió con Olaf Scholz en Berlín."
API_KEY = "page-test-key"
SCREENSHOT = Path(__file__).resolve().parent / "artifacts" / "tagger_page.png"
WAIT = 60  # seconds: the first request runs Apertium and spaCy cold

# what the page shows of the entities: each mark's text (without its label badge), data-label and class, and the
# table's rows
PAGE_ENTITIES = """
return {
  marks: [...document.querySelectorAll('#result mark')].map((m) => ({
    text: [...m.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join(''),
    label: m.dataset.label, cls: m.className})),
  rows: [...document.querySelectorAll('#entities tbody tr')].map((tr) =>
    [...tr.querySelectorAll('td')].map((td) => td.textContent)),
  tableHidden: document.getElementById('entities').hidden,
  plain: [...document.getElementById('result').childNodes].map((n) =>
    n.nodeType === Node.TEXT_NODE ? n.textContent : n.firstChild.textContent).join(''),
};
"""


def _binary(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{' / '.join(names)} not found: the page tests need Debian's chromium and chromium-driver "
                "(apt-get install -y chromium chromium-driver; scripts/setup.sh installs them)")


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium = _binary("chromium", "chromium-browser")
    driver_path = _binary("chromedriver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    # the given chromedriver: selenium manager would otherwise try to download one
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def engines(translator: Translator, tagger: Tagger) -> TaggerEngines:
    projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False))
    return TaggerEngines(tagger, CropPipeline(translator, tagger, projector))


@pytest.fixture(scope="module")
def tagger_url(engines: TaggerEngines) -> Iterator[str]:
    with running(create_app(TaggerSettings(), engines=engines)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url(engines: TaggerEngines) -> Iterator[str]:
    with running(create_app(TaggerSettings(api_keys=[API_KEY]), engines=engines)) as url:
        yield url


def _open(browser: WebDriver, url: str) -> None:
    browser.get(url + "/")
    assert browser.title.startswith("crop"), browser.title


def _wait(browser: WebDriver, condition: Any, what: str) -> Any:
    try:
        return WebDriverWait(browser, WAIT).until(condition)
    except TimeoutException:
        status = browser.find_element(By.ID, "status")
        pytest.fail(f"the page did not show {what} within {WAIT} s; #status says {status.text!r} "
                    f"(class {status.get_attribute('class')!r})")


def _languages(browser: WebDriver) -> list[str]:
    return [o.get_attribute("value") for o in Select(browser.find_element(By.ID, "lang")).options]


def _wait_languages(browser: WebDriver) -> list[str]:
    _wait(browser, lambda b: _languages(b), "the languages from /v1/info")
    return _languages(browser)


def _type(browser: WebDriver, element_id: str, text: str) -> None:
    box = browser.find_element(By.ID, element_id)
    box.clear()
    if text:
        box.send_keys(text)


def _status(browser: WebDriver) -> tuple[str, str]:
    el = browser.find_element(By.ID, "status")
    return el.text, el.get_attribute("class") or ""


def _wait_error(browser: WebDriver, what: str) -> str:
    _wait(browser, lambda b: _status(b)[1] == "error", what)
    return _status(browser)[0]


def _clear_status(browser: WebDriver) -> None:
    """So that the next message is known to be new (the same error twice reads the same)."""
    browser.execute_script("const s = document.getElementById('status'); s.textContent = ''; s.className = '';")


def _wait_marks(browser: WebDriver, what: str) -> dict[str, Any]:
    """The entities the page shows once it shows some; fails at once when it shows an error instead."""
    _wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#result mark") or _status(b)[1] == "error", what)
    text, cls = _status(browser)
    if cls == "error":
        pytest.fail(f"the page showed an error instead of {what}: {text!r}")
    return browser.execute_script(PAGE_ENTITIES)


def _tag(browser: WebDriver, text: str, lang: str, mode: str = "crop") -> None:
    _type(browser, "text", text)
    Select(browser.find_element(By.ID, "lang")).select_by_value(lang)
    Select(browser.find_element(By.ID, "mode")).select_by_value(mode)
    browser.find_element(By.ID, "go").click()


def test_page_highlights_what_the_api_returns(browser: WebDriver, tagger_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    _open(browser, tagger_url)
    info = httpx.get(tagger_url + "/v1/info", timeout=10).json()
    langs = _wait_languages(browser)
    assert set(langs) == set(info["crop_languages"]) | {info["pivot"]}
    assert {"es", "ca", "gl", "en"} <= set(langs), langs
    assert Select(browser.find_element(By.ID, "lang")).first_selected_option.get_attribute("value") == "es"

    _tag(browser, SENTENCE, "es")
    shown = _wait_marks(browser, "highlighted entities")

    api = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es"}, timeout=WAIT)
    assert api.status_code == 200, api.text
    entities = sorted(api.json()["results"][0]["entities"], key=lambda e: e["start"])
    assert {e["text"] for e in entities} >= {"Pedro Sánchez", "Olaf Scholz"}, entities  # the engines found names
    assert [(m["text"], m["label"]) for m in shown["marks"]] == [(e["text"], e["label"]) for e in entities]
    for m in shown["marks"]:
        assert m["label"] in ("PER", "ORG", "LOC", "MISC"), m
        assert m["cls"] == m["label"], m
    assert shown["plain"] == SENTENCE  # the highlighted sentence reads as typed
    assert not shown["tableHidden"]
    assert [row[:3] for row in shown["rows"]] == [[e["text"], e["label"], f"{e['start']}–{e['end']}"]
                                                   for e in entities]
    text, cls = _status(browser)
    assert cls != "error" and text.startswith(f"{len(entities)} entit"), text

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT)), "the screenshot could not be written"
    assert SCREENSHOT.stat().st_size > 0
    with capsys.disabled():
        print(f"\nscreenshot of the tagged sentence: {SCREENSHOT}")


def test_offsets_are_code_points(browser: WebDriver, tagger_url: str) -> None:
    """Entity offsets count code points; an emoji (two UTF-16 units in JavaScript) must not shift the marks."""
    sentence = "🙂 " + SENTENCE
    _open(browser, tagger_url)
    _wait_languages(browser)
    _tag(browser, sentence, "es")
    shown = _wait_marks(browser, "highlighted entities")
    api = httpx.post(tagger_url + "/v1/tag", json={"text": sentence, "lang": "es"}, timeout=WAIT).json()
    entities = sorted(api["results"][0]["entities"], key=lambda e: e["start"])
    assert entities, api
    assert [(m["text"], m["label"]) for m in shown["marks"]] == [(e["text"], e["label"]) for e in entities]
    assert shown["plain"] == sentence


def test_empty_text_is_an_error(browser: WebDriver, tagger_url: str) -> None:
    _open(browser, tagger_url)
    _wait_languages(browser)
    _tag(browser, "", "es")
    message = _wait_error(browser, "an error for the empty text")
    assert message == "type a sentence first"
    assert not browser.find_elements(By.CSS_SELECTOR, "#result mark")


def test_api_refusal_is_shown(browser: WebDriver, tagger_url: str) -> None:
    """An answer of the API that is not a result (here a 400: the model alone does not tag Spanish) is shown."""
    _open(browser, tagger_url)
    _wait_languages(browser)
    _tag(browser, SENTENCE, "es", mode="model")
    message = _wait_error(browser, "the API's refusal")
    assert "tags en, not 'es'" in message, message


def test_api_key_is_needed_and_sent(browser: WebDriver, keyed_url: str) -> None:
    _open(browser, keyed_url)
    message = _wait_error(browser, "the 401 of /v1/info without a key")
    assert "API key" in message, message
    assert _languages(browser) == []

    _clear_status(browser)
    browser.find_element(By.ID, "go").click()  # still no key: the 401 again, nothing tagged
    assert "API key" in _wait_error(browser, "the 401 again"), _status(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "#result mark")

    _type(browser, "key", "wrong-key")
    _clear_status(browser)
    browser.find_element(By.ID, "go").click()
    assert "API key" in _wait_error(browser, "the 401 for a wrong key"), _status(browser)
    assert _languages(browser) == []

    _type(browser, "key", API_KEY)
    _clear_status(browser)
    browser.find_element(By.ID, "go").click()
    shown = _wait_marks(browser, "entities once the key is typed")
    assert {m["text"] for m in shown["marks"]} >= {"Pedro Sánchez", "Olaf Scholz"}, shown
    assert "es" in _languages(browser)
    text, cls = _status(browser)
    assert cls != "error" and "entit" in text, text


# what the page shows of the CROP steps (read whole, whether the <details> is open or not)
PAGE_STEPS = """
const box = document.getElementById('steps');
return {
  hidden: box.hidden, open: box.open,
  english: document.getElementById('step-english').textContent,
  englishMarks: [...document.querySelectorAll('#step-en-entities mark')].map((m) => [
    [...m.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join(''),
    m.dataset.label]),
  back: document.getElementById('step-back').textContent,
  rows: [...document.querySelectorAll('#step-placed tbody tr')].map((tr) => ({
    ref: Number(tr.dataset.ref), outcome: tr.dataset.outcome, cls: tr.className,
    cells: [...tr.querySelectorAll('td')].map((td) => td.textContent)})),
  verdict: document.getElementById('step-verdict').textContent,
};
"""
BROKEN = "Lula da Silva visitó la Biblioteca Nacional de España ayer con Ursula von der Leyen."
STEPS_SCREENSHOT = SCREENSHOT.with_name("tagger_page_steps.png")


def _wait_steps(browser: WebDriver, what: str) -> dict[str, Any]:
    _wait_marks(browser, what)
    return browser.execute_script(PAGE_STEPS)


def test_page_shows_the_steps_collapsed(browser: WebDriver, tagger_url: str) -> None:
    """Mode crop: the steps the API explains, under the highlighted sentence, in a <details> that is closed until
    its summary is clicked."""
    _open(browser, tagger_url)
    _wait_languages(browser)
    _tag(browser, SENTENCE, "es")
    shown = _wait_steps(browser, "the entities and their steps")
    api = httpx.post(tagger_url + "/v1/tag", json={"text": SENTENCE, "lang": "es", "explain": True}, timeout=WAIT)
    assert api.status_code == 200, api.text
    steps = api.json()["results"][0]["steps"]

    assert not shown["hidden"] and not shown["open"]  # there, collapsed by default
    assert not browser.find_element(By.ID, "step-english").is_displayed()
    assert shown["english"] == steps["english"]
    assert shown["englishMarks"] == [[e["text"], e["label"]] for e in sorted(steps["english_entities"],
                                                                               key=lambda e: e["start"])]
    assert shown["back"] == steps["back_marked"] and '<span id="e0">' in shown["back"]  # the markers as produced
    assert [(r["ref"], r["outcome"]) for r in shown["rows"]] == [(e["ref"], e["outcome"]) for e in steps["entities"]]
    for row, e in zip(shown["rows"], steps["entities"], strict=True):
        p = e["placed"]
        assert row["cells"][:4] == [e["text"], e["label"], e["marked"], f"{p['text']} ({p['start']}–{p['end']})"]
        assert row["cells"][4] == f"{p['method']}, {p['score']:.2f}"
    assert shown["verdict"] == "verdict: kept"

    browser.find_element(By.CSS_SELECTOR, "#steps summary").click()
    _wait(browser, lambda b: b.find_element(By.ID, "step-english").is_displayed(), "the steps once opened")
    assert browser.execute_script("return document.getElementById('steps').open") is True
    assert browser.find_element(By.ID, "step-back").text == steps["back_marked"]
    assert browser.save_screenshot(str(STEPS_SCREENSHOT)), "the screenshot could not be written"

    # an entity that was not placed says why; a new sentence closes the steps again
    _tag(browser, BROKEN, "es")
    _wait(browser, lambda b: b.execute_script(PAGE_STEPS)["english"].startswith("Lula"), "the new sentence's steps")
    shown = browser.execute_script(PAGE_STEPS)
    assert not shown["open"]
    spain = next(r for r in shown["rows"] if r["cells"][0] == "Spain")
    assert spain["outcome"] == "overlap" and spain["cls"] == "unplaced" and spain["cells"][3] == "not placed"
    assert spain["cells"][4].startswith("overlap: its words are inside entity"), spain


def test_page_shows_no_steps_without_them(browser: WebDriver, tagger_url: str) -> None:
    """The pivot language (tagged by the model alone) has no steps: none are asked for, none shown, none stale."""
    _open(browser, tagger_url)
    _wait_languages(browser)
    _tag(browser, SENTENCE, "es")
    assert not _wait_steps(browser, "the steps in Spanish")["hidden"]
    _tag(browser, "Angela Merkel visited Paris.", "en")
    _wait(browser, lambda b: "Angela Merkel" in [m["text"] for m in b.execute_script(PAGE_ENTITIES)["marks"]],
          "the English sentence's entities")
    text, cls = _status(browser)
    assert cls != "error", text
    assert browser.execute_script(PAGE_STEPS)["hidden"]
