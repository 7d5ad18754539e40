"""Progress of long local compute (training steps, encoding), and quieting the libraries' own bars.

The domain layer only emits `WorkEvent`s; sinks decide what to show (the CLI draws a rich progress bar,
or prints a line every few seconds when its output is not a terminal). As in
`distiller.generation.progress` (LLM stages), sinks are process-wide: a Prefect task may run on another
thread than the one that installed the CLI's sink. With no sink installed, emitting costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pydantic import BaseModel

log = logging.getLogger("distiller")

E = TypeVar("E")


class WorkEvent(BaseModel):
    task: str
    """What is being done, e.g. 'training iter1', 'encoding documents'."""
    done: int
    total: int
    unit: str = "steps"
    loss: float | None = None
    """Training: the last logged loss."""
    elapsed_s: float = 0.0

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (None before the first unit is done)."""
        if self.done <= 0 or self.elapsed_s <= 0:
            return None
        return self.elapsed_s / self.done * max(0, self.total - self.done)

    def line(self) -> str:
        from distiller.summary import fmt_duration

        parts = [f"{self.task}: {self.done}/{self.total} {self.unit}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        parts.append(f"{fmt_duration(self.elapsed_s)} elapsed")
        eta = self.eta_s
        if eta is not None and not self.finished:
            parts.append(f"ETA {fmt_duration(eta)}")
        return " · ".join(parts)


class Sinks(Generic[E]):
    """A process-wide list of sinks for one kind of event: attached for a block, each event handed to
    every sink attached, a sink's failure logged and never raised (a display must not stop the work)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._lock = threading.Lock()
        self._sinks: list[Callable[[E], None]] = []

    @contextlib.contextmanager
    def attached(self, sink: Callable[[E], None]) -> Iterator[None]:
        with self._lock:
            self._sinks.append(sink)
        try:
            yield
        finally:
            with self._lock:
                self._sinks.remove(sink)

    def __bool__(self) -> bool:
        return bool(self._sinks)

    def emit(self, event: E) -> None:
        with self._lock:
            sinks = list(self._sinks)
        for sink in sinks:
            try:
                sink(event)
            except Exception as e:
                log.debug("%s sink failed: %s", self.what, e)


WorkSink = Callable[[WorkEvent], None]

_work = Sinks[WorkEvent]("work progress")


def work_sink(sink: WorkSink) -> contextlib.AbstractContextManager[None]:
    """Send work events to `sink` while the block runs."""
    return _work.attached(sink)


def has_sinks() -> bool:
    return bool(_work)


def emit_work(event: WorkEvent) -> None:
    _work.emit(event)


class Counter:
    """Counts units of one task and emits an event per update (with elapsed time since creation)."""

    def __init__(self, task: str, total: int, unit: str = "steps") -> None:
        self.task, self.total, self.unit = task, total, unit
        self.t0 = time.monotonic()

    def update(self, done: int, loss: float | None = None) -> None:
        if not has_sinks():
            return
        emit_work(
            WorkEvent(
                task=self.task,
                done=done,
                total=self.total,
                unit=self.unit,
                loss=loss,
                elapsed_s=time.monotonic() - self.t0,
            )
        )


def quiet_libraries() -> None:
    """Silence the progress bars and load reports transformers, sentence-transformers, datasets and
    huggingface_hub print on their own ("Loading weights", "Writing model shards", "Computing widget
    examples"...): our own progress says what is happening. Call before those libraries are imported
    (tqdm reads TQDM_DISABLE when it is imported); the explicit switches cover them if already loaded."""
    for name, value in (
        ("TQDM_DISABLE", "1"),
        ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
        ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"),
        ("TRANSFORMERS_VERBOSITY", "error"),
        ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
    ):
        os.environ.setdefault(name, value)
    import sys

    if "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging

        tf_logging.disable_progress_bar()
        tf_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

        disable_progress_bars()


__all__ = [
    "Counter",
    "Sinks",
    "WorkEvent",
    "WorkSink",
    "emit_work",
    "has_sinks",
    "quiet_libraries",
    "work_sink",
]
