"""Articles, prepositions and their contractions: words a marker may wrap in one language and the gold span
leaves out in another ("la Universitat de Lleida", "d'OTAN", "the European Union")."""

from __future__ import annotations

from functools import cache

from crop.text import normalize

_WORDS = {
    "en": "the a an of 's",
    "es": "el la los las lo un una unos unas de del al a en y o",
    "ca": "el la els les lo un una uns unes de del dels al als a en i o l' d' pel pels per n' s'",
    "gl": "o a os as un unha uns unhas de do da dos das ao á aos ás no na nos nas en e ou polo pola",
    "pt": "o a os as um uma de do da dos das ao à no na nos nas em e ou pelo pela",
    "fr": "le la les l' un une des de du d' au aux en et ou",
    "it": "il lo la i gli le l' un una uno di del della dei degli delle d' al alla a in e o",
    "eu": "eta",
}
_ALL = frozenset(normalize(w) for words in _WORDS.values() for w in words.split())


@cache
def function_words(lang: str) -> frozenset[str]:
    words = _WORDS.get(lang)
    if words is None:
        return _ALL
    return frozenset(normalize(w) for w in words.split()) | frozenset(normalize(w) for w in _WORDS["en"].split())


def is_function_word(norm_token: str, words: frozenset[str]) -> bool:
    """A normalized token that is an article/preposition, or any short elided form ending in an apostrophe."""
    return norm_token in words or (len(norm_token) <= 4 and norm_token.endswith("'"))
