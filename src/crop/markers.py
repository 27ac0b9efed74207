"""Marker codecs for labeled translation.

A sentence with entity spans is encoded with boundary markers, a translation engine translates it, and the
markers found in its output are decoded to recover the spans in the translated text. Decoding never trusts
the model: missing, duplicated, unbalanced, nested, reordered or glued markers are repaired where possible
and reported per span (`LabeledResult.lost`) otherwise; `decode` never raises.

Codecs (see `get_codec`):

- ``slot``: ``__SLOT{i}__ entity __SLOT{i}__`` (the CROP format; the same token opens and closes);
- ``tag``: ``<e{i}>entity</e{i}>``;
- ``html``: ``<span id="e{i}">entity</span>`` with the text HTML-escaped (Apertium's HTML format);
- ``bracket``: ``[ entity ]``, type-agnostic (EasyProject style); spans are re-identified by content, then
  by elimination in order.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rapidfuzz import fuzz

from crop.types import LabeledResult, Span

__all__ = [
    "BracketCodec",
    "HtmlCodec",
    "MarkerCodec",
    "SlotCodec",
    "TagCodec",
    "STRIP_PUNCT",
    "codec_names",
    "get_codec",
]

#: Punctuation stripped from both ends of a recovered span (besides whitespace). Not "." nor "'", which can
#: belong to names ("EE.UU.", "d'").
STRIP_PUNCT = frozenset(',;:"«»“”()¿¡')

#: Similarity (rapidfuzz ratio on normalized strings, 0-100) from which a bracketed segment is identified
#: with a source span by its content.
BRACKET_MATCH_THRESHOLD = 80.0


@runtime_checkable
class MarkerCodec(Protocol):
    """Encodes spans as inline markers and decodes (and repairs) them in a model's output."""

    name: str

    def encode(self, text: str, spans: Sequence[Span]) -> str: ...

    def decode(self, marked: str, source: Sequence[Span]) -> LabeledResult: ...


@dataclass
class _Marker:
    """A marker found in a marked string: raw offsets, kind, id (None when it carries none) and its
    position in the text once all markers are removed."""

    start: int
    end: int
    kind: str  # "open" | "close" | "both"
    ref: int | None
    pos: int = 0


@dataclass
class _Pair:
    """Two markers (indices into the marker list) delimiting a span; ref None = still to be identified."""

    open: int
    close: int
    ref: int | None


@dataclass
class _Candidate:
    ref: int | None
    start: int
    end: int
    extent: int  # length between the markers before stripping, to prefer the inner of nested spans
    order: int  # position of the pair in the text


def _is_strippable(ch: str) -> bool:
    return ch.isspace() or ch in STRIP_PUNCT


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink [start, end) past whitespace and STRIP_PUNCT on both ends."""
    while start < end and _is_strippable(text[start]):
        start += 1
    while end > start and _is_strippable(text[end - 1]):
        end -= 1
    return start, end


def _check_spans(text: str, spans: Sequence[Span]) -> list[int]:
    """Validate spans for encoding; return their indices in text order."""
    for i, sp in enumerate(spans):
        if sp.start > sp.end or sp.end > len(text):
            raise ValueError(
                f"span {i} [{sp.start}, {sp.end}) falls outside the text (length {len(text)}) or is inverted"
            )
    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end, i))
    prev: int | None = None
    for i in order:
        if prev is not None and spans[i].start < spans[prev].end:
            a, b = spans[prev], spans[i]
            raise ValueError(f"spans {prev} [{a.start}, {a.end}) and {i} [{b.start}, {b.end}) overlap")
        if prev is None or spans[i].end >= spans[prev].end:
            prev = i
    return order


def _normalize(stripped: str, drop: bytearray) -> tuple[str, list[int]]:
    """Remove dropped characters, collapse whitespace runs to one space and strip.

    Returns the clean text and `pos_map`, where pos_map[i] is the clean offset of stripped offset i
    (0 <= i <= len(stripped))."""
    keep = bytearray(len(stripped))
    out: list[str] = []
    prev_space = True  # drops leading whitespace
    last_kept = -1
    for i, ch in enumerate(stripped):
        if drop[i]:
            continue
        if ch.isspace():
            if prev_space:
                continue
            out.append(" ")
            prev_space = True
        else:
            out.append(ch)
            prev_space = False
        keep[i] = 1
        last_kept = i
    if out and out[-1] == " ":
        out.pop()
        keep[last_kept] = 0
    pos_map = [0] * (len(stripped) + 1)
    count = 0
    for i in range(len(stripped)):
        pos_map[i] = count
        count += keep[i]
    pos_map[len(stripped)] = count
    return "".join(out), pos_map


def _fold(s: str) -> str:
    """Normalize for content matching: NFKD without accents, casefold, punctuation to spaces, collapsed."""
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch)).casefold()
    s = "".join(ch if ch.isalnum() else " " for ch in s)
    return " ".join(s.split())


class _BaseCodec:
    """Shared encode/decode machinery; subclasses define the marker syntax and how markers pair up."""

    name: str = ""
    #: remove whitespace just inside a pair (codecs that write "<open> entity <close>" with spaces)
    _eat_inner_space: bool = False

    # -- syntax ------------------------------------------------------------------------------------------
    def _open(self, i: int) -> str:
        raise NotImplementedError

    def _close(self, i: int) -> str:
        raise NotImplementedError

    def _escape(self, text: str) -> str:
        return text

    def _unescape(self, text: str) -> str:
        return text

    def _scan(self, marked: str) -> list[_Marker]:
        raise NotImplementedError

    def _pair(self, markers: list[_Marker], n: int) -> list[_Pair]:
        raise NotImplementedError

    def _identify(self, candidates: list[_Candidate], clean: str, source: Sequence[Span]) -> None:
        """Set `ref` on candidates that have none (only the bracket codec needs this)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    # -- API ---------------------------------------------------------------------------------------------
    def encode(self, text: str, spans: Sequence[Span]) -> str:
        """Mark `spans` (character spans into `text`, non-overlapping) in `text`; span i gets marker id i."""
        out: list[str] = []
        cursor = 0
        for i in _check_spans(text, spans):
            sp = spans[i]
            out.append(self._escape(text[cursor : sp.start]))
            out.append(self._open(i))
            out.append(self._escape(text[sp.start : sp.end]))
            out.append(self._close(i))
            cursor = sp.end
        out.append(self._escape(text[cursor:]))
        return "".join(out)

    def decode(self, marked: str, source: Sequence[Span]) -> LabeledResult:
        """Recover the spans of `source` (index = marker id) from a model's marked output."""
        n = len(source)
        markers = self._scan(marked)

        # text without markers; each marker gets its offset in it
        parts: list[str] = []
        length = 0
        prev = 0
        for m in markers:
            chunk = self._unescape(marked[prev : m.start])
            parts.append(chunk)
            length += len(chunk)
            m.pos = length
            prev = m.end
        parts.append(self._unescape(marked[prev:]))
        stripped = "".join(parts)

        pairs = self._pair(markers, n)
        drop = bytearray(len(stripped))
        if self._eat_inner_space:
            for p in pairs:
                a, b = markers[p.open].pos, markers[p.close].pos
                while a < b and stripped[a].isspace():
                    drop[a] = 1
                    a += 1
                while b > a and stripped[b - 1].isspace():
                    drop[b - 1] = 1
                    b -= 1
        clean, pos_map = _normalize(stripped, drop)

        candidates: list[_Candidate] = []
        for k, p in enumerate(pairs):
            a, b = markers[p.open].pos, markers[p.close].pos
            start, end = _strip_span(clean, pos_map[a], pos_map[b])
            candidates.append(_Candidate(p.ref, start, end, b - a, k))
        self._identify(candidates, clean, source)

        # resolve: an id's first non-empty pair is its span; no overlaps (shorter/inner first)
        first: dict[int, _Candidate] = {}
        for c in sorted(candidates, key=lambda c: c.order):
            if c.ref is not None and 0 <= c.ref < n and c.start < c.end and c.ref not in first:
                first[c.ref] = c
        accepted: list[_Candidate] = []
        used: set[int] = set()
        for c in sorted(first.values(), key=lambda c: (c.end - c.start, c.extent, c.order)):
            if any(c.start < o.end and o.start < c.end for o in accepted):
                continue
            accepted.append(c)
            used.add(c.ref)  # type: ignore[arg-type]
        accepted.sort(key=lambda c: c.start)
        # further pairs of an accepted id: pieces of an entity the engine split (reordered around other words)
        fragments: list[_Candidate] = []
        for c in sorted(candidates, key=lambda c: c.order):
            if c.ref not in used or c.start >= c.end or any(c is a for a in accepted):
                continue
            if any(c.start < o.end and o.start < c.end for o in accepted + fragments):
                continue
            fragments.append(c)
        spans = [
            Span(
                start=c.start,
                end=c.end,
                label=source[c.ref].label,
                text=clean[c.start : c.end],
                ref=c.ref,
                score=1.0,
            )
            for c in accepted
            if c.ref is not None
        ]
        lost = [i for i in range(n) if i not in used]
        pieces = [
            Span(start=c.start, end=c.end, label=source[c.ref].label, text=clean[c.start : c.end], ref=c.ref)
            for c in fragments
            if c.ref is not None
        ]
        return LabeledResult(text=clean, spans=spans, lost=lost, fragments=pieces, raw=marked)


def _ref(digits: str | None) -> int | None:
    return int(digits) if digits else None


class SlotCodec(_BaseCodec):
    """``__SLOT{i}__ entity __SLOT{i}__``: the first two occurrences of an id delimit its span.

    Tolerates markers glued to words, case changes and slightly broken markers ("__ SLOT0 __", "_SLOT0_",
    "__slot0", "SLOT0__"). Encode writes a space on the inner side of each marker (the outer side keeps
    the text's own spacing); decode removes the whitespace just inside a pair."""

    name = "slot"
    _eat_inner_space = True
    _RE = re.compile(
        r"_{1,2}\s{0,2}slot\s{0,2}(\d{1,9})(?:\s{0,2}_{1,2})?"
        r"|(?<![^\W_])slot\s{0,2}(\d{1,9})\s{0,2}_{1,2}",
        re.IGNORECASE,
    )

    def _open(self, i: int) -> str:
        return f"__SLOT{i}__ "

    def _close(self, i: int) -> str:
        return f" __SLOT{i}__"

    def _scan(self, marked: str) -> list[_Marker]:
        return [
            _Marker(m.start(), m.end(), "both", _ref(m.group(1) or m.group(2)))
            for m in self._RE.finditer(marked)
        ]

    def _pair(self, markers: list[_Marker], n: int) -> list[_Pair]:
        seen: dict[int, list[int]] = {}
        for k, m in enumerate(markers):
            if m.ref is not None and m.ref < n:
                seen.setdefault(m.ref, []).append(k)
        return [_Pair(ks[i], ks[i + 1], ref) for ref, ks in seen.items() for i in range(0, len(ks) - 1, 2)]


class TagCodec(_BaseCodec):
    """``<e{i}>entity</e{i}>``: an id's first open tag pairs with the first close tag of that id after it.

    Tolerates case changes and spaces inside tags; a close without an open is ignored, an open without a
    close loses the span. Only marker tags are removed; any other text (other tags included) stays."""

    name = "tag"
    _RE = re.compile(r"<\s{0,3}(/?)\s{0,3}e\s{0,3}(\d{1,9})\s{0,3}/?\s{0,3}>", re.IGNORECASE)

    def _open(self, i: int) -> str:
        return f"<e{i}>"

    def _close(self, i: int) -> str:
        return f"</e{i}>"

    def _scan(self, marked: str) -> list[_Marker]:
        return [
            _Marker(m.start(), m.end(), "close" if m.group(1) else "open", _ref(m.group(2)))
            for m in self._RE.finditer(marked)
        ]

    def _pair(self, markers: list[_Marker], n: int) -> list[_Pair]:
        pairs: list[_Pair] = []
        used: set[int] = set()
        for k, m in enumerate(markers):
            if m.kind != "open" or m.ref is None or m.ref >= n:
                continue
            close = next(
                (
                    j
                    for j in range(k + 1, len(markers))
                    if j not in used and markers[j].kind == "close" and markers[j].ref == m.ref
                ),
                None,
            )
            if close is not None:
                used.add(close)
                pairs.append(_Pair(k, close, m.ref))
        return pairs


class HtmlCodec(_BaseCodec):
    """``<span id="e{i}">entity</span>`` with HTML-escaped text, for Apertium's HTML format.

    Closing tags carry no id, so they are matched with a stack; tolerates case changes, spaces and extra
    attributes inside tags. The first completed pair of an id wins."""

    name = "html"
    _RE = re.compile(
        r"<\s{0,3}span\b[^<>]{0,200}?\bid\s{0,3}=\s{0,3}[\"']?\s{0,3}e\s{0,3}(\d{1,9})\s{0,3}[\"']?[^<>]{0,200}>"
        r"|<\s{0,3}(/)\s{0,3}span\s{0,3}>",
        re.IGNORECASE,
    )

    def _open(self, i: int) -> str:
        return f'<span id="e{i}">'

    def _close(self, i: int) -> str:
        return "</span>"

    def _escape(self, text: str) -> str:
        return html.escape(text, quote=False)

    def _unescape(self, text: str) -> str:
        return html.unescape(text)

    def _scan(self, marked: str) -> list[_Marker]:
        return [
            _Marker(m.start(), m.end(), "close" if m.group(2) else "open", _ref(m.group(1)))
            for m in self._RE.finditer(marked)
        ]

    def _pair(self, markers: list[_Marker], n: int) -> list[_Pair]:
        pairs: list[_Pair] = []
        stack: list[int] = []
        for k, m in enumerate(markers):
            if m.kind == "open":
                stack.append(k)
            elif stack:
                o = stack.pop()
                ref = markers[o].ref
                if ref is not None and ref < n:
                    pairs.append(_Pair(o, k, ref))
        return pairs


class BracketCodec(_BaseCodec):
    """``[ entity ]``, type-agnostic (EasyProject style) for off-the-shelf MT models and LLMs.

    Decode keeps the innermost balanced pairs (stray brackets are removed), then identifies each segment
    with a source span: first by content (rapidfuzz ratio of the normalized texts >= 80, best first; needs
    `Span.text` on the source spans; equal scores go by position), then by elimination (remaining segments in
    text order get the remaining source spans in source order, i.e. by `Span.start`). Extra segments are
    dropped. Full-width ［ ］ count too.
    Encode writes a space on the inner side of each bracket; decode removes the whitespace just inside."""

    name = "bracket"
    _eat_inner_space = True
    _RE = re.compile(r"[\[\]［］]")

    def _open(self, i: int) -> str:
        return "[ "

    def _close(self, i: int) -> str:
        return " ]"

    def _scan(self, marked: str) -> list[_Marker]:
        return [
            _Marker(m.start(), m.end(), "open" if m.group() in "[［" else "close", None)
            for m in self._RE.finditer(marked)
        ]

    def _pair(self, markers: list[_Marker], n: int) -> list[_Pair]:
        pairs: list[_Pair] = []
        stack: list[list[int]] = []  # [marker index, has a pair inside]
        for k, m in enumerate(markers):
            if m.kind == "open":
                stack.append([k, 0])
            elif stack:
                o, nested = stack.pop()
                if stack:
                    stack[-1][1] = 1
                if not nested:  # innermost pair wins
                    pairs.append(_Pair(o, k, None))
        pairs.sort(key=lambda p: p.open)
        return pairs

    def _identify(self, candidates: list[_Candidate], clean: str, source: Sequence[Span]) -> None:
        seg_keys = [_fold(clean[c.start : c.end]) for c in candidates]
        src_keys = [_fold(s.text) for s in source]
        scored: list[tuple[float, int, int]] = []
        for j, sk in enumerate(seg_keys):
            if not sk:
                continue
            for i, tk in enumerate(src_keys):
                if tk:
                    score = fuzz.ratio(sk, tk)
                    if score >= BRACKET_MATCH_THRESHOLD:
                        scored.append((score, j, i))
        # source spans in their text order: ties (identical texts) go to the segment in the same position
        src_order = sorted(range(len(source)), key=lambda i: (source[i].start, i))
        rank = {i: r for r, i in enumerate(src_order)}
        scored.sort(key=lambda t: (-t[0], t[1], rank[t[2]]))
        free_src = set(range(len(source)))
        for _, j, i in scored:
            if candidates[j].ref is None and i in free_src:
                candidates[j].ref = i
                free_src.remove(i)
        remaining = [i for i in src_order if i in free_src]
        for c in candidates:  # candidates are in text order
            if c.ref is None and remaining:
                c.ref = remaining.pop(0)


_CODECS: dict[str, type[_BaseCodec]] = {c.name: c for c in (SlotCodec, TagCodec, HtmlCodec, BracketCodec)}


def codec_names() -> list[str]:
    """The names `get_codec` knows."""
    return sorted(_CODECS)


def get_codec(name: str) -> MarkerCodec:
    """A codec by name: "slot", "tag", "html" or "bracket"."""
    try:
        return _CODECS[name]()
    except KeyError:
        raise ValueError(f"unknown marker codec {name!r}; known: {', '.join(codec_names())}") from None
