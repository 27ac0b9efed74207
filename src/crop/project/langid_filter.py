"""Language identification with langid.py's model, restricted to the languages that matter for a check.

langid.py classifies over 97 languages with a dense dot product per sentence; a filter only asks "is this text
in L rather than in the other language of the pair?", so this scores only the candidate languages and only the
features that occur in the text (a sparse product), which keeps the projector's filters fast.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import cache

import numpy as np


@cache
def _model():
    from langid.langid import LanguageIdentifier, model

    ident = LanguageIdentifier.from_modelstring(model, norm_probs=False)
    return ident.nb_ptc, ident.nb_pc, list(ident.nb_classes), ident.tk_nextmove, ident.tk_output


class LanguageID:
    def __init__(self, languages: Iterable[str]) -> None:
        nb_ptc, nb_pc, classes, self._next, self._out = _model()
        langs = [lang for lang in dict.fromkeys(languages) if lang in classes]
        if not langs:
            raise ValueError(f"langid knows none of {list(languages)}")
        cols = [classes.index(lang) for lang in langs]
        self.languages = langs
        self._ptc = np.ascontiguousarray(nb_ptc[:, cols])
        self._pc = nb_pc[cols]

    def scores(self, text: str) -> np.ndarray:
        state = 0
        nxt = self._next
        states: Counter[int] = Counter()
        for byte in text.encode("utf8"):
            state = nxt[(state << 8) + byte]
            states[state] += 1
        feats: Counter[int] = Counter()
        out = self._out
        for st, n in states.items():
            for idx in out.get(st, ()):
                feats[idx] += n
        if not feats:
            return self._pc.copy()
        idx = np.fromiter(feats.keys(), dtype=np.intp, count=len(feats))
        cnt = np.fromiter(feats.values(), dtype=np.float64, count=len(feats))
        return cnt @ self._ptc[idx] + self._pc

    def classify(self, text: str) -> tuple[str, float]:
        """The most likely candidate language and its probability among the candidates."""
        s = self.scores(text)
        best = int(np.argmax(s))
        p = 1.0 / float(np.sum(np.exp(s - s[best])))
        return self.languages[best], p

    def is_lang(self, text: str, lang: str, min_prob: float = 0.5) -> bool:
        if lang not in self.languages:
            return True  # a language langid does not know cannot be checked
        best, p = self.classify(text)
        return best == lang or p < min_prob
