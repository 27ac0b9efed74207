"""Fit a spaCy NER to labeled data in the source language (L_src): the paper tags the English side with a
model trained on the user's English labels (CoNLL-2003), not with a model of another label inventory.

Starting from a pretrained pipeline (en_core_web_sm by default) keeps its token representations; the NER gets
the labels of the chosen scheme and is updated on the labeled sentences, the best epoch on a held-out part
being kept. The result is a spaCy folder that `SpacyTagger` (spec `spacy:PATH`) loads.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from crop.io import InputSentence, read_jsonl
from crop.labels import CONLL, LabelScheme, bio_to_spans, spans_to_bio
from crop.tag.spacy import DEFAULT_PIPELINE, load_pipeline

log = logging.getLogger(__name__)


class EpochReport(BaseModel):
    epoch: int
    loss: float
    dev_f1: float
    seconds: float


class TrainReport(BaseModel):
    output: str
    base: str
    train_sentences: int
    dev_sentences: int
    labels: list[str]
    epochs: list[EpochReport]
    best_epoch: int
    best_dev_f1: float


def _mapped_tags(s: InputSentence, scheme: LabelScheme) -> list[str]:
    """The sentence's tags with labels mapped into the scheme (unmapped entities become O)."""
    spans = [(a, b, lab) for a, b, label in bio_to_spans(s.tags or []) if (lab := scheme.map(label))]
    return spans_to_bio(len(s.tokens), spans)


def train_spacy_ner(
    train_path: str | Path,
    output: str | Path,
    base: str = DEFAULT_PIPELINE,
    scheme: LabelScheme = CONLL,
    epochs: int = 10,
    dev_path: str | Path | None = None,
    dev_fraction: float = 0.1,
    batch_size: int = 16,
    dropout: float = 0.2,
    seed: int = 0,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> TrainReport:
    """Train and save the NER; returns what each epoch did. `train_path` is JSONL with `tokens` and `tags`."""
    from spacy.tokens import Doc
    from spacy.training import Example, iob_to_biluo
    from spacy.util import fix_random_seed

    if epochs < 1:
        raise ValueError("epochs must be at least 1")
    sentences = [s for s in read_jsonl(train_path, "en") if s.tags is not None]
    if not sentences:
        raise ValueError(f"{train_path}: no sentence with tags to train on")
    rng = random.Random(seed)
    fix_random_seed(seed)  # dropout and the new labels' weights too: one seed, one model
    if dev_path is not None:
        dev = [s for s in read_jsonl(dev_path, "en") if s.tags is not None]
        train = sentences
    else:
        rng.shuffle(sentences)
        n_dev = max(1, int(len(sentences) * dev_fraction)) if len(sentences) > 1 else 0
        dev, train = sentences[:n_dev], sentences[n_dev:]

    nlp = load_pipeline(base)
    ner = nlp.get_pipe("ner")
    for label in scheme.labels:
        ner.add_label(label)

    def examples(items: list[InputSentence]) -> list:
        return [Example.from_dict(Doc(nlp.vocab, words=s.tokens),
                                  {"entities": iob_to_biluo(_mapped_tags(s, scheme))}) for s in items]

    train_ex, dev_ex = examples(train), examples(dev)
    optimizer = nlp.resume_training()
    output = Path(output)
    reports: list[EpochReport] = []
    best = (-1.0, 0)
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        rng.shuffle(train_ex)
        losses: dict[str, float] = {}
        for i in range(0, len(train_ex), batch_size):
            nlp.update(train_ex[i:i + batch_size], sgd=optimizer, drop=dropout, losses=losses)
        dev_f1 = float(nlp.evaluate(dev_ex)["ents_f"] or 0.0) if dev_ex else 0.0
        report = EpochReport(epoch=epoch, loss=round(float(losses.get("ner", 0.0)), 3), dev_f1=round(dev_f1, 4),
                             seconds=round(time.perf_counter() - t0, 2))
        reports.append(report)
        log.info("ner epoch", extra=report.model_dump())
        if on_epoch:
            on_epoch(report)
        if dev_f1 > best[0] or not dev_ex:
            best = (dev_f1, epoch)
            output.mkdir(parents=True, exist_ok=True)
            nlp.to_disk(output)
    return TrainReport(output=str(output), base=base, train_sentences=len(train), dev_sentences=len(dev),
                       labels=list(scheme.labels), epochs=reports, best_epoch=best[1], best_dev_f1=round(best[0], 4))
