"""Self-training students: the interface (`base`) and the spaCy and transformers implementations.

The implementations are imported on demand (`new_student`, `load_student`), so importing this package does not
import spaCy or torch."""

from crop.train.students.base import (
    EpochReport,
    LabeledSentence,
    Scores,
    Student,
    StudentConfig,
    evaluate_student,
    load_student,
    mean_f1,
    new_student,
    score,
    student_kind,
)

__all__ = ["EpochReport", "LabeledSentence", "Scores", "Student", "StudentConfig", "evaluate_student",
           "load_student", "mean_f1", "new_student", "score", "student_kind"]
