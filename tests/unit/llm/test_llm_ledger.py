"""The ledger keeps every row through a hard kill: rows go to a journal as they are added."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from distiller.llm.ledger import JOURNAL_FILENAME, Ledger, LedgerEntry


def _entry(i: int, cost: float = 0.01) -> LedgerEntry:
    return LedgerEntry(
        ts="2026-01-01T00:00:00Z",
        stage="generate",
        item_id=f"r{i}",
        provider="openai",
        model="m",
        cache_key=f"k{i}",
        attempt=1,
        status="ok",
        cached=False,
        input_tokens=10,
        output_tokens=5,
        cost_usd=cost,
        reserved_usd=0.02,
        latency_s=0.1,
    )


def test_rows_survive_sigkill_before_any_flush(tmp_path: Path) -> None:
    # a child adds three rows, never flushes, and kills itself with SIGKILL
    code = f"""
import os, signal
from distiller.llm.ledger import Ledger, LedgerEntry
from test_llm_ledger import _entry
ledger = Ledger({str(tmp_path / "ledger.parquet")!r}, flush_every_s=1e9)
for i in range(3):
    ledger.add(_entry(i))
os.kill(os.getpid(), signal.SIGKILL)
"""
    env_path = str(Path(__file__).parent)
    p = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert p.returncode == -9, p.stderr
    assert not (tmp_path / "ledger.parquet").exists()
    resumed = Ledger(tmp_path / "ledger.parquet")
    assert [e.item_id for e in resumed.entries] == ["r0", "r1", "r2"]
    assert resumed.total_cost_usd() == 0.03
    resumed.add(_entry(3))
    resumed.flush()
    assert list(pd.read_parquet(tmp_path / "ledger.parquet").item_id) == ["r0", "r1", "r2", "r3"]


def test_torn_last_line_is_ignored(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.parquet")
    ledger.add(_entry(0))
    with (tmp_path / JOURNAL_FILENAME).open("a") as f:
        f.write('{"ts": "2026-01-01T00:00:00Z", "stage": "gen')  # killed mid-write
    resumed = Ledger(tmp_path / "ledger.parquet")
    assert [e.item_id for e in resumed.entries] == ["r0"]
    resumed.add(_entry(1))  # the next row is not glued to the torn one
    assert [e.item_id for e in Ledger(tmp_path / "ledger.parquet").entries] == ["r0", "r1"]
