"""Training progress from inside the Hugging Face Trainer: steps, loss and ETA as `WorkEvent`s.

A `TrainerCallback` (the hook transformers gives for this) rather than a tqdm bar: the trainer's own bar
is off (`disable_tqdm`), and the CLI, Prefect or a test decide how events are shown.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

from distiller.progress import Counter


class TrainProgressCallback(TrainerCallback):
    """Emits one event per optimizer step with the last logged loss. It asks the trainer to log the
    loss every `log_every_s` seconds (the trainer averages it since the last log), so the loss shown is
    fresh without changing the run's `logging_steps`."""

    def __init__(self, task: str, log_every_s: float = 5.0) -> None:
        self.task = task
        self.counter: Counter | None = None
        self.loss: float | None = None
        self.log_every_s = log_every_s
        self._last_log = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.counter = Counter(self.task, int(state.max_steps or 0), "steps")
        self.counter.update(int(state.global_step))  # a resumed training starts past 0

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if logs and "loss" in logs:  # not "train_loss": that is the average the trainer reports at the end
            self.loss = float(logs["loss"])

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        last = state.global_step >= (state.max_steps or 0)
        if self.counter is not None and not last:  # the last step is reported by on_train_end, once
            self.counter.update(int(state.global_step), self.loss)
        now = time.monotonic()
        if last or now - self._last_log >= self.log_every_s or self.loss is None:
            self._last_log = now
            control.should_log = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.counter is not None:
            self.counter.update(int(state.max_steps or state.global_step), self.loss)


__all__ = ["TrainProgressCallback"]
