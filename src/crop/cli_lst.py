"""`crop lst ...`: build labeled-sequence-translation data, fine-tune an LST model, measure marker accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from crop.cli_common import err, fail

lst_app = typer.Typer(help="Labeled sequence translation: prepare slot data, fine-tune, evaluate markers.",
                      no_args_is_help=True)

# --- prepare ----

# --- train ---------------------------------------------------------------------------------------------------

@lst_app.command("train")
def train(
    model: Annotated[str, typer.Option(help="base checkpoint: hub id (facebook/m2m100_418M) or folder")],
    data: Annotated[list[Path], typer.Option(help="JSONL from `crop lst prepare` (repeat for several files)")],
    output: Annotated[Path, typer.Option(help="folder for checkpoints and the final LST model")],
    steps: Annotated[int, typer.Option(min=1, help="optimizer steps")] = 10_000,
    batch_size: Annotated[int, typer.Option(min=1, help="sentence pairs per batch")] = 32,
    max_batch_tokens: Annotated[int, typer.Option(min=1, help="padded pieces per batch (the longer side)")] = 4096,
    grad_accum: Annotated[int, typer.Option(min=1, help="batches per optimizer step")] = 1,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 1e-4,
    warmup: Annotated[int, typer.Option(min=0, help="linear warm-up steps")] = 1000,
    schedule: Annotated[str, typer.Option(help="after warm-up: inverse_sqrt, linear or constant")] = "inverse_sqrt",
    alpha: Annotated[float, typer.Option(help="share of steps on slot-marked pairs (the rest plain)")] = 0.5,
    directions: Annotated[str, typer.Option(help="forward (src->tgt), backward or both")] = "both",
    slots: Annotated[int, typer.Option(min=1, help="slot tokens the model gets")] = 32,
    label_smoothing: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.1,
    max_length: Annotated[int, typer.Option(min=1, help="longer pairs (pieces) are skipped")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
    precision: Annotated[str, typer.Option(help="GPU autocast: auto (bf16 where supported), fp16, bf16, fp32")]
    = "auto",
    save_every: Annotated[int, typer.Option(min=1, help="checkpoint every N steps")] = 1000,
    log_every: Annotated[int, typer.Option(min=1)] = 50,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="continue from the last checkpoint in OUTPUT")] = True,
) -> None:
    """Fine-tune an M2M100/NLLB model on plain and slot-marked pairs into an LST model (serve it with
    --translator transformers:OUTPUT, or `crop convert` it for ctranslate2)."""
    from crop.io import InputError
    from crop.train.lst.finetune import LstTrainConfig, train_lst

    cfg = LstTrainConfig(
        model=model, data=[str(p) for p in data], output=str(output), max_steps=steps, batch_size=batch_size,
        max_batch_tokens=max_batch_tokens, grad_accum=grad_accum, lr=lr, warmup_steps=warmup,
        schedule=schedule, alpha=alpha, directions=directions, slots=slots,  # type: ignore[arg-type]
        label_smoothing=label_smoothing, max_length=max_length, device=device, precision=precision,
        save_every=save_every, log_every=log_every, seed=seed, resume=resume)
    progress = Progress(TextColumn("[bold]fine-tuning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss plain {task.fields[plain]} slot {task.fields[slot]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    try:
        with progress:
            task = progress.add_task("train", total=steps, plain="-", slot="-")
            summary = train_lst(
                cfg, progress=lambda step, total: progress.update(task, completed=step),
                on_log=lambda e: progress.update(task, plain=e.get("loss_plain", "-"), slot=e.get("loss_slot", "-")))
    except (InputError, ValueError) as exc:
        fail(str(exc))
        raise
    out = summary.__dict__ | {"history": summary.history[-5:]}
    typer.echo(json.dumps(out, indent=2))

