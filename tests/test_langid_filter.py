"""crop.project.langid_filter.LanguageID against langid.py itself: same scores, batch independence, verdicts."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from langid.langid import LanguageIdentifier, model

from crop.project.langid_filter import LanguageID

EDGE_CASES = [
    "",
    "a",
    "Ñ",
    " ",
    "\n\t",
    "😀",
    "👍🏽🇪🇸",
    "東京は日本の首都です",
    "北京是中国的首都。",
    "x" * 5000,
    ("La casa de mi abuela está en el pueblo. " * 125)[:5000],
    "Hola 😀 mundo " * 400,
    "12345 67890",
    "¿Qué?",
    "naïve café résumé",
]


def raw_lines(shared: Path, n_per_lang: int = 70) -> list[str]:
    raw = shared / "raw"
    lines: list[str] = []
    for lang in ("es", "ca", "gl"):
        path = raw / f"{lang}.txt"
        if path.exists():
            with open(path, encoding="utf-8") as f:
                lines += [line.rstrip("\n") for line in itertools.islice(f, n_per_lang)]
    return lines


@pytest.fixture(scope="module")
def reference() -> LanguageIdentifier:
    return LanguageIdentifier.from_modelstring(model, norm_probs=False)


def reference_scores(ident: LanguageIdentifier, texts: list[str], langs: list[str]) -> np.ndarray:
    """langid.py's own log-scores, one column per language of `langs` (by name, not by its class order)."""
    ident.set_languages(langs)
    names = list(ident.nb_classes)
    cols = [names.index(lang) for lang in langs]
    return np.array([ident.nb_classprobs(ident.instance2fv(t))[cols] for t in texts]).reshape(len(texts), len(langs))


def assert_scores_close(ours: np.ndarray, ref: np.ndarray) -> None:
    # 1e-3 absolute; the scores are float32, so a 5000-character text (|score| ~ 5e4) also gets 1e-7 relative
    err = np.abs(ours.astype(np.float64) - ref)
    tol = 1e-3 + 1e-7 * np.abs(ref)
    worst = np.unravel_index(np.argmax(err - tol), err.shape)
    assert np.all(err <= tol), f"row {worst[0]} lang {worst[1]}: ours {ours[worst]} vs langid.py {ref[worst]}"


@pytest.mark.parametrize("langs", [["es", "en"], ["en", "es"], ["gl", "ca", "es", "en", "pt"], ["ca"]])
def test_scores_equal_langid_py(reference: LanguageIdentifier, shared_data: Path, langs: list[str]) -> None:
    texts = raw_lines(shared_data) + EDGE_CASES
    assert len(texts) >= 150
    lid = LanguageID(langs)
    assert lid.languages == langs
    ours = lid.scores(texts)
    assert ours.shape == (len(texts), len(langs))
    assert_scores_close(ours, reference_scores(reference, texts, langs))


def test_edge_cases_equal_langid_py(reference: LanguageIdentifier) -> None:
    # the same without the shared data, so that this part always runs
    lid = LanguageID(["es", "en", "ja", "zh"])
    assert_scores_close(lid.scores(EDGE_CASES), reference_scores(reference, EDGE_CASES, lid.languages))


def test_nul_byte_scores_equal_langid_py(reference: LanguageIdentifier) -> None:
    texts = ["hola\0mundo de la casa", "the\0house of the\0rising sun"]
    lid = LanguageID(["es", "en"])
    assert_scores_close(lid.scores(texts), reference_scores(reference, texts, ["es", "en"]))


def test_batch_equals_one_by_one() -> None:
    # n-grams never cross from one text into the next
    texts = ["ab", "cd", "the", " house", "casa", "", "de la", "😀", "x" * 300]
    lid = LanguageID(["es", "en"])
    batch = lid.scores(texts)
    single = np.vstack([lid.scores([t]) for t in texts])
    np.testing.assert_allclose(batch, single, rtol=0, atol=1e-3)


def test_empty_batch_and_empty_text() -> None:
    lid = LanguageID(["es", "en"])
    assert lid.scores([]).shape == (0, 2)
    assert lid.classify([]) == []
    assert lid.is_lang([], "es") == []
    (best, prob), = lid.classify([""])
    assert best in ("es", "en") and 0.5 <= prob <= 1.0


def test_classify_clear_sentences() -> None:
    lid = LanguageID(["es", "en"])
    es = [
        "El perro de mi vecino ladra todas las noches cuando pasa el tren por el pueblo.",
        "Los ciudadanos votaron ayer en las elecciones municipales con una participación muy alta.",
        "La biblioteca abrirá sus puertas el próximo lunes después de varios meses de obras.",
    ]
    en = [
        "My neighbour's dog barks every night when the train goes through the village.",
        "The citizens voted yesterday in the local elections with a very high turnout.",
        "The library will open its doors next Monday after several months of works.",
    ]
    results = lid.classify(es + en)
    assert [lang for lang, _ in results] == ["es"] * 3 + ["en"] * 3
    assert all(p > 0.99 for _, p in results)
    assert lid.is_lang(es + en, "es", 0.9) == [True] * 3 + [False] * 3
    assert lid.is_lang(es + en, "en", 0.9) == [False] * 3 + [True] * 3


def test_unknown_languages() -> None:
    lid = LanguageID(["es", "xx", "en", "es"])
    assert lid.languages == ["es", "en"]  # unknown ones dropped, duplicates once
    assert lid.is_lang(["The dog barks at night in the village."], "xx") == [True]  # cannot be checked
    with pytest.raises(ValueError, match="xx"):
        LanguageID(["xx", "yy"])
