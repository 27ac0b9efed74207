"""The projector on hand-made back-translations and alignments (no engines): each cascade method, the method
recorded per entity, non-overlap, the verdicts and their reasons, the language-id filter, batching."""

from __future__ import annotations

import dataclasses

import pytest

from crop.project import ALL_METHODS, ProjectionRequest, Projector, ProjectorConfig
from crop.text import tokenize
from crop.types import AlignedTranslation, LabeledResult, ProjectionResult, Span, Status

Item = str | tuple[str, int]  # a substring, or (substring, which occurrence)


def _find(text: str, sub: Item) -> tuple[str, int]:
    word, nth = (sub, 0) if isinstance(sub, str) else sub
    pos = -1
    for _ in range(nth + 1):
        pos = text.index(word, pos + 1)
    return word, pos


def span(text: str, sub: Item, label: str, ref: int | None = None, lang: str = "en") -> Span:
    """A span over `sub` in `text`, with token offsets from crop's tokenization."""
    word, start = _find(text, sub)
    end = start + len(word)
    offsets = tokenize(text, lang)[1]
    ts = next(k for k, (a, _) in enumerate(offsets) if a == start)
    te = next(k for k, (_, b) in enumerate(offsets) if b == end) + 1
    return Span(start=start, end=end, label=label, text=word, token_start=ts, token_end=te, ref=ref)


def source(en: str, *items: tuple[Item, str]) -> list[Span]:
    return [span(en, sub, label) for sub, label in items]


def back(text: str, *marks: tuple[Item, str, int], lost: tuple[int, ...] = (),
         fragments: tuple[tuple[Item, str, int], ...] = ()) -> LabeledResult:
    return LabeledResult(
        text=text,
        spans=[span(text, sub, label, ref) for sub, label, ref in marks],
        lost=list(lost),
        fragments=[span(text, sub, label, ref) for sub, label, ref in fragments],
    )


def toks(text: str, lang: str = "es") -> list[str]:
    return tokenize(text, lang)[0]


def found(res: ProjectionResult) -> list[tuple[str, str, str]]:
    return [(e.text, e.label, e.method) for e in res.entities]


def check(res: ProjectionResult) -> None:
    """Invariants of every result: tags agree with entities, entities are in order and do not overlap."""
    assert len(res.tags) == len(res.tokens)
    prev = 0
    for e in res.entities:
        assert prev <= e.token_start < e.token_end <= len(res.tokens)
        prev = e.token_end
        assert res.tags[e.token_start] == f"B-{e.label}"
        assert all(t == f"I-{e.label}" for t in res.tags[e.token_start + 1:e.token_end])
        assert res.text[e.start:e.end] == e.text
        assert 0 < e.score <= 1
    assert sum(t.startswith("B-") for t in res.tags) == len(res.entities)
    assert res.status in (Status.kept, Status.discarded)
    assert (res.reason is None) == (res.status == Status.kept)


NO_LANGID = ProjectorConfig(langid=False)


@pytest.fixture
def projector() -> Projector:
    return Projector(NO_LANGID)


# -- the cascade, one method at a time -----------------------------------------------------------------------


def test_exact(projector: Projector) -> None:
    en = "Pedro Sánchez visited Berlin."
    res = projector.project(
        toks("Pedro Sánchez visitó Berlín ."), "es", source(en, ("Pedro Sánchez", "PER"), ("Berlin", "LOC")),
        back=back("Pedro Sánchez visitó Berlín.", ("Pedro Sánchez", "PER", 0), ("Berlín", "LOC", 1)),
        source_text=en)
    check(res)
    assert found(res) == [("Pedro Sánchez", "PER", "exact"), ("Berlín", "LOC", "exact")]
    assert res.tags == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert [e.score for e in res.entities] == [1.0, 1.0]
    assert [e.ref for e in res.entities] == [0, 1]
    assert res.status == Status.kept and res.reason is None and res.unmatched == []


def test_normalized_case_and_accents(projector: Projector) -> None:
    en = "The European Union approved the law."
    res = projector.project(
        toks("La Unión Europea aprobó la ley ."), "es", source(en, ("European Union", "ORG")),
        back=back("La Union europea aprobó la ley.", ("Union europea", "ORG", 0)), source_text=en)
    check(res)
    assert found(res) == [("Unión Europea", "ORG", "normalized")]
    assert res.entities[0].score < 1.0


@pytest.mark.parametrize(
    ("raw", "lang", "bt", "marked", "expected"),
    [
        ("És membre de l'OTAN des de 1982 .", "ca", "És membre d'OTAN des de 1982.", "d'OTAN", "OTAN"),
        ("Va estudiar a la Universitat de Lleida .", "ca", "Va estudiar a la Universitat de Lleida.",
         "la Universitat de Lleida", "Universitat de Lleida"),
    ],
)
def test_edge_function_words_stripped(projector: Projector, raw: str, lang: str, bt: str, marked: str,
                                      expected: str) -> None:
    en = "It is about NATO."
    res = projector.project(toks(raw, lang), lang, source(en, ("NATO", "ORG")),
                            back=back(bt, (marked, "ORG", 0)), source_text=en)
    check(res)
    assert [e.text for e in res.entities] == [expected]
    assert res.entities[0].method in ("exact", "normalized")


def test_source_copy_when_markers_lost(projector: Projector) -> None:
    en = "He has lived in Madrid since 2010."
    res = projector.project(toks("Vive en Madrid desde 2010 ."), "es", source(en, ("Madrid", "LOC")),
                            back=back("Vive en Madrid desde 2010.", lost=(0,)), source_text=en)
    check(res)
    assert found(res) == [("Madrid", "LOC", "source_copy")]
    assert res.entities[0].score == pytest.approx(0.9)


def test_lost_marker_without_evidence_is_reported(projector: Projector) -> None:
    en = "He has lived in London since 2010."
    res = projector.project(toks("Vive en Londres desde 2010 ."), "es", source(en, ("London", "LOC")),
                            back=back("Vive en Londres desde 2010.", lost=(0,)), source_text=en)
    check(res)
    assert res.entities == []
    assert res.unmatched == [{"ref": 0, "text": "London", "label": "LOC", "reason": "marker lost"}]
    assert res.status == Status.discarded
    assert res.reason == "unmatched entities: 1 of 1"


def test_next_hypothesis_is_tried_before_discarding(projector: Projector) -> None:
    """n-best back-translations: the best one lost a marker, the second keeps both and places them."""
    en = "Juan lives in London."
    src = source(en, ("Juan", "PER"), ("London", "LOC"))
    best = back("Juan vive en Londres.", ("Juan", "PER", 0), lost=(1,))
    second = back("Juan vive en Londres.", ("Juan", "PER", 0), ("Londres", "LOC", 1))
    third = back("Juan vive en Londres.", ("Juan", "PER", 0), ("Londres", "LOC", 1))
    best.alternatives = [second, third]
    res = projector.project(toks("Juan vive en Londres ."), "es", src, back=best, source_text=en)
    check(res)
    assert found(res) == [("Juan", "PER", "exact"), ("Londres", "LOC", "exact")]
    assert res.status == Status.kept and res.hypothesis == 1
    # no alternative helps: the best hypothesis' verdict stands
    best.alternatives = [back("Juan vive en Londres.", lost=(0, 1))]
    res = projector.project(toks("Juan vive en Londres ."), "es", src, back=best, source_text=en)
    assert res.hypothesis == 0 and res.status == Status.discarded and len(res.unmatched) == 1


def test_forward_alignment(projector: Projector) -> None:
    en = "Beijing is big."
    forward = AlignedTranslation(text=en, tokens=["Beijing", "is", "big", "."], alignment=[[0], [1], [2], [3]])
    res = projector.project(toks("Pekín es grande ."), "es", source(en, ("Beijing", "LOC")),
                            back=back("Beijing es grande.", ("Beijing", "LOC", 0)), forward=forward,
                            source_text=en)
    check(res)
    assert found(res) == [("Pekín", "LOC", "forward")]
    assert res.entities[0].score == pytest.approx(0.85)
    # without the forward translation only the weaker context evidence is left
    res = projector.project(toks("Pekín es grande ."), "es", source(en, ("Beijing", "LOC")),
                            back=back("Beijing es grande.", ("Beijing", "LOC", 0)), source_text=en)
    assert [e.method for e in res.entities] != ["forward"]
    only_forward = Projector(ProjectorConfig(methods=("forward",), langid=False))
    res = only_forward.project(toks("Pekín es grande ."), "es", source(en, ("Beijing", "LOC")),
                               back=back("Beijing es grande.", ("Beijing", "LOC", 0)), source_text=en)
    assert res.entities == [] and res.status == Status.discarded


def test_forward_alignment_by_words_when_texts_differ(projector: Projector) -> None:
    # the English sentence (gold) differs from the forward translation: the entity is found by its words
    en = "The city of Beijing is really big."
    forward = AlignedTranslation(text="Beijing is big.", tokens=["Beijing", "is", "big", "."],
                                 alignment=[[0], [1], [2], [3]])
    res = projector.project(toks("Pekín es grande ."), "es", source(en, ("Beijing", "LOC")),
                            back=back("La ciudad de Beijing es muy grande.", ("Beijing", "LOC", 0)),
                            forward=forward, source_text=en)
    check(res)
    assert found(res) == [("Pekín", "LOC", "forward")]


def test_crop_rule(projector: Projector) -> None:
    en = "The United Nations Organization held a summit."
    res = projector.project(
        toks("La Organización de Naciones Unidas celebró una cumbre ."), "es",
        source(en, ("United Nations Organization", "ORG")),
        back=back("La Organización de las Naciones Unidas celebró una cumbre.",
                  ("Organización de las Naciones Unidas", "ORG", 0)),
        source_text=en)
    check(res)
    assert found(res) == [("Organización de Naciones Unidas", "ORG", "crop_rule")]
    assert res.entities[0].score == pytest.approx(0.8)


def test_context_donald_triunfo() -> None:
    en = "Yesterday Donald Trump spoke with the press."
    raw = toks("Ayer Donald Trump habló con la prensa .")
    args = dict(source=source(en, ("Donald Trump", "PER")),
                back=back("Ayer Donald Triunfo habló con la prensa.", ("Donald Triunfo", "PER", 0)), source_text=en)
    without_copy = tuple(m for m in ALL_METHODS if m != "source_copy")
    res = Projector(ProjectorConfig(methods=without_copy, langid=False)).project(raw, "es", **args)
    check(res)
    assert found(res) == [("Donald Trump", "PER", "context")]
    assert res.entities[0].score == pytest.approx(0.7)
    # with the whole cascade the English name itself is found first
    res = Projector(NO_LANGID).project(raw, "es", **args)
    assert found(res) == [("Donald Trump", "PER", "source_copy")]


def test_context_felipe_ii(projector: Projector) -> None:
    en = "King Philip II died in Madrid."
    res = projector.project(
        toks("El rey Felipe II murió en Madrid ."), "es", source(en, ("Philip II", "PER"), ("Madrid", "LOC")),
        back=back("El rey Philip II murió en Madrid.", ("Philip II", "PER", 0), ("Madrid", "LOC", 1)),
        source_text=en)
    check(res)
    assert found(res) == [("Felipe II", "PER", "context"), ("Madrid", "LOC", "exact")]


def test_fuzzy_inflection(projector: Projector) -> None:
    en = "The Spanish language is hard."
    args = dict(source=source(en, ("Spanish", "MISC")),
                back=back("Habla Español con fluidez.", ("Español", "MISC", 0)), source_text=en)
    res = projector.project(toks("La lengua española es difícil ."), "es", **args)
    check(res)
    assert found(res) == [("española", "MISC", "fuzzy")]
    assert 0 < res.entities[0].score < 0.8
    strict_fuzzy = Projector(ProjectorConfig(langid=False, fuzzy_threshold=99.0))
    assert strict_fuzzy.project(toks("La lengua española es difícil ."), "es", **args).entities == []


def test_fragments_give_covering_span(projector: Projector) -> None:
    en = "Bank of America announced profits."
    res = projector.project(
        toks("El Banco de América anunció beneficios ."), "es", source(en, ("Bank of America", "ORG")),
        back=back("El Banco anunció de América beneficios.", ("Banco", "ORG", 0),
                  fragments=(("América", "ORG", 0),)),
        source_text=en)
    check(res)
    assert found(res) == [("Banco de América", "ORG", "crop_rule")]
    assert res.tags == ["O", "B-ORG", "I-ORG", "I-ORG", "O", "O", "O"]


def test_only_chosen_methods_run() -> None:
    en = "The European Union approved the law."
    args = dict(source=source(en, ("European Union", "ORG")),
                back=back("La Union europea aprobó la ley.", ("Union europea", "ORG", 0)), source_text=en)
    raw = toks("La Unión Europea aprobó la ley .")
    only_exact = Projector(ProjectorConfig(methods=("exact",), langid=False)).project(raw, "es", **args)
    assert only_exact.entities == [] and only_exact.unmatched[0]["reason"] == "no match"
    assert only_exact.reason == "unmatched entities: 1 of 1"
    both = Projector(ProjectorConfig(methods=("exact", "normalized"), langid=False)).project(raw, "es", **args)
    assert found(both) == [("Unión Europea", "ORG", "normalized")]


# -- choosing among entities ------------------------------------------------------------------------------------


def test_no_overlap_when_two_entities_want_the_same_tokens() -> None:
    en = "Madrid and Madrid."
    res = Projector(ProjectorConfig(methods=("exact",), langid=False, policy="partial")).project(
        toks("Visitó Madrid ."), "es", source(en, ("Madrid", "LOC"), (("Madrid", 1), "LOC")),
        back=back("Visitó Madrid y Madrid.", ("Madrid", "LOC", 0), (("Madrid", 1), "LOC", 1)), source_text=en)
    check(res)
    assert res.tags == ["O", "B-LOC", "O"]
    assert len(res.entities) == 1
    assert len(res.unmatched) == 1
    assert {res.entities[0].ref, res.unmatched[0]["ref"]} == {0, 1}


def test_more_trusted_method_claims_tokens_first(projector: Projector) -> None:
    # entity 0 (a misspelled copy, only fuzzy reaches it) and entity 1 (exact) both want "Gerona";
    # the exact hit takes the token although entity 0 comes first
    en = "Girona and Gerona."
    res = projector.project(
        toks("Vive en Gerona ."), "es", source(en, ("Girona", "LOC"), ("Gerona", "LOC")),
        back=back("Vive en Geronna y Gerona.", ("Geronna", "LOC", 0), ("Gerona", "LOC", 1)),
        source_text=en)
    check(res)
    assert [(e.text, e.ref, e.method) for e in res.entities] == [("Gerona", 1, "exact")]
    assert [u["ref"] for u in res.unmatched] == [0]


def test_repeated_word_goes_to_the_marked_occurrence(projector: Projector) -> None:
    # only the second "Berlin" is an entity: the projection must land on the second "Berlín"
    en = "Berlin is big and Juan lives in Berlin."
    bt = "Berlín es grande y Juan vive en Berlín."
    res = projector.project(toks("Berlín es grande y Juan vive en Berlín ."), "es",
                            source(en, (("Berlin", 1), "LOC")),
                            back=back(bt, (("Berlín", 1), "LOC", 0)), source_text=en)
    check(res)
    assert res.tags == ["O"] * 7 + ["B-LOC", "O"]


def test_out_of_range_refs_in_back_translation_are_ignored(projector: Projector) -> None:
    en = "Pedro visited Berlin."
    bt = "Pedro visitó Berlín."
    res = projector.project(
        toks("Pedro visitó Berlín ."), "es", source(en, ("Pedro", "PER"), ("Berlin", "LOC")),
        back=LabeledResult(text=bt, spans=[span(bt, "Pedro", "PER", 0), span(bt, "Berlín", "LOC", 1),
                                           span(bt, "visitó", "PER", 7), span(bt, "visitó", "PER", -1)],
                           fragments=[span(bt, "visitó", "PER", 9)]),
        source_text=en)
    assert found(res) == [("Pedro", "PER", "exact"), ("Berlín", "LOC", "exact")]


# -- verdicts --------------------------------------------------------------------------------------------------


def _one_matched_one_not(policy: str) -> ProjectionResult:
    en = "Pedro Sánchez met Zorblax in Berlin."
    return Projector(ProjectorConfig(policy=policy, langid=False)).project(  # type: ignore[arg-type]
        toks("Pedro Sánchez se reunió en Berlín ."), "es",
        source(en, ("Pedro Sánchez", "PER"), ("Zorblax", "PER"), ("Berlin", "LOC")),
        back=back("Pedro Sánchez se reunió con Zorblax en Berlín.", ("Pedro Sánchez", "PER", 0),
                  ("Zorblax", "PER", 1), ("Berlín", "LOC", 2)),
        source_text=en)


def test_strict_policy_discards_sentence_with_unmatched_entity() -> None:
    res = _one_matched_one_not("strict")
    check(res)
    assert res.status == Status.discarded
    assert res.reason == "unmatched entities: 1 of 3"
    assert res.unmatched == [{"ref": 1, "text": "Zorblax", "label": "PER", "reason": "no match"}]
    assert [e.text for e in res.entities] == ["Pedro Sánchez", "Berlín"]  # still reported


def test_partial_policy_keeps_matched_entities() -> None:
    res = _one_matched_one_not("partial")
    check(res)
    assert res.status == Status.kept and res.reason is None
    assert res.tags == ["B-PER", "I-PER", "O", "O", "O", "B-LOC", "O"]
    assert [u["ref"] for u in res.unmatched] == [1]


def test_partial_policy_with_nothing_matched_is_discarded() -> None:
    en = "Zorblax slept."
    res = Projector(ProjectorConfig(policy="partial", langid=False)).project(
        toks("Durmió ."), "es", source(en, ("Zorblax", "PER")), back=back("Zorblax durmió.", ("Zorblax", "PER", 0)),
        source_text=en)
    assert res.status == Status.discarded
    assert res.reason == "unmatched entities: 1 of 1"


def test_too_long() -> None:
    en = "Pedro visited Berlin."
    raw = toks("Pedro visitó Berlín con su familia y sus amigos .")
    args = dict(source=source(en, ("Pedro", "PER"), ("Berlin", "LOC")),
                back=back("Pedro visitó Berlín.", ("Pedro", "PER", 0), ("Berlín", "LOC", 1)), source_text=en)
    res = Projector(ProjectorConfig(max_tokens=5, langid=False)).project(raw, "es", **args)
    check(res)
    assert res.status == Status.discarded
    assert res.reason == f"too long: {len(raw)} tokens > 5"
    assert Projector(ProjectorConfig(max_tokens=len(raw), langid=False)).project(raw, "es", **args).status == "kept"


def test_all_o() -> None:
    raw = toks("Hoy hace buen tiempo .")
    res = Projector(NO_LANGID).project(raw, "es", [], source_text="The weather is good today.")
    check(res)
    assert res.status == Status.discarded
    assert res.reason == "all-O: no entity"
    assert res.tags == ["O"] * len(raw)
    kept = Projector(ProjectorConfig(drop_all_o=False, langid=False)).project(raw, "es", [])
    check(kept)
    assert kept.status == Status.kept and kept.reason is None


@pytest.mark.parametrize(
    "kwargs",
    [dict(methods=("exact", "magic")), dict(methods=("Exact",)), dict(policy="lenient"), dict(policy="STRICT")],
)
def test_config_rejects_unknown_values(kwargs: dict) -> None:
    with pytest.raises(ValueError) as info:
        ProjectorConfig(**kwargs)
    bad = kwargs.get("methods", (kwargs.get("policy"),))[-1]
    assert bad in str(info.value)


def test_result_text_and_offsets() -> None:
    text = "Pedro Sánchez  visitó  Berlín."  # irregular spacing: offsets must point into this text
    en = "Pedro Sánchez visited Berlin."
    res = Projector(NO_LANGID).project(
        ["Pedro", "Sánchez", "visitó", "Berlín", "."], "es", source(en, ("Pedro Sánchez", "PER"), ("Berlin", "LOC")),
        back=back("Pedro Sánchez visitó Berlín.", ("Pedro Sánchez", "PER", 0), ("Berlín", "LOC", 1)),
        source_text=en, text=text, id="s1")
    check(res)
    assert res.text == text and res.id == "s1" and res.lang == "es"
    assert [(e.start, e.end) for e in res.entities] == [(0, 13), (23, 29)]


# -- language-id filter ----------------------------------------------------------------------------------------

EN = "The president of the government visited the city of Madrid yesterday afternoon with his ministers."
ES_RAW = "El presidente del gobierno visitó la ciudad de Madrid ayer por la tarde con sus ministros ."


def test_langid_discards_english_back_translation() -> None:
    src = source(EN, ("Madrid", "LOC"))
    english_back = back(EN, ("Madrid", "LOC", 0))  # a translator that copied its input
    spanish_back = back(ES_RAW.replace(" .", "."), ("Madrid", "LOC", 0))
    with_langid = Projector(ProjectorConfig(langid=True))
    bad = with_langid.project(toks(ES_RAW), "es", src, back=english_back, source_text=EN)
    assert bad.status == Status.discarded
    assert bad.reason == "back-translation is not es"
    good = with_langid.project(toks(ES_RAW), "es", src, back=spanish_back, source_text=EN)
    assert good.status == Status.kept
    # the same input without the filter is kept: the filter made the difference
    assert Projector(NO_LANGID).project(toks(ES_RAW), "es", src, back=english_back, source_text=EN).status == "kept"


def test_langid_discards_forward_translation_not_in_english() -> None:
    src = source(EN, ("Madrid", "LOC"))
    raw = toks(ES_RAW)
    # the "English" sentence that was tagged is the Spanish input copied by a failing translator
    copied = ES_RAW.replace(" .", ".")
    res = Projector().project(raw, "es", source(copied, ("Madrid", "LOC")), back=back(copied, ("Madrid", "LOC", 0)),
                              source_text=copied, source_is_translation=True)
    assert res.status == Status.discarded
    assert res.reason == "forward translation is not en"
    # a given English sentence (gold labels) is not a translation to check
    given = Projector().project(raw, "es", src, back=back(copied, ("Madrid", "LOC", 0)), source_text=EN)
    assert given.reason != "forward translation is not en"


def test_langid_leaves_too_long_reason() -> None:
    res = Projector(ProjectorConfig(max_tokens=3)).project(
        toks(ES_RAW), "es", source(EN, ("Madrid", "LOC")), back=back(EN, ("Madrid", "LOC", 0)), source_text=EN)
    assert res.reason is not None and res.reason.startswith("too long")


# -- batches ---------------------------------------------------------------------------------------------------


def _requests() -> list[ProjectionRequest]:
    en1 = "Pedro Sánchez visited Berlin."
    en2 = "The European Union approved the law."
    en3 = "Bank of America announced profits."
    fw = AlignedTranslation(text="Beijing is big.", tokens=["Beijing", "is", "big", "."],
                            alignment=[[0], [1], [2], [3]])
    return [
        ProjectionRequest(toks("Pedro Sánchez visitó Berlín ."), "es",
                          source(en1, ("Pedro Sánchez", "PER"), ("Berlin", "LOC")),
                          back=back("Pedro Sánchez visitó Berlín.", ("Pedro Sánchez", "PER", 0),
                                    ("Berlín", "LOC", 1)), source_text=en1, id="a"),
        ProjectionRequest(toks("La Unión Europea aprobó la ley ."), "es", source(en2, ("European Union", "ORG")),
                          back=back(en2, ("European Union", "ORG", 0)), source_text=en2, id="b"),
        ProjectionRequest(toks("Hoy hace buen tiempo ."), "es", [], id="c"),
        ProjectionRequest(toks("Pekín es grande ."), "es", source("Beijing is big.", ("Beijing", "LOC")),
                          back=back("Beijing es grande.", ("Beijing", "LOC", 0)), forward=fw,
                          source_text="Beijing is big.", id="d"),
        ProjectionRequest(toks("El Banco de América anunció beneficios .", "es"), "es",
                          source(en3, ("Bank of America", "ORG")),
                          back=back("El Banco anunció de América beneficios.", ("Banco", "ORG", 0),
                                    fragments=(("América", "ORG", 0),)), source_text=en3, id="e"),
        ProjectionRequest(toks("És membre de l'OTAN .", "ca"), "ca", source("It is in NATO.", ("NATO", "ORG")),
                          back=back("És membre d'OTAN.", ("d'OTAN", "ORG", 0)), source_text="It is in NATO.",
                          id="f"),
    ]


@pytest.mark.parametrize("langid", [False, True])
def test_project_many_equals_project(langid: bool) -> None:
    projector = Projector(ProjectorConfig(langid=langid))
    requests = _requests()
    many = projector.project_many(requests)
    # dataclasses.fields, not vars(): a compiled ProjectionRequest has no __dict__
    one_by_one = [projector.project(**{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}) for r in requests]
    assert [r.model_dump() for r in many] == [r.model_dump() for r in one_by_one]
    assert [r.id for r in many] == ["a", "b", "c", "d", "e", "f"]
    for r in many:
        check(r)
    if langid:  # the English back-translation of "b" is caught in the batch too
        assert many[1].reason == "back-translation is not es"
    else:
        assert many[1].status == Status.kept
    assert projector.project_many([]) == []


# -- span repair after placement ------------------------------------------------------------------------------

def test_name_completed_over_capitalized_neighbours(projector: Projector) -> None:
    # the English tagger found only "Catalonia" in "the Film library of Catalonia"
    raw = "La Filmoteca de Catalunya projectarà un cicle ."
    en = "The Film library of Catalonia will project a cycle."
    bt = "La filmoteca de Catalunya projectarà un cicle."
    res = projector.project(toks(raw, "ca"), "ca", source(en, ("Catalonia", "LOC")),
                            back=back(bt, ("Catalunya", "LOC", 0)))
    check(res)
    assert found(res) == [("Filmoteca de Catalunya", "LOC", "exact")]


def test_completion_never_takes_sentence_initial_word_or_other_entities() -> None:
    raw = "Madrid y Barcelona firmaron ."
    en = "Madrid and Barcelona signed."
    bt = "Madrid y Barcelona firmaron."
    res = Projector(NO_LANGID).project(toks(raw), "es", source(en, ("Madrid", "LOC"), ("Barcelona", "LOC")),
                                       back=back(bt, ("Madrid", "LOC", 0), ("Barcelona", "LOC", 1)))
    check(res)
    assert [e.text for e in res.entities] == ["Madrid", "Barcelona"]
    off = Projector(ProjectorConfig(langid=False, complete_names=False))
    raw2 = "Visitó la Filmoteca de Catalunya ayer ."
    res2 = off.project(toks(raw2), "es", source("He visited the Film library of Catalonia.", ("Catalonia", "LOC")),
                       back=back("Visitó la filmoteca de Catalunya.", ("Catalunya", "LOC", 0)))
    assert [e.text for e in res2.entities] == ["Catalunya"]


def test_broken_person_name_is_merged(projector: Projector) -> None:
    raw = "Luiz Inácio Lula da Silva visitó Madrid ."
    en = "Luiz Inácio Lula of the Silva visited Madrid."
    bt = "Luiz Inácio Lula de la Silva visitó Madrid."
    res = projector.project(toks(raw), "es",
                            source(en, ("Luiz Inácio Lula", "PER"), ("Silva", "PER"), ("Madrid", "LOC")),
                            back=back(bt, ("Luiz Inácio Lula", "PER", 0), ("Silva", "PER", 1), ("Madrid", "LOC", 2)))
    check(res)
    assert [(e.text, e.label) for e in res.entities] == [("Luiz Inácio Lula da Silva", "PER"), ("Madrid", "LOC")]


def test_english_span_ending_on_a_function_word_is_merged_with_the_next(projector: Projector) -> None:
    raw = "La Biblioteca Nacional de España compró un manuscrito ."
    en = "The National Library of Spain bought a manuscript."
    bt = "La Biblioteca Nacional de España compró un manuscrito."
    res = projector.project(toks(raw), "es", source(en, ("National Library of", "ORG"), ("Spain", "LOC")),
                            back=back(bt, ("Biblioteca Nacional de", "ORG", 0), ("España", "LOC", 1)))
    check(res)
    assert [(e.text, e.label) for e in res.entities] == [("Biblioteca Nacional de España", "ORG")]


def test_two_people_joined_by_a_conjunction_stay_apart(projector: Projector) -> None:
    raw = "Ramón Otero e Florentino López fundaron a revista ."
    en = "Ramón Otero and Florentino López founded the magazine."
    bt = "Ramón Otero e Florentino López fundaron a revista."
    res = projector.project(toks(raw, "gl"), "gl", source(en, ("Ramón Otero", "PER"), ("Florentino López", "PER")),
                            back=back(bt, ("Ramón Otero", "PER", 0), ("Florentino López", "PER", 1)))
    check(res)
    assert [e.text for e in res.entities] == ["Ramón Otero", "Florentino López"]


def test_completion_does_not_cross_a_preposition(projector: Projector) -> None:
    raw = "El presidente recibió a Lula en Santiago ayer ."
    en = "The president received Lula in Santiago yesterday."
    bt = "El presidente recibió a Lula en Santiago ayer."
    res = projector.project(toks(raw), "es", source(en, ("Santiago", "LOC")),
                            back=back(bt, ("Santiago", "LOC", 0)))
    check(res)
    assert [e.text for e in res.entities] == ["Santiago"]


def test_forward_alignment_through_words_shared_with_another_translation(projector: Projector) -> None:
    # the English sentence (gold, or the plain translation that was tagged) is not the word-aligned
    # translation; the entity is found through the words the two share around it
    raw = toks("El presidente chino visitó Pekín ayer .")
    aligned_text = "The Chinese president visited Peking yesterday."
    a_tokens = toks(aligned_text, "en")
    alignment = [[0], [2], [1], [3], [4], [5], [6]]
    forward = AlignedTranslation(text=aligned_text, tokens=a_tokens, alignment=alignment)
    en = "The Chinese president visited Beijing yesterday."
    res = projector.project(raw, "es", source(en, ("Beijing", "LOC")), back=None, forward=forward, source_text=en)
    check(res)
    assert found(res) == [("Pekín", "LOC", "forward")]


def test_capitalized_adjective_after_a_place_is_part_of_its_name(projector: Projector) -> None:
    raw = "A misión foi lanzada desde a Güiana Francesa en abril ."
    en = "The mission was launched from French Guyana in April."
    bt = "A misión foi lanzada desde a Güiana Francesa en abril."
    src = source(en, ("French", "MISC"), ("Guyana", "LOC"))
    res = projector.project(toks(raw, "gl"), "gl", src, back=back(bt, ("Francesa", "MISC", 0), ("Güiana", "LOC", 1)))
    check(res)
    assert [(e.text, e.label) for e in res.entities] == [("Güiana Francesa", "LOC")]
    # a lowercase demonym stays an entity of its own
    raw2 = "O goberno francés visitou Madrid ."
    bt2 = back("O goberno francés visitou Madrid.", ("francés", "MISC", 0), ("Madrid", "LOC", 1))
    src2 = source("The French government visited Madrid.", ("French", "MISC"), ("Madrid", "LOC"))
    res2 = projector.project(toks(raw2, "gl"), "gl", src2, back=bt2)
    assert [(e.text, e.label) for e in res2.entities] == [("francés", "MISC"), ("Madrid", "LOC")]
