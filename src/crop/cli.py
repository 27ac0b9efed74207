"""The `crop` command."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from crop.cli_common import ENGINE_ERROR, check_outputs, count_lines, err, fail, progress_bar, warn
from crop.cli_jobs import job_app
from crop.cli_lst import lst_app
from crop.cli_models import models_app
from crop.cli_train import train_app
from crop.cli_trainer import status as train_status
from crop.cli_trainer import submit as train_submit
from crop.cli_trainer import trainer
from crop.cli_worker import worker
from crop.errors import EngineUnavailable
from crop.io import (
    AtomicFile,
    DuplicateIds,
    InputError,
    InputSentence,
    InvalidLine,
    JsonlWriter,
    read_input,
    write_conll,
)
from crop.langcodes import normalize_lang
from crop.project import ALL_METHODS, Projector, ProjectorConfig
from crop.text import MAX_TOKEN_CHARS

if TYPE_CHECKING:
    from crop.pipeline import CropPipeline
    from crop.types import CropSteps

app = typer.Typer(help="Zero-shot cross-lingual NER by labeled sequence translation (CROP).",
                  no_args_is_help=True, add_completion=False)
app.add_typer(lst_app, name="lst")
app.add_typer(job_app, name="job")
app.add_typer(models_app, name="models")
train_app.command("submit")(train_submit)
train_app.command("status")(train_status)
app.add_typer(train_app, name="train")
app.command()(trainer)
app.command()(worker)


def _projector(methods: str, policy: str, keep_all_o: bool, langid: bool, max_tokens: int) -> Projector:
    """The projector of these options, built as the job workers build theirs (`crop.jobs.options`)."""
    from pydantic import ValidationError

    from crop.jobs.options import ProjectionOptions, build_projector

    try:
        return build_projector(ProjectionOptions(methods=methods, policy=policy,  # type: ignore[arg-type]
                                                 keep_all_o=keep_all_o, langid=langid, max_tokens=max_tokens))
    except ValidationError as exc:
        fail("; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')} {e['input']!r}: "
                       f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors()))
        raise


def _pipeline(translator: str, tagger: str, projector: Projector, batch_size: int, needs_tagger: bool = True,
              max_token_chars: int = MAX_TOKEN_CHARS):
    from crop.pipeline import CropPipeline
    from crop.tag import load_tagger
    from crop.translate import load_translator

    try:
        tr = load_translator(translator)
        tg = load_tagger(tagger) if needs_tagger else None
    except ValueError as exc:  # a bad spec or option
        fail(str(exc))
        raise
    except RuntimeError as exc:  # the engine itself: a service that cannot be reached, a program that fails
        fail(f"engine unavailable: {exc}", ENGINE_ERROR)
        raise
    return CropPipeline(tr, tg, projector, batch_size=batch_size, max_token_chars=max_token_chars)


Methods = Annotated[str, typer.Option(help=f"matching methods in cascade order, or 'all' ({','.join(ALL_METHODS)})")]
Policy = Annotated[str, typer.Option(help="strict: discard a sentence with any unmatched entity (the paper); "
                                          "partial: keep the matched ones")]


@app.command()
def project(
    src_lang: Annotated[str, typer.Option("--src-lang", parser=normalize_lang,
                                          help="language of the raw sentences, e.g. es (also spa, es-ES)")],
    input: Annotated[Path, typer.Option("--input", help="text (one sentence a line) or JSONL with id, tokens")],
    output: Annotated[Path, typer.Option("--output", help="JSONL, one line per input line")],
    conll: Annotated[Path | None, typer.Option("--conll", help="also write the kept sentences as CoNLL")] = None,
    translator: Annotated[str, typer.Option(help="translation engine spec")] = "apertium",
    tagger: Annotated[str, typer.Option(help="English NER engine spec")] = "spacy",
    methods: Methods = "all",
    policy: Policy = "strict",
    keep_all_o: Annotated[bool, typer.Option("--keep-all-o", help="keep sentences without entities")] = False,
    langid: Annotated[bool, typer.Option("--langid/--no-langid", help="drop projections that are not in the "
                                                                      "sentence's language")] = True,
    max_tokens: Annotated[int, typer.Option(help="discard longer sentences")] = 128,
    max_token_chars: Annotated[int, typer.Option(min=1, help="discard a sentence with a longer token before any "
                                                             "engine sees it (engines slow down on absurd tokens)")]
    = MAX_TOKEN_CHARS,
    strict_input: Annotated[bool, typer.Option("--strict-input", help="stop at the first malformed input line "
                                               "(default: record it as failed, with the reason, and go on)")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="sentences per engine batch")] = 256,
    align: Annotated[bool, typer.Option("--align/--no-align", help="word-aligned forward translation, the `forward` "
                                        "evidence (--no-align is about a third faster with Apertium)")] = True,
    stats: Annotated[Path | None, typer.Option(help="write run statistics (counts, time per stage) as JSON")] = None,
    type_vote: Annotated[bool, typer.Option("--type-vote", help="after the corpus is projected, re-type each entity "
                                            "whose surface form the other mentions in the corpus clearly gave "
                                            "another type (a second pass over --output; re-typed entities get "
                                            "`retyped_from`)")] = False,
    type_vote_min_count: Annotated[int, typer.Option(min=1, help="--type-vote: at least this many other "
                                                     "mentions of the form")] = 2,
    type_vote_margin: Annotated[float, typer.Option(min=0.0, max=1.0, help="--type-vote: the winning type's "
                                                    "share of the other mentions")] = 0.6,
) -> None:
    """Project English NER labels onto raw target-language sentences (CROP steps 1-5).

    Outputs are renamed into place when the run ends: a run that stops early leaves them as they were.

    Exit status: 0 done, 1 an engine failed or every sentence failed, 2 bad usage."""
    if not input.exists() and str(input) != "-":
        fail(f"input file {input} does not exist")
    check_outputs(input, {"--output": output, "--conll": conll, "--stats": stats})
    if type_vote and str(output) == "-":
        fail("--type-vote needs an --output file (it reads the output a second time)")
    if type_vote and type_vote_margin <= 0:
        fail("--type-vote-margin must be above 0")
    projector = _projector(methods, policy, keep_all_o, langid, max_tokens)
    pipe = _pipeline(translator, tagger, projector, batch_size, max_token_chars=max_token_chars)
    pipe.use_alignment = pipe.use_alignment and align
    try:
        pipe.check(src_lang)
    except ValueError as exc:
        fail(str(exc))
    ids = DuplicateIds()
    sentences = read_input(input, src_lang, on_error="raise" if strict_input else "keep", ids=ids)
    _run_project(pipe, sentences, count_lines(input), output, conll, stats)
    if type_vote:
        _type_vote(output, conll, stats, type_vote_min_count, type_vote_margin)
    duplicates = ids.message(str(input))
    if duplicates:
        warn(duplicates)
    summary = pipe.stats.as_dict()
    failed = summary["status"].get("failed", 0)
    if failed and failed == summary["sentences"]:
        fail(f"every sentence failed ({failed} of {summary['sentences']}); the reasons are in {output}",
             ENGINE_ERROR)


def _run_project(pipe: CropPipeline, sentences: Iterable[InputSentence | InvalidLine], total: int | None,
                 output: Path, conll: Path | None, stats: Path | None) -> None:
    """Write the results to `output` (and the kept ones to `conll`) under temporary names, renamed into place
    with `stats` once the run is done; when it stops (bad input with --strict-input, an engine that is down)
    nothing is renamed, and the error says so."""
    out = None
    try:
        out = JsonlWriter(output, atomic=True)
        conll_file = AtomicFile(conll) if conll else None
    except OSError as exc:  # a folder that cannot be written to
        if out is not None:
            out.discard()
        fail(f"cannot write {exc.filename}: {exc.strerror or exc}")
        raise
    progress = progress_bar("projecting", "kept {task.fields[kept]}")
    done = False
    try:
        with progress:
            task = progress.add_task("project", total=total, kept=0)
            kept = 0
            for result in pipe.run(sentences):
                out.write(result)
                if result.status == "kept":
                    kept += 1
                    if conll_file:
                        write_conll(conll_file.file, result.tokens, result.tags)
                progress.update(task, advance=1, kept=kept)
        done = True
    except (InputError, EngineUnavailable) as exc:
        left = ", ".join(str(p) for p in (output, conll, stats) if p is not None)
        stopped = f"run stopped after {out.count} sentence(s), nothing written ({left} left as they were)"
        if isinstance(exc, InputError):
            fail(f"{exc}; {stopped}")
        fail(f"engine unavailable: {exc}; {stopped}", ENGINE_ERROR)
    finally:
        if not done:
            out.discard()
            if conll_file:
                conll_file.discard()
    summary = pipe.stats.as_dict()
    err.print(f"{summary['sentences']} sentences: {summary['status']}; reasons {summary['reasons']}; "
              f"time per stage (s) {summary['seconds']}", markup=False)
    if stats:
        stats_file = AtomicFile(stats)
        stats_file.file.write(json.dumps(summary, indent=2))
        stats_file.commit()
    out.close()
    if conll_file:
        conll_file.commit()


def _type_vote(output: Path, conll: Path | None, stats: Path | None, min_count: int, margin: float) -> None:
    """The second pass of `project --type-vote`: re-type `output` in place, and write `conll` and `stats` again to
    match (each renamed into place, as the first pass left them)."""
    from crop.project.type_vote import TypeVoteConfig, type_vote_file

    votes = type_vote_file(output, config=TypeVoteConfig(min_count=min_count, margin=margin))
    if conll:
        conll_file = AtomicFile(conll)
        with open(output, encoding="utf-8") as f:
            for raw in f:
                line = json.loads(raw)
                if line.get("status") == "kept":
                    write_conll(conll_file.file, line["tokens"], line["tags"])
        conll_file.commit()
    summary = votes.summary()
    err.print(f"type vote: {summary['retyped']} entities re-typed in {summary['retyped_lines']} sentences "
              f"({summary['surface_forms']} surface forms)", markup=False)
    if stats:
        data = json.loads(stats.read_text(encoding="utf-8"))
        data["type_vote"] = summary | {"min_count": min_count, "margin": margin}
        stats_file = AtomicFile(stats)
        stats_file.file.write(json.dumps(data, indent=2))
        stats_file.commit()


@app.command()
def tag(
    lang: Annotated[str, typer.Option("--lang", parser=normalize_lang, help="its language, e.g. es (also spa, es-ES)")],
    sentence: Annotated[str | None, typer.Argument(help="one sentence (or a file: --model with --input)")] = None,
    translator: Annotated[str, typer.Option(help="translation engine spec")] = "apertium",
    tagger: Annotated[str, typer.Option(help="English NER engine spec")] = "spacy",
    json_out: Annotated[bool, typer.Option("--json", help="print the whole result as JSON")] = False,
    model: Annotated[str | None, typer.Option("--model", help="tag with a self-trained student instead (no "
                                              "translation): its model folder, or the registry folder `crop train "
                                              "--output` wrote (its current version)")] = None,
    input: Annotated[Path | None, typer.Option("--input", help="with --model: text (one sentence a line) or JSONL "
                                               "(id, tokens or text; tokens are kept as given)")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="with --input: JSONL in the line format of "
                                                "`crop project`, written whole or not at all")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="with --input: sentences per model call")] = 64,
    strict_input: Annotated[bool, typer.Option("--strict-input", help="with --input: stop at the first malformed "
                                               "line (default: write it as failed, with the reason)")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="also print the CROP steps: the English translation, "
                                          "its entities, the back-translation with its markers, and where each "
                                          "entity was placed and how, or why not (with --json: `steps`)")] = False,
) -> None:
    """Entities of one sentence through the CROP pipeline (translate, tag in English, project back), or with
    --model by a self-trained student: one sentence, or a file (--input, --output).

    Exit status: 0 done, 1 an engine failed, 2 bad usage."""
    if input is not None or output is not None:
        if model is None:
            fail("--input/--output tag a file with a student (--model PATH); to run CROP on a file use crop project")
        if input is None or output is None:
            fail("tagging a file needs both --input and --output")
        if sentence is not None:
            fail("give a SENTENCE or --input, not both")
    elif sentence is None:
        fail("give a SENTENCE, or --model PATH --input IN --output OUT")
    if sentence is not None and not sentence.strip():
        fail("the sentence is empty")
    if explain and model is not None:
        fail("--explain shows the steps of CROP (translate, tag in English, project back); a student (--model) "
             "tags the sentence directly and has none")
    steps: CropSteps | None = None
    if model is not None:
        student = _load_student(model)
        if input is not None and output is not None:
            _tag_file(student, input, output, lang, batch_size, strict_input)
            return
        from crop.io import sentence_from_record

        result = student.tagger.tag_inputs([sentence_from_record({"id": "cli", "text": sentence}, lang)])[0]
    else:
        from crop.io import sentence_from_record

        projector = Projector(ProjectorConfig(policy="partial", drop_all_o=False, langid=False, max_tokens=10**6))
        pipe = _pipeline(translator, tagger, projector, 1)
        try:
            pipe.check(lang)
        except ValueError as exc:
            fail(str(exc))
        try:
            batch = [sentence_from_record({"id": "cli", "text": sentence}, lang)]
            if explain:
                result, steps = pipe.explain_batch(batch)[0]
            else:
                result = pipe.project_batch(batch)[0]
        except EngineUnavailable as exc:
            fail(f"engine unavailable: {exc}", ENGINE_ERROR)
            raise
    if result.status == "failed":
        fail(result.reason or "failed", ENGINE_ERROR)
    if result.reason and result.reason.startswith("token_too_long"):
        fail(f"the sentence was not tagged: {result.reason}")
    if json_out:
        if steps is None:
            typer.echo(result.model_dump_json(indent=2))
        else:
            typer.echo(json.dumps({**result.model_dump(mode="json"), "steps": steps.model_dump(mode="json")},
                                  indent=2, ensure_ascii=False))
        return
    for e in result.entities:
        typer.echo(f"{e.text}\t{e.label}\t{e.start}-{e.end}\t{e.method}\t{e.score:.2f}")
    if steps is not None:
        typer.echo("\n".join(_steps_lines(steps)))


def _steps_lines(steps: CropSteps) -> list[str]:
    """The CROP steps of `crop tag --explain`, for a person."""
    if steps.english is None:
        return ["", f"steps: none ran ({steps.status}: {steps.reason})"]
    english = [f"{s.text} {s.label} {s.start}-{s.end}" for s in steps.english_entities]
    lines = ["", "steps",
             f"  1. English {'sentence (given)' if steps.english_given else 'translation'}: {steps.english}",
             f"  2. English entities: {' | '.join(english) if english else 'none (nothing to translate back)'}"]
    if steps.back is not None:
        hypothesis = f" (hypothesis {steps.hypothesis})" if steps.hypothesis else ""
        lines.append(f"  3. back-translation with markers{hypothesis}: {steps.back_marked or steps.back}")
        if steps.lost:
            lines.append(f"     markers lost: {', '.join(str(i) for i in steps.lost)}")
    if steps.entities:
        lines.append("  4. placed in the sentence:")
    for e in steps.entities:
        head = f"     [{e.ref}] {e.text} ({e.label})"
        if e.placed is not None:
            p = e.placed
            lines.append(f"{head} -> “{p.text}” {p.start}-{p.end}, {p.method} {p.score:.2f}"
                         + (f" [{e.outcome}: {e.reason}]" if e.reason else ""))
        else:
            lines.append(f"{head} -> not placed ({e.outcome}): {e.reason}")
    lines.append(f"  verdict: {steps.status}" + (f" ({steps.reason})" if steps.reason else ""))
    return lines


def _load_student(location: str):  # -> crop.tag.student.LoadedStudent (imported late: spaCy/torch)
    """The student of `--model` (a folder, or a registry's current version), or a usage error saying why."""
    from crop.tag.student import load_student_at

    try:
        student = load_student_at(location)
    except (ValueError, OSError) as exc:
        fail(f"--model {location}: {exc}")
        raise
    err.print(f"student {student.name} {student.version} ({student.kind}, {student.folder})", markup=False)
    return student


def _tag_file(student, input: Path, output: Path, lang: str, batch_size: int, strict_input: bool) -> None:
    """`crop tag --model`: every input line tagged by the student, in its place, written to `output` under a
    temporary name renamed into place at the end (an invalid line is a failed line, as in `crop project`)."""
    from itertools import islice

    from crop.pipeline import invalid_result

    if not input.exists() and str(input) != "-":
        fail(f"input file {input} does not exist")
    check_outputs(input, {"--output": output})
    ids = DuplicateIds()
    try:
        out = JsonlWriter(output, atomic=True)
    except OSError as exc:
        fail(f"cannot write {exc.filename}: {exc.strerror or exc}")
        raise
    progress = progress_bar("tagging", "entities {task.fields[entities]}")
    done = False
    failed = entities = 0
    try:
        with progress:
            task = progress.add_task("tag", total=count_lines(input), entities=0)
            items = iter(read_input(input, lang, on_error="raise" if strict_input else "keep", ids=ids))
            while batch := list(islice(items, batch_size)):
                valid = [s for s in batch if isinstance(s, InputSentence)]
                tagged = iter(student.tagger.tag_inputs(valid))
                for item in batch:
                    result = next(tagged) if isinstance(item, InputSentence) else invalid_result(item)
                    failed += result.status == "failed"
                    entities += len(result.entities)
                    out.write(result)
                progress.update(task, advance=len(batch), entities=entities)
        done = True
    except InputError as exc:
        fail(f"{exc}; run stopped after {out.count} sentence(s), nothing written ({output} left as it was)")
    finally:
        if not done:
            out.discard()
    out.close()
    duplicates = ids.message(str(input))
    if duplicates:
        warn(duplicates)
    err.print(f"{out.count} sentences tagged by {student.name} {student.version}: {entities} entities, "
              f"{failed} failed (invalid input)", markup=False)


@app.command("eval")
def eval_(
    gold: Annotated[Path, typer.Option("--gold", help="JSONL with id, tokens, tags")],
    pred: Annotated[Path, typer.Option("--pred", help="JSONL with id, tokens, tags (e.g. crop project output)")],
    json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    breakdown: Annotated[bool, typer.Option("--breakdown", help="also the kinds of error per language and type: "
                                            "exact, wrong type only, wrong boundary only, both, missed, spurious, "
                                            "with examples")] = False,
    examples: Annotated[int, typer.Option(min=0, help="examples of each kind of error (--breakdown)")] = 5,
) -> None:
    """seqeval entity-level precision, recall and F1, overall and per type, matched by id."""
    from crop.train.evaluate import EvalError, breakdown_files, evaluate_files

    for p in (gold, pred):
        if not p.exists():
            fail(f"{p} does not exist")
    try:
        report = evaluate_files(gold, pred)
        errors = breakdown_files(gold, pred, n_examples=examples) if breakdown else None
    except (InputError, EvalError) as exc:
        fail(str(exc))
        raise
    if json_out:
        out = report.model_dump()
        if errors is not None:
            out["breakdown"] = errors.model_dump()
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        typer.echo(report.table() + (f"\n\n{errors.table()}" if errors is not None else ""))


tagger_app = typer.Typer(help="English (source-language) taggers.", no_args_is_help=True)
app.add_typer(tagger_app, name="tagger")


@tagger_app.command("train")
def tagger_train(
    train: Annotated[Path, typer.Option("--train", help="JSONL with tokens and BIO tags (your labeled data)")],
    output: Annotated[Path, typer.Option("--output", help="folder for the trained spaCy pipeline")],
    base: Annotated[str, typer.Option(help="spaCy pipeline to start from")] = "en_core_web_sm",
    scheme: Annotated[str, typer.Option(help="label scheme: conll or wikiann")] = "conll",
    epochs: Annotated[int, typer.Option(min=1)] = 10,
    dev: Annotated[Path | None, typer.Option(help="held-out JSONL (default: 10% of --train)")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    roundtrip: Annotated[str | None, typer.Option(help="languages, e.g. es,ca,gl: also train on the sentences "
                                                  "translated to each and back in labeled mode (the English the "
                                                  "tagger reads in projection)")] = None,
    translator: Annotated[str, typer.Option(help="translation engine spec for --roundtrip (one with a labeled "
                                            "mode)")] = "apertium",
    roundtrip_out: Annotated[Path | None, typer.Option("--roundtrip-out", help="write the round-tripped "
                                                       "sentences kept (JSONL) for inspection")] = None,
) -> None:
    """Fit a spaCy NER to your source-language labels; then project with --tagger spacy:OUTPUT."""
    import tempfile

    from crop.labels import get_scheme
    from crop.tag.spacy_train import train_spacy_ner

    if not train.exists():
        fail(f"{train} does not exist")
    langs = [normalize_lang(x.strip()) for x in roundtrip.split(",") if x.strip()] if roundtrip else []
    if roundtrip is not None and not langs:
        fail("--roundtrip names no language")
    if roundtrip_out is not None and not langs:
        fail("--roundtrip-out needs --roundtrip")
    augmented = None
    with tempfile.TemporaryDirectory(prefix="crop-roundtrip-") as work:
        train_file, dev_file = train, dev
        if langs:
            augmented = _roundtrip_data(train, dev, langs, translator, seed, Path(work), roundtrip_out)
            train_file, dev_file = Path(augmented.train_file), Path(augmented.dev_file)
        progress = progress_bar("training", "dev F1 {task.fields[f1]}")
        try:
            with progress:
                task = progress.add_task("train", total=epochs, f1="-")
                report = train_spacy_ner(train_file, output, base=base, scheme=get_scheme(scheme), epochs=epochs,
                                         dev_path=dev_file, seed=seed,
                                         on_epoch=lambda r: progress.update(task, advance=1, f1=f"{r.dev_f1:.3f}"))
        except (InputError, ValueError) as exc:
            fail(str(exc))
            raise
    out = report.model_dump()
    if augmented is not None:
        out["roundtrip"] = augmented.model_dump(exclude={"train_file", "dev_file"})
    typer.echo(json.dumps(out, indent=2))


def _roundtrip_data(train: Path, dev: Path | None, langs: list[str], translator: str, seed: int, work: Path,
                    roundtrip_out: Path | None):  # -> crop.train.roundtrip.RoundTripReport
    """The training and held-out files of `tagger train --roundtrip`, in `work`."""
    from crop.train.roundtrip import augmented_training_data
    from crop.translate import load_translator

    try:
        tr = load_translator(translator)
    except ValueError as exc:
        fail(str(exc))
        raise
    except RuntimeError as exc:
        fail(f"engine unavailable: {exc}", ENGINE_ERROR)
        raise
    pairs = set(tr.pairs())  # an engine that lists no pairs is tried as it is
    missing = [x for x in langs if ("en", x) not in pairs or (x, "en") not in pairs]
    if pairs and missing:
        fail(f"{tr.name} cannot translate en<->{', '.join(missing)} both ways (needed by --roundtrip)")
    try:
        return augmented_training_data(train, tr, langs, work, dev_path=dev, seed=seed, roundtrip_out=roundtrip_out,
                                       on_lang=lambda st: err.print(f"round trip en->{st.lang}->en: {st.kept} of "
                                                                    f"{st.sentences} kept ({st.identical} "
                                                                    f"identical, {st.lost} lost an entity) in "
                                                                    f"{st.seconds}s", markup=False))
    except (InputError, ValueError) as exc:
        fail(str(exc))
        raise
    except (RuntimeError, EngineUnavailable) as exc:
        fail(f"engine unavailable: {exc}", ENGINE_ERROR)
        raise


SERVICES = ("translator", "tagger", "projector")


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help="translator, tagger or projector")],
    host: Annotated[str | None, typer.Option(help="default: CROP_<SERVICE>_HOST or 127.0.0.1")] = None,
    port: Annotated[int | None, typer.Option(help="default: CROP_<SERVICE>_PORT or 8101/8102/8103")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes (each loads the engine)")] = 1,
) -> None:
    """Run one service with uvicorn; its settings come from CROP_<SERVICE>_* variables (see services/<name>/)."""
    import uvicorn

    from crop.api.settings import ProjectorSettings, SettingsError, TaggerSettings, TranslatorSettings, load_settings

    if service not in SERVICES:
        fail(f"unknown service {service!r}; choose {', '.join(SERVICES)}")
    try:
        settings = load_settings({"translator": TranslatorSettings, "tagger": TaggerSettings,
                                  "projector": ProjectorSettings}[service])
        if service == "projector":  # its jobs API: the job settings are checked now too, not in uvicorn's factory
            from crop.jobs.settings import load_job_settings

            load_job_settings()
    except SettingsError as exc:
        typer.echo(f"error: {exc}", err=True)  # one line, as it is (a console would wrap it)
        raise typer.Exit(2) from None
    from crop.api.http_protocol import HeadLimitedHttpToolsProtocol

    uvicorn.run(f"crop.api.{service}:create_app", factory=True, host=host or settings.host,
                port=port or settings.port, workers=workers, log_config=None, access_log=False,
                # httptools' C parser with the head-size limit the services set (h11's setting carries it); uvloop
                http=HeadLimitedHttpToolsProtocol, timeout_keep_alive=settings.keep_alive_timeout,
                h11_max_incomplete_event_size=settings.max_header_bytes, limit_concurrency=settings.max_connections)


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="Hugging Face seq2seq model: hub id or local folder")],
    output: Annotated[Path, typer.Argument(help="folder for the CTranslate2 model (and its tokenizer)")],
    quantization: Annotated[str | None, typer.Option(help="int8 (CPU), float16 (GPU), int8_float16, float32, ...")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite a non-empty output folder")] = False,
) -> None:
    """Convert a translation model for the ctranslate2 engine; then project with --translator ctranslate2:OUTPUT."""
    from crop.translate.convert import convert as run_convert

    try:
        with err.status(f"converting {source}"):
            path = run_convert(source, output, quantization, force=force)
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
        raise
    typer.echo(json.dumps({"output": str(path), "quantization": quantization or "as saved"}))


def main() -> None:  # pragma: no cover
    from crop.log import configure

    configure()
    app()
