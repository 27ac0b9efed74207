"""Round-trip augmentation of the source labels: the English tagger of CROP reads machine-translated English
("Donald Triunfo", "soldiers can taken"), yet it is fitted to clean English. Translating the labeled English
sentences to a target language and back, through the translator's labeled mode (the labels travel in the
markers, as in projection), gives the same sentences in the English the tagger will read, with their gold labels;
training on both teaches it that English.

A round-tripped sentence is kept only when every entity came back, once, with its type, as a whole span of
tokens; one identical to its original teaches nothing new and is left out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from crop.io import InputSentence, read_jsonl, write_jsonl
from crop.labels import spans_to_bio
from crop.pipeline import english_spans
from crop.text import char_to_token_span, tokenize
from crop.translate.base import Translator
from crop.types import LabeledItem, LabeledResult, Span

PIVOT = "en"


class RoundTripStats(BaseModel):
    lang: str
    sentences: int = Field(description="English sentences with entities sent on the round trip")
    kept: int = Field(description="round-tripped sentences kept (every entity survived with its type)")
    identical: int = Field(description="came back word for word as they went (left out)")
    lost: int = Field(description="an entity's markers were lost, split or duplicated (left out)")
    seconds: float


def _survived(back: LabeledResult, n: int) -> dict[int, Span] | None:
    """ref -> span when each of the `n` source spans came back exactly once, whole; else None."""
    if back.lost or back.fragments:
        return None
    by_ref: dict[int, Span] = {}
    for sp in back.spans:
        if sp.ref is None or sp.ref in by_ref or not 0 <= sp.ref < n or sp.end <= sp.start:
            return None
        by_ref[sp.ref] = sp
    return by_ref if len(by_ref) == n else None


def _to_sentence(text: str, spans: Sequence[tuple[int, int, str]], sid: str) -> InputSentence | None:
    """The English text tokenized, with the entity spans (character offsets, label) as BIO tags; None when a
    span does not cover whole tokens or spans overlap."""
    tokens, offsets = tokenize(text, PIVOT)
    tok_spans = []
    for start, end, label in spans:
        ts = char_to_token_span(offsets, start, end)
        if ts is None or offsets[ts[0]][0] != start or offsets[ts[1] - 1][1] != end:
            return None
        tok_spans.append((ts[0], ts[1], label))
    try:
        tags = spans_to_bio(len(tokens), tok_spans)
    except ValueError:
        return None
    return InputSentence(id=sid, lang=PIVOT, text=text, tokens=tokens, tags=tags, offsets=offsets)


def roundtrip(sentences: Sequence[InputSentence], translator: Translator, lang: str,
              batch_size: int = 256) -> tuple[list[InputSentence], RoundTripStats]:
    """The sentences (English, with tags) translated to `lang` and back in labeled mode; the ones whose entities
    all survived with their types, ids suffixed `#rt-<lang>`."""
    t0 = time.perf_counter()
    todo = []
    for s in sentences:
        text, spans = english_spans(s.tokens, s.tags or [])
        if spans:
            todo.append((s, text, spans))
    kept: list[InputSentence] = []
    identical = lost = 0
    for i in range(0, len(todo), batch_size):
        chunk = todo[i:i + batch_size]
        there = translator.translate_labeled([LabeledItem(text=t, spans=sp) for _, t, sp in chunk], PIVOT, lang)
        # the way back carries the spans as they came out there; their ref points at the English span
        back_items: list[LabeledItem | None] = []
        for (_, _, spans), res in zip(chunk, there, strict=True):
            found = _survived(res, len(spans))
            back_items.append(None if found is None else
                              LabeledItem(text=res.text, spans=[found[r].model_copy(update={"label": spans[r].label,
                                                                                            "ref": r})
                                                                for r in range(len(spans))]))
        idx = [j for j, it in enumerate(back_items) if it is not None]
        lost += len(chunk) - len(idx)
        home = translator.translate_labeled([back_items[j] for j in idx], lang, PIVOT) if idx else []
        for j, res in zip(idx, home, strict=True):
            s, _, spans = chunk[j]
            found = _survived(res, len(spans))
            if found is None:
                lost += 1
                continue
            new = _to_sentence(res.text, [(found[r].start, found[r].end, spans[r].label) for r in range(len(spans))],
                               f"{s.id}#rt-{lang}")
            if new is None:
                lost += 1
            elif new.tokens == list(s.tokens) and new.tags == list(s.tags or []):
                identical += 1
            else:
                kept.append(new)
    return kept, RoundTripStats(lang=lang, sentences=len(todo), kept=len(kept), identical=identical, lost=lost,
                                seconds=round(time.perf_counter() - t0, 2))


class RoundTripReport(BaseModel):
    train_sentences: int = Field(description="original sentences in the training part")
    dev_sentences: int
    dev_roundtrip_sentences: int = Field(default=0, description="round trips of held-out sentences held out too")
    roundtrip: list[RoundTripStats]
    augmented_sentences: int = Field(description="round-tripped sentences added to the training part")
    train_file: str
    dev_file: str


def augmented_training_data(train_path: str | Path, translator: Translator, langs: Sequence[str], workdir: Path,
                            dev_path: str | Path | None = None, dev_fraction: float = 0.1, seed: int = 0,
                            roundtrip_out: str | Path | None = None, roundtrip_dev: bool = True,
                            on_lang: Callable[[RoundTripStats], None] | None = None) -> RoundTripReport:
    """Write the training file (the original training part and its round trips through each language) and the
    held-out file to `workdir`. Without `dev_path` the held-out part is split off first (as `train_spacy_ner`
    splits it: same seed, same part), so no round trip of a held-out sentence is trained on. With `roundtrip_dev`
    the held-out file has the round trips of its sentences too: the best epoch is chosen on the English the
    tagger will read, not on clean English alone."""
    sentences = [s for s in read_jsonl(train_path, PIVOT) if s.tags is not None]
    if not sentences:
        raise ValueError(f"{train_path}: no sentence with tags to train on")
    if dev_path is not None:
        dev, train = [s for s in read_jsonl(dev_path, PIVOT) if s.tags is not None], sentences
    else:
        random.Random(seed).shuffle(sentences)
        n_dev = max(1, int(len(sentences) * dev_fraction)) if len(sentences) > 1 else 0
        dev, train = sentences[:n_dev], sentences[n_dev:]
    stats, extra, dev_extra = [], [], []
    for lang in langs:
        got, st = roundtrip(train, translator, lang)
        extra += got
        stats.append(st)
        if roundtrip_dev:
            dev_extra += roundtrip(dev, translator, lang)[0]
        if on_lang:
            on_lang(st)
    workdir.mkdir(parents=True, exist_ok=True)
    train_file, dev_file = workdir / "train.jsonl", workdir / "dev.jsonl"

    def rec(s: InputSentence) -> dict:
        return {"id": s.id, "lang": PIVOT, "tokens": list(s.tokens), "tags": list(s.tags or [])}

    write_jsonl(train_file, [rec(s) for s in [*train, *extra]])
    write_jsonl(dev_file, [rec(s) for s in [*dev, *dev_extra]])
    if roundtrip_out is not None:
        write_jsonl(roundtrip_out, [rec(s) | {"text": s.text} for s in extra])
    return RoundTripReport(train_sentences=len(train), dev_sentences=len(dev), dev_roundtrip_sentences=len(dev_extra),
                           roundtrip=stats,
                           augmented_sentences=len(extra), train_file=str(train_file), dev_file=str(dev_file))
