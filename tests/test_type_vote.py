"""`--type-vote`: an entity whose surface form the corpus's other mentions clearly typed otherwise takes their
type, in a second pass over the projected output (counts per form, not lines, are kept)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crop.cli import app
from crop.project.type_vote import TypeVoteConfig, TypeVotes, surface_key, type_vote_file, type_vote_lines


def _line(lang: str, words: list[str], ents: list[tuple[int, int, str]], sid: str = "") -> dict:
    tags = ["O"] * len(words)
    for a, b, lab in ents:
        tags[a:b] = [f"B-{lab}"] + [f"I-{lab}"] * (b - a - 1)
    return {"id": sid, "lang": lang, "tokens": words, "tags": tags, "status": "kept",
            "entities": [{"token_start": a, "token_end": b, "label": lab, "text": " ".join(words[a:b])}
                         for a, b, lab in ents]}


def test_surface_key_normalizes_case_accents_and_spaces() -> None:
    assert surface_key("  Sánchez ") == surface_key("SANCHEZ") == "sanchez"
    assert surface_key("Junts  per\tCatalunya") == "junts per catalunya"


def test_clear_majority_retypes_and_tags_follow() -> None:
    lines = [_line("ca", ["Junts", "guanya"], [(0, 1, "ORG")]) for _ in range(3)]
    lines.append(_line("ca", ["Va", "votar", "junts", "per", "Girona"], [(2, 3, "MISC"), (4, 5, "LOC")], "odd"))
    out, votes = type_vote_lines(lines)
    odd = out[-1]
    assert odd["tags"] == ["O", "O", "B-ORG", "O", "B-LOC"]
    assert odd["entities"][0] == {"token_start": 2, "token_end": 3, "label": "ORG", "text": "junts",
                                  "retyped_from": "MISC"}
    assert "retyped_from" not in odd["entities"][1] and odd["retyped"] == 1
    assert all("retyped" not in x for x in out[:3])  # the majority itself is left alone
    assert votes.summary() == {"surface_forms": 2, "retyped": 1, "retyped_lines": 1}


def test_min_count_margin_and_language_hold_the_vote_back() -> None:
    votes = TypeVotes(TypeVoteConfig(min_count=3, margin=0.6))
    for lab in ("ORG", "ORG", "LOC"):
        votes.add(_line("es", ["Aragón"], [(0, 1, lab)]))
    # an ORG mention's others: 1 ORG, 1 LOC (a tie, no vote); a LOC mention's others: 2 ORG, under min_count 3
    assert votes.vote("es", "Aragón", "LOC") is None
    assert TypeVotes.vote(_with(votes, min_count=2), "es", "Aragón", "LOC") == "ORG"
    assert TypeVotes.vote(_with(votes, min_count=2), "es", "Aragón", "ORG") is None
    votes.add(_line("es", ["Aragón"], [(0, 1, "PER")]))
    # a PER mention's others: 2 ORG, 1 LOC: 0.67 >= 0.6 but not >= 0.7
    assert TypeVotes.vote(_with(votes, min_count=2), "es", "Aragón", "PER") == "ORG"
    assert TypeVotes.vote(_with(votes, min_count=2, margin=0.7), "es", "Aragón", "PER") is None
    assert votes.vote("gl", "Aragón", "PER") is None  # counted per language


def _with(votes: TypeVotes, **config: float) -> TypeVotes:
    other = TypeVotes(TypeVoteConfig(**config))
    other.counts = votes.counts
    return other


def test_file_second_pass_with_extra_counts(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(_line("gl", ["Finsa", "medra"], [(0, 1, "ORG")])) + "\n"
                              for _ in range(4)))
    dev = tmp_path / "dev.jsonl"
    dev.write_text(json.dumps(_line("gl", ["Finsa"], [(0, 1, "PER")], "d1")) + "\n"
                   + json.dumps({"id": "bad", "lang": "gl", "tokens": [], "tags": [], "status": "failed"}) + "\n")
    votes = type_vote_file(dev, tmp_path / "out.jsonl", extra_counts=[corpus])
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert lines[0]["tags"] == ["B-ORG"] and lines[0]["entities"][0]["retyped_from"] == "PER"
    assert lines[1]["status"] == "failed" and votes.retyped == 1
    assert json.loads(dev.read_text().splitlines()[0])["tags"] == ["B-PER"]  # the input file is left as it was


@pytest.mark.integration
def test_crop_project_type_vote(tmp_path: Path) -> None:
    """Real Apertium and spaCy; the English labels are given, so the types are known: the name is PER three
    times and ORG once."""
    rows = [{"id": f"s{i}", "text": "Pradales habló ayer .", "tokens": ["Pradales", "habló", "ayer", "."],
             "en_tokens": ["Pradales", "spoke", "yesterday", "."],
             "en_tags": ["B-PER" if i < 3 else "B-ORG", "O", "O", "O"]} for i in range(4)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out, conll, stats = tmp_path / "out.jsonl", tmp_path / "out.conll", tmp_path / "stats.json"
    base = ["project", "--src-lang", "es", "--input", str(src), "--no-langid", "--no-align"]
    plain = CliRunner().invoke(app, [*base, "--output", str(tmp_path / "plain.jsonl")])
    assert plain.exit_code == 0, plain.output
    assert [json.loads(x)["tags"][0] for x in (tmp_path / "plain.jsonl").read_text().splitlines()] == \
        ["B-PER", "B-PER", "B-PER", "B-ORG"]
    res = CliRunner().invoke(app, [*base, "--output", str(out), "--conll", str(conll), "--stats", str(stats),
                                   "--type-vote", "--type-vote-min-count", "3"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["tags"][0] for x in lines] == ["B-PER"] * 4
    assert lines[3]["retyped"] == 1 and lines[3]["entities"][0]["retyped_from"] == "ORG"
    assert "type vote: 1 entities re-typed in 1 sentences" in res.output
    assert conll.read_text().count("B-ORG") == 0 and conll.read_text().count("B-PER") == 4
    assert json.loads(stats.read_text())["type_vote"]["retyped"] == 1
    # min count 4: the ORG mention has only 3 others
    res = CliRunner().invoke(app, [*base, "--output", str(out), "--type-vote", "--type-vote-min-count", "4"])
    assert res.exit_code == 0 and [json.loads(x)["tags"][0] for x in out.read_text().splitlines()][3] == "B-ORG"
    bad = CliRunner().invoke(app, [*base, "--output", "-", "--type-vote"])
    assert bad.exit_code == 2
