"""Rich progress bars for every long step, off in tests and non-interactive runs when asked."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar"]


def progress_bar(enabled: bool = True) -> Progress:
    """A progress display whose tasks may carry ``loss`` and ``rate`` (examples/second) fields."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[rate]:,.0f} ex/s"),
        TimeElapsedColumn(),
        disable=not enabled,
        transient=False,
    )
