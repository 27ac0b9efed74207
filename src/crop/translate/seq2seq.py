"""What the neural seq2seq engines (transformers, CTranslate2) share: model families and their language codes,
sentencepiece pieces with slot markers kept whole, batches sorted by length under a token budget, plain and
labeled (n-best) translation over one `generate` primitive.

Families: M2M100 (`__es__` tokens, the CROP paper's model), NLLB (FLORES-200 codes such as `spa_Latn`), Marian
(one pair per model, `>>spa<<` target tokens in multi-target models) and any other seq2seq model (no language
tokens). The engines talk in pieces: a source sentence becomes `[src_lang] pieces </s>`, the decoder is primed
with `[tgt_lang]`, and output pieces become text again with the slot tokens kept in place.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from crop.langcodes import to_iso1, to_iso3
from crop.markers import get_codec
from crop.translate.base import UnsupportedPair
from crop.translate.labeled import translate_labeled_with_codec
from crop.types import LabeledItem, LabeledResult

log = logging.getLogger(__name__)

SLOT_RE = re.compile(r"__SLOT\d+__")
#: how many slot tokens an engine adds to a tokenizer that lacks them (CROP never marks more entities)
DEFAULT_SLOTS = 32

# ISO 639-1 -> the FLORES-200 code NLLB uses where the ISO 639-3 code alone is ambiguous or not the one NLLB took
_NLLB_PREFERRED = {
    "zh": "zho_Hans", "sw": "swh_Latn", "ar": "arb_Arab", "fa": "pes_Arab", "lv": "lvs_Latn", "ms": "zsm_Latn",
    "no": "nob_Latn", "nb": "nob_Latn", "uz": "uzn_Latn", "mn": "khk_Cyrl", "sq": "als_Latn", "et": "est_Latn",
    "ku": "kmr_Latn", "ps": "pbt_Arab", "ne": "npi_Deva", "or": "ory_Orya", "qu": "quy_Latn", "az": "azj_Latn",
}
_FLORES_RE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_M2M_RE = re.compile(r"^__([a-z]{2,3})__$")
_MARIAN_RE = re.compile(r"^>>([a-z]{2,3}(?:_[A-Za-z]+)?)<<$")


@dataclass
class Hypothesis:
    pieces: list[str]
    score: float


class ModelFamily:
    """Language tokens of one family of seq2seq models, found in the model's vocabulary (once: a vocabulary
    has up to a few hundred thousand pieces)."""

    name = "generic"
    token_re: re.Pattern[str] | None = None  # the family's language tokens

    def __init__(self, vocab: set[str], pair: tuple[str, str] | None = None) -> None:
        self.vocab = vocab
        self.pair = pair  # the one pair of a single-pair model, when known
        re_ = self.token_re
        self.lang_tokens = sorted(t for t in vocab if re_.match(t)) if re_ is not None else []

    def languages(self) -> list[str]:
        return sorted(set(self.pair)) if self.pair else []

    def pairs(self) -> list[tuple[str, str]]:
        if self.pair:
            return [self.pair]
        langs = self.languages()
        return [(a, b) for a in langs for b in langs if a != b]

    def source_prefix(self, src: str, tgt: str) -> list[str]:
        return []

    def target_prefix(self, tgt: str) -> list[str]:
        return []

    def check(self, src: str, tgt: str) -> None:
        if self.pair and (to_iso1(src), to_iso1(tgt)) != self.pair:
            raise UnsupportedPair(f"this {self.name} model translates {self.pair[0]}->{self.pair[1]}, "
                                  f"not {src}->{tgt}")


class _LanguageTokenFamily(ModelFamily):
    """Families that start the source with its language token and prime the decoder with the target's."""

    def code(self, lang: str) -> str:
        """The model's token for an ISO code (UnsupportedPair when it has none)."""
        raise NotImplementedError

    def source_prefix(self, src: str, tgt: str) -> list[str]:
        return [self.code(src)]

    def target_prefix(self, tgt: str) -> list[str]:
        return [self.code(tgt)]

    def check(self, src: str, tgt: str) -> None:
        self.code(src), self.code(tgt)


class M2M100Family(_LanguageTokenFamily):
    name = "m2m100"
    token_re = _M2M_RE

    def languages(self) -> list[str]:
        return [t[2:-2] for t in self.lang_tokens]

    def code(self, lang: str) -> str:
        token = f"__{to_iso1(lang)}__"
        if token not in self.vocab:
            raise UnsupportedPair(f"M2M100 model has no language token {token} for {lang!r}; it has "
                                  f"{len(self.languages())} languages: {', '.join(self.languages()[:20])}...")
        return token


class NllbFamily(_LanguageTokenFamily):
    name = "nllb"
    token_re = _FLORES_RE

    def languages(self) -> list[str]:
        return sorted({to_iso1(c) for c in self.lang_tokens})

    def code(self, lang: str) -> str:
        if _FLORES_RE.match(lang) and lang in self.vocab:  # already a FLORES code
            return lang
        iso1 = to_iso1(lang)
        preferred = _NLLB_PREFERRED.get(iso1)
        if preferred and preferred in self.vocab:
            return preferred
        iso3 = to_iso3(lang)
        found = [c for c in self.lang_tokens if c.startswith(iso3 + "_")]
        if not found:
            raise UnsupportedPair(f"NLLB model has no FLORES-200 code for {lang!r} (looked for {iso3}_*)")
        latn = [c for c in found if c.endswith("_Latn")]
        return (latn or found)[0]


class MarianFamily(ModelFamily):
    """One source language; one target language, or several chosen with a `>>xxx<<` token."""

    name = "marian"
    token_re = _MARIAN_RE

    def _targets(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for t in self.lang_tokens:
            out.setdefault(to_iso1(t[2:-2]), t)
        return out

    def pairs(self) -> list[tuple[str, str]]:
        targets = self._targets()
        if self.pair and targets:
            return [(self.pair[0], t) for t in sorted(targets)]
        return super().pairs()

    def source_prefix(self, src: str, tgt: str) -> list[str]:
        targets = self._targets()
        return [targets[to_iso1(tgt)]] if targets and to_iso1(tgt) in targets else []

    def check(self, src: str, tgt: str) -> None:
        if (to_iso1(src), to_iso1(tgt)) not in self.pairs() and self.pair:
            raise UnsupportedPair(f"this Marian model translates {', '.join(f'{a}->{b}' for a, b in self.pairs())}"
                                  f", not {src}->{tgt}")


def detect_family(tokenizer: Any, vocab: set[str], name_or_path: str,
                  pair: tuple[str, str] | None = None) -> ModelFamily:
    cls = type(tokenizer).__name__.lower()
    if "m2m100" in cls or "__en__" in vocab:
        return M2M100Family(vocab)
    if "nllb" in cls or "eng_Latn" in vocab:
        return NllbFamily(vocab)
    if "marian" in cls:
        return MarianFamily(vocab, pair or pair_from_name(name_or_path))
    return ModelFamily(vocab, pair or pair_from_name(name_or_path))


def pair_from_name(name: str) -> tuple[str, str] | None:
    """`Helsinki-NLP/opus-mt-en-es` -> (en, es)."""
    m = re.search(r"(?:^|[-_/])([a-z]{2,3})-([a-z]{2,3})/?$", name.rstrip("/"))
    return (to_iso1(m.group(1)), to_iso1(m.group(2))) if m else None


def token_batches(lengths: Sequence[int], max_tokens: int, max_sentences: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first, so that no batch holds more than
    `max_sentences` sentences nor more than `max_tokens` tokens once padded (a longer sentence goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        width = max(longest, lengths[i])
        if current and ((len(current) + 1) * width > max_tokens or len(current) >= max_sentences):
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
        longest = width
    if current:
        batches.append(current)
    return batches


class PieceCodec:
    """Text <-> sentencepiece pieces through a Hugging Face tokenizer, with `__SLOT{i}__` kept as whole pieces
    (the LST format: slot tokens are vocabulary entries, never split)."""

    def __init__(self, tokenizer: Any, special: set[str]) -> None:
        self.tokenizer = tokenizer
        self.special = special  # pieces dropped from outputs (eos, pad, language codes ...)

    def pieces(self, text: str) -> list[str]:
        out: list[str] = []
        pos = 0
        for m in SLOT_RE.finditer(text):
            if text[pos:m.start()].strip():
                out += self.tokenizer.tokenize(text[pos:m.start()].strip())
            out.append(m.group(0))
            pos = m.end()
        if text[pos:].strip():
            out += self.tokenizer.tokenize(text[pos:].strip())
        return out

    def text(self, pieces: Sequence[str]) -> str:
        parts: list[str] = []
        segment: list[str] = []
        for p in pieces:
            if p in self.special:
                continue
            if SLOT_RE.fullmatch(p):
                if segment:
                    parts.append(self.tokenizer.convert_tokens_to_string(segment).strip())
                    segment = []
                parts.append(p)
            else:
                segment.append(p)
        if segment:
            parts.append(self.tokenizer.convert_tokens_to_string(segment).strip())
        return " ".join(p for p in parts if p)


class Seq2SeqTranslator(ABC):
    """Plain and labeled translation over an engine's `_generate(source pieces, target prefixes)`.

    `markers`: "slot" for an LST checkpoint (slot tokens in its vocabulary), "bracket" for an off-the-shelf
    model, "auto" (slot when the vocabulary has `__SLOT0__`). `n_best` hypotheses come back from labeled
    translation (the projector tries them in turn); `beam_size` is raised to `n_best` when smaller. Outputs are
    cut at `max_length` pieces, at `length_ratio` times the longest source of the batch (plus 10), and within
    the decoder's positions, whichever comes first: a model that does not stop cannot run away.
    """

    name = "seq2seq"

    def __init__(self, model: str, beam_size: int = 4, n_best: int = 1, max_length: int = 256,
                 max_batch_tokens: int = 4096, max_batch_size: int = 64, markers: str = "auto",
                 pair: tuple[str, str] | None = None, length_ratio: float = 3.0) -> None:
        if markers not in ("auto", "slot", "bracket"):
            raise ValueError(f"markers must be auto, slot or bracket, not {markers!r}")
        if beam_size < 1 or n_best < 1 or max_length < 1:
            raise ValueError("beam_size, n_best and max_length must be positive")
        self.model_name = model
        self.beam_size = max(beam_size, n_best)
        self.n_best = n_best
        self.max_length = max_length
        self.length_ratio = length_ratio
        self.max_positions: int | None = None  # of the decoder, when the engine knows it
        self.generated_pieces = 0  # pieces decoded so far (the hypotheses returned), for throughput figures
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self._markers = markers
        self._pair = pair
        self.family: ModelFamily = ModelFamily(set())
        self._pairs: list[tuple[str, str]] = []
        self.codec: PieceCodec

    def _setup(self, tokenizer: Any, vocab: set[str]) -> None:
        """Call once the engine knows its tokenizer and vocabulary (the pieces it can read and write)."""
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.family = detect_family(tokenizer, vocab, self.model_name, self._pair)
        self._pairs = self.family.pairs()  # asked on every request by the services
        special = {t for t in (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) if t}
        special |= set(self.family.lang_tokens)
        self.codec = PieceCodec(tokenizer, special)
        has_slots = "__SLOT0__" in vocab
        self.markers = "slot" if self._markers == "auto" and has_slots else (
            "bracket" if self._markers == "auto" else self._markers)
        self._marker_codec = get_codec(self.markers)

    # -- the protocol ----------------------------------------------------------------------------------------

    def pairs(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def translate(self, texts: Sequence[str], src: str, tgt: str) -> list[str]:
        return [h[0] for h in self.translate_n(texts, src, tgt, 1)]

    def translate_labeled(self, items: Sequence[LabeledItem], src: str, tgt: str) -> list[LabeledResult]:
        return translate_labeled_with_codec(items, self._marker_codec,
                                            lambda marked: self.translate_n(marked, src, tgt, self.n_best))

    def source_pieces(self, text: str, src: str, tgt: str) -> list[str]:
        """The encoder's input for `text`: `[src_lang] pieces </s>` in the family's format (what fine-tuning
        trains on, so that training and inference read the same sequences)."""
        return self.family.source_prefix(src, tgt) + self.codec.pieces(text) + self._eos_pieces()

    def target_pieces(self, text: str, tgt: str) -> list[str]:
        """The decoder's labels for a reference `text`: `[tgt_lang] pieces </s>`."""
        return self.family.target_prefix(tgt) + self.codec.pieces(text) + self._eos_pieces()

    def _fit(self, source: list[str]) -> list[str]:
        """`source` cut to the encoder's positions (keeping its end of sentence): a degenerate forward translation
        can come back longer than the model reads."""
        if self.max_positions is None or len(source) <= self.max_positions:
            return source
        log.warning("source cut to the model's positions", extra={"pieces": len(source),
                                                                  "max_positions": self.max_positions})
        eos = self._eos_pieces()
        return source[:self.max_positions - len(eos)] + eos

    def _eos_pieces(self) -> list[str]:
        return [self.tokenizer.eos_token] if self.tokenizer.eos_token else []

    def translate_n(self, texts: Sequence[str], src: str, tgt: str, n: int) -> list[list[str]]:
        """The `n` best translations of each text, best first."""
        self.family.check(src, tgt)
        sources = [self._fit(self.source_pieces(t, src, tgt)) for t in texts]
        target_prefix = self.family.target_prefix(tgt)
        out: list[list[str]] = [[] for _ in texts]
        todo = [i for i, t in enumerate(texts) if t.strip()]
        for i, t in enumerate(texts):
            if not t.strip():
                out[i] = [""] * n
        for batch in token_batches([len(sources[i]) for i in todo], self.max_batch_tokens, self.max_batch_size):
            idx = [todo[b] for b in batch]
            limit = min(self.max_length, int(self.length_ratio * max(len(sources[i]) for i in idx)) + 10)
            if self.max_positions:
                limit = max(1, min(limit, self.max_positions - len(target_prefix) - 2))
            hyps = self._generate([sources[i] for i in idx], target_prefix, n, max(self.beam_size, n), limit)
            for i, h in zip(idx, hyps, strict=True):
                out[i] = [self.codec.text(x.pieces) for x in h[:n]]
                self.generated_pieces += sum(len(x.pieces) for x in h[:n])
        return out

    @abstractmethod
    def _generate(self, sources: list[list[str]], target_prefix: list[str], n: int, beam_size: int,
                  max_new: int) -> list[list[Hypothesis]]:
        """Decode a batch of source piece sequences; for each, `n` hypotheses (at most `max_new` pieces after
        the target prefix), best first."""
