"""CROP steps 1-5 over any engines of the protocols, batched and streaming:

    forward translation -> English tagging -> labeled back-translation -> matching -> filtering

The same code runs in the CLI, the services and the workers. Sentences that come with English labels
(`en_tokens` + `en_tags`) skip steps 1-2. Every input sentence yields exactly one result, in input order:
kept, discarded with a reason, or failed with the error that stopped it.

`CropPipeline.explain_batch` also returns the steps of each sentence (`crop.types.CropSteps`: the English sentence,
its entities, the labeled back-translation with its markers, what became of each entity), for `crop tag --explain`
and the tagger's `"explain": true`; `project_batch` keeps nothing of them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from crop.engine_view import engine_sentence, restore_result
from crop.errors import EngineUnavailable
from crop.io import InputSentence, InvalidLine
from crop.labels import bio_to_spans
from crop.project import ProjectionRequest, Projector
from crop.project.function_words import function_words, is_function_word
from crop.tag.base import Tagger
from crop.text import MAX_TOKEN_CHARS, detokenize, first_long_token, is_punct, normalize, tokenize
from crop.translate.base import AligningTranslator, Translator, UnsupportedPair
from crop.types import (
    AlignedTranslation,
    CropSteps,
    EntityStep,
    LabeledItem,
    LabeledResult,
    Placement,
    ProjectedEntity,
    ProjectionResult,
    Span,
    Status,
)

log = logging.getLogger(__name__)

STAGES = ("forward", "tag", "align", "back", "project")
# sentences per batch: one Apertium process and one vectorized language-id pass per batch
DEFAULT_BATCH_SIZE = 256


@dataclass
class SentenceTrace:
    """What steps 1-3 produced for one sentence, kept only when explaining (see `CropPipeline.explain_batch`)."""

    english: str
    given: bool  # the English sentence and labels came with the input
    spans: list[Span]
    back: LabeledResult | None


# the traces of a batch being explained, by the identity of the input sentence (kept alive by the batch)
_Traces = dict[int, SentenceTrace]


@dataclass
class PipelineStats:
    sentences: int = 0
    status: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    # sentences whose entities were placed through a further n-best back-translation, not the best one
    other_hypothesis: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    def add(self, result: ProjectionResult) -> None:
        self.sentences += 1
        self.status[str(result.status)] += 1
        if result.reason:
            self.reasons[result.reason.split(":")[0]] += 1
        for e in result.entities:
            self.methods[e.method] += 1
        self.other_hypothesis += result.hypothesis > 0

    def as_dict(self) -> dict:
        total = sum(self.seconds.values()) or 1e-9
        return {
            "sentences": self.sentences,
            "status": dict(self.status),
            "reasons": dict(self.reasons),
            "methods": dict(self.methods),
            "other_hypothesis": self.other_hypothesis,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "share": {k: round(v / total, 3) for k, v in self.seconds.items()},
            "sentences_per_second": round(self.sentences / total, 2),
        }


class CropPipeline:
    def __init__(self, translator: Translator, tagger: Tagger | None, projector: Projector | None = None,
                 pivot: str = "en", batch_size: int = DEFAULT_BATCH_SIZE, use_alignment: bool = True,
                 max_token_chars: int = MAX_TOKEN_CHARS) -> None:
        if max_token_chars < 1:
            raise ValueError(f"max_token_chars must be at least 1, not {max_token_chars}")
        self.translator = translator
        self.tagger = tagger
        self.projector = projector or Projector()
        self.pivot = pivot
        self.batch_size = batch_size
        self.use_alignment = use_alignment and isinstance(translator, AligningTranslator)
        # a longer token is discarded before any engine sees it (Apertium is super-linear in a token's length)
        self.max_token_chars = max_token_chars
        self.stats = PipelineStats()

    def check(self, lang: str, needs_tagger: bool = True) -> None:
        """Fail early, before any sentence is read, when an engine cannot serve `lang`."""
        pairs = set(self.translator.pairs())
        for pair in ((lang, self.pivot), (self.pivot, lang)):
            if pair not in pairs:
                served = ", ".join(f"{a}->{b}" for a, b in sorted(pairs)) or "none"
                raise UnsupportedPair(f"translator {self.translator.name!r} has no {pair[0]}->{pair[1]} pair "
                                      f"(it serves: {served})")
        if needs_tagger and self.tagger is not None and self.pivot not in self.tagger.languages():
            raise ValueError(f"tagger {self.tagger.name!r} does not tag {self.pivot!r}")

    def run(self, sentences: Iterable[InputSentence | InvalidLine],
            on_result: Callable[[ProjectionResult], None] | None = None) -> Iterator[ProjectionResult]:
        """Project a stream of sentences in batches; memory stays bounded by one batch. An input line that
        was not a sentence (`InvalidLine`) comes out, in its place, as a failed result with its reason.
        Raises `EngineUnavailable` when an engine is down (see `_isolate`); the results yielded so far stand."""
        it = iter(sentences)
        while batch := list(islice(it, self.batch_size)):
            valid = [s for s in batch if isinstance(s, InputSentence)]
            projected = iter(self.project_batch(valid) if valid else ())
            for item in batch:
                result = next(projected) if isinstance(item, InputSentence) else invalid_result(item)
                self.stats.add(result)
                if on_result is not None:
                    on_result(result)
                yield result

    def project_batch(self, batch: Sequence[InputSentence]) -> list[ProjectionResult]:
        """One result per sentence, in order: sentences with an absurd token are discarded before any engine
        sees them, the others projected with failures isolated."""
        return self._project_batch(batch, None)

    def explain_batch(self, batch: Sequence[InputSentence]) -> list[tuple[ProjectionResult, CropSteps]]:
        """`project_batch` (the same results), each with the steps that produced it (see `explain_steps`)."""
        traces: _Traces = {}
        results = self._project_batch(batch, traces)
        return [(r, explain_steps(r, traces.get(id(s)))) for s, r in zip(batch, results, strict=True)]

    def _project_batch(self, batch: Sequence[InputSentence], traces: _Traces | None) -> list[ProjectionResult]:
        out: list[ProjectionResult | None] = [self._too_long(s) for s in batch]
        todo = [i for i, r in enumerate(out) if r is None]
        if todo:
            for i, r in zip(todo, self._batch_isolating_failures([batch[i] for i in todo], traces), strict=True):
                out[i] = r
        return out  # type: ignore[return-value]

    # -- one batch ------------------------------------------------------------------------------------------

    def _too_long(self, s: InputSentence) -> ProjectionResult | None:
        """A discarded result when a token of `s` (or of its English side) is longer than `max_token_chars`."""
        for what, tokens in (("token", s.tokens), ("English token", s.en_tokens or [])):
            i = first_long_token(tokens, self.max_token_chars)
            if i is not None:
                return ProjectionResult(id=s.id, lang=s.lang, text=s.text, tokens=list(s.tokens),
                                        tags=["O"] * len(s.tokens), status=Status.discarded,
                                        reason=f"token_too_long: {what} {i} has {len(tokens[i])} characters "
                                               f"(limit {self.max_token_chars})")
        return None

    def _batch_isolating_failures(self, batch: Sequence[InputSentence],
                                  traces: _Traces | None = None) -> list[ProjectionResult]:
        try:
            return self._batch(batch, traces)
        except EngineUnavailable:
            raise
        except Exception as exc:  # an engine error: find the sentence(s) it comes from, keep the rest
            return self._isolate(batch, exc, traces)

    def _isolate(self, batch: Sequence[InputSentence], exc: Exception,
                 traces: _Traces | None = None) -> list[ProjectionResult]:
        """`batch` failed with `exc`: run its halves, recursively, until the failing sentences are alone.
        When both halves fail with the very error of the whole, the engine is down, not the input wrong:
        halving further would only cost ~2n calls, so raise `EngineUnavailable`. A ValueError says the input
        was wrong, so it is always isolated."""
        if len(batch) == 1:
            return [failed_result(batch[0], exc)]
        mid = len(batch) // 2
        halves = (batch[:mid], batch[mid:])
        outcomes: list[list[ProjectionResult] | Exception] = []
        for half in halves:
            try:
                outcomes.append(self._batch(half, traces))
            except EngineUnavailable:
                raise
            except Exception as half_exc:
                outcomes.append(half_exc)
        if not isinstance(exc, ValueError) and all(_same_error(o, exc) for o in outcomes):
            log.error("engine failed on a whole batch and both its halves", extra={"error": repr(exc)})
            raise EngineUnavailable(f"{type(exc).__name__}: {exc} (the same error on a batch of {len(batch)} "
                                    f"sentences and on both its halves)") from exc
        out: list[ProjectionResult] = []
        for half, outcome in zip(halves, outcomes, strict=True):
            out += self._isolate(half, outcome, traces) if isinstance(outcome, Exception) else outcome
        return out

    def _timed(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.stats.seconds[stage] += time.perf_counter() - t0

    def _batch(self, batch: Sequence[InputSentence], traces: _Traces | None = None) -> list[ProjectionResult]:
        lang = batch[0].lang
        if any(s.lang != lang for s in batch):
            groups: dict[str, list[int]] = {}
            for i, s in enumerate(batch):
                groups.setdefault(s.lang, []).append(i)
            out: list[ProjectionResult | None] = [None] * len(batch)
            for idx in groups.values():
                for i, r in zip(idx, self._batch([batch[i] for i in idx], traces), strict=True):
                    out[i] = r
            return out  # type: ignore[return-value]
        # the engines see clean text (NFC, controls as spaces); results are over the text as given
        views = [engine_sentence(s) for s in batch]
        found: list[SentenceTrace] | None = None if traces is None else []
        results = [restore_result(r, s) for r, s in zip(self._project(views, found), batch, strict=True)]
        if traces is not None and found is not None:
            # by the sentence given (not its clean view): the caller looks them up by what it passed
            traces.update((id(s), t) for s, t in zip(batch, found, strict=True))
        return results

    def _project(self, batch: Sequence[InputSentence],
                 traces: list[SentenceTrace] | None = None) -> list[ProjectionResult]:
        """Steps 1-5 for sentences of one language; with `traces`, what steps 1-3 produced is appended to it."""
        lang = batch[0].lang
        # steps 1-2: English sentence and entities (given, or translated and tagged)
        english: list[str] = [""] * len(batch)
        spans: list[list[Span]] = [[] for _ in batch]
        todo = [i for i, s in enumerate(batch) if not (s.en_tokens and s.en_tags)]
        translated = set(todo)
        for i, s in enumerate(batch):
            if s.en_tokens and s.en_tags:
                english[i], spans[i] = english_spans(s.en_tokens, s.en_tags)
        if todo:
            if self.tagger is None:
                raise ValueError("sentences without English labels need a tagger")
            texts = self._timed("forward", self.translator.translate, [batch[i].text for i in todo], lang,
                                self.pivot)
            tagged = self._timed("tag", self.tagger.tag, texts, self.pivot)
            for i, text, sp in zip(todo, texts, tagged, strict=True):
                english[i], spans[i] = text, sp

        forward: list[AlignedTranslation | None] = [None] * len(batch)
        if self.use_alignment:
            with_entities = [i for i in range(len(batch)) if spans[i]]
            if with_entities:
                aligned = self._timed("align", self.translator.translate_aligned,  # type: ignore[attr-defined]
                                      [batch[i].tokens for i in with_entities], lang, self.pivot)
                for i, a in zip(with_entities, aligned, strict=True):
                    forward[i] = a

        # step 3: labeled back-translation of the sentences that have entities
        back: list[LabeledResult | None] = [None] * len(batch)
        with_entities = [i for i in range(len(batch)) if spans[i]]
        if with_entities:
            items = [LabeledItem(text=english[i], spans=spans[i]) for i in with_entities]
            results = self._timed("back", self.translator.translate_labeled, items, self.pivot, lang)
            for i, r in zip(with_entities, results, strict=True):
                back[i] = r

        # steps 4-5
        t0 = time.perf_counter()
        out = self.projector.project_many([
            ProjectionRequest(s.tokens, lang, spans[i], back=back[i], forward=forward[i], source_text=english[i],
                              id=s.id, text=s.text, source_lang=self.pivot, offsets=s.offsets,
                              source_is_translation=i in translated)
            for i, s in enumerate(batch)
        ])
        self.stats.seconds["project"] += time.perf_counter() - t0
        if traces is not None:
            traces += [SentenceTrace(english[i], i not in translated, spans[i], back[i]) for i in range(len(batch))]
        return out


def _same_error(outcome: object, exc: Exception) -> bool:
    return isinstance(outcome, Exception) and type(outcome) is type(exc) and str(outcome) == str(exc)


def failed_result(s: InputSentence, exc: Exception) -> ProjectionResult:
    """The failed result of a sentence an engine failed on (the rest of its batch goes on)."""
    log.error("sentence failed", extra={"id": s.id, "error": repr(exc)})
    return ProjectionResult(id=s.id, lang=s.lang, text=s.text, tokens=list(s.tokens), tags=["O"] * len(s.tokens),
                            status=Status.failed, reason=f"{type(exc).__name__}: {exc}"[:500])


def invalid_result(line: InvalidLine) -> ProjectionResult:
    """The failed result, in its place, of an input line that is not a sentence."""
    log.warning("invalid input line", extra={"id": line.id, "line": line.lineno, "error": line.reason})
    return ProjectionResult(id=line.id, lang=line.lang, tokens=[], tags=[], status=Status.failed,
                            reason=f"invalid input: {line.reason}")


def english_spans(tokens: Sequence[str], tags: Sequence[str]) -> tuple[str, list[Span]]:
    """The English text of given tokens and its entity spans (character and token offsets)."""
    text, offsets = detokenize(tokens, "en")
    spans = [
        Span(start=offsets[s][0], end=offsets[e - 1][1], label=label, text=text[offsets[s][0]:offsets[e - 1][1]],
             token_start=s, token_end=e)
        for s, e, label in bio_to_spans(tags)
    ]
    return text, spans


# -- explain --------------------------------------------------------------------------------------------------------


def explain_steps(result: ProjectionResult, trace: SentenceTrace | None) -> CropSteps:
    """The steps of `result` from what steps 1-3 produced (`trace`; None: the sentence stopped before them, e.g. a
    too long token, or an engine failed on it)."""
    if trace is None:
        return CropSteps(status=result.status, reason=result.reason)
    back = trace.back
    if back is not None and 0 < result.hypothesis <= len(back.alternatives):
        back = back.alternatives[result.hypothesis - 1]  # the hypothesis that placed the entities
    marked: dict[int, str] = {}
    if back is not None:
        for sp in sorted([*back.spans, *back.fragments], key=lambda sp: sp.start):
            if sp.ref is not None:
                marked[sp.ref] = f"{marked[sp.ref]} … {sp.text}" if sp.ref in marked else sp.text
    placed = {e.ref: e for e in result.entities if e.ref is not None}
    unmatched = {u.get("ref"): u for u in result.unmatched}
    steps = [_entity_step(i, sp, marked.get(i), placed.get(i), unmatched.get(i), result)
             for i, sp in enumerate(trace.spans)]
    return CropSteps(english=trace.english, english_given=trace.given, english_entities=list(trace.spans),
                     back=back.text if back is not None else None,
                     back_marked=(back.raw or None) if back is not None else None,
                     hypothesis=result.hypothesis, lost=list(back.lost) if back is not None else [],
                     entities=steps, status=result.status, reason=result.reason)


def _entity_step(ref: int, span: Span, marked: str | None, entity: ProjectedEntity | None,
                 unmatched: dict | None, result: ProjectionResult) -> EntityStep:
    common = {"ref": ref, "label": span.label, "text": span.text, "marked": marked}
    if entity is not None:
        placement = Placement(start=entity.start, end=entity.end, text=entity.text, token_start=entity.token_start,
                              token_end=entity.token_end, method=entity.method, score=entity.score)
        if result.status == Status.kept:
            return EntityStep(**common, outcome="placed", placed=placement)
        return EntityStep(**common, outcome="filtered", placed=placement,
                          reason=f"placed, but the sentence was discarded: {result.reason}")
    why = (unmatched or {}).get("reason", "")
    inside = _inside_placed(marked or span.text, result)
    if inside is not None:
        return EntityStep(**common, outcome="overlap",
                          reason=f"its words are inside entity {inside.ref} “{inside.text}” ({inside.label}), "
                                 f"placed first (the same name, or one the tagger broke)")
    if why == "marker lost" or marked is None:
        return EntityStep(**common, outcome="marker_lost",
                          reason="the back-translation lost its markers, and the methods that need none (the "
                                 "English string, the forward alignment) did not find it in the sentence")
    return EntityStep(**common, outcome="no_match",
                      reason=f"no matching method found the marked words “{marked}” in the sentence")


def _content_words(tokens: Sequence[str], lang: str) -> set[str]:
    """Normalized words of `tokens` without punctuation and, when some are left, without function words."""
    words = {normalize(t) for t in tokens if not is_punct(t)}
    fw = function_words(lang)
    return {w for w in words if not is_function_word(w, fw)} or words


def _inside_placed(words_of: str, result: ProjectionResult) -> ProjectedEntity | None:
    """The placed entity whose words include all the (content) words of `words_of`, if any: an entity left
    unplaced because a more trusted one took its tokens, or merged into its neighbour (Lula | da | Silva)."""
    words = _content_words(tokenize(words_of, result.lang)[0], result.lang)
    if not words:
        return None
    for e in result.entities:
        if words <= {normalize(t) for t in result.tokens[e.token_start:e.token_end]}:
            return e
    return None
