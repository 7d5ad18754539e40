"""The `distill` application and what its commands share: loading the config, failing in one line,
holding the run folder, and Prefect's embedded server (its environment, and a retry when it is slow)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from distiller.cli.errors import FriendlyErrors, exit_code, hold_until_command_ends, quiet_expected_errors
from distiller.cli.render import console, out
from distiller.config import DistillConfig
from distiller.errors import DistillError

app = typer.Typer(
    name="distill",
    help="Turn a domain's documents (or just its name) into retrieval training data and a "
    "domain-adapted embedding model.\n\nQuick start:  distill run --input examples/medquad-mini",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.info.cls = FriendlyErrors  # errors that escape a command: one line and an exit code, no traceback


PREFECT_START_WAIT_S = 90


def prefect_start_failed(e: BaseException | None) -> bool:
    """Prefect's embedded API server did not answer in time (the error may come wrapped)."""
    while e is not None:
        if "ephemeral Prefect API server" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _stop_unstarted_prefect_server() -> None:
    """Prefect leaves the server process it gave up waiting for running (and orphaned at exit)."""
    with contextlib.suppress(Exception):
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):
            proc = getattr(server, "server_process", None)
            if proc is not None and proc.poll() is None:
                proc.kill()  # not terminate: its shutdown prints tracebacks of the half-made database
                proc.wait(10)


def run_flow_with_retry(call: Callable[[], dict[str, Any]]) -> Path:
    """A flow under Prefect; if its embedded server does not start, once more, then one line that says
    so and what runs without it (no traceback). Returns the flow's run_dir."""
    quiet_expected_errors()
    for attempt in (1, 2):
        try:
            return Path(call()["run_dir"])
        except Exception as e:
            if not prefect_start_failed(e):
                raise
            _stop_unstarted_prefect_server()
            if attempt == 1:
                console.print("[yellow]Prefect's local API server did not start in time: trying once more[/]")
                continue
            wait = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", PREFECT_START_WAIT_S)
            fail(
                DistillError(
                    f"Prefect's local API server did not start within {wait} s, twice (the machine may be "
                    "busy; PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS sets the wait). "
                    "`--no-prefect` runs the same stages without Prefect."
                )
            )
    raise AssertionError("unreachable")


def _version(value: bool) -> None:
    if value:
        from distiller import __version__

        out.print(f"domain-distiller {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # Before any library loads: their own progress bars and load reports would interleave with ours.
    from distiller.progress import quiet_libraries

    quiet_libraries()


def prefect_env(runs_dir: str) -> None:
    """With no Prefect server configured, run Prefect in its embedded (SQLite) mode with its home
    inside the runs folder, so a fresh machine needs nothing set up."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(Path(runs_dir).resolve() / ".prefect"))
        # Prefect does not create missing parents of its home: on a fresh clone runs/ does not exist.
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # Prefect waits 20 s for its embedded API server to answer; a busy machine (load 8 on 2 cores)
    # needs longer, and a run that fails before any work for that is worse than one that waits.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(PREFECT_START_WAIT_S))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def fail(e: Exception) -> NoReturn:
    console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
    raise typer.Exit(code=exit_code(e))


def hold_run(cfg: DistillConfig) -> None:
    """Lock the run folder until the command ends: a second process on the same run name is refused
    with the holder's PID (distiller.runlock) before it touches anything."""
    from distiller.stages import lock_run

    hold_until_command_ends(lock_run(cfg))


def load_or_fail(config: Path | None, overrides: dict[str, Any]) -> DistillConfig:
    from distiller.config import load_config

    try:
        return load_config(config, overrides)
    except DistillError as e:
        fail(e)
