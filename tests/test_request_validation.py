"""Invalid requests are 422 with the field named (issue 10, item 8): the projector's /v1/project against a real
uvicorn server, one case per rule (labels, source spans, back-translation references, duplicates), and the same
label rule on the translator's /v1/translate/labeled."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from servers import running

from crop.api import projector as projector_api
from crop.api import translator as translator_api
from crop.api.settings import ProjectorSettings, TranslatorSettings

pytestmark = pytest.mark.integration

ITEM: dict[str, Any] = {
    "lang": "es", "text": "Juan vive en Londres .", "source_text": "Juan lives in London.",
    "source": [{"start": 0, "end": 4, "label": "PER", "text": "Juan"},
               {"start": 14, "end": 20, "label": "LOC", "text": "London"}],
    "back": {"text": "Juan vive en Londres.", "lost": [], "spans": [
        {"start": 0, "end": 4, "label": "PER", "text": "Juan", "ref": 0},
        {"start": 13, "end": 20, "label": "LOC", "text": "Londres", "ref": 1}]},
}


@pytest.fixture(scope="module")
def projector_url() -> Iterator[str]:
    with running(projector_api.create_app(ProjectorSettings(langid=False, api_keys=[]))) as url:
        yield url


def _errors(r: httpx.Response) -> list[str]:
    """The 422's errors as "loc: msg" lines (loc without the leading `body`)."""
    assert r.status_code == 422, r.text
    return [".".join(str(p) for p in e["loc"][1:]) + ": " + e["msg"] for e in r.json()["detail"]]


def _edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    item = copy.deepcopy(ITEM)
    change(item)
    return item


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set `value` at a dotted path of the item (list indices as numbers)."""
    def change(item: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = item
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(last) if isinstance(node, list) else last] = value
    return change


def _add_back_alternative(item: dict[str, Any]) -> None:
    item["back"]["alternatives"] = [{"text": "Juan.", "spans": [
        {"start": 0, "end": 4, "label": "PER", "text": "Juan", "ref": 7}]}]


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    # labels: each needle must appear in one error line
    "empty label": (_set("source.0.label", ""), ("items.0.source.0", "label")),
    "outside tag as label": (_set("source.1.label", "O"), ("items.0.source.1", "label", "outside tag")),
    "B- prefixed label": (_set("source.0.label", "B-PER"), ("items.0.source.0", "label", "BIO prefix")),
    "I- prefixed label": (_set("source.1.label", "i-LOC"), ("items.0.source.1", "label", "BIO prefix")),
    "label with whitespace": (_set("source.0.label", "PER SON"), ("items.0.source.0", "label", "whitespace")),
    "label with a control character": (_set("source.0.label", "PER\x07"), ("items.0.source.0", "label")),
    # source spans
    "source span outside source_text": (_set("source.1.end", 99), ("items.0", "`source[1]`", "source_text")),
    "source span with start == end": (_set("source.0.end", 0), ("items.0.source.0", "start")),
    "source span with start > end": (_set("source.0.start", 5), ("items.0.source.0", "start")),
    "duplicated source span": (_set("source.1", {"start": 0, "end": 4, "label": "LOC", "text": "Juan"}),
                               ("items.0", "`source[1]`", "`source[0]`", "repeats")),
    "overlapping source spans": (_set("source.1", {"start": 2, "end": 10, "label": "LOC", "text": "an lives"}),
                                 ("items.0", "`source[1]`", "overlaps")),
    # the back-translation
    "back ref out of range": (_set("back.spans.1.ref", 2), ("items.0", "`back.spans[1].ref`")),
    "back ref negative": (_set("back.spans.0.ref", -1), ("items.0", "`back.spans[0].ref`")),
    "back span outside back.text": (_set("back.spans.1.end", 40), ("items.0", "`back.spans[1]`", "`back.text`")),
    "back fragment ref out of range": (_set("back.fragments", [{"start": 0, "end": 4, "label": "PER", "ref": 9}]),
                                       ("items.0", "`back.fragments[0].ref`")),
    "lost index out of range": (_set("back.lost", [0, 2]), ("items.0", "`back.lost[1]`")),
    "alternative's ref out of range": (_add_back_alternative, ("items.0", "`back.alternatives[0].spans[0].ref`")),
}


def test_a_valid_item_is_projected(projector_url: str):
    r = httpx.post(projector_url + "/v1/project", json={"items": [ITEM]})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0]["tags"] == ["B-PER", "O", "O", "B-LOC", "O"]


@pytest.mark.parametrize("case", list(CASES))
def test_invalid_item_is_422_naming_the_field(projector_url: str, case: str):
    change, needles = CASES[case]
    item = _edit(change)
    r = httpx.post(projector_url + "/v1/project", json={"items": [ITEM, item]})
    lines = _errors(r)
    needles = tuple(n.replace("items.0", "items.1") for n in needles)  # the bad item is the second one
    assert any(all(n in line for n in needles) for line in lines), (needles, lines)


def test_labeled_translation_refuses_bio_labels(translator):
    with running(translator_api.create_app(TranslatorSettings(api_keys=[]), engine=translator)) as url:
        body = {"items": [{"text": "Juan vive en Londres.", "spans": [{"start": 0, "end": 4, "label": "PER"},
                                                                       {"start": 13, "end": 20, "label": "B-LOC"}]}],
                "src": "es", "tgt": "en"}
        lines = _errors(httpx.post(url + "/v1/translate/labeled", json=body))
        assert any("items.0.spans.1.label" in line and "BIO prefix" in line for line in lines), lines
        for label in ("", "O", "LOC CITY"):
            body["items"][0]["spans"][1]["label"] = label
            lines = _errors(httpx.post(url + "/v1/translate/labeled", json=body))
            assert any("items.0.spans.1.label" in line for line in lines), lines
        body["items"][0]["spans"][1]["label"] = "LOC"
        r = httpx.post(url + "/v1/translate/labeled", json=body)
        assert r.status_code == 200, r.text
