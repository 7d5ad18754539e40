"""One source of truth for cost: the manifest's stage costs, `distill status`, the report and the Prefect
artifacts all come from the ledger and add up to its total, whatever ran, was killed and resumed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT, TESTS_DIR

from distiller.llm.ledger import Ledger, LedgerEntry
from distiller.runview import RunView
from distiller.store import RunStore, StageResult
from distiller.summary import status_renderable


def _row(stage: str, status: str, cost: float, call: str, reserved: float = 0.01) -> LedgerEntry:
    return LedgerEntry(
        ts="2026-01-01T00:00:00Z", stage=stage, item_id=call, provider="openai", model="m", cache_key=call,
        attempt=1, status=status, cached=False, input_tokens=10, output_tokens=5, cost_usd=cost,  # type: ignore[arg-type]
        reserved_usd=reserved, latency_s=0.1, call_id=call,
    )  # fmt: skip


def test_stage_costs_come_from_the_ledger_after_a_kill_and_resume(
    tmp_path: Path,
) -> None:
    store = RunStore(tmp_path / "run")
    ledger = Ledger(store.path("ledger.parquet"))
    # First execution of generate: two calls answered, one in flight when the process was killed.
    ledger.pending(_row("generate", "pending", 0.01, "a"))
    ledger.add(_row("generate", "ok", 0.002, "a"))
    ledger.pending(_row("generate", "pending", 0.01, "b"))
    ledger.add(_row("generate", "ok", 0.003, "b"))
    ledger.pending(_row("generate", "pending", 0.01, "killed", reserved=0.01))
    store.record_stage(StageResult(stage="generate", status="running"))
    # The resumed execution sends the rest, then validate and the mining judge run.
    ledger.pending(_row("generate", "pending", 0.01, "c"))
    ledger.add(_row("generate", "ok", 0.004, "c"))
    generate = StageResult(stage="generate", status="completed", cost_usd=0.004)  # this execution's only
    store.record_stage(generate)
    ledger.add(_row("validate", "ok", 0.005, "d"))
    store.record_stage(StageResult(stage="validate", status="completed"))
    ledger.add(_row("mine", "ok", 0.001, "e"))  # an older ledger's name for the mining judge
    store.record_stage(StageResult(stage="mine_iter1", status="completed"))
    ledger.flush()

    m = store.manifest()
    stages = {k: v["cost_usd"] for k, v in m["stages"].items()}
    # generate: both executions, the killed call at its reservation (never $0)
    assert stages["generate"] == pytest.approx(0.002 + 0.003 + 0.01 + 0.004)
    assert generate.cost_usd == stages["generate"]  # the result handed on (Prefect artifact) agrees
    assert stages["validate"] == 0.005 and stages["mine_iter1"] == 0.001
    total = Ledger(store.path("ledger.parquet")).total_cost_usd()
    assert abs(sum(stages.values()) - total) < 1e-12
    assert m["llm_cost"]["total_usd"] == round(total, 9)
    assert m["llm_cost"]["unknown_usd"] == 0.01 and m["llm_cost"]["calls_unknown"] == 1

    view = RunView(store.dir)
    assert abs(view.total_cost - total) < 1e-12
    assert view.stage_costs == pytest.approx(stages)
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(status_renderable(store.dir))
    text = console.export_text()
    assert f"{stages['generate']:.4f}" in text and f"{total:.4f}" in text


CHILD = """
import sys
sys.path.insert(0, sys.argv[2])
from distiller.config import DistillConfig
from distiller.stages import generate_stage, ingest_stage, open_store
cfg = DistillConfig.model_validate_json(open(sys.argv[1]).read())
store = open_store(cfg)
ingest_stage(store, cfg)
generate_stage(store, cfg)
"""


@pytest.mark.slow
def test_manifest_equals_ledger_after_a_real_kill_and_resume(tmp_path: Path) -> None:
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

    from distiller.stages import generate_stage, open_store
    from distiller.testing.llm_server import LLMTestServer

    with LLMTestServer(ScriptedTeacher(), latency_s=0.4) as srv:
        srv.input_price_per_mtok, srv.output_price_per_mtok = 15.0, 60.0
        cfg = llm_run_config(
            srv,
            tmp_path / "runs",
            input={"paths": [str(write_corpus(tmp_path / "docs"))]},
            teacher={"input_price_per_mtok": 15.0, "output_price_per_mtok": 60.0, "max_concurrency": 4},
            generation={"queries_per_chunk": 2, "questions_per_chunk": 2},
        )
        (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
        (tmp_path / "child.py").write_text(CHILD)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        tests = str(TESTS_DIR)
        child = subprocess.Popen(
            [sys.executable, str(tmp_path / "child.py"), str(tmp_path / "cfg.json"), tests],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while srv.count < 6 and child.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.returncode == -signal.SIGKILL
        store = open_store(cfg)
        res = generate_stage(store, cfg)  # the resume
        billed = srv.billed_usd
    ledger = Ledger(store.path("ledger.parquet"))
    assert any(e.status == "unknown" for e in ledger.entries), "no call was in flight at the kill"
    manifest = json.loads(store.path("manifest.json").read_text())
    assert res.status == "completed"
    # the stage's cost covers both executions, and is the ledger's total; the ledger covers the bill
    assert manifest["stages"]["generate"]["cost_usd"] == pytest.approx(ledger.total_cost_usd())
    assert manifest["llm_cost"]["total_usd"] == pytest.approx(ledger.total_cost_usd())
    assert RunView(store.dir).stage_costs["generate"] == pytest.approx(ledger.total_cost_usd())
    assert billed <= ledger.total_cost_usd() + 1e-9
    assert res.cost_usd > res.details["billed_usd"]  # more than the resumed execution alone spent
