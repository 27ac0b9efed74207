"""`crop lst prepare` end to end: real eflomal on a synthetic parallel corpus and on the es gold dev set, the input
formats, markers that decode back to the phrase spans, reproducibility, skipped pairs, errors and the CLI."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import eflomal
import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.io import InputError
from crop.markers import get_codec
from crop.text import detokenize
from crop.train.lst.alignment import eflomal_align, parse_pharaoh, symmetrize
from crop.train.lst.prepare import PrepareConfig, prepare, read_pairs
from crop.types import Span

SLOT = get_codec("slot")
RECORD_KEYS = {"id", "src_lang", "tgt_lang", "src", "tgt", "src_marked", "tgt_marked", "phrases"}
PHRASE_KEYS = {"slot", "src", "tgt", "src_text", "tgt_text"}

# -- a synthetic parallel corpus: a word dictionary, Spanish-like adjective-noun order ------------------------

DETERMINERS = {"the": "el", "a": "un", "this": "este", "every": "cada"}
NOUNS = {"house": "casa", "city": "ciudad", "car": "coche", "book": "libro", "dog": "perro", "river": "rio",
         "school": "escuela", "market": "mercado", "bridge": "puente", "garden": "jardin", "king": "rey",
         "woman": "mujer", "boat": "barco", "letter": "carta", "tree": "arbol", "window": "ventana"}
ADJECTIVES = {"big": "grande", "small": "chico", "old": "viejo", "new": "nuevo", "red": "rojo", "green": "verde",
              "quiet": "tranquilo", "cold": "frio"}
VERBS = {"visited": "visito", "saw": "vio", "bought": "compro", "likes": "quiere", "left": "dejo",
         "painted": "pinto", "found": "encontro", "sold": "vendio"}
PREPOSITIONS = {"in": "en", "with": "con", "near": "cerca", "behind": "tras"}
DICTIONARY = DETERMINERS | NOUNS | ADJECTIVES | VERBS | PREPOSITIONS

Links = set[tuple[int, int]]


def _noun_phrase(rng: random.Random) -> tuple[list[str], list[str], Links]:
    det, noun = rng.choice(list(DETERMINERS)), rng.choice(list(NOUNS))
    if rng.random() < 0.6:  # "the old house" -> "el casa viejo": the adjective follows the noun
        adj = rng.choice(list(ADJECTIVES))
        return [det, adj, noun], [DICTIONARY[det], DICTIONARY[noun], DICTIONARY[adj]], {(0, 0), (1, 2), (2, 1)}
    return [det, noun], [DICTIONARY[det], DICTIONARY[noun]], {(0, 0), (1, 1)}


def synthetic_pair(rng: random.Random) -> tuple[list[str], list[str], Links]:
    """English and toy-Spanish tokens of one sentence and its gold word links (src index, tgt index)."""
    en: list[str] = []
    es: list[str] = []
    links: Links = set()

    def add(words: tuple[list[str], list[str], Links]) -> None:
        links.update((len(en) + i, len(es) + j) for i, j in words[2])
        en.extend(words[0])
        es.extend(words[1])

    def word(english: str) -> tuple[list[str], list[str], Links]:
        return [english], [DICTIONARY[english]], {(0, 0)}

    add(_noun_phrase(rng))
    add(word(rng.choice(list(VERBS))))
    add(_noun_phrase(rng))
    if rng.random() < 0.5:
        add(word(rng.choice(list(PREPOSITIONS))))
        add(_noun_phrase(rng))
    return en, es, links


def synthetic_corpus(n: int, seed: int = 0) -> list[tuple[list[str], list[str], Links]]:
    rng = random.Random(seed)
    return [synthetic_pair(rng) for _ in range(n)]


# -- helpers -------------------------------------------------------------------------------------------------


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_valid_record(rec: dict, src_lang: str, tgt_lang: str) -> None:
    """The schema, phrases in slot and source order, and markers that decode to exactly the phrase spans."""
    assert set(rec) == RECORD_KEYS
    assert (rec["src_lang"], rec["tgt_lang"]) == (src_lang, tgt_lang)
    phrases = rec["phrases"]
    assert [p["slot"] for p in phrases] == list(range(len(phrases)))
    assert [p["src"][0] for p in phrases] == sorted(p["src"][0] for p in phrases)
    if not phrases:
        assert (rec["src_marked"], rec["tgt_marked"]) == (rec["src"], rec["tgt"])
    for side in ("src", "tgt"):
        text = rec[side]
        spans = []
        for p in phrases:
            assert set(p) == PHRASE_KEYS
            start, end = p[side]
            assert 0 <= start < end <= len(text) and text[start:end] == p[f"{side}_text"]
            spans.append(Span(start=start, end=end, label="PHRASE", text=p[f"{side}_text"]))
        decoded = SLOT.decode(rec[f"{side}_marked"], spans)
        assert decoded.text == text
        assert decoded.lost == [] and decoded.fragments == []
        assert sorted((s.ref, s.start, s.end) for s in decoded.spans) == [
            (k, *p[side]) for k, p in enumerate(phrases)
        ]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# -- eflomal ---------------------------------------------------------------------------------------------------


def test_eflomal_writes_both_link_files_source_first(tmp_path: Path) -> None:
    # every source sentence has 2 tokens and every target 5 (3 fillers first): a tgt-src file would show first
    # indices above 1
    rng = random.Random(1)
    words = [(f"a{i}", f"x{i}") for i in range(30)]
    src, tgt = [], []
    for _ in range(300):
        chosen = rng.sample(words, 2)
        src.append(" ".join(w[0] for w in chosen))
        tgt.append(" ".join(["f", "g", "h"] + [w[1] for w in chosen]))
    fwd_path, rev_path = tmp_path / "fwd", tmp_path / "rev"
    eflomal.Aligner().align(io.StringIO("\n".join(src) + "\n"), io.StringIO("\n".join(tgt) + "\n"),
                            links_filename_fwd=str(fwd_path), links_filename_rev=str(rev_path))
    for path in (fwd_path, rev_path):
        points = [p for line in path.read_text().splitlines() for p in parse_pharaoh(line)]
        assert points and all(i < 2 for i, _ in points), path.name
        assert any(j >= 3 for _, j in points), path.name
    # forward: each target token has at most one link; reverse: each source token has at most one
    for line in fwd_path.read_text().splitlines():
        targets = [j for _, j in parse_pharaoh(line)]
        assert len(targets) == len(set(targets))
    for line in rev_path.read_text().splitlines():
        sources = [i for i, _ in parse_pharaoh(line)]
        assert len(sources) == len(set(sources))


def test_eflomal_recovers_the_dictionary_links() -> None:
    corpus = synthetic_corpus(2000)
    forward, reverse = eflomal_align([en for en, _, _ in corpus], [es for _, es, _ in corpus])
    found = correct = gold = crossing = crossing_found = 0
    for (en, es, links), fwd, rev in zip(corpus, forward, reverse, strict=True):
        points = symmetrize(fwd, rev)
        found += len(points)
        correct += len(points & links)
        gold += len(links)
        assert all(DICTIONARY[en[i]] == es[j] for i, j in points & links)
        swapped = {(i, j) for i, j in links if en[i] in ADJECTIVES or (i > 0 and en[i - 1] in ADJECTIVES)}
        crossing += len(swapped)
        crossing_found += len(swapped & points)
    assert correct / found >= 0.9  # precision against the gold positions, not just the dictionary
    assert correct / gold >= 0.9
    assert crossing and crossing_found / crossing >= 0.9  # the adjective-noun swap is recovered


def test_eflomal_align_rejects_empty_and_overlong_sentences() -> None:
    with pytest.raises(ValueError, match="target sentence 1 has 0 tokens"):
        eflomal_align([["a"], ["b"]], [["x"], []])
    with pytest.raises(ValueError, match="source sentence 0 has 1024 tokens"):
        eflomal_align([["a"] * 1024], [["x"]])
    with pytest.raises(ValueError, match="source sentence 0 has an empty token or one with whitespace inside"):
        eflomal_align([["New York"]], [["Nueva York"]])
    assert eflomal_align([], []) == ([], [])


# -- the es gold dev set ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dev_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    """One real run on es.dev.jsonl (gold format) with the alignments saved."""
    folder = tmp_path_factory.mktemp("lst-dev")
    dev = shared_data / "dev" / "es.dev.jsonl"
    output, aligned = folder / "out.jsonl", folder / "aligned.txt"
    stats = prepare(PrepareConfig("en", "es"), output, input=dev, alignments_out=aligned)
    return dev, output, aligned, stats


def test_gold_dev_set(dev_run) -> None:
    dev, output, aligned, stats = dev_run
    gold = [json.loads(line) for line in dev.read_text(encoding="utf-8").splitlines()]
    records = read_records(output)
    assert [r["id"] for r in records] == [g["id"] for g in gold]
    for rec, g in zip(records, gold, strict=True):
        assert rec["src"] == detokenize(g["en_tokens"], "en")[0]
        assert rec["tgt"] == detokenize(g["tokens"], "es")[0]
        assert_valid_record(rec, "en", "es")
    assert stats.pairs_read == stats.pairs_written == len(gold) and stats.skipped == {}
    assert len(aligned.read_text().splitlines()) == len(gold)
    assert sum(stats.slots_histogram) == len(gold) and len(stats.slots_histogram) == 11
    assert stats.pairs_with_slots == sum(bool(r["phrases"]) for r in records) > 50
    assert stats.slots == sum(len(r["phrases"]) for r in records)
    assert stats.aligned_src_share is not None and stats.aligned_src_share > 0.5
    assert stats.phrase_pairs_per_pair is not None and stats.phrase_pairs_per_pair > 1
    assert stats.reordered_slot_pairs <= stats.slot_pairs
    assert stats.align_seconds > 0


def test_saved_alignments_reproduce_the_run_for_any_chunk_size(dev_run, tmp_path: Path) -> None:
    dev, output, aligned, _ = dev_run
    for chunk_size in (7, 100_000):
        again = tmp_path / f"again-{chunk_size}.jsonl"
        stats = prepare(PrepareConfig("en", "es", chunk_size=chunk_size), again, input=dev, alignments=aligned)
        assert again.read_bytes() == output.read_bytes()
        assert stats.align_seconds == 0


def test_the_seed_decides_the_slots(dev_run, tmp_path: Path) -> None:
    dev, _, aligned, _ = dev_run
    outputs = []
    for k, seed in enumerate((3, 3, 4)):
        out = tmp_path / f"seed-{k}.jsonl"
        prepare(PrepareConfig("en", "es", seed=seed), out, input=dev, alignments=aligned)
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1] != outputs[2]


def test_gold_records_in_the_other_direction(shared_data: Path) -> None:
    pairs = list(read_pairs("es", "en", input=shared_data / "dev" / "es.dev.jsonl"))
    first = json.loads((shared_data / "dev" / "es.dev.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert pairs[0].id == first["id"]
    assert pairs[0].src == detokenize(first["tokens"], "es")[0]
    assert pairs[0].tgt == detokenize(first["en_tokens"], "en")[0]
    with pytest.raises(InputError, match=r"es\.dev\.jsonl:1: the record's lang is 'es', not 'ca'"):
        list(read_pairs("en", "ca", input=shared_data / "dev" / "es.dev.jsonl"))


# -- text files and TSV ----------------------------------------------------------------------------------------

SPECIAL = {  # line number (1-based) -> (source, target, why it is skipped)
    3: ("the dog saw a tree", "", "empty"),
    5: (" ".join(["the", "old", "house"] * 12), " ".join(["el", "casa", "viejo"] * 12), "too_long"),
    8: ("the __SLOT0__ dog saw a tree", "el perro vio un arbol", "marker_text"),
}


@pytest.fixture(scope="module")
def parallel_files(tmp_path_factory: pytest.TempPathFactory):
    """The synthetic corpus as two text files and as a TSV (with an empty, an overlong and a marker line),
    prepared once from the text files with real eflomal."""
    folder = tmp_path_factory.mktemp("lst-parallel")
    pairs = [(" ".join(en), " ".join(es)) for en, es, _ in synthetic_corpus(400, seed=5)]
    for lineno, (src, tgt, _) in SPECIAL.items():
        pairs[lineno - 1] = (src, tgt)
    src = write_lines(folder / "corpus.en", [s for s, _ in pairs])
    tgt = write_lines(folder / "corpus.es", [t for _, t in pairs])
    tsv = write_lines(folder / "corpus.tsv", [f"{s}\t{t}" for s, t in pairs])
    output, aligned = folder / "out.jsonl", folder / "aligned.txt"
    stats = prepare(PrepareConfig("en", "es", max_tokens=30), output, src=src, tgt=tgt, alignments_out=aligned)
    return src, tgt, tsv, output, aligned, stats


def test_text_files_skip_pairs_with_reasons(parallel_files) -> None:
    _, _, _, output, aligned, stats = parallel_files
    records = read_records(output)
    assert stats.pairs_read == 400
    assert stats.skipped == {"empty": 1, "too_long": 1, "marker_text": 1}
    assert stats.pairs_written == len(records) == 397
    assert [r["id"] for r in records] == [str(n) for n in range(1, 401) if n not in SPECIAL]
    lines = aligned.read_text().splitlines()
    assert len(lines) == 400
    assert all(lines[n - 1] == "" for n in SPECIAL) and all(lines[n - 1] for n in range(1, 401) if n not in SPECIAL)
    for rec in records:
        assert_valid_record(rec, "en", "es")
    # on this easy corpus most slot pairs are word-for-word dictionary translations
    phrases = [p for r in records for p in r["phrases"]]
    assert len(phrases) > 500
    one_word = [p for p in phrases if " " not in p["src_text"]]
    assert sum(DICTIONARY[p["src_text"]] == p["tgt_text"] for p in one_word) >= 0.95 * len(one_word)
    assert stats.reordered_slot_pairs > 0  # adjective and noun swap places


def test_tsv_gives_the_same_records(parallel_files, tmp_path: Path) -> None:
    _, _, tsv, output, aligned, _ = parallel_files
    out = tmp_path / "tsv.jsonl"
    stats = prepare(PrepareConfig("en", "es", max_tokens=30, chunk_size=64), out, input=tsv, alignments=aligned)
    assert out.read_bytes() == output.read_bytes()
    assert stats.skipped == {"empty": 1, "too_long": 1, "marker_text": 1}


def test_an_empty_alignment_skips_the_pair(parallel_files, tmp_path: Path) -> None:
    src, tgt, _, _, aligned, _ = parallel_files
    lines = aligned.read_text().splitlines()
    lines[0] = ""
    given = write_lines(tmp_path / "aligned.txt", lines)
    out, saved = tmp_path / "out.jsonl", tmp_path / "saved.txt"
    stats = prepare(PrepareConfig("en", "es", max_tokens=30, limit=10), out, src=src, tgt=tgt, alignments=given,
                    alignments_out=saved)
    assert stats.pairs_read == 10
    assert stats.skipped == {"no_alignment": 1, "empty": 1, "too_long": 1, "marker_text": 1}
    assert [r["id"] for r in read_records(out)] == ["2", "4", "6", "7", "9", "10"]
    assert saved.read_text().splitlines() == [""] + [line if n not in SPECIAL else "" for n, line in
                                                     enumerate(lines[1:10], 2)]


def test_without_slots_the_marked_text_is_the_plain_text(parallel_files, tmp_path: Path) -> None:
    src, tgt, _, _, aligned, _ = parallel_files
    out = tmp_path / "plain.jsonl"
    stats = prepare(PrepareConfig("en", "es", max_tokens=30, slot_prob=0.0), out, src=src, tgt=tgt,
                    alignments=aligned)
    records = read_records(out)
    assert all(r["phrases"] == [] and r["src_marked"] == r["src"] and r["tgt_marked"] == r["tgt"] for r in records)
    assert stats.pairs_with_slots == 0 and stats.slots_histogram[0] == len(records)
    assert stats.reordered_share is None and stats.mean_slot_src_words is None


# -- JSONL records and input errors ------------------------------------------------------------------------


def test_jsonl_records_with_src_tgt_or_language_keys(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "pairs.jsonl", [
        json.dumps({"id": "a", "src": "the  dog ", "tgt": "el perro"}),
        "",
        json.dumps({"en": "a tree", "es": "un arbol"}),
        json.dumps({"id": 7, "src": "", "tgt": "nada"}),
    ])
    pairs = list(read_pairs("en", "es", input=path))
    assert [(p.id, p.src, p.tgt) for p in pairs] == [("a", "the  dog ", "el perro"), ("3", "a tree", "un arbol"),
                                                     ("7", "", "nada")]


@pytest.mark.parametrize(("record", "message"), [
    ("[1, 2]", "pairs.jsonl:1: expected a JSON object, got list"),
    ('{"src": "a"}', "pairs.jsonl:1: no 'tgt'"),
    ('{"src": "a", "tgt": null}', "pairs.jsonl:1: 'tgt' must be a string, got NoneType"),
    ('{"en": "a", "es": 3}', "'es' must be a string, got int"),
    ('{"text": "a"}', "no sentence pair: expected keys src and tgt, en and es, or en_tokens and tokens; got text"),
    ('{"en_tokens": "a b", "tokens": ["x"]}', "'en_tokens' must be a list of strings"),
    ("{not json", "pairs.jsonl:1: invalid JSON"),
])
def test_bad_jsonl_records(tmp_path: Path, record: str, message: str) -> None:
    path = write_lines(tmp_path / "pairs.jsonl", [record])
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        list(read_pairs("en", "es", input=path))


def test_line_counts_that_differ_are_found_while_streaming(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.en", ["the dog", "a tree", "the car"])
    tgt = write_lines(tmp_path / "a.es", ["el perro", "un arbol", "el coche", "un rio"])
    with pytest.raises(InputError, match=r"a\.es:4: no line 4 in .*a\.en: the two files have different line"):
        list(read_pairs("en", "es", src=src, tgt=tgt))
    with pytest.raises(InputError, match=r"a\.en:2: no line 2 in .*b\.es"):
        list(read_pairs("en", "es", src=src, tgt=write_lines(tmp_path / "b.es", ["el perro"])))
    output = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match="line counts"):
        prepare(PrepareConfig("en", "es"), output, src=src, tgt=tgt)
    assert not output.exists() and list(tmp_path.glob(".*tmp")) == []  # nothing half written


def test_other_input_errors(tmp_path: Path) -> None:
    tsv = write_lines(tmp_path / "x.tsv", ["the dog\tel perro", "a\tb\tc"])
    with pytest.raises(InputError, match=r"x\.tsv:2: expected 2 tab-separated columns"):
        list(read_pairs("en", "es", input=tsv))
    with pytest.raises(InputError, match="no such file"):
        read_pairs("en", "es", input=tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="either src and tgt"):
        read_pairs("en", "es", src=tsv)
    good = write_lines(tmp_path / "y.tsv", ["the dog\tel perro", "a tree\tun arbol"])
    out = tmp_path / "out.jsonl"
    with pytest.raises(InputError, match=r"short\.txt: fewer lines than input pairs \(none for pair 2\)"):
        prepare(PrepareConfig("en", "es"), out, input=good, alignments=write_lines(tmp_path / "short.txt", ["0-0"]))
    with pytest.raises(InputError, match=r"long\.txt: more lines than the 2 input pairs"):
        prepare(PrepareConfig("en", "es"), out, input=good,
                alignments=write_lines(tmp_path / "long.txt", ["0-0", "0-0", "0-0"]))
    with pytest.raises(InputError, match=r"wide\.txt:2: point 0-5 is outside pair '2'"):
        prepare(PrepareConfig("en", "es"), out, input=good, alignments=write_lines(tmp_path / "wide.txt",
                                                                                  ["0-0", "0-5"]))
    with pytest.raises(InputError, match=r"bad\.txt:1: not a Pharaoh"):
        prepare(PrepareConfig("en", "es"), out, input=good, alignments=write_lines(tmp_path / "bad.txt",
                                                                                  ["0:0", "0-0"]))
    assert not out.exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"symmetrize": "grow-final"}, "unknown symmetrization 'grow-final'"),
    ({"max_tokens": 1024}, "max_tokens must be in 1..1023"),
    ({"slot_prob": 1.5}, "slot_prob must be in"),
    ({"max_slots": 0}, "max_slots must be at least 1"),
    ({"tgt_lang": "en"}, "two different languages"),
])
def test_bad_configuration(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrepareConfig(**({"src_lang": "en", "tgt_lang": "es"} | kwargs))


# -- CLI -----------------------------------------------------------------------------------------------------

runner = CliRunner()


def invoke(*args: str | Path):
    return runner.invoke(app, ["lst", "prepare", *(str(a) for a in args)])


def assert_clean_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Traceback" not in message and "error" in message
    for needle in needles:
        assert needle in message, message


def test_cli_prepares_text_files_with_eflomal(tmp_path: Path) -> None:
    corpus = synthetic_corpus(300, seed=9)
    src = write_lines(tmp_path / "c.en", [" ".join(en) for en, _, _ in corpus])
    tgt = write_lines(tmp_path / "c.es", [" ".join(es) for _, es, _ in corpus])
    out, stats = tmp_path / "out.jsonl", tmp_path / "stats.json"
    result = invoke("--src", src, "--tgt", tgt, "--src-lang", "en", "--tgt-lang", "es", "--output", out,
                    "--stats", stats, "--max-slots", "3", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "pairs written" in result.output and "300" in result.output
    summary = json.loads(stats.read_text())
    assert summary["pairs_read"] == summary["pairs_written"] == 300
    assert len(summary["slots_histogram"]) == 4 and summary["aligned_src_share"] > 0.9
    records = read_records(out)
    assert len(records) == 300 and all(len(r["phrases"]) <= 3 for r in records)


def test_cli_with_given_alignments_and_options(parallel_files, tmp_path: Path) -> None:
    _, _, tsv, output, aligned, _ = parallel_files
    out = tmp_path / "out.jsonl"
    result = invoke("--input", tsv, "--src-lang", "en", "--tgt-lang", "es", "--output", out, "--alignments",
                    aligned, "--max-tokens", "30", "--chunk-size", "50")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == output.read_bytes()
    assert "empty 1, marker_text 1, too_long 1" in result.output
    limited = tmp_path / "limited.jsonl"
    result = invoke("--input", tsv, "--src-lang", "en", "--tgt-lang", "es", "--output", limited, "--alignments",
                    aligned, "--limit", "20", "--extend-unaligned", "--max-phrase-len", "2", "--slot-prob", "1")
    assert result.exit_code == 0, result.output
    records = read_records(limited)
    # line 5 is not too long for the default --max-tokens, but its saved alignment line is empty
    assert "empty 1, marker_text 1, no_alignment 1" in result.output
    assert len(records) == 17 and all(r["phrases"] for r in records)
    assert all(len(p["src_text"].split()) <= 2 for r in records for p in r["phrases"])


def test_cli_errors(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "a.en", ["the dog", "a tree"])
    tgt = write_lines(tmp_path / "a.es", ["el perro"])
    common = ("--src-lang", "en", "--tgt-lang", "es", "--output", tmp_path / "out.jsonl")
    assert_clean_error(invoke("--src", src, "--tgt", tmp_path / "nope.es", *common), "nope.es does not exist")
    assert_clean_error(invoke("--src", src, "--tgt", tgt, *common), "a.en:2", "line counts")
    assert_clean_error(invoke("--src", src, "--tgt", src, "--symmetrize", "grow", *common),
                       "unknown symmetrization 'grow'")
    assert_clean_error(invoke(*common), "give --src and --tgt, or --input")
    assert_clean_error(invoke("--src", src, "--input", src, *common), "give --src and --tgt, or --input")
    bad = write_lines(tmp_path / "bad.jsonl", [json.dumps({"src": "a", "tgt": "b"}), json.dumps({"src": 1})])
    assert_clean_error(invoke("--input", bad, *common), "bad.jsonl:2", "'src' must be a string")
    assert not (tmp_path / "out.jsonl").exists()
