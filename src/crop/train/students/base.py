"""The student interface of self-training: a NER model trained on L_src + projected L_tgt that tags
target-language text directly (CROP step 6).

Two implementations: `SpacyStudent` (CPU, `crop.train.students.spacy_student`) and `TransformersStudent`
(token classification, `crop.train.students.transformers_student`). Both tag crop's own tokens (no re-tokenizing)
and save in their library's own format, so a user can load a student without crop.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from crop.train.evaluate import evaluate


class LabeledSentence(BaseModel):
    """One training or evaluation sentence: crop's tokens and their BIO tags."""

    id: str
    lang: str
    tokens: list[str]
    tags: list[str]
    weight: float = Field(default=1.0, ge=0.0, description="relative weight in training (students sample by it)")


class StudentConfig(BaseModel):
    kind: Literal["spacy", "transformers"] = "spacy"
    base: str | None = Field(
        default=None,
        description="spacy: None for a blank multilingual 'xx' pipeline, else a pipeline name or path; "
        "transformers: a hub id or a local folder (xlm-roberta-base, a tiny test model)",
    )
    epochs: int = Field(default=10, ge=1)
    batch_size: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    learning_rate: float | None = Field(default=None, description="None: the student's own default")
    seed: int = 0
    device: str = Field(default="auto", description="transformers: auto, cpu, cuda, cuda:N")
    dtype: str = Field(default="auto", description="transformers: auto (bf16 autocast on CUDA), float32, bfloat16")
    options: dict[str, Any] = Field(default_factory=dict, description="settings of one kind of student (spacy: "
                                    "width, depth, rows, average, init_tok2vec; see its module)")


class Scores(BaseModel):
    """Entity-level precision, recall and F1 (seqeval, conlleval-style) of one dev set."""

    precision: float
    recall: float
    f1: float


class EpochReport(BaseModel):
    round: int
    epoch: int
    loss: float
    dev: dict[str, Scores] = Field(default_factory=dict, description="dev language -> scores after this epoch")
    seconds: float

    @property
    def mean_f1(self) -> float:
        return mean_f1(self.dev)


def mean_f1(dev: Mapping[str, Scores]) -> float:
    """The unweighted mean of the dev languages' F1 (0 without dev sets): what "best epoch" maximizes."""
    return sum(s.f1 for s in dev.values()) / len(dev) if dev else 0.0


def score(gold: Sequence[LabeledSentence], predicted: Sequence[Sequence[str]]) -> Scores:
    """seqeval scores of predicted tag sequences against gold sentences (same order, same token counts)."""
    report = evaluate({str(i): list(s.tags) for i, s in enumerate(gold)},
                      {str(i): list(p) for i, p in enumerate(predicted)})
    return Scores(precision=report.precision, recall=report.recall, f1=report.f1)


def evaluate_student(student: Student, dev: Mapping[str, Sequence[LabeledSentence]]) -> dict[str, Scores]:
    """The student's scores on each dev language."""
    return {lang: score(sents, student.predict([s.tokens for s in sents], lang)) for lang, sents in dev.items()}


@runtime_checkable
class Student(Protocol):
    kind: str

    def fit(self, train: list[LabeledSentence], dev: dict[str, list[LabeledSentence]], *, round: int,
            on_epoch: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
        """Train for config.epochs epochs (continuing from the current weights when already trained); keeps the
        weights of the epoch with the best mean dev F1 (the last epoch without dev data)."""
        ...

    def predict(self, sentences: list[list[str]], lang: str) -> list[list[str]]:
        """BIO tags for each sentence's tokens (exactly one tag per given token)."""
        ...

    def save(self, path: Path) -> None:
        """Write the model in its library's own format (a spaCy folder, a save_pretrained folder)."""
        ...


_MODULES = {
    "spacy": ("crop.train.students.spacy_student", "SpacyStudent"),
    "transformers": ("crop.train.students.transformers_student", "TransformersStudent"),
}


def _student_class(kind: str) -> type:
    try:
        module, name = _MODULES[kind]
    except KeyError:
        raise ValueError(f"unknown student kind {kind!r}; known: {', '.join(_MODULES)}") from None
    return getattr(importlib.import_module(module), name)


def new_student(config: StudentConfig) -> Student:
    """An untrained student of config.kind."""
    return _student_class(config.kind)(config)


def model_kind(folder: Path) -> str | None:
    """'spacy' (a config.cfg), 'transformers' (a config.json) or None: what kind of model a folder holds at its
    top (the one test of it: the registry, the tagger's student and `load_student` all use it)."""
    folder = Path(folder)
    if (folder / "config.cfg").is_file():
        return "spacy"
    if (folder / "config.json").is_file():
        return "transformers"
    return None


def student_kind(path: Path) -> str:
    """'spacy' or 'transformers' from a model folder's files; an error for a folder that holds neither."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: not a model folder")
    kind = model_kind(path)
    if kind is None:
        raise ValueError(f"{path}: neither a spaCy pipeline (config.cfg) nor a transformers model (config.json)")
    return kind


def load_student(path: Path) -> Student:
    """A saved student (its folder, as `Student.save` wrote it), its kind detected from the folder's files."""
    return _student_class(student_kind(Path(path))).load(Path(path))
