"""The matching cascade: ways to find, in the raw target sentence, the tokens of one marked entity.

Each matcher returns candidate token spans (start, end, score) in the raw sentence, best first; the projector
chooses among the candidates of all entities so that the spans do not overlap (see `projector.py`).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from rapidfuzz import fuzz

from crop.project.function_words import function_words, is_function_word
from crop.text import CHAR_LEVEL_LANGS, is_punct, normalize

Candidate = tuple[int, int, float]


_KEYS: dict[str, dict[str, tuple[str, bool, bool]]] = {}
_KEYS_MAX = 200_000  # per language; a cache that fills up is cleared (Zipf: the frequent words come back)


def token_keys(tokens: Sequence[str], lang: str) -> list[tuple[str, bool, bool]]:
    cache = _KEYS.get(lang)
    if cache is None or len(cache) > _KEYS_MAX:
        cache = _KEYS[lang] = {}
    out = []
    for t in tokens:
        k = cache.get(t)
        if k is None:
            k = cache[t] = token_key(t, lang)
        out.append(k)
    return out


def token_key(token: str, lang: str) -> tuple[str, bool, bool]:
    """(normalized form, is a content word, is a capitalized function word) of a token."""
    n = normalize(token)
    if is_punct(n):
        return n, False, False
    if is_function_word(n, function_words(lang)):
        return n, False, token[:1].isupper()
    return n, True, False


class Sentence:
    """A tokenized sentence with the keys that matching compares (`norm`: normalized tokens; `content`: not
    punctuation nor a function word, where a capitalized article inside a sentence belongs to a name: La Haya,
    El Salvador; `counts`: of each normalized token), computed on first use: exact matching, which places
    most entities, needs none of them."""

    def __init__(self, tokens: Sequence[str], lang: str) -> None:
        self.tokens = tokens
        self.lang = lang
        self._keys: list[tuple[str, bool, bool]] | None = None
        self._norm: list[str] = []
        self._content: list[bool] = []
        self._counts: dict[str, int] = {}

    def _compute(self) -> list[tuple[str, bool, bool]]:
        keys = token_keys(self.tokens, self.lang)
        self._norm = [k[0] for k in keys]
        self._content = [k[1] or (k[2] and i > 0) for i, k in enumerate(keys)]
        counts: dict[str, int] = {}
        for n in self._norm:
            counts[n] = counts.get(n, 0) + 1
        self._counts = counts
        self._keys = keys
        return keys

    @property
    def norm(self) -> list[str]:
        if self._keys is None:
            self._compute()
        return self._norm

    @property
    def content(self) -> list[bool]:
        if self._keys is None:
            self._compute()
        return self._content

    @property
    def counts(self) -> dict[str, int]:
        if self._keys is None:
            self._compute()
        return self._counts

    def key(self, i: int) -> tuple[str, bool, bool]:
        """The key of one token, without computing the whole sentence's."""
        if self._keys is not None:
            return self._keys[i]
        tok = self.tokens[i]
        k = _KEYS.get(self.lang, {}).get(tok)
        return k if k is not None else token_key(tok, self.lang)

    def is_content(self, i: int) -> bool:
        k = self.key(i)
        return k[1] or (k[2] and i > 0)

    def __len__(self) -> int:
        return len(self.tokens)


def core(sent: Sentence, start: int, end: int) -> tuple[int, int]:
    """The span without function words and punctuation at its edges (empty when nothing else is left)."""
    while start < end and not sent.content[start]:
        start += 1
    while end > start and not sent.content[end - 1]:
        end -= 1
    return start, end


def find_all(hay: Sequence[str], needle: Sequence[str]) -> list[int]:
    n = len(needle)
    if n == 0 or n > len(hay):
        return []
    first = needle[0]
    if type(needle) is not type(hay):
        needle = list(needle) if isinstance(hay, list) else tuple(needle)
    out: list[int] = []
    i = -1
    index = hay.index
    for _ in range(hay.count(first)):  # counting first avoids a ValueError per search
        i = index(first, i + 1)
        if i + n <= len(hay) and (n == 1 or hay[i : i + n] == needle):
            out.append(i)
    return out


def _by_position(starts: list[int], expected: float) -> list[int]:
    return sorted(starts, key=lambda i: abs(i - expected))


def exact(raw: Sentence, tokens: Sequence[str], expected: float) -> list[Candidate]:
    n = len(tokens)
    hits = find_all(raw.tokens, tokens)
    if len(hits) > 1:
        hits = _by_position(hits, expected)
    return [(i, i + n, 1.0) for i in hits]


def normalized(raw: Sentence, norm: Sequence[str], expected: float, score: float = 0.95) -> list[Candidate]:
    n = len(norm)
    return [(i, i + n, score) for i in _by_position(find_all(raw.norm, list(norm)), expected)]


def crop_rule(raw: Sentence, norm: Sequence[str], max_words: int = 6, min_found: float = 0.8) -> list[Candidate]:
    """The CROP paper's rule: the entity's words that occur exactly once in the raw sentence locate it when
    at least `min_found` of its words are found; the label covers min..max of the positions found. `norm`
    holds the entity's content words (also those of all its pieces when the translator split it)."""
    if not norm or len(norm) > max_words:
        return []
    found = [raw.norm.index(w) for w in norm if raw.counts.get(w, 0) == 1]
    if not found or len(found) / len(norm) < min_found:
        return []
    lo, hi = min(found), max(found) + 1
    if hi - lo > 2 * len(norm):
        return []
    return [(lo, hi, 0.8 * len(found) / len(norm))]


def aligned(raw: Sentence, source_ids: set[int], score: float) -> list[Candidate]:
    """A span from raw tokens that a translation aligned to the entity: min..max when nearly contiguous."""
    if not source_ids:
        return []
    lo, hi = min(source_ids), max(source_ids) + 1
    if hi - lo > len(source_ids) + 1:
        return []
    lo, hi = core(raw, lo, hi)
    if lo >= hi:
        return []
    return [(lo, hi, score)]


def fuzzy(raw: Sentence, norm: Sequence[str], threshold: float, lang: str) -> list[Candidate]:
    """The raw n-gram closest to the entity string (rapidfuzz ratio over normalized tokens), for inflection
    and spelling differences (Español/española, Unión Europea/Unió Europea); n-grams start and end on
    content words."""
    if not norm:
        return []
    joiner = "" if lang in CHAR_LEVEL_LANGS else " "
    target = joiner.join(norm)
    n = len(norm)
    best: Candidate | None = None
    for size in range(max(1, n - 1), n + 2):
        for i in range(len(raw) - size + 1):
            if not (raw.content[i] and raw.content[i + size - 1]):
                continue
            score = fuzz.ratio(target, joiner.join(raw.norm[i : i + size]), score_cutoff=threshold)
            if score and (best is None or score > best[2]):
                best = (i, i + size, score)
    return [(best[0], best[1], best[2] / 100 * 0.8)] if best else []


def anchors(raw: Sentence, trans: Sentence) -> list[tuple[int, int]]:
    """(translation token, raw token) pairs equal after normalization that form a longest common subsequence
    of the two sentences (Hunt-Szymanski: a longest increasing run over the matching pairs)."""
    positions: dict[str, list[int]] = {}
    for j, w in enumerate(raw.norm):
        positions.setdefault(w, []).append(j)
    tails: list[int] = []  # tails[k]: smallest raw position ending a common subsequence of length k + 1
    links: list[tuple[int, int, int]] = []  # (trans pos, raw pos, index of the previous link)
    tail_link: list[int] = []
    for i, w in enumerate(trans.norm):
        for j in reversed(positions.get(w, ())):
            k = bisect_left(tails, j)
            prev = tail_link[k - 1] if k else -1
            links.append((i, j, prev))
            if k == len(tails):
                tails.append(j)
                tail_link.append(len(links) - 1)
            else:
                tails[k] = j
                tail_link[k] = len(links) - 1
    pairs: list[tuple[int, int]] = []
    k = tail_link[-1] if tail_link else -1
    while k >= 0:
        i, j, k = links[k]
        pairs.append((i, j))
    pairs.reverse()
    return pairs


def context(raw: Sentence, trans: Sentence, start: int, end: int,
            pairs: list[tuple[int, int]] | None = None) -> list[Candidate]:
    """Place the entity by the words around it: align the back-translation with the raw sentence on tokens
    that are equal after normalization (difflib's longest matching blocks, so the alignment is monotone).
    Each boundary of the entity is fixed by an anchor right next to it (outside) or by an anchored word of
    the entity itself (inside); with one boundary fixed, the entity keeps its length (Donald Triunfo /
    Donald Trump, Philip II / Felipe II, Belarús / Bielorrusia)."""
    if pairs is None:
        pairs = anchors(raw, trans)
    anchored_raw = {r for _, r in pairs}
    t2r = dict(pairs)
    lo = hi = None
    if start - 1 in t2r:
        lo = t2r[start - 1] + 1
    elif start in t2r:
        lo = t2r[start]
    if end in t2r:
        hi = t2r[end]
    elif end - 1 in t2r:
        hi = t2r[end - 1] + 1
    size = end - start
    score = 0.7
    if lo is None:
        if hi is None:
            return []
        lo, score = hi - size, 0.55
    elif hi is None:
        hi, score = lo + size, 0.55
    if lo < 0 or hi > len(raw) or hi - lo <= 0 or hi - lo > size + 2:
        return []
    # the raw words of the span must not be anchored to words outside the entity
    inside = {r for t, r in pairs if start <= t < end}
    if any(r in anchored_raw and r not in inside for r in range(lo, hi)):
        return []
    lo, hi = core(raw, lo, hi)
    if lo >= hi:
        return []
    return [(lo, hi, score)]


def complete_name(raw: Sentence, lo: int, hi: int, taken: list[bool]) -> tuple[int, int]:
    """Grow [lo, hi) over adjacent capitalized words, also across one connector (de, del, d', la) when a
    capitalized word follows it; never over a sentence-initial word or another entity's tokens."""
    toks = raw.tokens
    if not toks[lo][:1].isupper():
        return lo, hi
    # (the cheap capital-letter test comes first: most neighbours are lowercase words)
    while lo > 0 and not taken[lo - 1]:
        if lo - 1 > 0 and toks[lo - 1][:1].isupper() and raw.is_content(lo - 1):
            lo -= 1
        elif (lo > 2 and not taken[lo - 2] and toks[lo - 2][:1].isupper() and raw.is_content(lo - 2)
              and _connector(raw, lo - 1)):
            lo -= 2
        else:
            break
    n = len(toks)
    while hi < n and not taken[hi]:
        if toks[hi][:1].isupper() and raw.is_content(hi):
            hi += 1
        elif (hi + 1 < n and not taken[hi + 1] and toks[hi + 1][:1].isupper() and raw.is_content(hi + 1)
              and _connector(raw, hi)):
            hi += 2
        else:
            break
    return lo, hi


# particles that sit inside names (Universitat de Lleida, Lula da Silva, Ursula von der Leyen); prepositions
# such as "en" or "a" and conjunctions separate names instead
NAME_PARTICLES = frozenset({"de", "da", "do", "das", "dos", "del", "della", "di", "d'", "von", "van", "der", "den",
                            "la", "le", "du", "des", "of", "the"})


def _connector(raw: Sentence, i: int) -> bool:
    """A particle that can sit inside a name."""
    return raw.key(i)[0] in NAME_PARTICLES
