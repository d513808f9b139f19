"""Rich progress displays for every long step, switched off in tests and when asked."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar", "step", "note"]

_console = Console(stderr=True)


def progress_bar(enabled: bool = True) -> Progress:
    """A progress display whose tasks may carry ``loss`` and ``rate`` (training pairs/second) fields."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:,.0f} pairs/s"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )


@contextlib.contextmanager
def step(text: str, enabled: bool = True) -> Iterator[None]:
    """A spinner for a step without a natural count (reading data, exporting, evaluating)."""
    if not enabled:
        yield
        return
    with _console.status(text):
        yield
    _console.print(f"[green]✓[/] {escape(text)}")


def note(text: str) -> None:
    """Something the user must know about their data (rows dropped, ids without features),
    printed even when progress displays are off."""
    _console.print(f"[yellow]note:[/] {escape(text)}")
