"""What the `crop` command's modules share: the error console and the way a command fails."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err = Console(stderr=True)


def fail(message: str) -> None:
    """Print `message` as an error and leave with status 2 (bad input or usage)."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def count_lines(path: Path) -> int | None:
    """Non-blank lines of an input file, for a progress bar's total (None for stdin and gzip: not worth a pass)."""
    if str(path) == "-" or path.suffix == ".gz":
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())
