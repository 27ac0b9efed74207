"""The spaCy student: a multilingual pipeline whose only component is an NER trained on crop's own tokens.

By default the pipeline is blank multilingual (`spacy.blank("xx")`); with `StudentConfig.base` it is an installed
pipeline or folder whose language, vocabulary and static vectors are kept while its components are replaced by a
fresh NER (so a base with vectors gives a "vectors, no pretrained NER" start). Training sees `Doc(words=tokens)`,
never spaCy's tokenizer, so the student tags exactly the tokens projection produced and dev sets are scored on
their own tokens.

The NER is spaCy's transition-based parser over a CNN token-to-vector layer. Its embeddings hash the
lowercase form (NORM), the first character (PREFIX), the last three characters (SUFFIX) and the word shape (SHAPE):
the sub-word features are what carry over between Spanish, Catalan, Galician and English surface forms (shared
suffixes, capitalization), which matters for a student without pretrained vectors.

Training is spaCy's Adam; with the option `average` (the default) the weights evaluated each epoch, kept for the
best epoch and saved are Adam's moving average of the weights, which moves far less from epoch to epoch than the
raw weights on small or noisy (projected) data. `StudentConfig.options` (`SpacyOptions`) also sets the layer sizes
and `init_tok2vec`, the weights of a token-to-vector layer pretrained with `spacy pretrain` on raw text.

Sentence weights (`LabeledSentence.weight`) are used by sampling: each epoch a sentence of weight w is seen
floor(w) times plus once more with probability w - floor(w), so 0.5 means "every other epoch on average" and 2.0
"twice per epoch".

The saved folder is a plain spaCy pipeline (`nlp.to_disk`): `spacy.load(folder)` works without crop (feed it
`Doc(nlp.vocab, words=tokens)` to keep crop's tokens). crop's config rides along in meta.json under "crop".
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from crop.labels import bio_to_spans, spans_to_bio
from crop.train.students.base import (
    EpochReport,
    LabeledSentence,
    StudentConfig,
    evaluate_student,
    mean_f1,
)

log = logging.getLogger(__name__)

# The NER model: spaCy's CPU ("efficiency") architecture with explicit sub-word embeddings. Rows are hash-table
# sizes per attribute: a multilingual vocabulary needs more NORM rows than spaCy's 2,000-row default.
# Width 64 and depth 2 tag one sentence in about half the time of spaCy's 96 and 4 (the tagger's mode student is
# there to be fast) for 0.007 less mean dev F1 after one round on the shared data (benchmarks/selftrain.py).
DEFAULT_WIDTH = 64
DEFAULT_DEPTH = 2
DEFAULT_HIDDEN = 64
DEFAULT_ROWS = (10000, 2500, 5000, 1000)  # NORM, PREFIX, SUFFIX, SHAPE
DEFAULT_LEARNING_RATE = 0.001  # Adam, spaCy's default


class SpacyOptions(BaseModel):
    """`StudentConfig.options` of a spaCy student."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not a silent default

    width: int = Field(default=DEFAULT_WIDTH, ge=8, description="token vector width")
    depth: int = Field(default=DEFAULT_DEPTH, ge=1, description="CNN layers (each widens the context by one token "
                       "on each side)")
    hidden_width: int = Field(default=DEFAULT_HIDDEN, ge=8, description="the transition parser's hidden layer")
    rows: tuple[int, int, int, int] = Field(default=DEFAULT_ROWS, description="hash rows of NORM, PREFIX, SUFFIX, "
                                            "SHAPE")
    average: bool = Field(default=True, description="evaluate and keep Adam's moving average of the weights "
                          "(steadier from epoch to epoch than the raw weights)")
    init_tok2vec: str | None = Field(default=None, description="weights of the token-to-vector layer from "
                                     "`spacy pretrain` (same width, depth and rows)")


def ner_model_config(opts: SpacyOptions | None = None, static_vectors: bool = False) -> dict[str, Any]:
    """The `model` block of the NER component (spaCy registry names only, so the folder loads without crop)."""
    opts = opts or SpacyOptions()
    return {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": "ner",
        "extra_state_tokens": False,
        "hidden_width": opts.hidden_width,
        "maxout_pieces": 2,
        "use_upper": True,
        "nO": None,
        "tok2vec": {
            "@architectures": "spacy.Tok2Vec.v2",
            "embed": {
                "@architectures": "spacy.MultiHashEmbed.v2",
                "width": opts.width,
                "attrs": ["NORM", "PREFIX", "SUFFIX", "SHAPE"],
                "rows": list(opts.rows),
                "include_static_vectors": static_vectors,
            },
            "encode": {
                "@architectures": "spacy.MaxoutWindowEncoder.v2",
                "width": opts.width,
                "depth": opts.depth,
                "window_size": 1,
                "maxout_pieces": 3,
            },
        },
    }


def _tok2vec_layer(ner: Any) -> Any:
    """The NER's Tok2Vec layer: the first layer of its "tok2vec" reference (which the parser chains with a
    flattening and a projection)."""
    return ner.model.get_ref("tok2vec").layers[0]


def _clean_bio(tags: list[str]) -> list[str]:
    """IOB2 tags as spaCy's converter wants them (a stray I- starts an entity, as seqeval reads it)."""
    return spans_to_bio(len(tags), bio_to_spans(tags))


def _sample(weights: list[float], rng: random.Random) -> list[int]:
    """Indices for one epoch: floor(w) copies of each sentence plus one with probability frac(w)."""
    out: list[int] = []
    for i, w in enumerate(weights):
        whole = math.floor(w)
        out.extend([i] * whole)
        if w > whole and rng.random() < w - whole:
            out.append(i)
    return out


class SpacyStudent:
    kind = "spacy"

    def __init__(self, config: StudentConfig | None = None, *, nlp: Any = None) -> None:
        self.config = config or StudentConfig()
        if self.config.kind != "spacy":
            raise ValueError(f"SpacyStudent needs a config of kind 'spacy', not {self.config.kind!r}")
        self.options = SpacyOptions.model_validate(self.config.options)
        self._trained = nlp is not None
        self.nlp = nlp if nlp is not None else self._new_pipeline()
        self._optimizer: Any = None
        self.best_epoch = 0

    def _new_pipeline(self) -> Any:
        import spacy

        if self.config.base is None:
            nlp = spacy.blank("xx")
        else:
            nlp = spacy.load(self.config.base)
            for name in list(nlp.pipe_names):  # keep language, vocabulary, vectors; a fresh NER replaces the rest
                nlp.remove_pipe(name)
        static = self.config.base is not None and bool(nlp.vocab.vectors.shape[0])
        nlp.add_pipe("ner", config={"model": ner_model_config(self.options, static)})
        return nlp

    @classmethod
    def load(cls, path: Path) -> SpacyStudent:
        import spacy

        nlp = spacy.load(Path(path))
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"{path}: the spaCy pipeline has no 'ner' component")
        stored = nlp.meta.get("crop", {}).get("student")
        config = StudentConfig.model_validate(stored) if isinstance(stored, dict) else StudentConfig()
        return cls(config, nlp=nlp)

    @property
    def labels(self) -> list[str]:
        return list(self.nlp.get_pipe("ner").labels)

    def _docs(self, sentences: list[list[str]]) -> list[Any]:
        from spacy.tokens import Doc

        return [Doc(self.nlp.vocab, words=list(tokens)) for tokens in sentences]

    def fit(self, train: list[LabeledSentence], dev: dict[str, list[LabeledSentence]], *, round: int = 1,
            on_epoch: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
        from spacy.tokens import Doc
        from spacy.training import Example, iob_to_biluo
        from spacy.util import fix_random_seed, minibatch

        train = [s for s in train if s.tokens]
        if not train:
            raise ValueError("no sentence to train on")
        cfg = self.config
        # one seed per (seed, round): rounds differ, reruns do not
        fix_random_seed(cfg.seed + 1000 * round)
        rng = random.Random(cfg.seed * 7919 + round)
        examples = [Example.from_dict(Doc(self.nlp.vocab, words=s.tokens),
                                      {"entities": iob_to_biluo(_clean_bio(s.tags))}) for s in train]
        ner = self.nlp.get_pipe("ner")
        if not self._trained:
            self._optimizer = self._new_optimizer()
            self.nlp.initialize(lambda: examples, sgd=self._optimizer)
            if self.options.init_tok2vec:
                # `spacy pretrain` weights of the same token-to-vector layer (as spaCy's [initialize] does)
                _tok2vec_layer(ner).from_bytes(Path(self.options.init_tok2vec).read_bytes())
            self._trained = True
        else:
            for label in sorted({lab for s in train for _, _, lab in bio_to_spans(s.tags)} - set(ner.labels)):
                ner.add_label(label)  # a continued student meeting a new label: the output layer grows
            if self._optimizer is None:
                self._optimizer = self._new_optimizer()
                self.nlp.resume_training(sgd=self._optimizer)
        self._optimizer.learn_rate = cfg.learning_rate or DEFAULT_LEARNING_RATE

        weights = [s.weight for s in train]
        reports: list[EpochReport] = []
        best: tuple[float, int, bytes] = (-1.0, 0, b"")
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            order = _sample(weights, rng)
            rng.shuffle(order)
            losses: dict[str, float] = {}
            for batch in minibatch([examples[i] for i in order], size=cfg.batch_size):
                self.nlp.update(batch, sgd=self._optimizer, drop=cfg.dropout, losses=losses)
            with self._evaluated_params():
                scores = evaluate_student(self, dev)
                f1 = mean_f1(scores)
                if not dev or f1 > best[0]:
                    # the best epoch's weights (averaged ones with `average`), restored at the end; ties keep the
                    # earlier epoch
                    best = (f1, epoch, ner.to_bytes())
            report = EpochReport(round=round, epoch=epoch, loss=round_(losses.get("ner", 0.0)), dev=scores,
                                 seconds=round_(time.perf_counter() - t0, 2))
            reports.append(report)
            log.info("student epoch", extra={"round": round, "epoch": epoch, "loss": report.loss,
                                             "dev_f1": round_(f1, 4)})
            if on_epoch is not None:
                on_epoch(report)
        ner.from_bytes(best[2])
        self.best_epoch = best[1]
        return reports

    def _new_optimizer(self) -> Any:
        from thinc.api import Adam

        # spaCy's default Adam (L2 weight decay 0.01, gradient clipping 1.0), with weight averaging when asked
        return Adam(learn_rate=self.config.learning_rate or DEFAULT_LEARNING_RATE, L2=0.01, L2_is_weight_decay=True,
                    grad_clip=1.0, use_averages=self.options.average)

    def _evaluated_params(self) -> Any:
        """The weights to evaluate (and keep): the optimizer's moving averages with `average`, else the weights."""
        if self.options.average and self._optimizer is not None and self._optimizer.averages:
            return self.nlp.use_params(self._optimizer.averages)
        return contextlib.nullcontext()

    def predict(self, sentences: list[list[str]], lang: str = "") -> list[list[str]]:
        # lang is not needed: one multilingual model; empty sentences get no tags
        out: list[list[str]] = []
        docs = self._docs([s for s in sentences if s])
        tagged = iter(self.nlp.pipe(docs, batch_size=256))
        for tokens in sentences:
            if not tokens:
                out.append([])
                continue
            doc = next(tagged)
            out.append(spans_to_bio(len(doc), [(e.start, e.end, e.label_) for e in doc.ents]))
        return out

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.nlp.meta["name"] = self.nlp.meta.get("name") or "crop_student"
        self.nlp.meta["crop"] = {"student": self.config.model_dump(mode="json"), "labels": self.labels}
        self.nlp.to_disk(path)


def round_(x: float, digits: int = 3) -> float:
    return round(float(x), digits)


def pretrain_tok2vec(sentences: Iterable[Sequence[str]], output: Path, options: SpacyOptions | dict | None = None,
                     epochs: int = 5, seed: int = 0, batch_words: int = 3000) -> Path:
    """Pretrain the student's token-to-vector layer on raw target-language text with `spacy pretrain` (the
    character objective: predict each word's first and last characters from its context), for `init_tok2vec`.

    `sentences` are token lists (crop's tokens, e.g. `crop.text.tokenize` of the raw lines); `options` must be
    the ones the student will be trained with (same width, depth and rows). Writes spaCy's pretraining files
    under `output` and returns the weights of the last epoch (`output/model-last.bin`)."""
    import spacy
    import srsly
    from spacy.training.pretrain import pretrain
    from thinc.api import Config

    opts = options if isinstance(options, SpacyOptions) else SpacyOptions.model_validate(options or {})
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    corpus = output / "corpus.jsonl"
    # spaCy's corpus reader takes text; crop's tokens joined by spaces keep (nearly) crop's tokenization
    srsly.write_jsonl(corpus, ({"text": " ".join(t)} for t in sentences if t))
    nlp = spacy.blank("xx")
    # a standalone tok2vec component with the NER's token-to-vector architecture: spaCy pretrains a layer that
    # outputs one array per doc, which the NER's own reference (already flattened for the parser) is not
    nlp.add_pipe("tok2vec", config={"model": ner_model_config(opts)["tok2vec"]})
    config = nlp.config.merge(Config().from_disk(Path(spacy.__file__).parent / "default_config_pretraining.cfg"))
    config["paths"]["raw_text"] = str(corpus)
    config["corpora"]["pretrain"]["path"] = str(corpus)
    config["system"]["seed"] = seed
    config["pretraining"].update({"max_epochs": epochs, "component": "tok2vec", "layer": ""})
    config["pretraining"]["batcher"]["size"] = batch_words
    config["corpora"]["pretrain"]["min_length"] = 1
    pretrain(config.interpolate(), output, silent=True)
    return output / "model-last.bin"
