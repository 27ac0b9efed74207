"""What the `crop` command's modules share: the error console and the way a command fails."""

from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True)


def fail(message: str) -> None:
    """Print `message` as an error and leave with status 2 (bad input or usage)."""
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)
