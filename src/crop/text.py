"""Word-level tokenization and detokenization (character level for scripts written without spaces)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

# Languages whose words are not separated by spaces: tokenized one character at a time.
CHAR_LEVEL_LANGS = frozenset({"zh", "ja", "th", "lo", "km", "my", "bo"})

_CJK = (
    "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
    "\uf900-\ufaff\uff00-\uffef\u0e00-\u0e7f"
)
_APOS = "'’"
_TOKEN_RE = re.compile(
    rf"""
    (?:[^\W\d_]{{1,3}}\.){{2,}}                       # abbreviations with inner dots: U.S. EE.UU.
    |\d+(?:[.,:/]\d+)*(?:-?[^\W_]+)*                  # numbers, dates, times, 5th, 1950s, 6,000-euro
    |[{_CJK}]                                        # one character of a script without spaces
    |[^\W_]+(?:[-·.][^\W_]+)*(?:[{_APOS}][^\W_]+(?:[-·][^\W_]+)*)*   # words, with inner hyphens and apostrophes
    |\S                                              # anything else: one punctuation mark or symbol
    """,
    re.VERBOSE,
)
# an elided article or preposition at the start of a word: l'OTAN d'Exteriors qu'ell dell'Italia
_ELISION_RE = re.compile(rf"^((?:[ldmnstjcLDMNSTJC]|[Qq]u|[Ss]ull|[Dd]ell|[Nn]ell|[Aa]ll)[{_APOS}])(?=[^\W\d_])")
_CHUNK_RE = re.compile(r"\S+")
_CJK_SPLIT_RE = re.compile(f"[{_CJK}]|[^{_CJK}]+")
_EN_CLITIC_RE = re.compile(rf"^(.+?)([{_APOS}](?:s|S|re|ve|ll|d|m)|n[{_APOS}]t)$")

_NO_SPACE_BEFORE = frozenset(",.;:!?)]}%»”…")
_NO_SPACE_AFTER = frozenset("([{¿¡«“")
_EN_SUFFIXES = frozenset({"'s", "n't", "’s", "'re", "'ve", "'ll", "'d", "'m"})


def tokenize(text: str, lang: str = "") -> tuple[list[str], list[tuple[int, int]]]:
    """Tokens of `text` and their character offsets. Elided clitics (l', d', qu') are tokens of their own,
    English 's and n't are split off as in CoNLL, punctuation marks are tokens.

    Text that is not NFC (decomposed accents, as macOS writes them) or that has control characters is tokenized
    as its `clean_text` (composed; controls are spaces), and the tokens and offsets returned are those of `text`
    itself: `text[s:e] == token` always holds, and no token holds a control character."""
    clean = clean_text(text)
    if clean.origin is None:
        return _tokenize(text, lang)
    tokens, offsets = _tokenize(clean.text, lang)
    spans = [clean.to_original(s, e) for s, e in offsets]
    return [text[s:e] for s, e in spans], spans


def _tokenize(text: str, lang: str) -> tuple[list[str], list[tuple[int, int]]]:
    tokens: list[str] = []
    offsets: list[tuple[int, int]] = []
    char_level = lang in CHAR_LEVEL_LANGS
    english = lang == "en"
    if not char_level:
        # fast path: a chunk between spaces that is all letters of an alphabetic script is one token
        # (the regex, below, is for the others: punctuation, numbers, clitics, abbreviations)
        for chunk in _CHUNK_RE.finditer(text):
            word = chunk.group()
            if word.isalpha() and max(word) < "\u2e80":
                tokens.append(word)
                offsets.append(chunk.span())
            else:
                _tokenize_into(word, chunk.start(), english, tokens, offsets)
        return tokens, offsets
    _tokenize_into(text, 0, english, tokens, offsets, char_level=True)
    return tokens, offsets


def _tokenize_into(text: str, base: int, english: bool, tokens: list[str], offsets: list[tuple[int, int]],
                   char_level: bool = False) -> None:
    for m in _TOKEN_RE.finditer(text):
        tok, start = m.group(), base + m.start()
        if char_level and len(tok) > 1 and not tok.isascii():
            # one token per character of the script without spaces; runs of other letters stay words
            for piece in _CJK_SPLIT_RE.finditer(tok):
                tokens.append(piece.group())
                offsets.append((start + piece.start(), start + piece.end()))
            continue
        if ("'" in tok or "’" in tok) and not english and (em := _ELISION_RE.match(tok)):
            head = em.group(1)
            tokens += [head, tok[len(head):]]
            offsets += [(start, start + len(head)), (start + len(head), start + len(tok))]
            continue
        if english and (cm := _EN_CLITIC_RE.match(tok)):
            head = cm.group(1)
            tokens += [head, cm.group(2)]
            offsets += [(start, start + len(head)), (start + len(head), start + len(tok))]
            continue
        tokens.append(tok)
        offsets.append((start, start + len(tok)))


def detokenize(tokens: Sequence[str], lang: str = "") -> tuple[str, list[tuple[int, int]]]:
    """Text for `tokens` as a writer would space it, and each token's character offsets in that text."""
    parts: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = 0
    char_level = lang in CHAR_LEVEL_LANGS
    open_quote = False
    prev = ""
    for i, tok in enumerate(tokens):
        space = i > 0
        if space:
            glued_to_prev = tok[:1] in _NO_SPACE_BEFORE or tok in _EN_SUFFIXES
            glued_to_next = prev in _NO_SPACE_AFTER or (prev[-1:] in _APOS and prev[:-1].isalpha())
            if tok and glued_to_prev or prev and glued_to_next:
                space = False
            elif tok == '"':
                space = not open_quote
            elif prev == '"' and open_quote or char_level and (_is_cjk(tok) or _is_cjk(prev)):
                space = False
        if tok == '"':
            open_quote = not open_quote
        if space:
            parts.append(" ")
            pos += 1
        parts.append(tok)
        offsets.append((pos, pos + len(tok)))
        pos += len(tok)
        prev = tok
    return "".join(parts), offsets


def _is_cjk(tok: str) -> bool:
    return bool(tok) and re.match(f"[{_CJK}]", tok[0]) is not None


def char_to_token_span(offsets: Sequence[tuple[int, int]], start: int, end: int) -> tuple[int, int] | None:
    """Tokens covered by the characters start..end: those that overlap it. None when no token overlaps."""
    first = last = -1
    for i, (s, e) in enumerate(offsets):
        if e <= start:
            continue
        if s >= end:
            break
        if first < 0:
            first = i
        last = i
    return None if first < 0 else (first, last + 1)


@lru_cache(maxsize=200_000)
def normalize(token: str) -> str:
    """Comparison key of a token: NFKC, case-folded, accents removed, apostrophes unified."""
    t = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", token).casefold())
    t = "".join(ch for ch in t if not unicodedata.combining(ch))
    return t.replace("’", "'")


def is_punct(token: str) -> bool:
    return all(unicodedata.category(ch)[0] in "PS" for ch in token)


# -- bounds on the work one sentence can cause ----------------------------------------------------------------

# Apertium's analysis is super-linear in a token's length (a 5,000-character token costs seconds, 500 costs
# nothing measurable): a longer token is refused by the services (422) and discarded by jobs and the CLI
MAX_TOKEN_CHARS = 200


def first_long_token(tokens: Sequence[str], limit: int = MAX_TOKEN_CHARS) -> int | None:
    """Index of the first token longer than `limit` characters, None when there is none."""
    for i, tok in enumerate(tokens):
        if len(tok) > limit:
            return i
    return None


# -- text as the engines see it ---------------------------------------------------------------------------------

# characters that are whitespace to crop: C0/C1 controls (Cc: BEL, ESC, ...) and the invisible format characters
# that only steer rendering (zero-width space, BOM, bidirectional embeddings and isolates); ZWJ and ZWNJ stay,
# they are spelling in Persian and Indic scripts
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u200b\u200e\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")


class CleanText:
    """`text` as the engines and matching see it: NFC (composed) and control characters replaced by spaces.
    `origin[i]` is the index in the original text where clean character i starts (`origin[len(text)]` is the
    original's length); `origin` is None when the clean text is the original."""

    def __init__(self, text: str, origin: list[int] | None) -> None:
        self.text = text
        self.origin = origin

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """The original offsets of the clean characters start..end."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end]


def is_clean(text: str) -> bool:
    return unicodedata.is_normalized("NFC", text) and _CONTROL_RE.search(text) is None


def clean_text(text: str) -> CleanText:
    """NFC with control characters as spaces, and where each clean character came from (see CleanText)."""
    if is_clean(text):
        return CleanText(text, None)
    out: list[str] = []
    origin: list[int] = []
    i, n = 0, len(text)
    while i < n:
        # a run that NFC may compose into fewer characters: a starter and what combines with it
        j = i + 1
        while j < n and not _CONTROL_RE.match(text[j]) and _composes(text[i:j], text[j]):
            j += 1
        piece = text[i:j]
        piece = " " if _CONTROL_RE.match(piece) else unicodedata.normalize("NFC", piece)
        for k in range(len(piece)):
            out.append(piece[k])
            # a composed run maps to its start; characters NFC left apart keep their own place when it can tell
            origin.append(i + k if len(piece) == j - i else i)
        i = j
    origin.append(n)
    return CleanText("".join(out), origin)


def _composes(run: str, ch: str) -> bool:
    """Whether `ch` belongs to the NFC run before it: a combining mark, or a character NFC joins to it (Hangul
    jamo are starters that compose)."""
    if unicodedata.combining(ch):
        return True
    return len(unicodedata.normalize("NFC", run + ch)) <= len(unicodedata.normalize("NFC", run))


def clean(text: str) -> str:
    """The clean text of `text` (NFC, control characters as spaces)."""
    return clean_text(text).text


def trim_punct(tokens: Sequence[str], lo: int, hi: int) -> tuple[int, int]:
    """The token span lo..hi without the punctuation-only tokens at its edges (an entity never starts or ends
    with one); unchanged when nothing but punctuation is left."""
    a, b = lo, hi
    while a < b and is_punct(tokens[a]):
        a += 1
    while b > a and is_punct(tokens[b - 1]):
        b -= 1
    return (a, b) if a < b else (lo, hi)
