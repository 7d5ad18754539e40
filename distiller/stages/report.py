"""Report: the run's report.html."""

from __future__ import annotations

from typing import Any

from distiller.config import DistillConfig
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


def report_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    from distiller.report import render_report

    inputs = [p for p in sorted(store.dir.glob("*.parquet"))]
    # The report shows the run's name and folder: another run with equal artifacts must not lend its own.
    key = stage_key("report", VERSION, store.name, inputs)

    def run() -> dict[str, Any]:
        path = render_report(store.dir)
        return {"message": f"report at {path}"}

    return store.run_stage("report", key, ["report.html"], run)
