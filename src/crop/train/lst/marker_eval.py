"""Marker accuracy of labeled translation (the CROP paper's Table 6) and what the markers cost in BLEU, for any
translation engine.

An evaluation item is a source sentence with phrases (entities, or aligned phrases of LST data), the reference
translation and each phrase's reference translation. The engine translates the source with the phrases marked
(`translate_labeled`: every engine uses its own marker style) and, for BLEU, without markers (`translate`).

The rule, per phrase i:

- kept: the output has a marker pair for i that decoded to a non-empty span (i is not in `lost`);
- exact: kept, and the span's text equals the reference phrase after `normalize_phrase` (NFKC, case-folded,
  accents and surrounding punctuation removed, whitespace collapsed);
- match: exact, or kept with a similarity of at least `threshold` (rapidfuzz `fuzz.ratio`, 0-100, on the
  normalized texts): an inflected or slightly reworded equivalent ("portuguesa" for "portugués") matches, a
  partial span ("John" for "John Smith") or another phrase does not.

Per sentence with at least one phrase: all kept (every phrase kept and no spurious marker pair) and all match
(all kept and every phrase matches). Spurious pairs are the marker pairs of the output beyond one per source
phrase: pieces of a phrase the engine split (`fragments`) and pairs with ids the source does not have (or, for
bracket markers, surplus bracket pairs); stray unpaired markers are not counted.

Two data formats are read, detected per record: the LST JSONL of `crop lst prepare` (`src`, `tgt`, `phrases`
with character offsets) and the parallel gold dev sets (`en_tokens`, `tokens`, `entities` with token spans;
English is the source).
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field, computed_field
from rapidfuzz import fuzz

from crop.io import InputError, PathLike, check_tokens, iter_jsonl, stem
from crop.langcodes import to_iso1
from crop.markers import get_codec
from crop.text import CHAR_LEVEL_LANGS, detokenize, normalize
from crop.translate.base import Translator, UnsupportedPair
from crop.types import LabeledItem, LabeledResult, Span

DEFAULT_THRESHOLD = 80.0

_SLOT = get_codec("slot")  # the CROP format, to show marked sources in the examples

T = TypeVar("T")
R = TypeVar("R")
# a record's two sentences and its phrases' character spans in each (index = marker id)
Sides = tuple[str, str, list[tuple[int, int]], list[tuple[int, int]]]

# ------------------------------------------------------------------------------------------------ items


class EvalItem(BaseModel):
    """One sentence to evaluate: the source with its phrases (`spans[i].text` is phrase i's source text; the
    index is the marker id), the reference translation and each phrase's reference translation."""

    id: str
    src_lang: str
    tgt_lang: str
    source: str
    source_marked: str = Field(description="the source with slot markers, for reading examples")
    reference: str
    spans: list[Span] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=list)

    @property
    def pair(self) -> tuple[str, str]:
        return self.src_lang, self.tgt_lang

    def labeled(self) -> LabeledItem:
        return LabeledItem(text=self.source, spans=self.spans)


def _span_list(value: Any, key: str, limit: int) -> tuple[int, int]:
    if (not isinstance(value, list) or len(value) != 2 or not all(type(v) is int for v in value)
            or not 0 <= value[0] < value[1] <= limit):
        raise ValueError(f"{key} must be [start, end] with 0 <= start < end <= {limit}, not {value!r}")
    return value[0], value[1]


def _text(rec: dict[str, Any], key: str) -> str:
    value = rec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key!r} must be a non-empty string")
    return value


def _lst_sides(rec: dict[str, Any]) -> Sides:
    """Source, target and the phrases' character spans on each side (in slot order) of an LST record."""
    src, tgt = _text(rec, "src"), _text(rec, "tgt")
    phrases = rec.get("phrases", [])
    if not isinstance(phrases, list) or not all(isinstance(p, dict) for p in phrases):
        raise ValueError("'phrases' must be a list of objects")
    slots = [p.get("slot") for p in phrases]
    if not all(type(v) is int for v in slots) or len(set(slots)) != len(slots):
        raise ValueError(f"phrase slots must be distinct integers, not {slots}")
    src_spans, tgt_spans = [], []
    for p in sorted(phrases, key=lambda p: p["slot"]):  # marker ids in slot order
        s = _span_list(p.get("src"), f"phrase {p['slot']} 'src'", len(src))
        t = _span_list(p.get("tgt"), f"phrase {p['slot']} 'tgt'", len(tgt))
        for side, text, (a, b) in (("src", src, s), ("tgt", tgt, t)):
            given = p.get(f"{side}_text")
            if given is not None and given != text[a:b]:
                raise ValueError(f"phrase {p['slot']} {side}_text {given!r} is not {side}[{a}:{b}] = {text[a:b]!r}")
        src_spans.append(s)
        tgt_spans.append(t)
    return src, tgt, src_spans, tgt_spans


def _gold_sides(rec: dict[str, Any], lang: str) -> Sides:
    """English text, target text and the entities' character spans on each side of a gold dev record."""
    en_tokens, tokens = check_tokens(rec.get("en_tokens"), "en_tokens"), check_tokens(rec.get("tokens"), "tokens")
    en, en_offsets = detokenize(en_tokens, "en")
    tgt, tgt_offsets = detokenize(tokens, lang)
    entities = rec.get("entities", [])
    if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
        raise ValueError("'entities' must be a list of objects")
    en_spans, tgt_spans = [], []
    for k, e in enumerate(entities):
        a, b = _span_list(e.get("en"), f"entity {k} 'en'", len(en_tokens))
        c, d = _span_list(e.get("tgt"), f"entity {k} 'tgt'", len(tokens))
        en_spans.append((en_offsets[a][0], en_offsets[b - 1][1]))
        tgt_spans.append((tgt_offsets[c][0], tgt_offsets[d - 1][1]))
    return en, tgt, en_spans, tgt_spans


def _lang(rec: dict[str, Any], key: str, override: str | None) -> str:
    lang = override or rec.get(key)
    if not isinstance(lang, str) or not lang:
        raise ValueError(f"no {key!r} in the record, and no language given for it")
    return lang


def item_from_record(rec: Any, default_id: str, src_lang: str | None = None, tgt_lang: str | None = None,
                     reverse: bool = False) -> EvalItem:
    """An evaluation item from an LST record (has `phrases` or `src`) or a gold dev record (has `en_tokens`).
    `src_lang`/`tgt_lang` override the record's languages (the side written as source, English for the gold
    format); `reverse` then swaps the direction. Raises ValueError on a malformed record."""
    if not isinstance(rec, dict):
        raise ValueError("a record must be a JSON object")
    if "src" in rec or "phrases" in rec:
        a, b, a_spans, b_spans = _lst_sides(rec)
        a_lang, b_lang = _lang(rec, "src_lang", src_lang), _lang(rec, "tgt_lang", tgt_lang)
        labels = ["PHRASE"] * len(a_spans)
    elif "en_tokens" in rec:
        a_lang, b_lang = src_lang or "en", _lang(rec, "lang", tgt_lang)
        a, b, a_spans, b_spans = _gold_sides(rec, b_lang)
        labels = [str(e.get("type", "X")) for e in rec.get("entities", [])]
    else:
        raise ValueError("neither an LST record (src, tgt, phrases) nor a gold dev record (en_tokens, tokens, "
                         "entities)")
    if reverse:
        a_lang, b_lang, a, b, a_spans, b_spans = b_lang, a_lang, b, a, b_spans, a_spans
    spans = [Span(start=s, end=e, label=label, text=a[s:e]) for (s, e), label in zip(a_spans, labels, strict=True)]
    marked = _SLOT.encode(a, spans)  # raises on overlapping phrases, which no marker format can carry
    return EvalItem(id=str(rec.get("id") or default_id), src_lang=to_iso1(a_lang), tgt_lang=to_iso1(b_lang),
                    source=a, source_marked=marked, reference=b, spans=spans, targets=[b[s:e] for s, e in b_spans])


def read_items(path: PathLike, src_lang: str | None = None, tgt_lang: str | None = None, reverse: bool = False,
               limit: int | None = None) -> list[EvalItem]:
    """The evaluation items of a JSONL file (at most `limit`); a malformed record raises `InputError`."""
    items: list[EvalItem] = []
    base = stem(path)
    for lineno, rec in iter_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        try:
            items.append(item_from_record(rec, f"{base}-{lineno:06d}", src_lang, tgt_lang, reverse))
        except ValueError as exc:
            raise InputError(str(exc), path, lineno) from None
    return items


def group_by_pair(items: Iterable[EvalItem]) -> dict[tuple[str, str], list[EvalItem]]:
    groups: dict[tuple[str, str], list[EvalItem]] = {}
    for it in items:
        groups.setdefault(it.pair, []).append(it)
    return groups


# ------------------------------------------------------------------------------------------------ scoring


class Verdict(StrEnum):
    lost = "lost"  # no marker pair, or an empty span
    wrong = "wrong"  # a span that is not the reference phrase's equivalent
    similar = "similar"  # an equivalent, not identical (similarity >= threshold)
    exact = "exact"


def normalize_phrase(text: str) -> str:
    """Comparison key of a phrase: NFKC, case-folded, accents removed, whitespace collapsed, punctuation
    removed from both ends."""
    key = normalize(" ".join(text.split()))
    start, end = 0, len(key)
    while start < end and (key[start] == " " or unicodedata.category(key[start]).startswith("P")):
        start += 1
    while end > start and (key[end - 1] == " " or unicodedata.category(key[end - 1]).startswith("P")):
        end -= 1
    return key[start:end]


class PhraseScore(BaseModel):
    reference: str
    output: str | None = Field(description="the span the engine's markers delimit; None when lost")
    similarity: float = Field(description="rapidfuzz ratio of the normalized texts, 0-100")
    verdict: Verdict

    @property
    def kept(self) -> bool:
        return self.verdict != Verdict.lost

    @property
    def matched(self) -> bool:
        return self.verdict in (Verdict.similar, Verdict.exact)


def judge_phrase(output: str | None, reference: str, threshold: float = DEFAULT_THRESHOLD) -> PhraseScore:
    """The verdict on one phrase: `output` is the text between the engine's markers (None when lost)."""
    if output is None or not output.strip():
        return PhraseScore(reference=reference, output=None, similarity=0.0, verdict=Verdict.lost)
    got, want = normalize_phrase(output), normalize_phrase(reference)
    similarity = 100.0 if got == want else fuzz.ratio(got, want)
    verdict = Verdict.exact if got == want else Verdict.similar if similarity >= threshold else Verdict.wrong
    return PhraseScore(reference=reference, output=output, similarity=similarity, verdict=verdict)


_RAW_CODECS = (  # how to tell an engine's marker style from its output, most specific first
    ("html", re.compile(r"<\s*span\b[^<>]*\bid\s*=\s*[\"']?\s*e\s*\d", re.IGNORECASE)),
    ("tag", re.compile(r"<\s*/?\s*e\s*\d+\s*/?\s*>", re.IGNORECASE)),
    ("slot", re.compile(r"_{1,2}\s*slot\s*\d|slot\s*\d+\s*_", re.IGNORECASE)),
    ("bracket", re.compile(r"[\[\]［］]")),
)
_EXTRA_IDS = 32  # marker ids beyond the source's that are looked for


def count_spurious(result: LabeledResult, source: Sequence[Span]) -> int:
    """Marker pairs in the engine's output beyond one per source phrase. The output (`raw`) is decoded again
    with placeholder phrases after the real ones, which collect the pairs of unknown ids (or surplus brackets);
    without markers in `raw`, the engine's `fragments` are what is known."""
    style = next((name for name, pattern in _RAW_CODECS if pattern.search(result.raw)), None)
    if style is None:
        return len(result.fragments)
    far = 2**62  # placeholders sort after every real phrase (bracket markers are assigned in source order)
    placeholders = [Span(start=far, end=far, label="") for _ in range(_EXTRA_IDS)]
    redecoded = get_codec(style).decode(result.raw, [*source, *placeholders])
    unknown = sum(1 for s in redecoded.spans if s.ref is not None and s.ref >= len(source))
    return unknown + len(redecoded.fragments)


class SentenceScore(BaseModel):
    phrases: list[PhraseScore]
    spurious: int = Field(description="marker pairs beyond one per source phrase")

    @property
    def kept(self) -> int:
        return sum(p.kept for p in self.phrases)

    @property
    def exact(self) -> int:
        return sum(p.verdict == Verdict.exact for p in self.phrases)

    @property
    def matched(self) -> int:
        return sum(p.matched for p in self.phrases)

    @property
    def all_kept(self) -> bool:
        return self.kept == len(self.phrases) and self.spurious == 0

    @property
    def all_match(self) -> bool:
        return self.all_kept and self.matched == len(self.phrases)

    @property
    def badness(self) -> int:
        """How far from perfect: phrases not matched plus spurious pairs (to pick the worst examples)."""
        return len(self.phrases) - self.matched + self.spurious


def score_sentence(item: EvalItem, result: LabeledResult, threshold: float = DEFAULT_THRESHOLD) -> SentenceScore:
    """Judge each phrase of `item` in the engine's labeled translation `result`."""
    found = {s.ref: s for s in result.spans if s.ref is not None and s.ref not in result.lost}
    phrases = []
    for i, reference in enumerate(item.targets):
        span = found.get(i)
        output = (span.text or result.text[span.start:span.end]) if span is not None else None
        phrases.append(judge_phrase(output, reference, threshold))
    return SentenceScore(phrases=phrases, spurious=count_spurious(result, item.spans))


# ------------------------------------------------------------------------------------------------ BLEU


def bleu_tokenizer(lang: str) -> str:
    """sacrebleu's tokenizer for a target language: `zh` for Chinese, `char` for the other scripts written
    without spaces (Japanese, Thai, ...; `ja-mecab` would need MeCab), its default `13a` otherwise."""
    lang = to_iso1(lang)
    if lang == "zh":
        return "zh"
    return "char" if lang in CHAR_LEVEL_LANGS else "13a"


class Quality(BaseModel):
    bleu: float
    chrf: float


def corpus_quality(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "13a") -> Quality:
    """sacrebleu's corpus BLEU (with `tokenize`) and chrF of the hypotheses against one reference each."""
    try:
        import sacrebleu
    except ImportError as exc:
        raise RuntimeError("BLEU needs sacrebleu: pip install 'crop-ner[lst]'") from exc
    hyps, refs = list(hypotheses), [list(references)]
    return Quality(bleu=sacrebleu.corpus_bleu(hyps, refs, tokenize=tokenize).score,
                   chrf=sacrebleu.corpus_chrf(hyps, refs).score)


# ------------------------------------------------------------------------------------------------ report


class Example(BaseModel):
    """A sentence the engine got wrong, for inspection."""

    id: str
    source_marked: str
    output: str = Field(description="the engine's output with its own markers")
    reference: str
    phrases: list[PhraseScore]
    spurious: int


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class EngineReport(BaseModel):
    """Marker accuracy and translation quality of one engine on one language pair."""

    engine: str
    src_lang: str
    tgt_lang: str
    threshold: float
    sentences: int
    sentences_with_phrases: int = Field(description="the denominator of the sentence shares")
    phrases: int
    kept: int
    exact: int
    matched: int
    sentences_all_kept: int
    sentences_all_match: int
    spurious: int = Field(description="marker pairs beyond one per source phrase, all sentences")
    bleu_tokenize: str
    bleu_labeled: float = Field(description="BLEU of the labeled translation, markers removed")
    bleu_plain: float = Field(description="BLEU of the plain translation of the unmarked source")
    chrf_labeled: float
    chrf_plain: float
    seconds_labeled: float
    seconds_plain: float
    worst: list[Example] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kept_share(self) -> float | None:
        return _share(self.kept, self.phrases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def exact_share(self) -> float | None:
        return _share(self.exact, self.phrases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def match_share(self) -> float | None:
        return _share(self.matched, self.phrases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def all_kept_share(self) -> float | None:
        return _share(self.sentences_all_kept, self.sentences_with_phrases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def all_match_share(self) -> float | None:
        return _share(self.sentences_all_match, self.sentences_with_phrases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def seconds(self) -> float:
        return self.seconds_labeled + self.seconds_plain


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}"


TABLE_HEADER = ("engine", "pair", "sentences", "phrases", "kept %", "exact %", "match %", "sent. all kept %",
                "sent. all match %", "spurious", "BLEU labeled", "BLEU plain", "seconds")


class MarkerEvalReport(BaseModel):
    """Engines compared on the same data: one `EngineReport` per engine and language pair."""

    data: str = ""
    threshold: float
    engines: list[EngineReport]

    def rows(self) -> list[tuple[str, ...]]:
        """One row per engine and pair, the columns of `TABLE_HEADER`."""
        return [(r.engine, f"{r.src_lang}-{r.tgt_lang}", str(r.sentences), str(r.phrases), _pct(r.kept_share),
                 _pct(r.exact_share), _pct(r.match_share), _pct(r.all_kept_share), _pct(r.all_match_share),
                 str(r.spurious), f"{r.bleu_labeled:.1f}", f"{r.bleu_plain:.1f}", f"{r.seconds:.1f}")
                for r in self.engines]

    def table(self) -> str:
        rows = [TABLE_HEADER, *self.rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(TABLE_HEADER))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"match: exact after normalization, or similarity >= {self.threshold:g}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ running


class EvalProgress(Protocol):
    """Told about the work as it goes (the CLI draws a progress bar)."""

    def start(self, engine: str, pair: tuple[str, str], total: int) -> None: ...

    def advance(self, n: int) -> None: ...


def check_pair(translator: Translator, engine: str, src: str, tgt: str) -> None:
    """Raise `UnsupportedPair` when the engine lists the pairs it serves and src->tgt is not among them."""
    served = sorted({(to_iso1(a), to_iso1(b)) for a, b in translator.pairs()})
    if served and (src, tgt) not in served:
        shown = ", ".join(f"{a}->{b}" for a, b in served[:12]) + (", ..." if len(served) > 12 else "")
        raise UnsupportedPair(f"{engine} does not translate {src}->{tgt} (it serves {shown})")


def _batched(items: Sequence[T], size: int, run: Callable[[list[T]], list[R]],
             progress: EvalProgress | None) -> list[R]:
    out: list[R] = []
    for k in range(0, len(items), size):
        batch = list(items[k:k + size])
        results = run(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"the engine returned {len(results)} translations for {len(batch)} sentences")
        out += results
        if progress is not None:
            progress.advance(len(batch))
    return out


def evaluate_engine(translator: Translator, items: Sequence[EvalItem], engine: str,
                    threshold: float = DEFAULT_THRESHOLD, batch_size: int = 32, examples: int = 5,
                    progress: EvalProgress | None = None) -> EngineReport:
    """Marker accuracy, BLEU and chrF of one engine on items of one language pair (`engine` names it in the
    report); keeps the `examples` worst sentences."""
    pairs = {it.pair for it in items}
    if len(pairs) != 1:
        raise ValueError(f"evaluate_engine needs items of one language pair, not {sorted(pairs)}")
    src, tgt = pairs.pop()
    if progress is not None:
        progress.start(engine, (src, tgt), 2 * len(items))
    t0 = time.perf_counter()
    labeled = _batched(items, batch_size,
                       lambda b: translator.translate_labeled([it.labeled() for it in b], src, tgt), progress)
    t1 = time.perf_counter()
    plain = _batched(items, batch_size, lambda b: translator.translate([it.source for it in b], src, tgt), progress)
    t2 = time.perf_counter()

    scores = [score_sentence(it, res, threshold) for it, res in zip(items, labeled, strict=True)]
    with_phrases = [s for s in scores if s.phrases]
    references = [it.reference for it in items]
    tokenize = bleu_tokenizer(tgt)
    labeled_quality = corpus_quality([r.text for r in labeled], references, tokenize)
    plain_quality = corpus_quality(plain, references, tokenize)
    worst = sorted((k for k, s in enumerate(scores) if s.badness > 0), key=lambda k: -scores[k].badness)
    return EngineReport(
        engine=engine, src_lang=src, tgt_lang=tgt, threshold=threshold, sentences=len(items),
        sentences_with_phrases=len(with_phrases), phrases=sum(len(s.phrases) for s in scores),
        kept=sum(s.kept for s in scores), exact=sum(s.exact for s in scores), matched=sum(s.matched for s in scores),
        sentences_all_kept=sum(s.all_kept for s in with_phrases),
        sentences_all_match=sum(s.all_match for s in with_phrases), spurious=sum(s.spurious for s in scores),
        bleu_tokenize=tokenize, bleu_labeled=labeled_quality.bleu, bleu_plain=plain_quality.bleu,
        chrf_labeled=labeled_quality.chrf, chrf_plain=plain_quality.chrf, seconds_labeled=t1 - t0,
        seconds_plain=t2 - t1,
        worst=[Example(id=items[k].id, source_marked=items[k].source_marked,
                       output=labeled[k].raw or labeled[k].text, reference=items[k].reference,
                       phrases=scores[k].phrases, spurious=scores[k].spurious) for k in worst[:examples]],
    )


def evaluate(translators: Mapping[str, Translator], items: Sequence[EvalItem], data: str = "",
             threshold: float = DEFAULT_THRESHOLD, batch_size: int = 32, examples: int = 5,
             progress: EvalProgress | None = None) -> MarkerEvalReport:
    """Compare engines (spec -> translator) on the same items, one report per engine and language pair. Every
    pair is checked against every engine before any translation starts (`UnsupportedPair`)."""
    if not items:
        raise ValueError("no items to evaluate")
    groups = group_by_pair(items)
    for engine, translator in translators.items():
        for src, tgt in groups:
            check_pair(translator, engine, src, tgt)
    reports = [evaluate_engine(translator, group, engine, threshold, batch_size, examples, progress)
               for engine, translator in translators.items() for group in groups.values()]
    return MarkerEvalReport(data=data, threshold=threshold, engines=reports)
