"""One process per run folder (issue 10): a second run with the same name is refused at once, naming the
process that holds it, before it writes anything; the lock goes with its process, however that ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import ROOT
from typer.testing import CliRunner

from distiller.cli import app
from distiller.runlock import LOCK_NAME, RunLocked, run_lock

HOLD = textwrap.dedent(
    """
    import sys
    from distiller.runlock import run_lock
    with run_lock(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.readline()  # until the test says so (or kills us)
    """
)


def _holder(run_dir: Path) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_second_process_is_refused_naming_the_holder_then_gets_it_when_free(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "same"
    holder = _holder(run)
    try:
        with pytest.raises(RunLocked, match=rf"run 'same' is in use by process {holder.pid} "), run_lock(run):
            pass
        with run_lock(tmp_path / "runs" / "other"):  # another name: no waiting on anyone
            pass
    finally:
        holder.communicate("\n", timeout=30)
    with run_lock(run), run_lock(run):  # free now, and re-entrant within a process
        assert (run / LOCK_NAME).is_file()


def test_a_killed_holder_leaves_nothing_to_clean_up(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "x"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with run_lock(run):
        pass


def test_cli_run_with_a_name_in_use_exits_75_before_touching_the_run(tmp_path: Path) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("Gout causes sudden joint pain and swelling.\n")
    runs = tmp_path / "runs"
    holder = _holder(runs / "busy")
    try:
        args = ["run", "-i", str(corpus), "--run-name", "busy", "--runs-dir", str(runs), "--no-prefect"]
        result = CliRunner().invoke(app, args)
    finally:
        holder.communicate("\n", timeout=30)
    assert result.exit_code == 75, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"in use by process {holder.pid}" in errors[0]
    assert "Traceback" not in result.output
    assert sorted(p.name for p in (runs / "busy").iterdir()) == [LOCK_NAME]  # no manifest written
