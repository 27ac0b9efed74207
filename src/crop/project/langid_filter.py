"""Language identification with langid.py's model, vectorized over a batch of texts and restricted to the
languages that matter for a check.

langid.py walks a byte automaton per text in Python and scores 97 languages with a dense product; a filter
only asks "is this text in L rather than in the other language of the pair?". Here the model's byte n-gram
features are recovered from its automaton once, the n-grams of a whole batch are looked up at once with
numpy, and only the candidate languages are scored. The feature counts are exactly langid.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np

_MAX_ORDER = 8  # how deep to walk langid's automaton; its features are byte 1- to 4-grams


@dataclass(frozen=True)
class _Features:
    """langid.py's byte n-gram features as a trie: row r of `ids` / `nxt` is a prefix; column b a next byte;
    `ids[r, b]` the feature id of prefix+b (or -1), `nxt[r, b]` the row of prefix+b when that is itself the
    prefix of a longer feature (or -1). Small enough to stay in cache, unlike a table over all 3-byte values."""

    nb_ptc: np.ndarray
    nb_pc: np.ndarray
    classes: list[str]
    ids: np.ndarray
    nxt: np.ndarray
    longest: int


@cache
def _model() -> _Features:
    from langid.langid import LanguageIdentifier, model

    ident = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    nextmove = np.asarray(ident.tk_nextmove, dtype=np.int64).reshape(-1, 256)
    # breadth-first over the automaton, one level at a time: a state first reached at depth d is reached only
    # by the d bytes of its trie prefix, so any of the edges that reach it then gives its string
    parent = np.full(len(nextmove), -1, dtype=np.int64)
    last_byte = np.zeros(len(nextmove), dtype=np.int64)
    seen = np.zeros(len(nextmove), dtype=bool)
    seen[0] = True
    frontier = np.array([0])
    for _ in range(_MAX_ORDER):
        targets = nextmove[frontier].ravel()
        new = ~seen[targets]
        if not new.any():
            break
        states, first = np.unique(targets[new], return_index=True)
        parent[states] = np.repeat(frontier, 256)[new][first]
        last_byte[states] = np.tile(np.arange(256), len(frontier))[new][first]
        seen[states] = True
        frontier = states
    strings: dict[int, bytes] = {0: b""}

    def string_of(state: int) -> bytes:
        if state not in strings:
            strings[state] = string_of(int(parent[state])) + bytes([int(last_byte[state])])
        return strings[state]

    for state in ident.tk_output:
        if seen[state]:
            string_of(state)
    pattern: dict[int, bytes] = {}
    for state, feats in ident.tk_output.items():
        s = strings.get(state)
        if s is None:
            continue
        for f in feats:
            if f not in pattern or len(s) < len(pattern[f]):
                pattern[f] = s
    longest = max(len(p) for p in pattern.values())
    rows: dict[bytes, int] = {b"": 0}
    for p in sorted(pattern.values(), key=len):
        for k in range(1, len(p)):
            rows.setdefault(p[:k], len(rows))
    ids = np.full((len(rows), 256), -1, dtype=np.int32)
    nxt = np.full((len(rows), 256), -1, dtype=np.int32)
    for f, p in pattern.items():
        ids[rows[p[:-1]], p[-1]] = f
    for q, r in rows.items():
        if q:
            nxt[rows[q[:-1]], q[-1]] = r
    return _Features(ident.nb_ptc, ident.nb_pc, list(ident.nb_classes), ids, nxt, longest)


class LanguageID:
    def __init__(self, languages: Iterable[str]) -> None:
        self._f = _model()
        wanted = list(dict.fromkeys(languages))
        langs = [lang for lang in wanted if lang in self._f.classes]
        if not langs:
            raise ValueError(f"langid knows none of {wanted}")
        cols = [self._f.classes.index(lang) for lang in langs]
        self.languages = langs
        self._cols = [np.ascontiguousarray(self._f.nb_ptc[:, c]) for c in cols]
        self._pc = self._f.nb_pc[cols]

    def scores(self, texts: Sequence[str], skip_names: bool = False) -> np.ndarray:
        """Log-scores, shape (len(texts), len(languages)). With `skip_names`, capitalized words after the
        first of each text are left out (names belong to both languages and mislead language id on short
        sentences: langid.py calls "Pedro Sánchez visited Berlin." Spanish)."""
        out = np.tile(self._pc, (len(texts), 1))
        if not texts:
            return out
        f = self._f
        # texts joined by NUL, a byte no feature contains, so that no n-gram crosses from one text to the next
        data = [t.encode("utf8") for t in texts]
        starts = np.cumsum([0] + [len(d) + 1 for d in data[:-1]])
        raw = np.frombuffer(b"\0".join(data) + b"\0" * (f.longest + 1), dtype=np.uint8)
        if skip_names:
            raw = _blank_names(raw)
        buf = raw.astype(np.int32)
        ids, nxt = f.ids.ravel(), f.nxt.ravel()
        hits: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        live = np.arange(len(buf) - f.longest - 1)  # start positions whose bytes so far prefix some feature
        flat = buf[: len(live)]
        node = np.zeros(len(live), dtype=np.int32)
        for n in range(1, f.longest + 1):
            if n > 1:
                flat = node * 256 + buf.take(live + (n - 1))
            fid = ids.take(flat)
            hit = fid >= 0
            hits.append(live[hit])
            feats.append(fid[hit])
            node = nxt.take(flat)
            grow = node >= 0
            live, node = live[grow], node[grow]
            if not len(live):
                break
        r = np.searchsorted(starts, np.concatenate(hits), side="right") - 1
        fe = np.concatenate(feats)
        for c, col in enumerate(self._cols):
            out[:, c] += np.bincount(r, weights=col.take(fe), minlength=len(texts))
        return out

    def classify(self, texts: Sequence[str], skip_names: bool = False) -> list[tuple[str, float]]:
        """Each text's most likely candidate language and its probability among the candidates."""
        s = self.scores(texts, skip_names)
        best = np.argmax(s, axis=1)
        probs = 1.0 / np.sum(np.exp(s - s[np.arange(len(texts)), best][:, None]), axis=1)
        return [(self.languages[b], float(p)) for b, p in zip(best, probs, strict=True)]

    def is_lang(self, texts: Sequence[str], lang: str, min_prob: float = 0.5, skip_names: bool = False) -> list[bool]:
        """Whether each text is in `lang`: yes unless another candidate wins with at least `min_prob`."""
        if lang not in self.languages:
            return [True] * len(texts)  # a language langid does not know cannot be checked
        return [best == lang or p < min_prob for best, p in self.classify(texts, skip_names)]


def _blank_names(buf: np.ndarray) -> np.ndarray:
    """The bytes with every word that follows a space and starts with a capital (ASCII or Latin-1 range:
    À-Þ) replaced by NUL, which no feature contains, so those words add no n-gram."""
    nxt = np.empty_like(buf)
    nxt[:-1], nxt[-1] = buf[1:], 0
    upper = ((buf >= 0x41) & (buf <= 0x5A)) | ((buf == 0xC3) & (nxt >= 0x80) & (nxt <= 0x9E) & (nxt != 0x97))
    after_space = np.empty(len(buf), dtype=bool)
    after_space[0], after_space[1:] = False, buf[:-1] == 0x20
    starts = np.flatnonzero(upper & after_space)
    if not len(starts):
        return buf
    bounds = np.flatnonzero((buf == 0x20) | (buf == 0))
    ends = bounds[np.searchsorted(bounds, starts)]
    depth = np.zeros(len(buf) + 1, dtype=np.int32)
    np.add.at(depth, starts, 1)
    np.add.at(depth, ends, -1)
    out = buf.copy()
    out[np.cumsum(depth[:-1]) > 0] = 0
    return out
