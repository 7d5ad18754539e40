"""Errors a user can cause or meet are one line and an exit code on the command line, never a traceback
(issue 10): a full disk (and a later run recovers with no cleanup), a name too long, a malformed
environment value, Prefect that cannot be reached."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distiller.cli import app
from distiller.cli.errors import prefect_unavailable, user_error_line


def _corpus(tmp_path: Path) -> Path:
    d = tmp_path / "docs"
    d.mkdir(exist_ok=True)
    (d / "gout.md").write_text("Gout causes sudden joint pain and swelling. " * 20 + "\n")
    (d / "asthma.md").write_text("Asthma narrows the airways and makes breathing hard. " * 20 + "\n")
    return d


def _one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def test_full_disk_is_one_line_and_the_next_run_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distiller.records as records

    runs = tmp_path / "runs"
    args = ["ingest", "-i", str(_corpus(tmp_path)), "--run-name", "full", "--runs-dir", str(runs)]
    real = records.pq.write_table

    def full_disk(table, where, **kw):  # the disk fills while the Parquet file is written
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))

    monkeypatch.setattr(records.pq, "write_table", full_disk)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    line = _one_error_line(result.output)
    assert line.startswith("error: ingest: disk full (") and "run the same command again" in line
    run = runs / "full"
    assert not [p.name for p in run.rglob("*tmp*")]  # no temp file left behind
    assert not (run / "chunks.parquet").exists()

    monkeypatch.setattr(records.pq, "write_table", real)  # space freed; nothing cleaned by hand
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (run / "chunks.parquet").is_file()


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    runs = tmp_path / ("r" * 300)  # the run name is checked (at most 100); a folder can still be too long
    result = CliRunner().invoke(app, ["ingest", "-i", str(_corpus(tmp_path)), "--runs-dir", str(runs)])
    assert result.exit_code == 3, result.output
    assert "file name too long" in _one_error_line(result.output)


def test_malformed_environment_value_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTILL_CHUNKING", '{"chunk_size": 64')
    result = CliRunner().invoke(app, ["ingest", "-i", str(_corpus(tmp_path)), "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "DISTILL_CHUNKING is not valid JSON" in _one_error_line(result.output)


def test_prefect_that_cannot_be_reached_is_one_line() -> None:
    import httpx

    assert "cannot reach the Prefect API" in prefect_unavailable(
        httpx.ConnectError("All connection attempts failed")
    )
    timed_out = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    assert "--no-prefect" in user_error_line(timed_out)
    missing = ModuleNotFoundError("No module named 'prefect'", name="prefect")
    assert user_error_line(missing).startswith("Prefect is not installed")
    assert user_error_line(RuntimeError("a bug")) is None  # a bug keeps its traceback


@pytest.mark.slow
def test_cli_run_against_a_dead_prefect_server_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A process of its own, as a user runs it: Prefect keeps settings and clients per process, so an
    # earlier in-process test that started Prefect would otherwise hide the dead URL.
    import subprocess
    import sys

    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    args = ["run", "-i", str(_corpus(tmp_path)), "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.run(
        [sys.executable, "-c", "from distiller.cli import app; app()", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 3, output
    assert f"cannot reach the Prefect API at http://127.0.0.1:{port}/api" in _one_error_line(output)
    assert "Traceback" not in output


def test_prefect_records_of_a_distill_error_are_dropped_the_cli_says_it_once() -> None:
    import logging

    from distiller.cli.errors import _NoTracebackForDistillErrors
    from distiller.errors import StageError

    f = _NoTracebackForDistillErrors()
    err = StageError("mining found no triplets in iteration 1")

    def record(msg: str, exc: BaseException | None = None) -> logging.LogRecord:
        exc_info = (type(exc), exc, None) if exc else None
        return logging.LogRecord("prefect.task_runs", logging.ERROR, "x", 1, msg, None, exc_info)

    assert not f.filter(record("Task run failed with exception: StageError(...)", err))
    assert not f.filter(record("Finished in state Failed('Task run encountered an exception StageError: x')"))
    assert f.filter(record("Finished in state Failed('Task run encountered an exception KeyError: x')"))
    assert f.filter(record("Task run failed", KeyError("a bug")))  # bugs keep their traceback


@pytest.mark.slow  # loads the student to mine
def test_too_small_labeled_file_error_is_printed_once(tmp_path: Path) -> None:
    qa = tmp_path / "tiny.csv"
    qa.write_text(
        "question,answer\nWhat is gout?,Gout is arthritis.\nWhat is asthma?,Asthma is a lung disease.\n"
    )
    args = ["run", "--qa-file", str(qa), "--runs-dir", str(tmp_path / "runs"), "--no-prefect"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "mining found no triplets" in line
    assert result.output.count("mining found no triplets") == 1, result.output
