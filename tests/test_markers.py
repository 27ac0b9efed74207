"""Tests for crop.markers: round trips, each kind of corruption, and property tests (decode never raises)."""

from __future__ import annotations

import re

import pytest
from helpers import spans_of
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crop.markers import STRIP_PUNCT, MarkerCodec, codec_names, get_codec
from crop.types import LabeledResult, Span

CODECS = ["slot", "tag", "html", "bracket"]



def found(res: LabeledResult) -> list[tuple[str, int | None]]:
    return [(s.text, s.ref) for s in res.spans]


def check_invariants(res: LabeledResult, source: list[Span], raw: str) -> None:
    """What every decode result must satisfy, whatever the input."""
    text = res.text
    assert res.raw == raw
    assert text == text.strip()
    assert "  " not in text
    assert all(ch == " " or not ch.isspace() for ch in text)
    prev_end = 0
    for s in res.spans:
        assert 0 <= s.start < s.end <= len(text)
        assert s.start >= prev_end, "spans overlap or are not sorted"
        prev_end = s.end
        assert s.text == text[s.start : s.end]
        assert not s.text[0].isspace() and s.text[0] not in STRIP_PUNCT
        assert not s.text[-1].isspace() and s.text[-1] not in STRIP_PUNCT
        assert s.ref is not None and 0 <= s.ref < len(source)
        assert s.label == source[s.ref].label
        assert s.score == 1.0
    refs = [s.ref for s in res.spans]
    assert len(set(refs)) == len(refs)
    assert res.lost == sorted(res.lost)
    assert sorted(refs + res.lost) == list(range(len(source)))


# --------------------------------------------------------------------------------------------- registry


def test_get_codec_names() -> None:
    assert codec_names() == sorted(CODECS)
    for name in CODECS:
        codec = get_codec(name)
        assert codec.name == name
        assert isinstance(codec, MarkerCodec)


def test_get_codec_unknown() -> None:
    with pytest.raises(ValueError, match="bracket.*html.*slot.*tag"):
        get_codec("xml")


@pytest.mark.parametrize("name", CODECS)
def test_encode_rejects_overlap_and_out_of_bounds(name: str) -> None:
    codec = get_codec(name)
    text = "Barack Obama visited New York"
    with pytest.raises(ValueError, match="overlap"):
        codec.encode(text, [Span(start=0, end=12, label="PER"), Span(start=7, end=20, label="PER")])
    with pytest.raises(ValueError, match="outside"):
        codec.encode(text, [Span(start=20, end=40, label="LOC")])
    with pytest.raises(ValueError, match="outside"):
        codec.encode(text, [Span(start=5, end=3, label="LOC")])


@pytest.mark.parametrize("name", CODECS)
def test_round_trip_basic(name: str) -> None:
    codec = get_codec(name)
    text = "«Obama» met Trump in EE.UU. and d'Artagnan, yesterday."
    source = spans_of(text, ("Trump", "PER"), ("Obama", "PER"), ("EE.UU.", "LOC"), ("d'Artagnan", "PER"))
    marked = codec.encode(text, source)
    res = codec.decode(marked, source)
    check_invariants(res, source, marked)
    assert res.text == text
    assert found(res) == [("Obama", 1), ("Trump", 0), ("EE.UU.", 2), ("d'Artagnan", 3)]
    assert [(s.start, s.end) for s in res.spans] == [
        (s.start, s.end) for s in sorted(source, key=lambda s: s.start)
    ]
    assert [s.label for s in res.spans] == ["PER", "PER", "LOC", "PER"]
    assert res.lost == []


@pytest.mark.parametrize("name", CODECS)
def test_no_spans_and_empty(name: str) -> None:
    codec = get_codec(name)
    assert codec.encode("Hello  world", []) == "Hello  world"
    res = codec.decode("  Hello \n world  ", [])
    assert res.text == "Hello world" and res.spans == [] and res.lost == []
    res = codec.decode("", [Span(start=0, end=1, label="PER")])
    assert res.text == "" and res.lost == [0]


def test_encode_formats() -> None:
    text = "Trump said."
    sp = [Span(start=0, end=5, label="PER")]
    assert get_codec("slot").encode(text, sp) == "__SLOT0__ Trump __SLOT0__ said."
    assert get_codec("tag").encode(text, sp) == "<e0>Trump</e0> said."
    assert get_codec("html").encode(text, sp) == '<span id="e0">Trump</span> said.'
    assert get_codec("bracket").encode(text, sp) == "[ Trump ] said."


@pytest.mark.parametrize("name", CODECS)
def test_mid_word_span_round_trip(name: str) -> None:
    codec = get_codec(name)
    text = "anti-Trump protests, Obama's visit"
    source = spans_of(text, ("Trump", "PER"), ("Obama", "PER"))
    res = codec.decode(codec.encode(text, source), source)
    assert res.text == text
    assert found(res) == [("Trump", 0), ("Obama", 1)]


# ---------------------------------------------------------------------------------------------- slot

SRC2 = [Span(start=0, end=5, label="PER", text="Obama"), Span(start=10, end=15, label="LOC", text="Paris")]


def test_slot_dropped_marker() -> None:
    res = get_codec("slot").decode("__SLOT0__ Obama visitó __SLOT1__ París __SLOT1__ .", SRC2)
    assert res.text == "Obama visitó París ."
    assert found(res) == [("París", 1)]
    assert res.lost == [0]


def test_slot_duplicated_marker() -> None:
    codec = get_codec("slot")
    res = codec.decode("__SLOT0__ Obama __SLOT0__ y __SLOT0__ él __SLOT0__ __SLOT0__", SRC2)
    assert res.text == "Obama y él"
    assert found(res) == [("Obama", 0)]
    assert res.lost == [1]


def test_slot_swapped_order() -> None:
    res = get_codec("slot").decode("En __SLOT1__ París __SLOT1__, __SLOT0__ Obama __SLOT0__ habló.", SRC2)
    assert res.text == "En París, Obama habló."
    assert found(res) == [("París", 1), ("Obama", 0)]
    assert res.lost == []


def test_slot_glued_and_broken_markers() -> None:
    codec = get_codec("slot")
    res = codec.decode("__SLOT0__Obama__SLOT0__ en __slot1__París__SLOT1__.", SRC2)
    assert res.text == "Obama en París."
    assert found(res) == [("Obama", 0), ("París", 1)]
    res = codec.decode("__ SLOT0 __ Obama _SLOT0_ en __Slot1 París SLOT1__!", SRC2)
    assert res.text == "Obama en París!"
    assert found(res) == [("Obama", 0), ("París", 1)]


def test_slot_nested_and_interleaved() -> None:
    codec = get_codec("slot")
    res = codec.decode("__SLOT0__ el alcalde de __SLOT1__ París __SLOT1__ __SLOT0__", SRC2)
    assert found(res) == [("París", 1)]
    assert res.lost == [0]
    res = codec.decode("__SLOT0__ Obama __SLOT1__ en __SLOT0__ París __SLOT1__", SRC2)
    assert res.text == "Obama en París"
    assert len(res.spans) == 1 and res.lost == [res.spans[0].ref ^ 1]
    check_invariants(res, SRC2, res.raw)


def test_slot_whitespace_only_and_unknown_id() -> None:
    codec = get_codec("slot")
    res = codec.decode("Obama __SLOT0__  __SLOT0__ en __SLOT7__ __SLOT1__ París __SLOT1__ __SLOT9__", SRC2)
    assert res.text == "Obama en París"
    assert found(res) == [("París", 1)]
    assert res.lost == [0]


def test_slot_strips_punctuation() -> None:
    res = get_codec("slot").decode("__SLOT0__ «Obama», __SLOT0__ y __SLOT1__ (EE.UU.) __SLOT1__", SRC2)
    assert res.text == "«Obama», y (EE.UU.)"
    assert found(res) == [("Obama", 0), ("EE.UU.", 1)]
    assert res.text[res.spans[0].start : res.spans[0].end] == "Obama"


# ----------------------------------------------------------------------------------------------- tag


def test_tag_missing_close_and_open() -> None:
    codec = get_codec("tag")
    res = codec.decode("<e0>Obama visitó <e1>París</e1>.", SRC2)
    assert res.text == "Obama visitó París."
    assert found(res) == [("París", 1)] and res.lost == [0]
    res = codec.decode("Obama</e0> visitó <e1>París</e1>.", SRC2)
    assert found(res) == [("París", 1)] and res.lost == [0]


def test_tag_close_before_open_is_ignored() -> None:
    res = get_codec("tag").decode("</e0>Obama<e0> visitó <e1>París</e1>", SRC2)
    assert res.text == "Obama visitó París"
    assert found(res) == [("París", 1)] and res.lost == [0]


def test_tag_duplicated_pairs_first_wins() -> None:
    res = get_codec("tag").decode("<e0>Obama</e0> y <e0>Michelle</e0> en <e1>París</e1>", SRC2)
    assert found(res) == [("Obama", 0), ("París", 1)]


def test_tag_swapped_order_and_glued() -> None:
    res = get_codec("tag").decode("En<e1>París</e1>,<e0>Obama</e0>.", SRC2)
    assert res.text == "EnParís,Obama."
    assert found(res) == [("París", 1), ("Obama", 0)]


def test_tag_nested_keeps_inner() -> None:
    res = get_codec("tag").decode("<e0>el alcalde de <e1>París</e1></e0>", SRC2)
    assert found(res) == [("París", 1)] and res.lost == [0]
    # crossing: the shorter wins
    res = get_codec("tag").decode("<e0>Barack Obama <e1>en</e0> París</e1>", SRC2)
    assert found(res) == [("en París", 1)] and res.lost == [0]


def test_tag_tolerant_syntax_unknown_ids_and_other_tags() -> None:
    codec = get_codec("tag")
    res = codec.decode("< E0 >Obama</ e0 > <b>visitó</b> <e5>x</e5> <e1 >París< /E1>", SRC2)
    assert res.text == "Obama <b>visitó</b> x París"
    assert found(res) == [("Obama", 0), ("París", 1)]


def test_tag_whitespace_only() -> None:
    res = get_codec("tag").decode("Obama <e0> </e0> <e1>París</e1>", SRC2)
    assert res.text == "Obama París"
    assert found(res) == [("París", 1)] and res.lost == [0]


# ---------------------------------------------------------------------------------------------- html


def test_html_escaping_round_trip() -> None:
    codec = get_codec("html")
    text = "AT&T <beats> Procter & Gamble & co &amp; x"
    source = spans_of(text, ("AT&T", "ORG"), ("Procter & Gamble", "ORG"))
    marked = codec.encode(text, source)
    assert "AT&amp;T" in marked and "&lt;beats&gt;" in marked and "&amp;amp;" in marked
    res = codec.decode(marked, source)
    assert res.text == text
    assert found(res) == [("AT&T", 0), ("Procter & Gamble", 1)]


def test_html_apertium_variations() -> None:
    codec = get_codec("html")
    res = codec.decode('<SPAN ID="E1">París</SPAN> y < span id = \'e0\' class="x" >Obama</ span >', SRC2)
    assert res.text == "París y Obama"
    assert found(res) == [("París", 1), ("Obama", 0)]
    res = codec.decode("<span id=e0>Obama</span>&nbsp;visitó", SRC2)
    assert res.text == "Obama visitó"
    assert found(res) == [("Obama", 0)] and res.lost == [1]


def test_html_stack_matching() -> None:
    codec = get_codec("html")
    res = codec.decode('<span id="e0">el alcalde de <span id="e1">París</span></span>', SRC2)
    assert res.text == "el alcalde de París"
    assert found(res) == [("París", 1)] and res.lost == [0]
    res = codec.decode('</span>Obama <span id="e1">París</span> <span id="e0">x', SRC2)
    assert res.text == "Obama París x"
    assert found(res) == [("París", 1)] and res.lost == [0]
    res = codec.decode('<span id="e0">Obama</span> <span id="e0">él</span>', SRC2)
    assert found(res) == [("Obama", 0)] and res.lost == [1]


def test_html_keeps_other_tags() -> None:
    res = get_codec("html").decode('<p><span id="e0">Obama</span></p>', SRC2)
    assert res.text == "<p>Obama</p>"
    assert found(res) == [("Obama", 0)]


# ------------------------------------------------------------------------------------------- bracket

SRC3 = [
    Span(start=0, end=12, label="PER", text="Barack Obama"),
    Span(start=20, end=26, label="LOC", text="Mexico"),
    Span(start=31, end=39, label="ORG", text="Congress"),
]


def test_bracket_reidentify_by_content_when_reordered() -> None:
    res = get_codec("bracket").decode("El [ Congreso ] de [ México ] recibió a [Barack Obama].", SRC3)
    assert res.text == "El Congreso de México recibió a Barack Obama."
    assert found(res) == [("Congreso", 2), ("México", 1), ("Barack Obama", 0)]
    assert [s.label for s in res.spans] == ["ORG", "LOC", "PER"]


def test_bracket_by_elimination() -> None:
    res = get_codec("bracket").decode("[ Ел ] [ Конгресс ] [ Мексики ]", SRC3)
    assert found(res) == [("Ел", 0), ("Конгресс", 1), ("Мексики", 2)]
    res = get_codec("bracket").decode("[ Mexiko ] y [ Barak Obama ]", SRC3)
    assert found(res) == [("Mexiko", 1), ("Barak Obama", 0)]
    assert res.lost == [2]


def test_bracket_extra_and_missing_segments() -> None:
    codec = get_codec("bracket")
    res = codec.decode("[a] [b] [c] [d] [Obama]", SRC3[:2])
    assert found(res) == [("a", 0), ("b", 1)]  # "Obama" is not close enough to "Barack Obama"
    assert res.lost == []
    res = codec.decode("[ Obama ] fue a México.", SRC3)
    assert found(res) == [("Obama", 0)]
    assert res.lost == [1, 2]


def test_bracket_nested_unbalanced_and_stray() -> None:
    codec = get_codec("bracket")
    res = codec.decode("[ el presidente [ Barack Obama ] ] ] en [ México", SRC3)
    assert res.text == "el presidente Barack Obama en México"
    assert found(res) == [("Barack Obama", 0)]
    assert res.lost == [1, 2]
    res = codec.decode("] [ Obama ] en [ [ México ]", SRC3)
    assert res.text == "Obama en México"
    assert found(res) == [("Obama", 0), ("México", 1)]


def test_bracket_empty_segment_consumes_its_place() -> None:
    res = get_codec("bracket").decode("[ ] en [ Mexiko ] el [ Kongress ]", SRC3)  # by content
    assert res.text == "en Mexiko el Kongress"
    assert found(res) == [("Mexiko", 1), ("Kongress", 2)]
    assert res.lost == [0]
    res = get_codec("bracket").decode("[ ] в [ Мексике ] [ Конгресс ]", SRC3)  # by elimination
    assert found(res) == [("Мексике", 1), ("Конгресс", 2)]
    assert res.lost == [0]


def test_bracket_glued_and_fullwidth() -> None:
    res = get_codec("bracket").decode("［奥巴马］访问了[墨西哥]。", SRC3[:2])
    assert res.text == "奥巴马访问了墨西哥。"
    assert found(res) == [("奥巴马", 0), ("墨西哥", 1)]
    res = get_codec("bracket").decode("[ Obama ]'s visit to[ México ].", SRC3[:2])
    assert res.text == "Obama's visit toMéxico."
    assert found(res) == [("Obama", 0), ("México", 1)]


def test_bracket_identical_texts_keep_position() -> None:
    codec = get_codec("bracket")
    text = "Paris and Paris"
    source = [
        Span(start=10, end=15, label="LOC", text="Paris"),
        Span(start=0, end=5, label="PER", text="Paris"),
    ]
    res = codec.decode(codec.encode(text, source), source)
    assert [(s.start, s.ref) for s in res.spans] == [(0, 1), (10, 0)]


# ------------------------------------------------------------------------------------------ properties

LETTERS = "abcdefghijklmnopqrstuvwxyzABCXYZáéíóúñüçÀÉÑßøİı"
PUNCT = ".,;:!?'\"«»“”()¿¡-/%"
DIGITS = "0123456789"
EXTRA = {
    "slot": "",  # no "_" so nothing can look like a slot marker
    "tag": ">&",
    "html": "<>&;#",
    "bracket": "<>_&{}",
}
MARKER_RE = {
    "slot": re.compile(r"__SLOT\d+__"),
    "tag": re.compile(r"</?e\d+>"),
    "html": re.compile(r'<span id="e\d+">|</span>'),
    "bracket": re.compile(r"[\[\]]"),
}
LABELS = ["PER", "ORG", "LOC", "MISC"]
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _ok_edge(ch: str) -> bool:
    return not ch.isspace() and ch not in STRIP_PUNCT


@st.composite
def labeled_texts(draw: st.DrawFn, name: str) -> tuple[str, list[Span]]:
    """A whitespace-normalized text and non-overlapping spans (in random order) that start and end on
    characters the decoder keeps."""
    alphabet = LETTERS + PUNCT + DIGITS + EXTRA[name]
    words = draw(st.lists(st.text(alphabet, min_size=1, max_size=7), min_size=1, max_size=10))
    text = " ".join(words)
    if name == "slot" and "slot" in text.casefold():
        text = text.casefold().replace("slot", "slit")
    valid = [i for i, ch in enumerate(text) if _ok_edge(ch)]
    cuts = sorted(draw(st.lists(st.sampled_from(valid), unique=True, max_size=10))) if valid else []
    spans = []
    for j in range(0, len(cuts), 2):
        start = cuts[j]
        end = cuts[j + 1] if j + 1 < len(cuts) and draw(st.booleans()) else start
        spans.append(
            Span(start=start, end=end + 1, label=draw(st.sampled_from(LABELS)), text=text[start : end + 1])
        )
    return text, draw(st.permutations(spans))


@pytest.mark.parametrize("name", CODECS)
@PROPS
@given(data=st.data())
def test_property_round_trip(name: str, data: st.DataObject) -> None:
    codec = get_codec(name)
    text, source = data.draw(labeled_texts(name))
    marked = codec.encode(text, source)
    res = codec.decode(marked, source)
    check_invariants(res, source, marked)
    assert res.text == text
    assert res.lost == []
    expected = sorted(
        ((s.start, s.end, s.label, s.text, i) for i, s in enumerate(source)), key=lambda t: t[0]
    )
    assert [(s.start, s.end, s.label, s.text, s.ref) for s in res.spans] == expected


def _corrupt(data: st.DataObject, name: str, marked: str, n: int) -> str:
    """Apply one random corruption to a marked string."""
    markers = list(MARKER_RE[name].finditer(marked))
    kind = data.draw(st.sampled_from(["drop", "dup", "swap", "insert", "delete", "glue"]))
    if kind in ("drop", "dup", "glue") and markers:
        m = data.draw(st.sampled_from(markers))
        if kind == "drop":
            return marked[: m.start()] + marked[m.end() :]
        if kind == "dup":
            at = data.draw(st.integers(0, len(marked)))
            return marked[:at] + m.group() + marked[at:]
        # glue: remove the whitespace on one side of the marker
        if data.draw(st.booleans()):
            start = m.start()
            while start > 0 and marked[start - 1].isspace():
                start -= 1
            return marked[:start] + marked[m.start() :]
        end = m.end()
        while end < len(marked) and marked[end].isspace():
            end += 1
        return marked[: m.end()] + marked[end:]
    if kind == "swap" and len(markers) >= 2:
        a, b = sorted(
            data.draw(st.lists(st.sampled_from(markers), min_size=2, max_size=2, unique_by=id)),
            key=lambda m: m.start(),
        )
        return marked[: a.start()] + b.group() + marked[a.end() : b.start()] + a.group() + marked[b.end() :]
    if kind == "delete" and marked:
        start = data.draw(st.integers(0, len(marked) - 1))
        end = data.draw(st.integers(start + 1, min(len(marked), start + 6)))
        return marked[:start] + marked[end:]
    # insert a random (possibly unknown, possibly broken) marker
    i = data.draw(st.integers(0, n + 3))
    token = data.draw(
        st.sampled_from(
            {
                "slot": [f"__SLOT{i}__", f" __SLOT{i}__ ", f"__ slot{i} __", f"_SLOT{i}_", "__SLOT"],
                "tag": [f"<e{i}>", f"</e{i}>", f"< E{i} >", "<e", "</"],
                "html": [f'<span id="e{i}">', "</span>", f"<SPAN id=e{i}>", "</ span>", "&amp;", "<span"],
                "bracket": ["[", "]", " [ ", " ] ", "［", "］", "[]"],
            }[name]
        )
    )
    at = data.draw(st.integers(0, len(marked)))
    return marked[:at] + token + marked[at:]


@pytest.mark.parametrize("name", CODECS)
@PROPS
@given(data=st.data())
def test_property_corrupted_never_raises(name: str, data: st.DataObject) -> None:
    codec = get_codec(name)
    text, source = data.draw(labeled_texts(name))
    marked = codec.encode(text, source)
    for _ in range(data.draw(st.integers(1, 4))):
        marked = _corrupt(data, name, marked, len(source))
    res = codec.decode(marked, source)
    check_invariants(res, source, marked)


@pytest.mark.parametrize("name", CODECS)
@settings(max_examples=100, deadline=None)
@given(
    marked=st.text(
        st.sampled_from(list("ab é,.«»()_ SLOTslot0123[]<>/e=\"'span id&;\n\t［］")) | st.characters(),
        max_size=60,
    ),
    labels=st.lists(st.sampled_from(LABELS), max_size=5),
)
def test_property_arbitrary_strings_never_raise(name: str, marked: str, labels: list[str]) -> None:
    source = [Span(start=0, end=1, label=label, text="ab") for label in labels]
    res = get_codec(name).decode(marked, source)
    check_invariants(res, source, marked)
