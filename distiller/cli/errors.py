"""Every error a user can cause or meet is one line and an exit code on the command line, never a
traceback: the project's own errors (bad input, config, budget), the machine's (a full disk, a missing
permission, a name too long), a run folder another process holds, and Prefect that cannot be reached.
A bug keeps its traceback: that is what a bug report needs.

Exit codes: 2 bad input or configuration, 3 the machine or a service (disk, permissions, Prefect), 75 the
run is in use by another process (EX_TEMPFAIL: the same command can succeed later).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from typing import Any

import typer
from typer.core import TyperGroup

from distiller.errors import DistillError, EnvironmentProblem, environment_error

EXIT_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_LOCKED = 75


def exit_code(e: BaseException) -> int:
    from distiller.runlock import RunLocked

    if isinstance(e, RunLocked):
        return EXIT_LOCKED
    if isinstance(e, EnvironmentProblem) or not isinstance(e, DistillError):
        return EXIT_ENVIRONMENT
    return EXIT_INPUT


def prefect_unavailable(e: BaseException) -> str | None:
    """One line when Prefect cannot be reached or started, else None."""
    api = os.environ.get("PREFECT_API_URL")
    if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == "prefect":
        return "Prefect is not installed in this environment: install it, or run with --no-prefect"
    text = str(e)
    module = type(e).__module__.split(".")[0]
    if "ephemeral Prefect API server" in text:
        return (
            "Prefect's embedded server did not start in time (a busy machine?): run the same command "
            "again, raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or use --no-prefect"
        )
    if "Failed to reach API" in text or module in ("httpx", "httpcore"):
        where = f"the Prefect API at {api}" if api else "the Prefect API"
        return (
            f"cannot reach {where} ({type(e).__name__}: {text.splitlines()[0] if text else 'no answer'}): "
            "start the server, unset PREFECT_API_URL to use an embedded one, or use --no-prefect"
        )
    return None


def user_error_line(e: BaseException) -> str | None:
    """The one line to show for `e`, or None when it is a bug (keep the traceback)."""
    if isinstance(e, DistillError):
        return str(e)
    return environment_error(e) or prefect_unavailable(e)


_HELD: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("held", default=None)


def hold_until_command_ends(cm: contextlib.AbstractContextManager[Any]) -> None:
    """Enter `cm` (a run lock) now and leave it when the running command ends, however it ends."""
    stack = _HELD.get()
    if stack is None:  # called outside `distill` (a test calling the function): hold for the process
        stack = contextlib.ExitStack()
    stack.enter_context(cm)


class FriendlyErrors(TyperGroup):
    """The `distill` command group: errors that escape a command become one line and an exit code."""

    def invoke(self, ctx: Any) -> Any:  # click's Context, which typer vendors under a private name
        with contextlib.ExitStack() as held:
            token = _HELD.set(held)
            try:
                return super().invoke(ctx)
            except (typer.Exit, typer.Abort, typer.TyperException):
                raise
            except Exception as e:
                line = user_error_line(e)
                if line is None:
                    raise
                from rich.markup import escape

                from distiller.cli.render import console

                console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
                raise typer.Exit(code=exit_code(e)) from None
            finally:
                _HELD.reset(token)


class _NoTracebackForDistillErrors(logging.Filter):
    """Prefect logs a failed task's and flow's exception with its traceback, three times over. For a
    DistillError (bad input, config, budget, price, a full disk) that is noise: the CLI prints its
    message once, which says what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and user_error_line(record.exc_info[1]):
            return False  # a DistillError, a full disk, a permission: the CLI's one line says it
        # "Finished in state Failed('Task run encountered an exception StageError: ...')" has no exc_info
        msg = record.getMessage()
        return not ("encountered an exception" in msg and any(f" {n}:" in msg for n in _distill_errors()))


def _distill_errors() -> set[str]:
    names, todo = set(), [DistillError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def quiet_expected_errors() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_NoTracebackForDistillErrors())


__all__ = [
    "FriendlyErrors",
    "exit_code",
    "hold_until_command_ends",
    "quiet_expected_errors",
    "user_error_line",
]
