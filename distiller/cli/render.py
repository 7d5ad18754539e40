"""What the command line prints: the consoles, tables, the run's status, live stage lines and progress."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

_WIDTH = None if sys.stdout.isatty() else 160
console = Console(stderr=True, width=_WIDTH)
out = Console(width=_WIDTH)


@contextlib.contextmanager
def llm_progress_lines(every_s: float = 5.0) -> Iterator[None]:
    """LLM stages' progress (rows, cost so far, budget left) as a line every few seconds per step."""
    from distiller.generation.progress import Throttled, progress_sink

    with progress_sink(Throttled(lambda ev: console.print(f"  [dim]{ev.line()}[/]"), every_s=every_s)):
        yield


def mix_text(mix: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in mix.items())


def print_table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    from rich.markup import escape

    t = Table(title=title)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(escape(v) for v in row))
    out.print(t)


class _DropRepeats(logging.Filter):
    """Drops log records that start with a notice the CLI has already printed."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def said_once(prefix: str) -> None:
    """The CLI said it: the pipeline's log line with the same notice would repeat it."""
    logging.getLogger("distiller").addFilter(_DropRepeats(prefix))


@contextlib.contextmanager
def work_progress(every_s: float = 10.0) -> Iterator[None]:
    """Training steps (loss, ETA) and encoding as rich progress bars on a terminal; as a line every
    `every_s` seconds (and at the end of each task) when the output is a log."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from distiller.progress import WorkEvent, work_sink

    if not console.is_terminal:
        last: dict[str, float] = {}

        def line(ev: WorkEvent) -> None:
            now = time.monotonic()
            if ev.finished or now - last.get(ev.task, -1e9) >= every_s:
                last[ev.task] = now
                console.print(f"  [dim]{ev.line()}[/]")

        with work_sink(line):
            yield
        return

    progress = Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def bar(ev: WorkEvent) -> None:
        loss = f"loss {ev.loss:.4f}" if ev.loss is not None else ""
        if ev.task not in tasks:
            tasks[ev.task] = progress.add_task(ev.task, total=ev.total, unit=ev.unit, loss=loss)
        progress.update(tasks[ev.task], completed=ev.done, total=ev.total, loss=loss)
        if ev.finished:  # leave one line behind, drop the bar
            progress.remove_task(tasks.pop(ev.task))
            if ev.unit == "steps":
                progress.console.print(f"  [dim]{ev.line()}[/]")

    with progress, work_sink(bar):
        yield


def live_stages() -> None:
    """One line per stage as it starts and ends, so a long run shows where it is."""
    from rich.markup import escape

    from distiller.store import add_stage_listener

    icons = {
        "running": "[yellow]▶[/]",
        "completed": "[green]✓[/]",
        "cached": "[cyan]↺[/]",
        "failed": "[red]✗[/]",
        "skipped": "[dim]–[/]",
    }

    def show(run: str, r: Any) -> None:
        if r.status == "running":
            console.print(f"{icons['running']} {r.stage} …")
        else:
            from distiller.summary import stage_status_text

            # A failure's message comes once, as the command's last line (or with its traceback).
            note = f": {escape(r.message)}" if r.message and r.status != "failed" else ""
            when = (
                stage_status_text(r.model_dump())
                if r.status == "cached"
                else f"{r.status} in {r.seconds:.1f}s"
            )
            console.print(f"{icons.get(r.status, '?')} {r.stage} [dim]{when}[/]{note}")

    add_stage_listener(show)


def print_skipped(skipped: list[dict[str, Any]]) -> None:
    if not skipped:
        return
    t = Table(title=f"Skipped inputs ({len(skipped)})", title_style="yellow")
    t.add_column("file")
    t.add_column("why")
    for s in skipped:
        t.add_row(f"{s['path']}{':' + str(s['line']) if s.get('line') else ''}", s["reason"])
    out.print(t)


def print_status(run_dir: Path, title: str) -> None:
    from rich.rule import Rule

    from distiller.summary import status_renderable

    out.print(Rule(title))
    out.print(status_renderable(run_dir))  # ends with LLM spend vs budget and estimate vs billed
