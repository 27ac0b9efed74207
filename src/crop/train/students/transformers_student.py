"""A transformers token classification student (XLM-R, mBERT, ... by hub id or folder), trained on crop's tokens.

Words are crop's tokens, split into sub-tokens by the model's fast tokenizer (`is_split_into_words`); a word's
label sits on its first sub-token, the other sub-tokens are ignored (-100) in the loss, and a word's prediction is
that of its first sub-token. Sentences longer than the model's window are never truncated: training splits them
into consecutive windows of whole words (every word labeled once), prediction tags them in overlapping windows and
keeps each word's tag from the window where it is farthest from an edge (as the `transformers:` tagger does), so
`predict` always returns exactly one tag per token.

Training: AdamW (weight decay 0.01, none on biases and norms), linear warm-up over the first 10% of the steps then
linear decay to 0, gradients clipped at 1.0; on CUDA the forward pass runs under autocast (bf16 when the GPU has
it, "dtype" says otherwise), weights stay float32. A sentence's `weight` scales its tokens' loss. After each epoch
the dev sets are tagged and scored (seqeval); the weights of the epoch with the best mean dev F1 are kept in memory
and restored at the end. `save` writes a plain `save_pretrained` folder (model, tokenizer, BIO labels in
config.json's id2label), which `AutoModelForTokenClassification.from_pretrained` and crop's `transformers:PATH`
tagger load as is; `student.json` beside it records the student's config.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crop.labels import CONLL, valid_bio
from crop.tag.transformers import PREFIX_SPACE, best_window, model_window, plan_windows, subtoken_counts
from crop.torch_device import resolve_device, resolve_dtype
from crop.train.students.base import EpochReport, LabeledSentence, StudentConfig, evaluate_student

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("O", *(f"{p}-{t}" for t in CONLL.labels for p in ("B", "I")))
DEFAULT_LEARNING_RATE = 5e-5  # the usual fine-tuning rate of base-size encoders (XLM-R, mBERT)
WARMUP = 0.1  # share of the steps with a rising learning rate
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
STUDENT_FILE = "student.json"  # the StudentConfig a saved student was trained with (transformers ignores it)


@dataclass
class _Example:
    """One training window: sub-token ids with their labels (-100 where no label) and the sentence's weight."""

    input_ids: list[int]
    labels: list[int]
    weight: float


class TransformersStudent:
    kind = "transformers"

    def __init__(self, config: StudentConfig) -> None:
        """A token classification model over CoNLL BIO labels on `config.base` (a pretrained encoder; an existing
        head is kept only when its labels are exactly these, else a new one is initialized from `config.seed`)."""
        import torch
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

        if not config.base:
            raise ValueError("a transformers student needs a base model: config.base (e.g. xlm-roberta-base)")
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        base = str(Path(config.base).expanduser()) if Path(config.base).expanduser().exists() else config.base
        base_config = AutoConfig.from_pretrained(base)
        kwargs = {"add_prefix_space": True} if base_config.model_type in PREFIX_SPACE else {}
        self.tokenizer = AutoTokenizer.from_pretrained(base, **kwargs)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError(f"{config.base!r} has no fast tokenizer (tokenizer.json), which word alignment needs")
        same_head = _has_head(base_config) and _label_names(base_config) == list(LABELS)
        torch.manual_seed(config.seed)  # a new head's initial weights
        self.model, info = AutoModelForTokenClassification.from_pretrained(
            base, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)}, classifier_dropout=config.dropout,
            ignore_mismatched_sizes=True, output_loading_info=True, dtype=torch.float32)
        head_loaded = not any(_is_head(k) for k in [*info.get("missing_keys", ()),
                                                    *(_key(m) for m in info.get("mismatched_keys", ()))])
        if head_loaded and not same_head:
            _reset_head(self.model)  # a head of the same size for other labels (or another order): start afresh
        self.model.to(self.device).eval()
        self.window = model_window(self.model, self.tokenizer)
        self.specials = self.tokenizer.num_special_tokens_to_add(pair=False)
        self.label2id = {label: i for i, label in enumerate(LABELS)}

    @classmethod
    def load(cls, path: Path, device: str | None = None) -> TransformersStudent:
        """A student `save` wrote (or any save_pretrained token classification folder with CoNLL BIO labels);
        its config from student.json when present, with `base` the folder itself (the weights it continues
        from). `device`: where to run it, "auto" by default (the training machine's device may not exist here)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: not a transformers model folder (no config.json)")
        saved = path / STUDENT_FILE
        config = (StudentConfig.model_validate_json(saved.read_text(encoding="utf-8")) if saved.is_file()
                  else StudentConfig(kind="transformers"))
        return cls(config.model_copy(update={"kind": "transformers", "base": str(path), "device": device or "auto"}))

    # --- training ---------------------------------------------------------------------------------------------

    def fit(self, train: list[LabeledSentence], dev: dict[str, list[LabeledSentence]], *, round: int,
            on_epoch: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
        """Train config.epochs epochs from the current weights; keep the epoch with the best mean dev F1 (ties:
        the later one; without dev data the last epoch)."""
        import torch
        from transformers import get_linear_schedule_with_warmup

        cfg = self.config
        examples = self._examples(train)
        if not examples:
            raise ValueError("no training sentences (none has tokens and a positive weight)")
        rng = random.Random(cfg.seed * 1000 + round)  # batch order: deterministic, different per round
        torch.manual_seed(cfg.seed * 1000 + round)  # dropout
        steps_per_epoch = math.ceil(len(examples) / cfg.batch_size)
        total = steps_per_epoch * cfg.epochs
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                       {"params": no_decay, "weight_decay": 0.0}],
                                      lr=cfg.learning_rate or DEFAULT_LEARNING_RATE)
        scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(total * WARMUP), total)
        scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None  # fp16 needs loss scaling

        reports: list[EpochReport] = []
        best: tuple[float, dict[str, Any]] | None = None
        for epoch in range(1, cfg.epochs + 1):
            start = time.monotonic()
            order = list(range(len(examples)))
            rng.shuffle(order)
            self.model.train()
            loss_sum, weight_sum = 0.0, 0.0
            for b in range(0, len(order), cfg.batch_size):
                batch = [examples[i] for i in order[b:b + cfg.batch_size]]
                loss, labeled = self._loss(batch)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), MAX_GRAD_NORM)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += float(loss.detach()) * labeled
                weight_sum += labeled
            self.model.eval()
            scores = evaluate_student(self, dev) if dev else {}
            report = EpochReport(round=round, epoch=epoch, loss=loss_sum / weight_sum if weight_sum else 0.0,
                                 dev=scores, seconds=time.monotonic() - start)
            reports.append(report)
            log.info("round %d epoch %d/%d: loss %.4f, mean dev F1 %.4f", round, epoch, cfg.epochs, report.loss,
                     report.mean_f1, extra={"round": round, "epoch": epoch, "loss": report.loss,
                                            "dev_f1": report.mean_f1})
            if dev and (best is None or report.mean_f1 >= best[0]):
                # a CPU copy: the best epoch's weights survive later epochs without holding GPU memory twice
                best = (report.mean_f1, {k: v.detach().to("cpu", copy=True) for k, v in
                                         self.model.state_dict().items()})
            if on_epoch is not None:
                on_epoch(report)
        if best is not None and reports[-1].mean_f1 < best[0]:
            self.model.load_state_dict(best[1])
            log.info("round %d: kept the best epoch (mean dev F1 %.4f)", round, best[0])
        self.model.eval()
        return reports

    def _examples(self, train: Sequence[LabeledSentence]) -> list[_Example]:
        """Each sentence as one or more windows of whole words that fit the model (never truncated)."""
        examples: list[_Example] = []
        sents = [s for s in train if s.tokens]
        for s in sents:
            if len(s.tags) != len(s.tokens):
                raise ValueError(f"sentence {s.id!r}: {len(s.tags)} tags for {len(s.tokens)} tokens")
            bad = [t for t in s.tags if t not in self.label2id]
            if bad:
                raise ValueError(f"sentence {s.id!r}: tag {bad[0]!r} is not one of {', '.join(LABELS)}")
        windows: list[tuple[LabeledSentence, int, int]] = []
        for s, counts in zip(sents, self._subtoken_counts([s.tokens for s in sents]), strict=True):
            if s.weight > 0:
                windows += [(s, start, end) for start, end in plan_windows(counts, self.window, 0)]
        encoded = self._encode([s.tokens[start:end] for s, start, end in windows])
        for (s, start, _), (ids, word_ids) in zip(windows, encoded, strict=True):
            labels = [-100] * len(ids)
            seen: set[int] = set()
            for t, w in enumerate(word_ids):
                if w is not None and w not in seen:
                    seen.add(w)
                    labels[t] = self.label2id[s.tags[start + w]]
            examples.append(_Example(ids, labels, s.weight))
        return examples

    def _loss(self, batch: Sequence[_Example]) -> tuple[Any, int]:
        """The batch's loss: per labeled sub-token cross-entropy times its sentence's weight, over the number of
        labeled sub-tokens (so a weight of 0.5 halves a sentence's pull); and that number."""
        import torch

        width = max(len(e.input_ids) for e in batch)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch])
        mask = torch.tensor([[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in batch])
        weights = torch.tensor([e.weight for e in batch], dtype=torch.float32)
        ids, mask, labels, weights = (t.to(self.device) for t in (ids, mask, labels, weights))
        with self._autocast():
            logits = self.model(input_ids=ids, attention_mask=mask).logits
        token_loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100,
                                                       reduction="none")
        labeled = int((labels != -100).sum())
        loss = (token_loss * weights[:, None]).sum() / max(labeled, 1)
        return loss, labeled

    # --- prediction -------------------------------------------------------------------------------------------

    def predict(self, sentences: list[list[str]], lang: str) -> list[list[str]]:
        """Valid BIO tags (an I- after O or another type becomes B-), one per token of each sentence; sentences
        longer than the window are tagged in windows sharing a quarter of it. `lang` is unused: the model is
        multilingual."""
        stride = self.window // 4
        counts = self._subtoken_counts(sentences)
        plans = [plan_windows(c, self.window, stride) for c in counts]
        jobs = [(i, s, e) for i, plan in enumerate(plans) for s, e in plan]
        order = sorted(range(len(jobs)), key=lambda j: -sum(counts[jobs[j][0]][jobs[j][1]:jobs[j][2]]))
        by_job: dict[int, list[int]] = {}
        size = max(1, self.config.batch_size * 2)  # no gradients: twice the training batch fits
        was_training = self.model.training
        self.model.eval()
        try:
            for b in range(0, len(order), size):
                batch = order[b:b + size]
                windows = [sentences[jobs[j][0]][jobs[j][1]:jobs[j][2]] for j in batch]
                by_job.update(zip(batch, self._predict_ids(windows), strict=True))
        finally:
            self.model.train(was_training)
        results: list[list[str]] = []
        first = 0
        for i, plan in enumerate(plans):
            n = len(sentences[i])
            tags = ["O"] * n
            for w, k in enumerate(best_window(plan, n)):
                label = by_job[first + k][w - plan[k][0]]
                if label >= 0:
                    tags[w] = LABELS[label]
            first += len(plan)
            results.append(valid_bio(tags))
        return results

    def _predict_ids(self, windows: Sequence[Sequence[str]]) -> list[list[int]]:
        """The label id of each word's first sub-token (-1: the word has no sub-token)."""
        import torch

        encoded = self._encode(windows)
        width = max(len(ids) for ids, _ in encoded)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([e + [pad] * (width - len(e)) for e, _ in encoded], device=self.device)
        mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e, _ in encoded], device=self.device)
        with torch.inference_mode(), self._autocast():
            pred = self.model(input_ids=ids, attention_mask=mask).logits.argmax(-1).cpu().tolist()
        out: list[list[int]] = []
        for b, (words, (_, word_ids)) in enumerate(zip(windows, encoded, strict=True)):
            labels = [-1] * len(words)
            for t, w in enumerate(word_ids):
                if w is not None and labels[w] < 0:
                    labels[w] = pred[b][t]
            out.append(labels)
        return out

    # --- tokenization -----------------------------------------------------------------------------------------

    def _subtoken_counts(self, sentences: Sequence[Sequence[str]]) -> list[list[int]]:
        return subtoken_counts(self.tokenizer, sentences)

    def _encode(self, windows: Sequence[Sequence[str]]) -> list[tuple[list[int], list[int | None]]]:
        """Sub-token ids (with the special tokens) and the word of each, per window; truncation only guards
        a single word longer than the whole window (its first sub-tokens are kept, so it still gets a tag)."""
        enc = self.tokenizer([list(w) for w in windows], is_split_into_words=True, truncation=True,
                             max_length=self.window + self.specials, verbose=False)
        return [(list(enc["input_ids"][b]), enc.word_ids(b)) for b in range(len(windows))]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        import torch

        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    # --- saving -----------------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """A save_pretrained folder: weights (float32 safetensors), config.json with the BIO labels, the
        tokenizer, and student.json (this student's config)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / STUDENT_FILE).write_text(self.config.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _label_names(config: Any) -> list[str]:
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def _has_head(config: Any) -> bool:
    return any(str(a).endswith("ForTokenClassification") for a in getattr(config, "architectures", None) or ())


def _key(mismatched: Any) -> str:
    # transformers lists mismatched weights as (name, shape in checkpoint, shape in model)
    return str(mismatched[0] if isinstance(mismatched, (tuple, list)) else mismatched)


def _is_head(name: str) -> bool:
    return name.split(".")[0] in ("classifier", "score")


def _reset_head(model: Any) -> None:
    import torch

    std = getattr(model.config, "initializer_range", 0.02)
    for name, module in model.named_modules():
        if _is_head(name) and isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)



