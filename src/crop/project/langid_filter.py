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

_MAX_ORDER = 8  # longest byte n-gram we look for; the model's features are shorter (checked when loading)


@dataclass(frozen=True)
class _Features:
    """langid.py's byte n-gram features: direct lookup tables for n <= 3 (feature id, or -1), sorted codes
    for longer n-grams, and for each n the set of (n)-byte prefixes of longer features (an n+1-gram can only
    be a feature where its first n bytes are such a prefix)."""

    nb_ptc: np.ndarray
    nb_pc: np.ndarray
    classes: list[str]
    table: dict[int, np.ndarray]  # n -> array over all n-byte values
    prefix: dict[int, np.ndarray]  # n -> bool array over all n-byte values (n <= 3)
    long_codes: np.ndarray  # sorted codes of features longer than 3 bytes (length-tagged)
    long_ids: np.ndarray
    longest: int


@cache
def _model() -> _Features:
    from langid.langid import LanguageIdentifier, model

    ident = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    nextmove = np.asarray(ident.tk_nextmove, dtype=np.int64).reshape(-1, 256)
    # breadth-first over the automaton: the first string that reaches a state is its trie prefix
    strings: dict[int, bytes] = {0: b""}
    frontier = [0]
    for _ in range(_MAX_ORDER):
        nxt = []
        for state in frontier:
            prefix = strings[state]
            targets = nextmove[state]
            for byte in np.nonzero(targets)[0]:
                t = int(targets[byte])
                if t not in strings:
                    strings[t] = prefix + bytes([int(byte)])
                    nxt.append(t)
        frontier = nxt
        if not frontier:
            break
    pattern: dict[int, bytes] = {}
    for state, feats in ident.tk_output.items():
        s = strings.get(state)
        if s is None:
            continue
        for f in feats:
            if f not in pattern or len(s) < len(pattern[f]):
                pattern[f] = s
    longest = max(len(p) for p in pattern.values())
    table = {n: np.full(256**n, -1, dtype=np.int32) for n in (1, 2, 3)}
    prefix = {n: np.zeros(256**n, dtype=bool) for n in (1, 2, 3)}
    long_codes, long_ids = [], []
    for f, p in pattern.items():
        if len(p) <= 3:
            table[len(p)][int.from_bytes(p, "big")] = f
        else:
            long_codes.append(_code(p))
            long_ids.append(f)
        for n in range(1, min(len(p), 4)):
            prefix[n][int.from_bytes(p[:n], "big")] = True
    codes = np.array(long_codes, dtype=np.uint64)
    order = np.argsort(codes)
    return _Features(ident.nb_ptc, ident.nb_pc, list(ident.nb_classes), table, prefix, codes[order],
                     np.array(long_ids, dtype=np.int64)[order], longest)


def _code(b: bytes) -> int:
    """An n-gram as an integer, its length in the top byte so that n-grams of different lengths differ."""
    return (len(b) << 56) | int.from_bytes(b, "big")


class LanguageID:
    def __init__(self, languages: Iterable[str]) -> None:
        self._f = _model()
        wanted = list(dict.fromkeys(languages))
        langs = [lang for lang in wanted if lang in self._f.classes]
        if not langs:
            raise ValueError(f"langid knows none of {wanted}")
        cols = [self._f.classes.index(lang) for lang in langs]
        self.languages = langs
        self._ptc = np.ascontiguousarray(self._f.nb_ptc[:, cols])
        self._pc = self._f.nb_pc[cols]

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Log-scores, shape (len(texts), len(languages))."""
        out = np.tile(self._pc, (len(texts), 1))
        if not texts:
            return out
        f = self._f
        data = [t.encode("utf8") for t in texts]
        lengths = np.fromiter((len(d) for d in data), dtype=np.int64, count=len(data))
        buf = np.frombuffer(b"".join(data), dtype=np.uint8).astype(np.int64)
        total = len(buf)
        owner = np.repeat(np.arange(len(texts)), lengths)
        # bytes left in its own text from each position (an n-gram must not cross into the next text)
        left = np.repeat(np.cumsum(lengths), lengths) - np.arange(total)
        rows: list[np.ndarray] = []
        feats: list[np.ndarray] = []
        code = buf.copy()
        live = np.arange(total)  # start positions whose n-gram prefix can still grow into a feature
        for n in range(1, f.longest + 1):
            if n > 1:
                fits = left[live] >= n
                live, code = live[fits], code[fits]
                code = (code << 8) | buf[live + n - 1]
            if n <= 3:
                ids = f.table[n][code]
                hit = ids >= 0
                rows.append(owner[live[hit]])
                feats.append(ids[hit])
                keep = f.prefix[n][code] if n < f.longest else np.zeros(len(code), dtype=bool)
                live, code = live[keep], code[keep]
            else:
                keys = code.astype(np.uint64) | np.uint64(n << 56)
                idx = np.searchsorted(f.long_codes, keys)
                idx[idx >= len(f.long_codes)] = 0
                hit = f.long_codes[idx] == keys
                rows.append(owner[live[hit]])
                feats.append(f.long_ids[idx[hit]])
            if not len(live):
                break
        r, fe = np.concatenate(rows), np.concatenate(feats)
        for c in range(len(self.languages)):
            out[:, c] += np.bincount(r, weights=self._ptc[fe, c], minlength=len(texts))
        return out

    def classify(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        """Each text's most likely candidate language and its probability among the candidates."""
        s = self.scores(texts)
        best = np.argmax(s, axis=1)
        probs = 1.0 / np.sum(np.exp(s - s[np.arange(len(texts)), best][:, None]), axis=1)
        return [(self.languages[b], float(p)) for b, p in zip(best, probs, strict=True)]

    def is_lang(self, texts: Sequence[str], lang: str, min_prob: float = 0.5) -> list[bool]:
        """Whether each text is in `lang`: yes unless another candidate wins with at least `min_prob`."""
        if lang not in self.languages:
            return [True] * len(texts)  # a language langid does not know cannot be checked
        return [best == lang or p < min_prob for best, p in self.classify(texts)]
