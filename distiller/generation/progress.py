"""Progress of LLM stages: rows done, cost so far, budget left.

The domain layer only emits `ProgressEvent`s; sinks decide what to do with them (the CLI prints a line,
the Prefect task updates a progress artifact; see `tasks/stages.py`). Sinks are process-wide rather than
context variables because a Prefect task may run on another thread than the one that installed the CLI's
sink. With no sink installed, emitting costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from pydantic import BaseModel

from distiller.progress import Sinks


class ProgressEvent(BaseModel):
    stage: str
    step: str
    done: int
    total: int
    cost_usd: float = 0.0
    """Spent by this stage so far (this execution; calls answered from the cache cost nothing)."""
    budget_left_usd: float | None = None
    """The tightest cap left for this stage (None: no cap)."""
    failed: int = 0
    not_sent: int = 0
    """Rows the budget stopped: done but never sent."""

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def line(self) -> str:
        left = "no cap" if self.budget_left_usd is None else f"${self.budget_left_usd:.4f} left"
        failed = f", {self.failed} failed" if self.failed else ""
        skipped = f", {self.not_sent} not sent (budget)" if self.not_sent else ""
        # Rows sent (or answered from the cache), not rows planned: a budget stop shows as not sent.
        return (
            f"{self.stage} · {self.step}: {self.done - self.not_sent}/{self.total} rows{failed}{skipped} · "
            f"${self.cost_usd:.4f} spent · {left}"
        )


ProgressSink = Callable[[ProgressEvent], None]

# A progress display must never break a paid-for batch: `Sinks` logs a sink's failure and goes on.
_sinks = Sinks[ProgressEvent]("progress")


def progress_sink(sink: ProgressSink) -> contextlib.AbstractContextManager[None]:
    """Send progress events to `sink` while the block runs."""
    return _sinks.attached(sink)


def emit(event: ProgressEvent) -> None:
    _sinks.emit(event)


class Throttled:
    """Wraps a sink so it sees at most one event per `every_s` per step, plus every step's last event."""

    def __init__(self, sink: ProgressSink, every_s: float = 2.0) -> None:
        self.sink = sink
        self.every_s = every_s
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, event: ProgressEvent) -> None:
        key = (event.stage, event.step)
        now = time.monotonic()
        if not event.finished and now - self._last.get(key, -1e9) < self.every_s:
            return
        self._last[key] = now
        self.sink(event)


__all__ = ["ProgressEvent", "ProgressSink", "Throttled", "emit", "progress_sink"]
