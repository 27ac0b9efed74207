"""Fine-tune a many-to-many translation model (M2M100, NLLB) into an LST model (CROP, section 3.3).

The model learns two objectives in alternation: plain translation, and translation of pairs whose aligned
phrases are wrapped in `__SLOT{i}__` on both sides (a share `alpha` of the steps; 0.5 in the paper). The slot
tokens become special tokens of the tokenizer with new embedding rows. Adam with betas (0.9, 0.98), learning rate
1e-4 after a linear warm-up then inverse square root decay (the fairseq recipe the authors used), label-smoothed
cross entropy. Checkpoints (safetensors weights, tokenizer, optimizer and data position) are written every
`save_every` steps; a run started again on the same output folder resumes from the last one.

    from crop.train.lst.finetune import LstTrainConfig, train_lst
    summary = train_lst(LstTrainConfig(model="facebook/m2m100_418M", data=["lst.jsonl"], output="lst-model"))

The result is a folder that the `transformers:` engine serves as it is and `crop convert` turns into a
CTranslate2 model.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from crop.train.lst.data import Batch, BatchStream, Example, View, example_stream, uses_slots
from crop.translate.seq2seq import SLOT_RE

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
META_FILE = "crop_lst.json"


@dataclass
class LstTrainConfig:
    model: str  # hub id or folder of the base checkpoint
    data: list[str]  # JSONL files written by `crop lst prepare`
    output: str
    max_steps: int = 10_000
    batch_size: int = 32  # sentence pairs per step (before accumulation)
    max_batch_tokens: int = 4096  # padded pieces per batch, the longer side
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 1000
    schedule: Literal["inverse_sqrt", "linear", "constant"] = "inverse_sqrt"
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    alpha: float = 0.5  # share of steps on the slot objective
    directions: Literal["forward", "backward", "both"] = "both"
    slots: int = 32  # slot tokens the model gets (must exceed the largest slot id of the data)
    max_length: int = 256  # pieces per side; longer pairs are skipped
    device: str = "auto"
    precision: str = "auto"  # autocast on GPU: bf16 where supported, else fp16; float32 on CPU
    seed: int = 0
    save_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 50
    shuffle_buffer: int = 10_000
    resume: bool = True
    eval_data: str | None = None  # LST JSONL or gold dev set: marker accuracy at every checkpoint (greedy)
    eval_limit: int = 200  # sentences of eval_data used

    def check(self) -> None:
        if not self.data:
            raise ValueError("no training data given")
        for p in self.data:
            if not Path(p).is_file():
                raise ValueError(f"training data not found: {p}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], not {self.alpha}")
        for name in ("max_steps", "batch_size", "max_batch_tokens", "grad_accum", "slots", "max_length",
                     "save_every", "log_every", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("lr must be positive and warmup_steps not negative")
        if self.schedule not in ("inverse_sqrt", "linear", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r} (inverse_sqrt, linear or constant)")
        if self.eval_data is not None and not Path(self.eval_data).is_file():
            raise ValueError(f"evaluation data not found: {self.eval_data}")
        if self.directions not in ("forward", "backward", "both"):
            raise ValueError(f"directions must be forward, backward or both, not {self.directions!r}")


@dataclass
class TrainSummary:
    output: str
    steps: int
    resumed_from: int
    seconds: float
    target_tokens: int
    tokens_per_second: float
    final_loss: dict[str, float]
    skipped_too_long: int
    peak_memory_mb: float | None
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)


def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step `step` (1-based): linear warm-up to 1, then inverse square
    root decay, linear decay to 0 at `total`, or constant."""
    if warmup and step <= warmup:
        return step / warmup
    if schedule == "inverse_sqrt":
        return math.sqrt(max(warmup, 1) / step)
    if schedule == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    return 1.0


def checkpoints(output: Path) -> list[Path]:
    """The checkpoint folders of a run, oldest first (by step)."""
    found = [p for p in output.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()
             and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


class _Run:
    """One fine-tuning run: model, optimizer, data streams and the loop."""

    def __init__(self, cfg: LstTrainConfig, on_log: Callable[[dict[str, Any]], None] | None) -> None:
        import torch

        from crop.torch_device import resolve_dtype
        from crop.translate.transformers import TransformersTranslator

        self.cfg = cfg
        self.torch = torch
        self.on_log = on_log
        self.output = Path(cfg.output)
        self.output.mkdir(parents=True, exist_ok=True)
        saved = checkpoints(self.output) if cfg.resume else []
        self.resume_dir = saved[-1] if saved else None
        torch.manual_seed(cfg.seed)
        # the translator brings the tokenizer, the family's language codes and the piece codec: training reads
        # exactly the sequences inference will feed the model
        self.engine = TransformersTranslator(str(self.resume_dir or cfg.model), device=cfg.device, dtype="float32",
                                             markers="slot", slots=cfg.slots, beam_size=1)
        self.device = self.engine.device
        self.model = self.engine.model
        self.amp_dtype = resolve_dtype(cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.start_token = self.model.config.decoder_start_token_id
        if self.start_token is None:
            raise ValueError(f"{cfg.model}: the model config has no decoder_start_token_id")
        self.pad = self.engine.pad_id
        decay = [p for n, p in self.model.named_parameters() if p.ndim > 1 and "norm" not in n]
        rest = [p for n, p in self.model.named_parameters() if not (p.ndim > 1 and "norm" not in n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
            lr=cfg.lr, betas=cfg.betas, eps=1e-8)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        consumed = {"plain": 0, "slot": 0}
        if self.resume_dir is not None:
            state = json.loads((self.resume_dir / STATE_FILE).read_text())
            self.step = state["step"]
            consumed = state["consumed"]
            self.history = state.get("history", [])
            opt = torch.load(self.resume_dir / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
            self.optimizer.load_state_dict(opt["optimizer"])
            if self.scaler is not None and opt.get("scaler"):
                self.scaler.load_state_dict(opt["scaler"])
            torch.set_rng_state(opt["rng"])
            log.info("resuming LST fine-tuning", extra={"checkpoint": str(self.resume_dir), "step": self.step})
        self.resumed_from = self.step
        self.eval_items = self._eval_items()
        paths = [Path(p) for p in cfg.data]
        self.streams: dict[View, BatchStream] = {}
        for view in ("plain", "slot"):
            share = cfg.alpha if view == "slot" else 1 - cfg.alpha
            if share == 0:
                continue
            examples = example_stream(paths, view, cfg.directions, cfg.seed, cfg.shuffle_buffer)  # type: ignore[arg-type]
            stream = BatchStream(examples, self._encode, view, cfg.batch_size, cfg.max_batch_tokens,  # type: ignore[arg-type]
                                 cfg.max_length)
            stream.skip(consumed[view])
            self.streams[view] = stream  # type: ignore[index]

    def _eval_items(self) -> list[Any]:
        if self.cfg.eval_data is None:
            return []
        from crop.train.lst.marker_eval import read_items

        return read_items(self.cfg.eval_data, limit=self.cfg.eval_limit)

    def evaluate_markers(self) -> dict[str, Any]:
        """Marker accuracy and BLEU of the model as it is now, on the evaluation items (greedy decoding)."""
        from crop.train.lst.marker_eval import evaluate

        self.model.eval()
        try:
            report = evaluate({"lst": self.engine}, self.eval_items, examples=0)
        finally:
            self.model.train()
        out: dict[str, Any] = {}
        for r in report.engines:
            key = f"{r.src_lang}-{r.tgt_lang}"
            out[key] = {"kept": r.kept_share, "match": r.match_share, "all_match": r.all_match_share,
                        "bleu_labeled": round(r.bleu_labeled, 2), "bleu_plain": round(r.bleu_plain, 2)}
        return out

    # -- data ------------------------------------------------------------------------------------------------

    def _encode(self, ex: Example) -> tuple[list[int], list[int]]:
        eng = self.engine
        source = eng.source_pieces(ex.source, ex.src_lang, ex.tgt_lang)
        target = eng.target_pieces(ex.target, ex.tgt_lang)
        unknown = sorted({p for p in source + target if SLOT_RE.fullmatch(p) and p not in eng.ids})
        if unknown:  # would silently become <unk>
            raise ValueError(f"the data uses {unknown[0]} but the model has {self.cfg.slots} slot tokens: "
                             f"raise --slots or prepare with fewer --max-slots")
        return eng.to_ids(source), eng.to_ids(target)

    def _tensors(self, batch: Batch) -> dict[str, Any]:
        torch = self.torch
        n = len(batch.sources)
        sw = max(len(s) for s in batch.sources)
        tw = max(len(t) for t in batch.targets)
        input_ids = torch.full((n, sw), self.pad, dtype=torch.long)
        mask = torch.zeros((n, sw), dtype=torch.long)
        labels = torch.full((n, tw), -100, dtype=torch.long)
        decoder = torch.full((n, tw), self.pad, dtype=torch.long)
        for row, (s, t) in enumerate(zip(batch.sources, batch.targets, strict=True)):
            input_ids[row, :len(s)] = torch.tensor(s)
            mask[row, :len(s)] = 1
            labels[row, :len(t)] = torch.tensor(t)
            decoder[row, 0] = self.start_token  # the decoder reads its labels shifted right
            decoder[row, 1:len(t)] = torch.tensor(t[:-1])
        return {k: v.to(self.device) for k, v in
                {"input_ids": input_ids, "attention_mask": mask, "decoder_input_ids": decoder,
                 "labels": labels}.items()}

    # -- the loop --------------------------------------------------------------------------------------------

    def _loss(self, batch: Batch) -> Any:
        torch = self.torch
        t = self._tensors(batch)
        labels = t.pop("labels")
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32):
            logits = self.model(**t).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.size(-1)), labels.view(-1),
                                                 ignore_index=-100, label_smoothing=self.cfg.label_smoothing)

    def _optimizer_step(self) -> None:
        torch = self.torch
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
        for group in self.optimizer.param_groups:
            group["lr"] = self.cfg.lr * lr_factor(self.step + 1, self.cfg.warmup_steps, self.cfg.max_steps,
                                                  self.cfg.schedule)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, progress: Callable[[int, int], None] | None = None) -> TrainSummary:
        cfg, torch = self.cfg, self.torch
        self.model.train()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        started = time.perf_counter()
        window: dict[str, list[float]] = {"plain": [], "slot": []}
        tokens = window_tokens = 0
        window_start = started
        last_loss: dict[str, float] = {}
        while self.step < cfg.max_steps:
            view: View = "slot" if uses_slots(self.step, cfg.alpha) else "plain"
            for _ in range(cfg.grad_accum):
                batch = next(self.streams[view])
                loss = self._loss(batch) / cfg.grad_accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                window[view].append(loss.item() * cfg.grad_accum)
                tokens += batch.target_tokens
                window_tokens += batch.target_tokens
            self._optimizer_step()
            self.step += 1
            if progress is not None:
                progress(self.step, cfg.max_steps)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                now = time.perf_counter()
                entry: dict[str, Any] = {
                    "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                    "tokens_per_second": round(window_tokens / max(now - window_start, 1e-9), 1)}
                for v, losses in window.items():
                    if losses:
                        entry[f"loss_{v}"] = round(sum(losses) / len(losses), 4)
                        last_loss[v] = entry[f"loss_{v}"]
                if self.device.type == "cuda":
                    entry["peak_memory_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
                self.history.append(entry)
                log.info("LST step", extra=entry)
                if self.on_log is not None:
                    self.on_log(entry)
                window = {"plain": [], "slot": []}
                window_tokens, window_start = 0, now
            if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                if self.eval_items:
                    entry = {"step": self.step, "eval": self.evaluate_markers()}
                    self.history.append(entry)
                    log.info("LST evaluation", extra=entry)
                    if self.on_log is not None:
                        self.on_log(entry)
                self.save_checkpoint()
        seconds = time.perf_counter() - started
        self.save_final(last_loss)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        return TrainSummary(
            output=str(self.output), steps=self.step, resumed_from=self.resumed_from, seconds=round(seconds, 2),
            target_tokens=tokens, tokens_per_second=round(tokens / max(seconds, 1e-9), 1), final_loss=last_loss,
            skipped_too_long=sum(s.too_long for s in self.streams.values()),
            peak_memory_mb=round(peak, 1) if peak is not None else None, device=str(self.device),
            history=self.history)

    # -- saving ----------------------------------------------------------------------------------------------

    def _save_model(self, folder: Path) -> None:
        self.model.save_pretrained(folder)  # safetensors
        self.engine.tokenizer.save_pretrained(folder)

    def save_checkpoint(self) -> Path:
        torch = self.torch
        folder = self.output / f"checkpoint-{self.step}"
        tmp = self.output / f".checkpoint-{self.step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._save_model(tmp)
        torch.save({"optimizer": self.optimizer.state_dict(), "rng": torch.get_rng_state(),
                    "scaler": self.scaler.state_dict() if self.scaler is not None else None}, tmp / OPTIMIZER_FILE)
        consumed = {v: self.streams[v].consumed if v in self.streams else 0 for v in ("plain", "slot")}
        state = {"step": self.step, "consumed": consumed, "history": self.history, "config": _jsonable(self.cfg)}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # a checkpoint exists whole or not at all
        for old in checkpoints(self.output)[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        log.info("LST checkpoint saved", extra={"path": str(folder), "step": self.step})
        return folder

    def save_final(self, last_loss: dict[str, float]) -> None:
        self.model.eval()
        self._save_model(self.output)
        meta = {"base_model": self.cfg.model, "steps": self.step, "final_loss": last_loss,
                "slots": self.cfg.slots, "config": _jsonable(self.cfg)}
        (self.output / META_FILE).write_text(json.dumps(meta, indent=1))
        log.info("LST model saved", extra={"path": str(self.output), "step": self.step})


def _jsonable(cfg: LstTrainConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg)))


def train_lst(cfg: LstTrainConfig, progress: Callable[[int, int], None] | None = None,
              on_log: Callable[[dict[str, Any]], None] | None = None) -> TrainSummary:
    """Fine-tune `cfg.model` on `cfg.data` into an LST model saved in `cfg.output` (resuming from the last
    checkpoint there unless `cfg.resume` is off). `progress(step, total)` is called after every step and
    `on_log(entry)` with every log entry (losses per objective, learning rate, tokens/s, GPU memory)."""
    cfg.check()
    return _Run(cfg, on_log).run(progress)
