"""`crop lst ...`: build labeled-sequence-translation data, fine-tune an LST model, measure marker accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from crop.cli_common import count_lines, err, fail
from crop.langcodes import normalize_lang

lst_app = typer.Typer(help="Labeled sequence translation: prepare slot data, fine-tune, evaluate markers.",
                      no_args_is_help=True)

# --- prepare -------------------------------------------------------------------------------------------------

@lst_app.command("prepare")
def prepare_data(
    src_lang: Annotated[str, typer.Option(parser=normalize_lang, help="source language, e.g. en")],
    tgt_lang: Annotated[str, typer.Option(parser=normalize_lang, help="target language, e.g. es")],
    output: Annotated[Path, typer.Option(help="JSONL of slot-marked pairs (for `crop lst train`)")],
    src: Annotated[Path | None, typer.Option(help="source sentences, one a line (with --tgt)")] = None,
    tgt: Annotated[Path | None, typer.Option(help="target sentences, line-aligned with --src")] = None,
    input: Annotated[Path | None, typer.Option(help="instead of --src/--tgt: TSV (src<TAB>tgt), or JSONL with "
                                                    "src/tgt, the two language codes, or a gold dev set "
                                                    "(en_tokens, tokens)")] = None,
    stats: Annotated[Path | None, typer.Option(help="write the statistics as JSON")] = None,
    alignments: Annotated[Path | None, typer.Option(help="use these alignments (Pharaoh, one line per pair, "
                                                         "over crop's tokens) instead of running eflomal")] = None,
    alignments_out: Annotated[Path | None, typer.Option(help="write each pair's alignment (Pharaoh; empty line "
                                                             "for a skipped pair), to rerun with --alignments")]
    = None,
    symmetrize: Annotated[str, typer.Option(help="intersection, union, grow-diag, grow-diag-final or "
                                                 "grow-diag-final-and")] = "grow-diag-final-and",
    max_tokens: Annotated[int, typer.Option(help="skip pairs with a longer side (tokens)")] = 128,
    max_phrase_len: Annotated[int, typer.Option(help="longest phrase, in words on each side")] = 8,
    extend_unaligned: Annotated[bool, typer.Option(help="let phrases extend over unaligned edge words "
                                                        "(default: tight phrases)")] = False,
    max_slots: Annotated[int, typer.Option(help="most slots in one pair (k is drawn from 1..N)")] = 10,
    slot_prob: Annotated[float, typer.Option(help="probability that a pair gets slots")] = 0.85,
    seed: Annotated[int, typer.Option(help="seeds the choice of phrases (eflomal itself is not seeded)")] = 0,
    limit: Annotated[int | None, typer.Option(min=0, help="only the first N pairs")] = None,
    chunk_size: Annotated[int, typer.Option(help="pairs aligned together (bounds memory)")] = 100_000,
) -> None:
    """Word-align a parallel corpus with eflomal and wrap random aligned phrases in the same __SLOT{i}__ markers on
    both sides: the training data of a labeled-sequence-translation model."""
    from rich.console import Console
    from rich.table import Table

    from crop.io import InputError
    from crop.train.lst.prepare import PrepareConfig, prepare

    if (input is None) == (src is None and tgt is None) or (src is None) != (tgt is None):
        fail("give --src and --tgt, or --input")
    for path in (src, tgt, input, alignments):
        if path is not None and not path.is_file():
            fail(f"{path} does not exist")
    try:
        config = PrepareConfig(src_lang=src_lang, tgt_lang=tgt_lang, max_tokens=max_tokens, symmetrize=symmetrize,
                               max_phrase_len=max_phrase_len, tight=not extend_unaligned, max_slots=max_slots,
                               slot_prob=slot_prob, seed=seed, chunk_size=chunk_size, limit=limit)
    except ValueError as exc:
        fail(str(exc))
        raise
    total = count_lines(input or src)  # type: ignore[arg-type]
    if total is not None and limit is not None:
        total = min(total, limit)
    progress = Progress(TextColumn("[bold]preparing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=err)
    try:
        with progress:
            task = progress.add_task("prepare", total=total)
            result = prepare(config, output, src=src, tgt=tgt, input=input, alignments=alignments,
                             alignments_out=alignments_out, on_progress=lambda n: progress.advance(task, n))
    except (InputError, ValueError) as exc:
        fail(str(exc))
        raise
    except RuntimeError as exc:
        fail(f"alignment failed: {exc}")
        raise
    table = Table(title=f"LST data {src_lang}-{tgt_lang} -> {output}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name, value in result.summary_rows():
        table.add_row(name, value)
    Console().print(table)
    if stats:
        stats.write_text(result.model_dump_json(indent=2), encoding="utf-8")
        err.print(f"statistics written to {stats}")


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
    eval_data: Annotated[Path | None, typer.Option(help="LST JSONL or gold dev set: marker accuracy and BLEU at "
                                                        "every checkpoint")] = None,
    eval_limit: Annotated[int, typer.Option(min=1, help="sentences of --eval-data used")] = 200,
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
        save_every=save_every, log_every=log_every, seed=seed, resume=resume,
        eval_data=str(eval_data) if eval_data else None, eval_limit=eval_limit)
    progress = Progress(TextColumn("[bold]fine-tuning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss plain {task.fields[plain]} slot {task.fields[slot]}"),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    try:
        with progress:
            task = progress.add_task("train", total=steps, plain="-", slot="-")
            def on_log(entry: dict) -> None:
                if "eval" in entry:
                    for pair, m in entry["eval"].items():
                        progress.console.print(f"step {entry['step']} {pair}: markers kept {m['kept'] or 0:.3f} "
                                               f"match {m['match'] or 0:.3f}, BLEU {m['bleu_labeled']}")
                else:
                    progress.update(task, plain=entry.get("loss_plain", "-"), slot=entry.get("loss_slot", "-"))

            summary = train_lst(cfg, progress=lambda step, total: progress.update(task, completed=step),
                                on_log=on_log)
    except (InputError, ValueError) as exc:
        fail(str(exc))
        raise
    out = summary.__dict__ | {"history": summary.history[-5:]}
    typer.echo(json.dumps(out, indent=2))

# --- eval ----------------------------------------------------------------------------------------------------

class _EvalBar:
    """A rich progress bar per engine and language pair, added when its evaluation starts."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress

    def start(self, engine: str, pair: tuple[str, str], total: int) -> None:
        self._progress.add_task(f"{engine} {pair[0]}->{pair[1]}", total=total)

    def advance(self, n: int) -> None:
        self._progress.advance(self._progress.task_ids[-1], n)


@lst_app.command("eval")
def eval_markers(
    data: Annotated[Path, typer.Option(help="LST JSONL from `crop lst prepare`, or a parallel gold dev set "
                                            "(en_tokens, tokens, entities)")],
    translator: Annotated[list[str], typer.Option(help="engine spec: apertium, transformers:PATH, "
                                                       "ctranslate2:PATH, openai:MODEL@URL, remote:URL; repeat "
                                                       "it to compare engines")],
    src_lang: Annotated[str | None, typer.Option(parser=normalize_lang,
                                                 help="language of the records' source side (default: each "
                                                           "record's src_lang; English for gold sets)")] = None,
    tgt_lang: Annotated[str | None, typer.Option(parser=normalize_lang,
                                                 help="language of the records' target side (default: each "
                                                           "record's tgt_lang or lang)")] = None,
    reverse: Annotated[bool, typer.Option(help="translate target -> source instead (into English for gold "
                                               "sets)")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="only the first N records")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="sentences per engine call")] = 32,
    threshold: Annotated[float, typer.Option(min=0.0, max=100.0, help="similarity (rapidfuzz ratio, 0-100, "
                                                                       "normalized texts) from which a marked "
                                                                       "span matches its reference phrase")]
    = 80.0,
    examples: Annotated[int, typer.Option(min=0, help="worst sentences kept per engine in the report")] = 5,
    output: Annotated[Path | None, typer.Option(help="write the report (with the worst examples) as JSON")] = None,
) -> None:
    """Marker accuracy (the CROP paper's Table 6) and BLEU of labeled translation, engines side by side: the
    share of phrases whose markers surround their equivalent, of sentences with every marker intact, and BLEU
    with and without markers."""
    from rich.console import Console
    from rich.table import Table

    from crop.io import InputError
    from crop.train.lst.marker_eval import TABLE_HEADER, evaluate, read_items
    from crop.translate import UnsupportedPair, load_translator

    if not data.is_file():
        fail(f"{data} does not exist")
    try:
        items = read_items(data, src_lang, tgt_lang, reverse, limit)
    except InputError as exc:
        fail(str(exc))
        raise
    if not items:
        fail(f"{data} holds no records")
    translators = {}
    for spec in dict.fromkeys(translator):
        try:
            translators[spec] = load_translator(spec)
        except (ValueError, RuntimeError, ImportError) as exc:
            fail(f"cannot load translator {spec!r}: {exc}")
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err)
    try:
        with progress:
            report = evaluate(translators, items, data=str(data), threshold=threshold, batch_size=batch_size,
                              examples=examples, progress=_EvalBar(progress))
    except UnsupportedPair as exc:
        fail(str(exc))
        raise
    except RuntimeError as exc:
        fail(f"translation failed: {exc}")
        raise
    table = Table(title=f"marker accuracy and BLEU on {data.name}", caption=f"match: exact after normalization, "
                  f"or similarity >= {threshold:g}")
    for name in TABLE_HEADER:
        table.add_column(name, justify="left" if name in ("engine", "pair") else "right", overflow="fold")
    for row in report.rows():
        table.add_row(*row)
    out = Console()
    if not out.is_terminal:
        out.width = 200  # piped or captured: no terminal to fit, keep each engine on one line
    out.print(table)
    if output:
        output.write_text(report.model_dump_json(indent=2), encoding="utf-8")
        err.print(f"report written to {output}")
