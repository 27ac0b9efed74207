"""Apertium: rule-based, offline, CPU. One `apertium` process per batch, never per sentence.

Every sentence travels as its own HTML block (`<p>…</p>`) in Apertium's HTML format, so sentences never merge
(plain-text mode joins lines without final punctuation) and inline tags travel with the words they wrap: that is
how labeled translation (entity markers) and word alignment (one tag per source word) are carried.
"""

from __future__ import annotations

import html
import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from functools import cached_property

from crop.langcodes import to_iso1, to_iso3
from crop.markers import get_codec
from crop.text import detokenize, tokenize
from crop.translate.base import UnsupportedPair
from crop.types import AlignedTranslation, LabeledItem, LabeledResult

log = logging.getLogger(__name__)

_BLOCK_RE = re.compile(r"<p>(.*?)</p>", re.DOTALL | re.IGNORECASE)
# '#' marks a word Apertium could not generate, '@' one its transfer could not translate ('*', unknown words,
# is removed by -u); a mark is dropped only where the source did not have that character there.
_MARK_RE = re.compile(r"(?<![\w#@])[#@](?=\w)")
_WORD_TAG_RE = re.compile(r"<\s*span\s+id\s*=\s*\"?w(\d+)\"?\s*>|<\s*/\s*span\s*>", re.IGNORECASE)
_WS_RE = re.compile(r"\s+")


class ApertiumError(RuntimeError):
    pass


class ApertiumTranslator:
    name = "apertium"

    def __init__(self, binary: str = "apertium", modes_dir: str | None = None, timeout: float = 3600.0) -> None:
        path = shutil.which(binary)
        if path is None:
            raise ApertiumError(
                f"{binary!r} not found: install Apertium (Debian: apt-get install apertium apertium-eng-spa "
                "apertium-eng-cat apertium-en-gl)"
            )
        self.binary = path
        self.modes_dir = modes_dir
        self.timeout = timeout
        self._codec = get_codec("html")

    # -- language pairs -------------------------------------------------------------------------------------

    @cached_property
    def _modes(self) -> list[str]:
        cmd = [self.binary] + (["-d", self.modes_dir] if self.modes_dir else []) + ["-l"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return [m.strip() for m in out.stdout.split() if m.strip()]

    def pairs(self) -> list[tuple[str, str]]:
        pairs = []
        for mode in self._modes:
            src, _, tgt = mode.partition("-")
            if tgt and "_" not in tgt:
                pairs.append((to_iso1(src), to_iso1(tgt)))
        return sorted(set(pairs))

    def mode(self, src: str, tgt: str) -> str:
        """The installed Apertium mode for src -> tgt, whichever code style the pair's package uses."""
        for a in dict.fromkeys((to_iso3(src), to_iso1(src), src)):
            for b in dict.fromkeys((to_iso3(tgt), to_iso1(tgt), tgt)):
                if f"{a}-{b}" in self._modes:
                    return f"{a}-{b}"
        installed = ", ".join(f"{a}-{b}" for a, b in self.pairs()) or "none"
        raise UnsupportedPair(
            f"Apertium has no {src}->{tgt} pair installed (installed: {installed}); on Debian the pairs are "
            f"packages such as apertium-{to_iso3(src)}-{to_iso3(tgt)} or apertium-{to_iso3(tgt)}-{to_iso3(src)}"
        )

    # -- running --------------------------------------------------------------------------------------------

    def _run(self, mode: str, blocks: Sequence[str]) -> list[str]:
        """Translate HTML blocks (already escaped) with one process; returns each block's output HTML."""
        if not blocks:
            return []
        payload = "".join(f"<p>{_WS_RE.sub(' ', b)}</p>\n" for b in blocks)
        cmd = [self.binary, "-u", "-f", "html"] + (["-d", self.modes_dir] if self.modes_dir else []) + [mode]
        proc = subprocess.run(cmd, input=payload, capture_output=True, text=True, timeout=self.timeout)
        if proc.returncode != 0:
            raise ApertiumError(f"apertium {mode} failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}")
        outs = _BLOCK_RE.findall(proc.stdout)
        if len(outs) != len(blocks):
            if len(blocks) == 1:
                raise ApertiumError(f"apertium {mode} returned no block for {blocks[0][:80]!r}")
            # a block structure the deformatter did not keep: fall back to halves so that nothing is lost
            log.warning("apertium block count mismatch", extra={"mode": mode, "blocks": len(blocks)})
            mid = len(blocks) // 2
            return self._run(mode, blocks[:mid]) + self._run(mode, blocks[mid:])
        return outs

    @staticmethod
    def _clean(out: str, source: str) -> str:
        text = _MARK_RE.sub(lambda m: m.group() if m.group() in source else "", out)
        return text

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        mode = self.mode(src, tgt)
        outs = self._run(mode, [html.escape(t, quote=False) for t in texts])
        return [_WS_RE.sub(" ", html.unescape(self._clean(o, t))).strip() for o, t in zip(outs, texts, strict=True)]

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        mode = self.mode(src, tgt)
        blocks = [self._codec.encode(it.text, it.spans) for it in items]
        outs = self._run(mode, blocks)
        return [
            self._codec.decode(self._clean(o, it.text), it.spans) for o, it in zip(outs, items, strict=True)
        ]

    def translate_aligned(
        self, sentences: Sequence[Sequence[str]], src: str, tgt: str
    ) -> list[AlignedTranslation]:
        """Translate tokenized sentences with every token wrapped in its own inline tag; the tags come back
        around the words each token produced, which aligns output words to source tokens."""
        mode = self.mode(src, tgt)
        blocks = []
        for tokens in sentences:
            text, offsets = detokenize(tokens, src)
            parts, pos = [], 0
            for i, (s, e) in enumerate(offsets):
                parts.append(html.escape(text[pos:s], quote=False))
                parts.append(f'<span id="w{i}">{html.escape(text[s:e], quote=False)}</span>')
                pos = e
            blocks.append("".join(parts))
        results = []
        for out, tokens in zip(self._run(mode, blocks), sentences, strict=True):
            results.append(_parse_aligned(self._clean(out, " ".join(tokens)), tgt))
        return results


def _parse_aligned(out: str, lang: str) -> AlignedTranslation:
    chars: list[str] = []
    owner: list[int] = []
    stack: list[int] = []
    pos = 0
    for m in _WORD_TAG_RE.finditer(out):
        piece = html.unescape(out[pos : m.start()])
        chars.append(piece)
        owner.extend([stack[-1] if stack else -1] * len(piece))
        if m.group(1) is not None:
            stack.append(int(m.group(1)))
        elif stack:
            stack.pop()
        pos = m.end()
    piece = html.unescape(out[pos:])
    chars.append(piece)
    owner.extend([stack[-1] if stack else -1] * len(piece))
    raw = "".join(chars)
    # collapse whitespace while keeping each character's owner
    text_chars, text_owner = [], []
    for ch, o in zip(raw, owner, strict=True):
        if ch.isspace():
            if not text_chars or text_chars[-1] == " ":
                continue
            ch = " "
        text_chars.append(ch)
        text_owner.append(o)
    while text_chars and text_chars[-1] == " ":
        text_chars.pop()
        text_owner.pop()
    text = "".join(text_chars)
    tokens, offsets = tokenize(text, lang)
    alignment = [sorted({o for o in text_owner[s:e] if o >= 0}) for s, e in offsets]
    return AlignedTranslation(text=text, tokens=tokens, alignment=alignment)
