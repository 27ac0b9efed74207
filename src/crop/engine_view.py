"""What the engines see of a client's text, and the way back to it.

Engines and matching see clean text: NFC (a decomposed "Sánchez", as macOS writes it, is one word again) with
control characters as spaces (`crop.text.clean_text`). Everything a client gets back is over the text it sent:
tokens are slices of it and `text[start:end]` is always the entity. Entities never start or end with
punctuation or control characters.
"""

from __future__ import annotations

from collections.abc import Sequence

from crop.io import InputSentence
from crop.tag.base import Tagger
from crop.text import clean, clean_text, is_clean, is_punct, tokenize, trim_punct
from crop.types import ProjectionResult, Span


def engine_sentence(s: InputSentence) -> InputSentence:
    """`s` with clean text and tokens (offsets into the clean text); `s` itself when it is clean already."""
    if is_clean(s.text) and (s.en_tokens is None or all(is_clean(t) for t in s.en_tokens)):
        return s
    parts: list[str] = []
    tokens: list[str] = []
    offsets: list[tuple[int, int]] = []
    pos = n = 0
    # piece by piece (gap, token, gap, ...), so that every token keeps its index and its own clean form
    for tok, (start, end) in zip(s.tokens, s.offsets, strict=True):
        gap = clean(s.text[pos:start])
        ctok = clean(tok).strip() or "_"  # a token of controls only (given tokens): a placeholder, never empty
        parts += [gap, ctok]
        offsets.append((n + len(gap), n + len(gap) + len(ctok)))
        tokens.append(ctok)
        n += len(gap) + len(ctok)
        pos = end
    parts.append(clean(s.text[pos:]))
    en_tokens = [clean(t).strip() or "_" for t in s.en_tokens] if s.en_tokens is not None else None
    return s.model_copy(update={"text": "".join(parts), "tokens": tokens, "offsets": offsets,
                                "en_tokens": en_tokens})


def restore_result(result: ProjectionResult, s: InputSentence) -> ProjectionResult:
    """The result of `engine_sentence(s)` over the sentence the client sent: its text, its tokens, entity offsets
    into its text (through the token indices, which cleaning keeps)."""
    if result.text == s.text or len(result.tokens) != len(s.tokens):
        return result
    entities = []
    for e in result.entities:
        start, end = s.offsets[e.token_start][0], s.offsets[e.token_end - 1][1]
        entities.append(e.model_copy(update={"start": start, "end": end, "text": s.text[start:end]}))
    return result.model_copy(update={"text": s.text, "tokens": list(s.tokens), "entities": entities})


def trim_span(text: str, start: int, end: int, lang: str) -> tuple[int, int] | None:
    """start..end without whitespace, control characters or punctuation-only tokens at its edges (crop's
    tokenization; an abbreviation such as "U.S." keeps its dots); None when nothing is left."""
    tokens, offsets = tokenize(text[start:end], lang)
    if not tokens:
        return None
    lo, hi = trim_punct(tokens, 0, len(tokens))
    if all(is_punct(t) for t in tokens):
        return None
    return start + offsets[lo][0], start + offsets[hi - 1][1]


def tag_text(tagger: Tagger, texts: Sequence[str], lang: str) -> list[list[Span]]:
    """`tagger.tag` over the clean texts, its spans mapped back to the texts as given and trimmed (see
    `trim_span`). Token offsets of the spans are dropped where cleaning moved characters."""
    cleaned = [clean_text(t) for t in texts]
    out: list[list[Span]] = []
    for text, c, spans in zip(texts, cleaned, tagger.tag([c.text for c in cleaned], lang), strict=True):
        kept: list[Span] = []
        for sp in spans:
            start, end = c.to_original(sp.start, sp.end)
            trimmed = trim_span(text, start, end, lang)
            if trimmed is None:
                continue
            moved = c.origin is not None or trimmed != (start, end)
            kept.append(sp.model_copy(update={
                "start": trimmed[0], "end": trimmed[1], "text": text[trimmed[0]:trimmed[1]],
                "token_start": None if moved else sp.token_start, "token_end": None if moved else sp.token_end}))
        out.append(kept)
    return out
