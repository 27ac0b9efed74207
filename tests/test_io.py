from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

import pytest

from crop.io import (
    InputError,
    InputSentence,
    JsonlWriter,
    read_conll,
    read_gold,
    read_input,
    read_jsonl,
    read_predictions,
    read_text,
    write_conll,
    write_jsonl,
)
from crop.types import Span

DEV_ES = Path("/work/shared/data/dev/es.dev.jsonl")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def lines_of(*records: dict) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


# ---------------------------------------------------------------------------------------------------- text


def test_read_text(tmp_path: Path) -> None:
    p = write(tmp_path / "raw.txt", "Hola, Pedro Sánchez.\n\n   \nL'Ajuntament de Girona.\r\n")
    sents = list(read_text(p, "ca"))
    assert [s.id for s in sents] == ["raw-000001", "raw-000004"]
    assert sents[0].tokens == ["Hola", ",", "Pedro", "Sánchez", "."]
    assert sents[0].text == "Hola, Pedro Sánchez."
    assert sents[1].tokens[:2] == ["L'", "Ajuntament"]
    for s in sents:
        assert s.lang == "ca" and s.tags is None
        assert [s.text[a:b] for a, b in s.offsets] == s.tokens


def test_read_text_strips_bom_and_surrounding_space(tmp_path: Path) -> None:
    p = tmp_path / "bom.txt"
    p.write_bytes("\ufeff  Hola mundo  \n".encode())
    (s,) = read_text(p, "es")
    assert s.text == "Hola mundo" and s.tokens == ["Hola", "mundo"] and s.offsets == [(0, 4), (5, 10)]


def test_read_text_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("bien\nespañol\n".encode("latin-1"))
    it = read_text(p, "es")
    assert next(it).text == "bien"
    with pytest.raises(InputError, match=r"latin1\.txt:2: not UTF-8") as e:
        next(it)
    assert e.value.lineno == 2 and e.value.path == str(p)


def test_read_text_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        list(read_text(tmp_path / "nope.txt", "es"))


def test_read_text_streams(tmp_path: Path) -> None:
    p = write(tmp_path / "big.txt", "Una frase.\n" * 10_000)
    it = read_text(p, "es")
    first = next(it)  # no need to read the whole file to get the first sentence
    assert first.id == "big-000001"
    assert sum(1 for _ in it) == 9_999


def test_read_text_gzip(tmp_path: Path) -> None:
    p = tmp_path / "raw.txt.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write("Hola mundo.\n")
    (s,) = read_text(p, "es")
    assert s.id == "raw-000001" and s.tokens == ["Hola", "mundo", "."]


# ---------------------------------------------------------------------------------------------------- jsonl


def test_read_jsonl_dev_set() -> None:
    sents = list(read_jsonl(DEV_ES))
    raw = [json.loads(line) for line in DEV_ES.read_text(encoding="utf-8").splitlines()]
    assert len(sents) == len(raw)
    for s, r in zip(sents, raw, strict=True):
        assert s.id == r["id"] and s.lang == "es"
        assert s.tokens == r["tokens"] and s.tags == r["tags"]
        assert s.en_tokens == r["en_tokens"] and s.en_tags == r["en_tags"]
        assert [s.text[a:b] for a, b in s.offsets] == s.tokens
        assert s.meta["domain"] == r["domain"] and s.meta["entities"] == r["entities"]


def test_read_jsonl_tokens_kept_and_text_tokenized(tmp_path: Path) -> None:
    p = write(
        tmp_path / "in.jsonl",
        lines_of(
            {"id": "a", "tokens": ["EE.UU.", "y", "l'Europa"]},  # kept exactly, not re-tokenized
            {"id": "b", "text": "L'home d'Espanya."},
            {"id": "c", "text": "Hola  mundo", "tokens": ["Hola", "mundo"]},
            {"id": "d", "text": "Hola mundo", "tokens": ["Hola", "mundo"], "offsets": [[0, 4], [5, 10]]},
        ),
    )
    a, b, c, d = read_jsonl(p, lang="ca")
    assert a.tokens == ["EE.UU.", "y", "l'Europa"] and a.text == "EE.UU. y l'Europa"
    assert b.tokens == ["L'", "home", "d'", "Espanya", "."] and b.text == "L'home d'Espanya."
    assert c.text == "Hola  mundo" and c.offsets == [(0, 4), (6, 11)]
    assert d.offsets == [(0, 4), (5, 10)]


def test_read_jsonl_lang(tmp_path: Path) -> None:
    p = write(
        tmp_path / "in.jsonl", lines_of({"id": "a", "lang": "gl", "tokens": ["Ola"]}, {"tokens": ["Hola"]})
    )
    a, b = read_jsonl(p, lang="es")
    assert a.lang == "gl" and b.lang == "es"
    with pytest.raises(InputError, match=r"in\.jsonl:2: no 'lang'"):
        list(read_jsonl(p))


def test_read_jsonl_generated_ids(tmp_path: Path) -> None:
    p = write(
        tmp_path / "corpus.jsonl",
        "\n" + lines_of({"tokens": ["x"], "lang": "es"}, {"id": 7, "tokens": ["y"], "lang": "es"}),
    )
    a, b = read_jsonl(p)
    assert a.id == "corpus-000002" and b.id == "7"


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"id": "x", "tokens": []}, "non-empty list"),
        ({"id": "x", "tokens": "Hola mundo"}, "non-empty list"),
        ({"id": "x", "tokens": ["Hola", ""]}, r"tokens\[1\] is empty"),
        ({"id": "x", "tokens": ["Hola", " "]}, r"tokens\[1\] is empty or blank"),
        ({"id": "x", "tokens": ["Hola", 3]}, r"tokens\[1\] is not a string"),
        ({"id": "x", "tokens": ["Hola", "mundo"], "tags": ["O"]}, "1 tags for 2 tokens"),
        ({"id": "x", "tokens": ["Hola", "mundo"], "tags": ["O", "PER"]}, r"tags\[1\] is not a BIO tag"),
        ({"id": "x", "tokens": ["Hola"], "tags": ["X-PER"]}, "not a BIO tag"),
        (
            {"id": "x", "tokens": ["a"], "en_tokens": ["a", "b"], "en_tags": ["O"]},
            "'en_tags' has 1 tags for 2",
        ),
        ({"id": "x", "tokens": ["a"], "en_tags": ["O"]}, "'en_tags' without 'en_tokens'"),
        ({"id": "x"}, "neither 'tokens' nor 'text'"),
        ({"id": "x", "text": "   "}, "no tokens"),
        ({"id": "x", "text": "Hola mundo", "tokens": ["Hola", "Mundo"]}, r"token 1 'Mundo' not found"),
        ({"id": "x", "text": "Hola, mundo", "tokens": ["Hola", "mundo"]}, "non-space text ', '"),
        ({"id": "x", "text": "Hola mundo!", "tokens": ["Hola", "mundo"]}, "after the last token"),
        ({"id": "x", "text": "Hola", "tokens": ["Hola"], "offsets": [[1, 4]]}, "does not give token"),
        ({"id": ["x"], "tokens": ["a"]}, "'id' must be a string"),
    ],
)
def test_read_jsonl_errors_name_file_and_line(tmp_path: Path, record: dict, message: str) -> None:
    good = {"id": "ok", "tokens": ["Bien"]}
    p = write(tmp_path / "bad.jsonl", lines_of(good) + "\n" + lines_of(record))
    it = read_jsonl(p, lang="es")
    assert next(it).id == "ok"  # streaming: the first record comes before the bad one is read
    with pytest.raises(InputError, match=rf"bad\.jsonl:3: .*{message}") as e:
        next(it)
    assert e.value.lineno == 3


def test_read_jsonl_invalid_json(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.jsonl", lines_of({"id": "a", "tokens": ["x"]}) + '{"id": "b", "tokens": [\n')
    with pytest.raises(InputError, match=r"bad\.jsonl:2: invalid JSON"):
        list(read_jsonl(p, lang="es"))
    p = write(tmp_path / "list.jsonl", '["a", "b"]\n')
    with pytest.raises(InputError, match=r"list\.jsonl:1: expected a JSON object, got list"):
        list(read_jsonl(p, lang="es"))


def test_read_input_picks_format(tmp_path: Path) -> None:
    j = write(tmp_path / "a.jsonl", lines_of({"id": "a", "tokens": ["Hola"]}))
    t = write(tmp_path / "a.txt", '{"id": "not json lines"}\n')
    sniffed_j = write(tmp_path / "b.data", lines_of({"id": "b", "text": "Hola mundo"}))
    sniffed_t = write(tmp_path / "c.data", "Hola mundo\n")
    assert [s.id for s in read_input(j, "es")] == ["a"]
    assert [s.tokens[0] for s in read_input(t, "es")] == ["{"]
    assert [s.id for s in read_input(sniffed_j, "es")] == ["b"]
    assert [s.id for s in read_input(sniffed_t, "es")] == ["c-000001"]
    with pytest.raises(InputError, match="needs a language"):
        read_input(t, None)


def test_read_input_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = io.TextIOWrapper(io.BytesIO("Hola mundo.\n\nAdiós.\n".encode()), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", fake)
    sents = list(read_input("-", "es"))
    assert [s.id for s in sents] == ["stdin-000001", "stdin-000003"]
    assert sents[1].tokens == ["Adiós", "."]
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hola.\n"))  # a text stream without a byte buffer
    assert [s.text for s in read_input("-", "es")] == ["Hola."]


# ---------------------------------------------------------------------------------------------------- writers


def test_write_jsonl_round_trip(tmp_path: Path) -> None:
    sents = list(read_jsonl(DEV_ES))
    out = tmp_path / "sub" / "copy.jsonl"
    assert write_jsonl(out, sents) == len(sents)
    assert "Luís" in out.read_text(encoding="utf-8")  # ensure_ascii=False
    again = list(read_jsonl(out))
    assert again == sents
    assert not [p for p in out.parent.iterdir() if p.name != "copy.jsonl"]  # no temporary file left


def test_write_jsonl_dicts_models_and_fileobj() -> None:
    buf = io.StringIO()
    n = write_jsonl(buf, [{"id": "x", "name": "Zürich"}, Span(start=0, end=6, label="LOC", text="Zürich")])
    assert n == 2
    first, second = buf.getvalue().splitlines()
    assert first == '{"id": "x", "name": "Zürich"}'
    assert json.loads(second)["label"] == "LOC"
    with pytest.raises(TypeError):
        write_jsonl(io.StringIO(), [["not", "a", "record"]])  # type: ignore[list-item]


def test_write_jsonl_gzip(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl.gz"
    write_jsonl(out, [{"id": "a", "lang": "es", "tokens": ["Hola"]}])
    assert [s.id for s in read_jsonl(out)] == ["a"]


def test_jsonl_writer_flushes_each_line(tmp_path: Path) -> None:
    out = tmp_path / "stream.jsonl"
    with JsonlWriter(out) as w:
        w.write({"id": "a", "lang": "es", "tokens": ["uno"]})
        # visible to a reader before the writer is closed
        assert [s.id for s in read_jsonl(out)] == ["a"]
        w.write_many([InputSentence(id="b", lang="es", tokens=["dos"], text="dos", offsets=[(0, 3)])])
        assert w.count == 2
    with JsonlWriter(out, append=True) as w:
        w.write({"id": "c", "lang": "es", "tokens": ["tres"]})
    assert [s.id for s in read_jsonl(out)] == ["a", "b", "c"]
    with JsonlWriter(out) as w:  # not appending: starts over
        w.write({"id": "d", "lang": "es", "tokens": ["cuatro"]})
    assert [s.id for s in read_jsonl(out)] == ["d"]


def test_jsonl_writer_leaves_fileobj_open() -> None:
    buf = io.StringIO()
    with JsonlWriter(buf) as w:
        w.write({"a": 1})
    assert not buf.closed and buf.getvalue() == '{"a": 1}\n'


def test_conll_round_trip(tmp_path: Path) -> None:
    sents = [(s.tokens, s.tags) for s in read_jsonl(DEV_ES)]
    out = tmp_path / "es.conll"
    with open(out, "w", encoding="utf-8") as f:
        for tokens, tags in sents:
            write_conll(f, tokens, tags)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("El\tO\nprimer\tO\n") and "\n\n" in text
    assert list(read_conll(out)) == sents


def test_write_conll_errors() -> None:
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        write_conll(io.StringIO(), ["a", "b"], ["O"])
    with pytest.raises(ValueError, match="tab"):
        write_conll(io.StringIO(), ["a\tb"], ["O"])
    with pytest.raises(ValueError, match="not a BIO tag"):
        write_conll(io.StringIO(), ["a"], ["PER"])


def test_read_conll_2003_format(tmp_path: Path) -> None:
    p = write(
        tmp_path / "eng.train",
        "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\nPeter NNP B-NP B-PER\n",
    )
    assert list(read_conll(p)) == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter"], ["B-PER"])]


def test_read_conll_errors(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.conll", "Hola\tO\nmundo\n")
    with pytest.raises(InputError, match=r"bad\.conll:2: expected a token and a tag"):
        list(read_conll(p))
    p = write(tmp_path / "bad2.conll", "Hola\tO\n\nmundo\tPERSON\n")
    with pytest.raises(InputError, match=r"bad2\.conll:3: not a BIO tag"):
        list(read_conll(p))


# ---------------------------------------------------------------------------------------------------- gold


def test_read_gold_and_predictions(tmp_path: Path) -> None:
    gold = read_gold(DEV_ES)
    assert len(gold) == 100
    tokens, tags = gold["es-dev-0001"]
    assert tokens[:2] == ["El", "primer"] and tags[3] == "B-MISC"
    p = write(
        tmp_path / "pred.jsonl",
        lines_of({"id": "a", "tokens": ["x", "y"], "tags": ["B-PER", "O"], "extra": 1}),
    )
    assert read_predictions(p) == {"a": (["x", "y"], ["B-PER", "O"])}


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"tokens": ["x"], "tags": ["O"]}], ":1: .*need a string 'id'"),
        ([{"id": "a", "tokens": ["x"]}], ":1: no 'tags'"),
        (
            [{"id": "a", "tokens": ["x"], "tags": ["O"]}, {"id": "a", "tokens": ["x"], "tags": ["O"]}],
            r":2: duplicate id 'a' \(first at line 1\)",
        ),
        ([{"id": "a", "tokens": ["x", "y"], "tags": ["O"]}], ":1: 'tags' has 1 tags for 2 tokens"),
    ],
)
def test_read_gold_errors(tmp_path: Path, records: list[dict], message: str) -> None:
    p = write(tmp_path / "g.jsonl", lines_of(*records))
    with pytest.raises(InputError, match=rf"g\.jsonl{message}"):
        read_gold(p)


def test_read_jsonl_keeps_bad_lines_in_place_when_asked(tmp_path: Path) -> None:
    from crop.io import InvalidLine

    path = tmp_path / "mixed.jsonl"
    path.write_text('{"id": "a", "tokens": ["Hola"]}\n{"id": "b", "tokens": [}\n\n'
                    '{"id": "c", "tokens": ["x"], "tags": ["O", "O"]}\n{"id": "d", "tokens": ["Adiós"]}\n',
                    encoding="utf-8")
    items = list(read_jsonl(path, "es", on_error="keep"))
    assert [type(i).__name__ for i in items] == ["InputSentence", "InvalidLine", "InvalidLine", "InputSentence"]
    bad_json, bad_tags = items[1], items[2]
    assert isinstance(bad_json, InvalidLine) and bad_json.lineno == 2 and "invalid JSON" in bad_json.reason
    assert bad_json.id == "mixed-000002"  # no id could be read from it
    assert isinstance(bad_tags, InvalidLine) and bad_tags.id == "c" and "mixed.jsonl:4" in bad_tags.reason
    with pytest.raises(InputError, match="mixed.jsonl:2"):
        list(read_jsonl(path, "es"))


# -- lines that are not text: kept in their place (issue 10, item 6) ----------------------------------------------


def test_a_lone_surrogate_is_an_invalid_line(tmp_path: Path) -> None:
    from crop.io import InvalidLine

    # "\ud800" as a JSON escape: valid JSON, but no text (neither UTF-8 nor the engines can carry it)
    path = write(tmp_path / "s.jsonl", '{"id": "a", "text": "Hola"}\n{"id": "x", "text": "\\ud800"}\n'
                                       '{"id": "b", "text": "Adiós"}\n')
    items = list(read_jsonl(path, "es", on_error="keep"))
    assert [i.id for i in items] == ["a", "x", "b"]
    bad = items[1]
    assert isinstance(bad, InvalidLine) and bad.lineno == 2
    assert "s.jsonl:2" in bad.reason and "`text` has a lone surrogate (U+D800)" in bad.reason
    with pytest.raises(InputError, match="s.jsonl:2: `text` has a lone surrogate"):
        list(read_jsonl(path, "es"))


def test_lone_surrogate_has_one_copy() -> None:
    import crop.api.schemas
    import crop.io

    assert crop.api.schemas.lone_surrogate is crop.io.lone_surrogate
    assert crop.io.lone_surrogate({"tokens": ["a", "\udfff"]}) == (
        "`tokens[1]` has a lone surrogate (U+DFFF) at character 0: text must be valid Unicode")


def test_a_line_that_is_not_utf8_is_kept_in_its_place(tmp_path: Path) -> None:
    from crop.io import InvalidLine, read_lines

    raw = b'{"id": "a", "text": "bien"}\n' + '{"id": "b", "text": "español"}\n'.encode("latin-1") + \
        b'{"id": "c", "text": "mal"}\n'
    path = tmp_path / "latin.jsonl"
    path.write_bytes(raw)
    lines = list(read_lines(path, on_error="keep"))
    assert [n for n, _ in lines] == [1, 2, 3]
    assert isinstance(lines[1][1], InvalidLine) and lines[1][1].id == "latin-000002"
    assert "latin.jsonl:2: not UTF-8" in lines[1][1].reason
    items = list(read_jsonl(path, "es", on_error="keep"))
    assert [type(i).__name__ for i in items] == ["InputSentence", "InvalidLine", "InputSentence"]
    assert items[1].id == "latin-000002" and items[1].lang == "es" and items[1].lineno == 2
    # plain text the same: the run goes on after the line
    text = tmp_path / "latin.txt"
    text.write_bytes(b"bien\n" + "español\n".encode("latin-1") + b"mal\n")
    items = list(read_text(text, "es", on_error="keep"))
    assert [i.id for i in items] == ["latin-000001", "latin-000002", "latin-000003"]
    assert isinstance(items[1], InvalidLine) and "not UTF-8" in items[1].reason
    assert [type(i).__name__ for i in read_input(text, "es", on_error="keep")] == [
        "InputSentence", "InvalidLine", "InputSentence"]
    with pytest.raises(InputError, match=r"latin\.txt:2: not UTF-8"):
        list(read_input(text, "es"))


def test_jsonl_output_escapes_what_utf8_cannot_carry(tmp_path: Path) -> None:
    from crop.io import dumps

    record = {"id": "x\ud800", "text": "Berlín"}
    assert dumps(record) == '{"id": "x\\ud800", "text": "Berl\\u00edn"}'
    assert dumps({"text": "Berlín"}) == '{"text": "Berlín"}'  # UTF-8 kept as it is otherwise
    out = tmp_path / "o.jsonl"
    with JsonlWriter(out) as w:
        w.write(record)
        w.write({"id": "y"})
    write_jsonl(tmp_path / "w.jsonl", [record])
    for path in (out, tmp_path / "w.jsonl"):
        assert json.loads(path.read_text(encoding="utf-8").splitlines()[0]) == record


# -- atomic output (issue 10, item 7) -----------------------------------------------------------------------------


def test_atomic_jsonl_writer_renames_into_place_at_the_end(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text('{"id": "old"}\n', encoding="utf-8")
    with JsonlWriter(out, atomic=True) as w:
        w.write({"id": "new"})
        assert out.read_text(encoding="utf-8") == '{"id": "old"}\n'  # the final name is untouched meanwhile
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert out.read_text(encoding="utf-8") == '{"id": "new"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_atomic_jsonl_writer_leaves_nothing_when_the_run_crashes(tmp_path: Path) -> None:
    out, fresh = tmp_path / "out.jsonl", tmp_path / "fresh.jsonl"
    out.write_text('{"id": "old"}\n', encoding="utf-8")
    with pytest.raises(RuntimeError, match="crash"), JsonlWriter(out, atomic=True) as w:
        w.write({"id": "new"})
        raise RuntimeError("crash")
    with pytest.raises(RuntimeError, match="crash"), JsonlWriter(fresh, atomic=True) as w:
        w.write({"id": "new"})
        raise RuntimeError("crash")
    assert out.read_text(encoding="utf-8") == '{"id": "old"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    # discard() by hand does the same
    w = JsonlWriter(fresh, atomic=True)
    w.write({"id": "new"})
    w.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_a_token_with_a_tab_or_line_break_is_an_invalid_line(tmp_path: Path) -> None:
    """CoNLL output could not carry it (`crop project --conll` crashed on it)."""
    path = write(tmp_path / "t.jsonl", lines_of({"id": "a", "tokens": ["Pedro\tSánchez", "."]},
                                                {"id": "b", "tokens": ["Hola", "."], "en_tokens": ["Hi\n", "."]},
                                                {"id": "c", "tokens": ["Hola", "."]}))
    items = list(read_jsonl(path, "es", on_error="keep"))
    assert [type(i).__name__ for i in items] == ["InvalidLine", "InvalidLine", "InputSentence"]
    assert "tokens[0] has a tab or line break" in items[0].reason
    assert "en_tokens[0] has a tab or line break" in items[1].reason
