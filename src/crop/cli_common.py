"""What the `crop` command's modules share: the error console and the way a command fails."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from crop.remote_http import RemoteHTTP

err = Console(stderr=True)

# exit statuses: 2 for bad input or usage (as click's own usage errors), 1 for an engine that failed
USAGE_ERROR = 2
ENGINE_ERROR = 1


def fail(message: str, code: int = USAGE_ERROR) -> None:
    """Print `message` as an error, on one line however long, and leave with status `code`."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same inode when both exist (symlinks and hard links included),
    else the same resolved path (an output that does not exist yet)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_outputs(input: Path, outputs: dict[str, Path | None]) -> None:
    """Refuse, before anything is opened, an output (option -> path) that is the input file, which writing
    would destroy, or two outputs that are one file ("-", standard input or output, is never a file here)."""
    given = [(option, path) for option, path in outputs.items() if path is not None and str(path) != "-"]
    for option, path in given:
        if path.is_dir():
            fail(f"{option} {path} is a folder: give a file name")
    if str(input) != "-":
        for option, path in given:
            if same_file(path, input):
                fail(f"{option} {path} is the input file ({input}): writing it would destroy the input")
    for (option_a, a), (option_b, b) in combinations(given, 2):
        if same_file(a, b):
            fail(f"{option_a} {a} and {option_b} {b} are the same file: give each output its own file")


def count_lines(path: Path) -> int | None:
    """Non-blank lines of an input file, for a progress bar's total (None for stdin and gzip: not worth a pass)."""
    if str(path) == "-" or path.suffix == ".gz":
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def show_record(info: dict[str, Any], as_json: bool, summary: Callable[[dict[str, Any]], None]) -> None:
    """A job's or a training run's record: the whole of it as JSON, or its summary on stderr and its state."""
    if as_json:
        typer.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    summary(info)
    typer.echo(info["state"])


def progress_bar(label: str, fields: str) -> Progress:
    """The commands' progress bar on stderr: `label` in bold, the bar, done/total, `fields` (a rich format of the
    task's fields), the time elapsed. Shown on a terminal, or anywhere with CROP_PROGRESS=1 (logs, tests)."""
    return Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn(fields),
                    TimeElapsedColumn(), console=err,
                    disable=not err.is_terminal and os.environ.get("CROP_PROGRESS") != "1")


def poll_until_finished(http: RemoteHTTP, path: str, info: dict[str, Any], *, label: str, finished: frozenset[str],
                        total: int, done: Callable[[dict[str, Any]], int], status: Callable[[dict[str, Any]], str],
                        poll: float) -> dict[str, Any]:
    """GET `path` every `poll` seconds until the record's state is one of `finished`, with a progress bar of
    `done(record)` out of `total` and `status(record)` beside it; the last record."""
    with progress_bar(label, "{task.fields[st]}") as progress:
        task = progress.add_task(label, total=total, st=info["state"])
        while True:
            progress.update(task, completed=min(done(info), total), st=status(info))
            if info["state"] in finished:
                return info
            time.sleep(poll)
            info = http.get(path)
