"""Errors a user can act on. Each message names the file (and line, where there is one) and the fix."""

from __future__ import annotations


class DistillError(Exception):
    """Base class: anything the CLI prints as a one-line error instead of a traceback."""


class ConfigError(DistillError):
    """The configuration is malformed: names the field (and file/line) and the problem."""


class InputFileError(DistillError):
    """One input file cannot be used. The run goes on without it and the manifest lists it."""

    def __init__(self, path: str, reason: str, line: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


class NoInputError(DistillError):
    """Nothing usable was found in the inputs."""


class StageError(DistillError):
    """A stage could not run: names the stage and what it needs."""


class BudgetExceeded(DistillError):
    """Raised internally when a call would take spend past a budget; stages catch it and stop cleanly."""


class EvalFileError(InputFileError):
    """The evaluation file (`--eval-file`) cannot be used: the run stops, since selecting the best model
    on real queries was asked for and cannot be done."""
