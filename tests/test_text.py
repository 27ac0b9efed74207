from __future__ import annotations

import json
from pathlib import Path

import pytest

from crop.text import char_to_token_span, detokenize, is_punct, normalize, tokenize

DEV = sorted(Path("/work/shared/data/dev").glob("*.dev.jsonl"))


def toks(text: str, lang: str) -> list[str]:
    tokens, offsets = tokenize(text, lang)
    assert [text[s:e] for s, e in offsets] == tokens
    return tokens


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("L'home d'Espanya", "ca", ["L'", "home", "d'", "Espanya"]),
        ("l'Ajuntament de Barcelona", "ca", ["l'", "Ajuntament", "de", "Barcelona"]),
        ("va dir qu'ell vindria.", "ca", ["va", "dir", "qu'", "ell", "vindria", "."]),
        ("l’Institut", "ca", ["l’", "Institut"]),
        ("L'Oréal", "fr", ["L'", "Oréal"]),
    ],
)
def test_elided_clitics(text: str, lang: str, expected: list[str]) -> None:
    assert toks(text, lang) == expected


def test_english_clitics() -> None:
    assert toks("John's car isn't here.", "en") == ["John", "'s", "car", "is", "n't", "here", "."]
    assert toks("They're sure we've won.", "en") == ["They", "'re", "sure", "we", "'ve", "won", "."]
    # 's stays attached outside English
    assert toks("O'Neill", "es") == ["O'Neill"]


def test_numbers() -> None:
    assert toks("Creció un 2,4 % en 2023, hasta 1.500 millones.", "es") == [
        "Creció",
        "un",
        "2,4",
        "%",
        "en",
        "2023",
        ",",
        "hasta",
        "1.500",
        "millones",
        ".",
    ]
    assert toks("On 12/05/2021 at 10:30 the 1950s ended", "en") == [
        "On",
        "12/05/2021",
        "at",
        "10:30",
        "the",
        "1950s",
        "ended",
    ]


def test_punctuation_and_abbreviations() -> None:
    assert toks("¿Dónde está «Madrid»?", "es") == ["¿", "Dónde", "está", "«", "Madrid", "»", "?"]
    assert toks("the U.S. Army", "en") == ["the", "U.S.", "Army"]
    assert toks("Saint-Étienne", "fr") == ["Saint-Étienne"]


def test_chinese_is_character_level() -> None:
    text = "北京是中国的首都。"
    assert toks(text, "zh") == list(text)
    assert detokenize(list(text), "zh")[0] == text


def test_empty() -> None:
    assert tokenize("", "es") == ([], [])
    assert tokenize("   ", "es") == ([], [])
    assert detokenize([], "es") == ("", [])


@pytest.mark.parametrize(
    ("tokens", "lang", "text"),
    [
        (["Hola", ",", "mundo", "."], "es", "Hola, mundo."),
        (["¿", "Qué", "?"], "es", "¿Qué?"),
        (["l'", "Ajuntament", "de", "Barcelona"], "ca", "l'Ajuntament de Barcelona"),
        (["John", "'s", "car", "is", "n't", "red"], "en", "John's car isn't red"),
        (["O", '"', "Celta", '"', "gañou", "."], "gl", 'O "Celta" gañou.'),
        (["(", "ONU", ")"], "es", "(ONU)"),
        (["un", "2,4", "%"], "es", "un 2,4%"),
    ],
)
def test_detokenize(tokens: list[str], lang: str, text: str) -> None:
    out, offsets = detokenize(tokens, lang)
    assert out == text
    assert [out[s:e] for s, e in offsets] == tokens


def test_char_to_token_span() -> None:
    _, offsets = tokenize("La Unión Europea y Mercosur", "es")
    assert char_to_token_span(offsets, 3, 16) == (1, 3)
    assert char_to_token_span(offsets, 4, 5) == (1, 2)  # inside a token
    assert char_to_token_span(offsets, 16, 17) is None  # a space only


def test_normalize_and_punct() -> None:
    assert normalize("ÉCOLE") == normalize("école") == "ecole"
    assert normalize("l’") == "l'"
    assert is_punct(",") and is_punct("«") and not is_punct("a,")


def test_dev_sets_round_trip() -> None:
    assert DEV, "no dev sets in /work/shared/data/dev"
    total = ok = 0
    for path in DEV:
        lang = path.name.split(".")[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            for tokens, lg in ((rec["tokens"], lang), (rec["en_tokens"], "en")):
                text, offsets = detokenize(tokens, lg)
                assert [text[s:e] for s, e in offsets] == tokens, rec["id"]
                total += 1
                ok += tokenize(text, lg)[0] == tokens
    assert total > 0
    assert ok / total >= 0.98, f"{ok}/{total} sentences survive detokenize -> tokenize"
