"""`crop train`: offline self-training of a student, published as a new version of a model registry.

`train_app` is the `crop train` group: called with options and no sub-command it trains (the `train` callback);
the trainer's sub-commands (`crop train submit`, `crop train status`) can be added to the same group.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from crop.cli_common import err, fail, progress_bar
from crop.io import InputError

train_app = typer.Typer(help="Train a multilingual student on projected data (self-training), or submit a run to "
                        "the trainer.", add_completion=False)


def _lang_paths(values: list[str], option: str) -> dict[str, list[str]]:
    """LANG:PATH values -> lang -> paths (a language may be given more than once)."""
    out: dict[str, list[str]] = {}
    for value in values:
        lang, sep, path = value.partition(":")
        if not sep or not lang or not path:
            fail(f"{option} {value!r}: expected LANG:PATH (e.g. es:es.projected.jsonl)")
        from crop.langcodes import normalize_lang

        try:
            lang = normalize_lang(lang)
        except ValueError as exc:
            fail(f"{option} {value!r}: {exc}")
        if not Path(path).is_file():
            fail(f"{option} {value!r}: {path} does not exist")
        out.setdefault(lang, []).append(path)
    return out


def _one_each(values: dict[str, list[str]], option: str) -> dict[str, str]:
    for lang, paths in values.items():
        if len(paths) > 1:
            fail(f"{option}: one file per language ({lang} has {len(paths)})")
    return {lang: paths[0] for lang, paths in values.items()}


@train_app.callback(invoke_without_command=True)
def train(
    ctx: typer.Context,
    source: Annotated[list[Path] | None, typer.Option(
        "--source", metavar="PATH", help="L_src JSONL with tokens and tags (repeatable)")] = None,
    target: Annotated[list[str] | None, typer.Option(
        "--target", metavar="LANG:PATH", help="a `crop project` or job output (repeatable): kept sentences train, "
        "discarded ones are relabelled")] = None,
    dev: Annotated[list[str] | None, typer.Option(
        "--dev", metavar="LANG:PATH", help="a gold dev set (repeatable; chooses the best epoch and round, never "
        "trained on)")] = None,
    dev_projected: Annotated[list[str] | None, typer.Option(
        "--dev-projected", metavar="LANG:PATH", help="the projection of a dev set: reports the projected and "
        "combined labels' F1 and stores the teacher's F1 with the model")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="the model registry (folder or URL) the student "
                                                "is published in, e.g. models/ner")] = None,
    student: Annotated[str, typer.Option("--student", help="spacy or transformers")] = "spacy",
    base: Annotated[str | None, typer.Option(help="spaCy: a pipeline to start from (default blank 'xx'); "
                                             "transformers: hub id or folder (e.g. xlm-roberta-base)")] = None,
    student_option: Annotated[list[str] | None, typer.Option(
        "--student-option", metavar="KEY=VALUE", help="a setting of the student kind (repeatable; VALUE read as "
        "JSON when it parses), e.g. spacy: width=128, init_tok2vec=pretrain/model-last.bin")] = None,
    rounds: Annotated[int, typer.Option(min=1, help="self-training rounds")] = 1,
    epochs: Annotated[int, typer.Option(min=1, help="epochs per round (the best on dev is kept)")] = 10,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.99)] = 0.2,
    learning_rate: Annotated[float | None, typer.Option(help="default: the student's own")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="transformers: auto, cpu, cuda")] = "auto",
    source_ratio: Annotated[float, typer.Option(min=0.0, help="source sentences per target sentence (capped by "
                                                "what exists)")] = 1.0,
    combine: Annotated[str, typer.Option(help="projection-first or agreement")] = "projection-first",
    relabel_kept: Annotated[bool, typer.Option("--relabel-kept/--no-relabel-kept",
                                               help="relabel and combine the kept sentences too")] = False,
    relabeled_all_o: Annotated[bool, typer.Option("--relabeled-all-o/--no-relabeled-all-o",
                                                  help="train on relabelled sentences left without entities")
                               ] = False,
    min_entity_score: Annotated[float, typer.Option(min=0.0, max=1.0, help="kept sentences with a projected entity "
                                                    "scored below this are relabelled like discarded ones")] = 0.0,
    relabeled_weight: Annotated[float, typer.Option(min=0.0, help="training weight of relabelled discarded "
                                                    "sentences")] = 1.0,
    crop_f1: Annotated[list[str] | None, typer.Option(
        "--crop-f1", metavar="LANG:F1", help="the teacher's (mode crop) dev F1, stored with the model")] = None,
    name: Annotated[str | None, typer.Option(help="the model's name in the registry (default: the folder's)")
                    ] = None,
    promote: Annotated[str, typer.Option(help="auto (current moves when at least as good on every dev "
                                         "language), always, never")] = "auto",
) -> None:
    """Self-train a student on L_src + the kept projected sentences and publish it into the registry at --output.

    Prints the published version's metadata and the training report as JSON; progress goes to stderr."""
    if ctx.invoked_subcommand is not None:
        return
    if not source and not target:
        err.print(ctx.get_help())
        raise typer.Exit(2)
    if output is None:
        fail("--output is required (the model registry folder, e.g. models/ner)")
        return
    from pydantic import ValidationError

    from crop.train.registry import ModelRegistry
    from crop.train.selftrain import Progress as TrainProgress
    from crop.train.selftrain import SelfTrainConfig, registry_meta, run_selftraining
    from crop.train.students import StudentConfig

    for path in source or []:
        if not path.is_file():
            fail(f"--source {path} does not exist")
    if promote not in ("auto", "always", "never"):
        fail(f"--promote {promote!r}: expected auto, always or never")
    teacher: dict[str, float] = {}
    for value in crop_f1 or []:
        lang, _, f1 = value.partition(":")
        try:
            teacher[lang] = float(f1)
        except ValueError:
            fail(f"--crop-f1 {value!r}: expected LANG:F1 (e.g. es:0.71)")
    options: dict[str, object] = {}
    for value in student_option or []:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            fail(f"--student-option {value!r}: expected KEY=VALUE (e.g. width=128)")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    try:
        config = SelfTrainConfig(
            source=[str(p) for p in source or []],
            targets=_lang_paths(target or [], "--target"),
            dev=_one_each(_lang_paths(dev or [], "--dev"), "--dev"),
            dev_projected=_one_each(_lang_paths(dev_projected or [], "--dev-projected"), "--dev-projected"),
            student=StudentConfig(kind=student, base=base, epochs=epochs, batch_size=batch_size,  # type: ignore[arg-type]
                                  dropout=dropout, learning_rate=learning_rate, seed=seed, device=device,
                                  options=options),
            rounds=rounds, source_ratio=source_ratio, combine=combine,  # type: ignore[arg-type]
            relabel_kept=relabel_kept, relabeled_weight=relabeled_weight, min_entity_score=min_entity_score,
            relabeled_all_o=relabeled_all_o, crop_f1=teacher,
        )
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
        return
    registry = ModelRegistry.at(str(output), name=name) if name else ModelRegistry.at(str(output))

    progress = progress_bar("round {task.fields[round]}",
                            "loss {task.fields[loss]}  dev F1 {task.fields[f1]}  ETA {task.fields[eta]}")

    tmp = Path(tempfile.mkdtemp(prefix="crop-train-"))
    try:
        with progress:
            task = progress.add_task("train", total=rounds * epochs, round=f"1/{rounds}", loss="-", f1="-", eta="-")

            def on_progress(p: TrainProgress) -> None:
                fields: dict[str, object] = {"round": f"{p.round}/{p.rounds}"}
                if p.loss is not None:
                    fields["loss"] = f"{p.loss:.1f}"
                if p.dev_f1 is not None:
                    fields["f1"] = f"{p.dev_f1:.3f}"
                if p.eta_seconds is not None:
                    fields["eta"] = f"{p.eta_seconds:.0f}s"
                done = (p.round - 1) * p.epochs + p.epoch
                progress.update(task, completed=done, **fields)
                if p.epoch == 0 and p.message:
                    progress.console.print(p.message, markup=False)

            report = run_selftraining(config, tmp / "student", progress=on_progress)
        meta = registry.publish(tmp / "student", registry_meta(report), promote=promote)  # type: ignore[arg-type]
    except (InputError, ValueError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = registry.location
    err.print(f"published {meta.name} {meta.version} in {where}" + (" (current)" if meta.promoted else
                                                                     " (not current: not better on every dev set)"),
              markup=False)
    typer.echo(json.dumps({"registry": where, "version": meta.version, "promoted": meta.promoted,
                           "metrics": meta.metrics, "report": report.model_dump(mode="json")}, indent=2))
