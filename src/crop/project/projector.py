"""The projector: place each entity of a labeled back-translation in the raw target sentence, then judge the
sentence (kept, or discarded with a reason).

Evidence, in the order the cascade trusts it (configurable, first hit wins for each entity, and the entities
placed by a more trusted method claim their tokens first):
  exact        the marked words occur in the raw sentence as they are
  normalized   ... after NFKC, case folding and accent removal, without edge articles/prepositions (d'OTAN)
  source_copy  the English entity string itself occurs in the raw sentence (names kept across languages)
  forward      the forward translation, aligned word by word to the raw sentence, produced the English entity
  crop_rule    the CROP paper's rule: entity words that occur once in the raw sentence
  context      the words around the marked entity in the back-translation align with the raw sentence
  fuzzy        the closest raw n-gram by rapidfuzz ratio (inflection, clitics, spelling)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from crop.labels import spans_to_bio
from crop.project import matching as m
from crop.project.function_words import function_words, is_function_word
from crop.project.langid_filter import LanguageID
from crop.text import CHAR_LEVEL_LANGS, char_to_token_span, detokenize, is_punct, normalize, tokenize, trim_punct
from crop.types import AlignedTranslation, LabeledResult, ProjectionResult, Span, Status

ALL_METHODS = ("exact", "normalized", "source_copy", "forward", "crop_rule", "context", "fuzzy")
# methods that look at the marked entity in the back-translation (the others work without it)
_NEEDS_MARKS = frozenset({"exact", "normalized", "crop_rule", "context", "fuzzy"})


@dataclass
class ProjectorConfig:
    methods: tuple[str, ...] = ALL_METHODS
    # strict: the paper's policy, a sentence with any unmatched entity is discarded;
    # partial: the matched entities are kept and the sentence with them
    policy: Literal["strict", "partial"] = "strict"
    max_tokens: int = 128
    drop_all_o: bool = True
    langid: bool = True
    langid_min_prob: float = 0.9
    fuzzy_threshold: float = 75.0
    # grow a placed entity over the capitalized words next to it (Filmoteca de | Catalunya): in cased
    # scripts a name runs as far as its capitals, whatever part of it the English tagger found
    complete_names: bool = True
    # join two placed entities that are one name the English tagger broke (see `_merge_broken`)
    merge_broken: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(ALL_METHODS)
        if unknown:
            raise ValueError(f"unknown matching methods {sorted(unknown)}; known: {', '.join(ALL_METHODS)}")
        if self.policy not in ("strict", "partial"):
            raise ValueError(f"policy must be 'strict' or 'partial', not {self.policy!r}")


@dataclass
class ProjectionRequest:
    """Everything the projector knows about one sentence (see `Projector.project`)."""

    tokens: Sequence[str]
    lang: str
    source: Sequence[Span]
    back: LabeledResult | None = None
    forward: AlignedTranslation | None = None
    source_text: str | None = None
    id: str = ""
    text: str | None = None
    source_lang: str = "en"
    offsets: Sequence[tuple[int, int]] | None = None  # of `tokens` in `text`, when known
    # `source_text` is the forward translation of the raw sentence (end to end), not a given English sentence
    source_is_translation: bool = False


@dataclass
class _Marked:
    """The words of one marked span of the back-translation, without edge function words and punctuation."""

    tokens: list[str]
    norm: list[str]
    content: list[bool]
    lo: int  # core = tokens[lo:hi]
    hi: int
    start: int  # character offsets of the core in the back-translation
    end: int
    core: list[str]  # tokens[lo:hi]
    core_norm: list[str]  # norm[lo:hi]


@lru_cache(maxsize=100_000)
def _marked_words(text: str, lang: str, initial: bool) -> tuple[list[str], list[str], list[bool], int, int,
                                                                 list[tuple[int, int]], list[str], list[str]]:
    tokens, offsets = tokenize(text, lang)
    keys = m.token_keys(tokens, lang)
    content = [k[1] or (k[2] and (i > 0 or not initial)) for i, k in enumerate(keys)]
    lo, hi = 0, len(tokens)
    while lo < hi and not content[lo]:
        lo += 1
    while hi > lo and not content[hi - 1]:
        hi -= 1
    norm = [k[0] for k in keys]
    return tokens, norm, content, lo, hi, offsets, tokens[lo:hi], norm[lo:hi]


def _marked(span: Span, lang: str) -> _Marked:
    tokens, norm, content, lo, hi, offsets, core, core_norm = _marked_words(span.text, lang, span.start == 0)
    start = span.start + offsets[lo][0] if lo < hi else span.start
    end = span.start + offsets[hi - 1][1] if lo < hi else span.start
    return _Marked(tokens, norm, content, lo, hi, start, end, core, core_norm)


@dataclass
class _Entity:
    ref: int
    label: str
    source: Span
    src_norm: list[str]
    marked: _Marked | None = None
    pieces: list[_Marked] = field(default_factory=list)  # further pieces of a span the translator split


class _Translation:
    """The back-translation as a sentence, tokenized only when a method needs the context of an entity."""

    def __init__(self, back: LabeledResult, lang: str) -> None:
        self.back = back
        self.lang = lang
        self._sentence: m.Sentence | None = None
        self._offsets: list[tuple[int, int]] = []
        self._anchors: list[tuple[int, int]] | None = None

    @property
    def sentence(self) -> m.Sentence:
        if self._sentence is None:
            tokens, self._offsets = tokenize(self.back.text, self.lang)
            self._sentence = m.Sentence(tokens, self.lang)
        return self._sentence

    def anchors(self, raw: m.Sentence) -> list[tuple[int, int]]:
        if self._anchors is None:
            self._anchors = m.anchors(raw, self.sentence)
        return self._anchors

    def token_span(self, start: int, end: int) -> tuple[int, int] | None:
        self.sentence  # noqa: B018 (tokenizes on first use)
        return char_to_token_span(self._offsets, start, end)


class Projector:
    def __init__(self, config: ProjectorConfig | None = None) -> None:
        self.config = config or ProjectorConfig()
        self._langid: dict[tuple[str, str], LanguageID] = {}

    # -- the public entry points ----------------------------------------------------------------------------

    def project_many(self, requests: Sequence[ProjectionRequest]) -> list[ProjectionResult]:
        """Project a batch; the language-id filter runs over the whole batch at once."""
        results = [self._match(r) for r in requests]
        if self.config.langid:
            self._language_filter(requests, results)
        return results

    def project(
        self,
        tokens: Sequence[str],
        lang: str,
        source: Sequence[Span],
        back: LabeledResult | None = None,
        forward: AlignedTranslation | None = None,
        source_text: str | None = None,
        id: str = "",
        text: str | None = None,
        source_lang: str = "en",
        offsets: Sequence[tuple[int, int]] | None = None,
        source_is_translation: bool = False,
    ) -> ProjectionResult:
        """Project `source` (entities of the English sentence `source_text`) onto the raw sentence `tokens`
        using the labeled back-translation `back` and the word-aligned forward translation `forward`."""
        return self.project_many([ProjectionRequest(tokens, lang, source, back, forward, source_text, id, text,
                                                    source_lang, offsets, source_is_translation)])[0]

    def _match(self, r: ProjectionRequest) -> ProjectionResult:
        """The projection through the best back-translation; when it leaves entities unmatched, through the
        engine's further hypotheses in turn (CROP tries other beams before it discards a sentence)."""
        result = self._match_with(r, r.back)
        if not result.unmatched or r.back is None or not r.back.alternatives:
            return result
        for k, alt in enumerate(r.back.alternatives, start=1):
            other = self._match_with(r, alt)
            if len(other.unmatched) < len(result.unmatched):
                other.hypothesis = k
                result = other
                if not other.unmatched:
                    break
        return result

    def _match_with(self, r: ProjectionRequest, back: LabeledResult | None) -> ProjectionResult:
        tokens, lang, source, forward = r.tokens, r.lang, r.source, r.forward
        source_text, source_lang = r.source_text, r.source_lang
        cfg = self.config
        raw = m.Sentence(tokens, lang)
        entities = [
            _Entity(i, s.label, s, _entity_norm(s.text, source_lang))
            for i, s in enumerate(source)
        ]
        trans = None
        if back is not None:
            trans = _Translation(back, lang)
            for span in back.spans:
                if span.ref is not None and 0 <= span.ref < len(entities) and span.text:
                    entities[span.ref].marked = _marked(span, lang)
            for span in back.fragments:
                if span.ref is not None and 0 <= span.ref < len(entities) and span.text:
                    entities[span.ref].pieces.append(_marked(span, lang))

        placed: dict[int, tuple[int, int, float, str]] = {}
        taken = [False] * len(raw)
        for method in cfg.methods:
            pending = [e for e in entities if e.ref not in placed]
            if not pending:
                break
            proposals = []
            for e in pending:
                # k keeps each matcher's own order among equal scores (nearest the expected position first)
                for k, cand in enumerate(self._candidates(method, e, raw, trans, forward, source_text)):
                    proposals.append((-cand[2], e.ref, k, cand))
            proposals.sort()
            for _, ref, _, (lo, hi, score) in proposals:
                if ref in placed or any(taken[lo:hi]):
                    continue
                placed[ref] = (lo, hi, score, method)
                for i in range(lo, hi):
                    taken[i] = True

        if cfg.merge_broken and raw.lang not in CHAR_LEVEL_LANGS:
            placed = _merge_broken(raw, entities, placed, source_lang)
        if cfg.complete_names and raw.lang not in CHAR_LEVEL_LANGS:
            for ref, (lo, hi, score, method) in list(placed.items()):
                nlo, nhi = m.complete_name(raw, lo, hi, taken)
                if nlo != lo or nhi != hi:
                    taken[nlo:nhi] = [True] * (nhi - nlo)
                    placed[ref] = (nlo, nhi, score, method)
        return self._verdict(raw, entities, placed, back, r.id, r.text, r.offsets, lang)

    # -- candidates ----------------------------------------------------------------------------------------

    def _candidates(self, method: str, e: _Entity, raw: m.Sentence, trans: _Translation | None,
                    forward: AlignedTranslation | None, source_text: str | None) -> list[m.Candidate]:
        if method in _NEEDS_MARKS:
            mk = e.marked
            if mk is None or trans is None or mk.lo >= mk.hi:
                return []
            if e.pieces:
                # split by the translator: only the words of all pieces together locate it
                if method != "crop_rule":
                    return []
                words = [p.norm[i] for p in (mk, *e.pieces) for i in range(len(p.tokens)) if p.content[i]]
                return m.crop_rule(raw, words, max_words=10)
            expected = mk.start / max(len(trans.back.text), 1) * len(raw)
            if method == "exact":
                return m.exact(raw, mk.core, expected)
            if method == "normalized":
                return m.normalized(raw, mk.core_norm, expected)
            if method == "crop_rule":
                return m.crop_rule(raw, [mk.norm[i] for i in range(mk.lo, mk.hi) if mk.content[i]])
            if method == "context":
                tok = trans.token_span(mk.start, mk.end)
                return m.context(raw, trans.sentence, *tok, trans.anchors(raw)) if tok else []
            return m.fuzzy(raw, mk.core_norm, self.config.fuzzy_threshold, raw.lang)
        expected = float(e.source.token_start or 0)
        if method == "source_copy":
            norm = _strip_function_words(tuple(e.src_norm))
            return m.normalized(raw, norm, expected, score=0.9) if norm else []
        if method == "forward" and forward is not None:
            return m.aligned(raw, _forward_ids(e, forward, source_text), 0.85)
        return []

    # -- the verdict -------------------------------------------------------------------------------------------

    def _verdict(self, raw: m.Sentence, entities: list[_Entity], placed: dict[int, tuple[int, int, float, str]],
                 back: LabeledResult | None, id: str, text: str | None,
                 offsets: Sequence[tuple[int, int]] | None, lang: str) -> ProjectionResult:
        cfg = self.config
        tokens = list(raw.tokens)
        if text is None:
            text, offsets = detokenize(tokens, lang)
        elif offsets is None:
            offsets = _offsets_in(text, tokens) if placed else []
        # plain dicts: ProjectionResult validates them all at once (much cheaper than a model per entity)
        projected: list[dict[str, object]] = []
        spans: list[tuple[int, int, str]] = []
        for ref in sorted(placed, key=lambda r: placed[r][0]):
            lo, hi, score, method = placed[ref]
            lo, hi = trim_punct(tokens, lo, hi)  # a match may take in the punctuation next to a name
            start, end = offsets[lo][0], offsets[hi - 1][1]
            label = entities[ref].label
            spans.append((lo, hi, label))
            projected.append({"token_start": lo, "token_end": hi, "start": start, "end": end, "label": label,
                              "text": text[start:end], "method": method, "score": round(score, 4), "ref": ref})
        unmatched = [
            {"ref": e.ref, "text": e.source.text, "label": e.label,
             "reason": "marker lost" if e.marked is None and back is not None else "no match"}
            for e in entities if e.ref not in placed
        ]
        tags = spans_to_bio(len(tokens), spans)

        reason = None
        if len(tokens) > cfg.max_tokens:
            reason = f"too long: {len(tokens)} tokens > {cfg.max_tokens}"
        elif unmatched and (cfg.policy == "strict" or not projected):
            reason = f"unmatched entities: {len(unmatched)} of {len(entities)}"
        elif not projected and cfg.drop_all_o:
            reason = "all-O: no entity"
        return ProjectionResult.model_validate({
            "id": id, "lang": lang, "text": text, "tokens": tokens, "tags": tags, "entities": projected,
            "unmatched": unmatched, "status": Status.discarded if reason else Status.kept, "reason": reason})

    def _language_filter(self, requests: Sequence[ProjectionRequest], results: list[ProjectionResult]) -> None:
        """Discard sentences whose forward translation (the English sentence that was tagged, when it is a
        translation) is not in the pivot language or whose back-translation is not in the target language (a
        translator that copied its input, say). It is the costliest filter, so it runs last, on the sentences
        the other filters kept."""
        checks: dict[tuple[str, str], list[tuple[int, str, str]]] = {}
        for i, r in enumerate(requests):
            if results[i].status != Status.kept:
                continue
            fwd_text = r.source_text if r.source_is_translation else None
            if fwd_text:
                checks.setdefault((r.source_lang, r.lang), []).append((i, fwd_text, "forward"))
            back = r.back
            if back is not None and results[i].hypothesis:
                back = back.alternatives[results[i].hypothesis - 1]
            if back is not None and back.text:
                checks.setdefault((r.lang, r.source_lang), []).append((i, back.text, "back"))
        for (lang, other), items in checks.items():
            if (lang, other) not in self._langid:
                self._langid[(lang, other)] = LanguageID([lang, other])
            verdicts = self._langid[(lang, other)].is_lang([t for _, t, _ in items], lang,
                                                           self.config.langid_min_prob, skip_names=True)
            for (i, _, kind), ok in zip(items, verdicts, strict=True):
                res = results[i]
                if ok or res.status != Status.kept:  # the other translation may have discarded it already
                    continue
                what = "forward translation" if kind == "forward" else "back-translation"
                res.status = Status.discarded
                res.reason = f"{what} is not {lang}"




# languages that write demonyms and other adjectives in lowercase, so that a capitalized one belongs to a name
_LOWERCASE_DEMONYMS = frozenset({"es", "ca", "gl", "pt", "fr", "it", "ro", "oc", "an", "ast", "eu"})


def _merge_broken(raw: m.Sentence, entities: list[_Entity], placed: dict[int, tuple[int, int, float, str]],
                  source_lang: str) -> dict[int, tuple[int, int, float, str]]:
    """Join neighbouring entities that are one name the tagger broke: two persons around a name particle
    (Lula | da | Silva, Ursula von | der | Leyen), an English span that ends on a function word ("National
    Library of" | Spain), or a place or organisation followed by a capitalized MISC adjective (Güiana |
    Francesa). The first entity's label wins (the head comes first in the Romance languages)."""
    if len(placed) < 2:
        return placed
    order = sorted(placed, key=lambda r: placed[r][0])
    # only neighbours at most two tokens apart can be one broken name
    if not any(placed[b][0] - placed[a][1] <= 2 for a, b in zip(order, order[1:], strict=False)):
        return placed
    fw = function_words(source_lang)
    merged = dict(placed)
    i = 0
    while i + 1 < len(order):
        a, b = order[i], order[i + 1]
        lo_a, hi_a, score_a, method_a = merged[a]
        lo_b, hi_b, score_b, _ = merged[b]
        gap = range(hi_a, lo_b)
        # a capitalized adjective right after a place or organisation is part of its name (Güiana | Francesa):
        # these languages write demonyms in lowercase, so the tagger's MISC "French" was the name's tail
        tail = (not gap and raw.lang in _LOWERCASE_DEMONYMS and entities[b].label == "MISC"
                and entities[a].label in ("LOC", "ORG") and raw.tokens[lo_b][:1].isupper())
        if tail:
            merged[a] = (lo_a, hi_b, min(score_a, score_b), method_a)
            del merged[b]
            order.pop(i + 1)
            continue
        if 1 <= len(gap) <= 2:
            src = entities[a].src_norm
            same_person = entities[a].label == entities[b].label == "PER"
            broken_source = bool(src) and is_function_word(src[-1], fw)
            if (same_person or broken_source) and all(raw.key(k)[0] in m.NAME_PARTICLES for k in gap):
                merged[a] = (lo_a, hi_b, min(score_a, score_b), method_a)
                del merged[b]
                order.pop(i + 1)
                continue
        i += 1
    return merged


def clear_caches() -> None:
    """Forget the per-word and per-entity caches (normalized forms, token keys, tokenized entity strings):
    frees their memory in a long-running worker, and lets a benchmark measure a cold start."""
    m._KEYS.clear()
    for cached in (_entity_norm, _marked_words, _strip_function_words, _shared_words, normalize):
        cached.cache_clear()


@lru_cache(maxsize=100_000)
def _entity_norm(text: str, lang: str) -> list[str]:
    return [normalize(t) for t in tokenize(text, lang)[0]]


@lru_cache(maxsize=100_000)
def _strip_function_words(norm: tuple[str, ...]) -> list[str]:
    fw = function_words("en")
    lo, hi = 0, len(norm)
    while lo < hi and (is_function_word(norm[lo], fw) or is_punct(norm[lo])):
        lo += 1
    while hi > lo and (is_function_word(norm[hi - 1], fw) or is_punct(norm[hi - 1])):
        hi -= 1
    return list(norm[lo:hi])


def _forward_ids(e: _Entity, forward: AlignedTranslation, source_text: str | None) -> set[int]:
    """Raw token ids aligned to the English entity in the forward translation."""
    s = e.source
    if source_text is not None and source_text == forward.text and s.token_start is not None:
        positions = range(s.token_start, s.token_end or s.token_start)
    else:
        norm = _strip_function_words(tuple(e.src_norm))
        fnorm = [k[0] for k in m.token_keys(forward.tokens, "en")]
        hits = m.find_all(fnorm, norm)
        if hits:
            positions = range(hits[0], hits[0] + len(norm))
        elif source_text is not None and s.token_start is not None and s.token_end is not None:
            # the English sentence is another translation of the same sentence (or a given one): map the
            # entity's tokens onto the aligned translation through the words the two share
            positions = _through_shared_words(source_text, forward, s.token_start, s.token_end)
        else:
            return set()
    return {i for j in positions if j < len(forward.alignment) for i in forward.alignment[j]}


@lru_cache(maxsize=1024)  # several entities of one sentence ask in turn
def _shared_words(source_text: str, forward_tokens: tuple[str, ...]) -> dict[int, int]:
    """Source token -> forward token, for the tokens of a longest common subsequence of the two."""
    src = m.Sentence(tokenize(source_text, "en")[0], "en")
    return dict(m.anchors(m.Sentence(forward_tokens, "en"), src))


def _through_shared_words(source_text: str, forward: AlignedTranslation, start: int, end: int) -> range:
    """Tokens of `forward` that stand where tokens start..end of `source_text` stand, by the anchors of a
    longest common subsequence of the two; empty when the anchors right around the span do not pin it."""
    s2f = _shared_words(source_text, tuple(forward.tokens))
    if start - 1 in s2f and end in s2f and 0 < s2f[end] - s2f[start - 1] - 1 <= (end - start) + 1:
        return range(s2f[start - 1] + 1, s2f[end])
    return range(0)


def _offsets_in(text: str, tokens: Sequence[str]) -> list[tuple[int, int]]:
    """Offsets of given tokens in a text they were cut from (in order); falls back to detokenized spacing."""
    offsets, pos = [], 0
    for tok in tokens:
        i = text.find(tok, pos)
        if i < 0:
            return detokenize(tokens)[1]
        offsets.append((i, i + len(tok)))
        pos = i + len(tok)
    return offsets
