"""Progress for every long step: live bars on a terminal, and plain timed lines when the output
goes to a file or a pipe (a redirected run's log shows each epoch while it runs, not one line
at the end cut at 80 columns).  Switched off in tests and when asked."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["progress_bar", "step", "note"]

_console = Console(stderr=True)
LINE_EVERY_S = 10.0  # how often a task in progress prints a line when the output is not a terminal


class _Lines:
    """The part of rich's ``Progress`` the trainer uses, printed as one plain line per update:
    every ``LINE_EVERY_S`` seconds, when the description changes, and when a task completes."""

    def __init__(self) -> None:
        self._tasks: list[dict[str, Any]] = []

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int, **fields: Any) -> TaskID:
        self._tasks.append(
            {
                "description": description,
                "total": total,
                "done": 0,
                "fields": fields,
                "started": time.perf_counter(),
                "printed": time.perf_counter(),
            }
        )
        return TaskID(len(self._tasks) - 1)

    def update(self, task: TaskID, advance: int = 0, description: str | None = None, **fields: Any) -> None:
        t = self._tasks[task]
        t["done"] += advance
        t["fields"].update(fields)
        now, changed = time.perf_counter(), description is not None and description != t["description"]
        if description is not None:
            t["description"] = description
        if changed or (advance and t["done"] >= t["total"]) or now - t["printed"] >= LINE_EVERY_S:
            t["printed"] = now
            f = t["fields"]
            _console.print(
                f"{escape(t['description'])}: {t['done']}/{t['total']}, loss {f.get('loss', float('nan')):.4f}, "
                f"{f.get('rate', 0.0):,.0f} pairs/s, {now - t['started']:.1f} s",
                soft_wrap=True,
                highlight=False,
            )


def progress_bar(enabled: bool = True) -> Progress | _Lines:
    """A progress display whose tasks may carry ``loss`` and ``rate`` (training pairs/second) fields."""
    if enabled and not _console.is_terminal:
        return _Lines()
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
    """A step without a natural count (reading data, exporting, evaluating): a spinner on a
    terminal, a line when it starts otherwise; a line with its duration when it ends."""
    if not enabled:
        yield
        return
    started = time.perf_counter()
    if _console.is_terminal:
        with _console.status(text):
            yield
    else:
        _console.print(f"… {escape(text)}", soft_wrap=True, highlight=False)
        yield
    _console.print(
        f"[green]✓[/] {escape(text)} ({time.perf_counter() - started:.1f} s)", soft_wrap=True, highlight=False
    )


def note(text: str) -> None:
    """Something the user must know about their data (rows dropped, ids without features),
    printed even when progress displays are off."""
    _console.print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True)
