"""Start anywhere: when Prefect's embedded API server does not come up in time, the CLI tries once more
and then says so in one line, with the way to run without Prefect; no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

from distiller.cli import base as cli


def test_prefect_start_wait_is_raised_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    cli.prefect_env(str(tmp_path / "runs"))
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "90"
    monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "7")
    cli.prefect_env(str(tmp_path / "runs"))
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "7"  # the user's wins


def test_start_failure_is_recognised_through_wrapping() -> None:
    inner = RuntimeError("Timed out while attempting to connect to ephemeral Prefect API server.")
    try:
        try:
            raise inner
        except RuntimeError as e:
            raise ValueError("flow failed") from e
    except ValueError as outer:
        assert cli.prefect_start_failed(outer)
    assert not cli.prefect_start_failed(RuntimeError("something else"))


@pytest.mark.slow
def test_prefect_that_does_not_start_gives_one_line_and_the_way_around(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "0",  # the wait forced tiny
    }
    env.pop("PREFECT_API_URL", None)
    env.pop("PREFECT_HOME", None)
    p = subprocess.run(
        [sys.executable, "-m", "distiller.cli", "run", "--input", str(ROOT / "examples" / "medquad-mini"),
         "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    text = p.stdout + p.stderr
    assert p.returncode == 2, text
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Prefect's local API server did not start" in errors[0]
    assert "--no-prefect" in text and "trying once more" in text
