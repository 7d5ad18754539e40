"""Export: the run's data in the configured formats into exports/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


def export_stage(store: RunStore, cfg: DistillConfig, command: str | None = None) -> StageResult:
    from distiller.export import export_run

    inputs = [p for p in sorted(store.dir.glob("*.parquet")) if p.name != "ledger.parquet"]
    key = stage_key("export", VERSION, config_hash(cfg, "export", "split", "validation"), inputs)

    def run() -> dict[str, Any]:
        res = export_run(store.dir, cfg.export.formats, cfg.split, cfg.seed, command=command)
        return {
            "message": f"{len(res.files)} files in {Path(res.out_dir).name}/",
            "details": {"files": res.files},
        }

    return store.run_stage("export", key, ["exports"], run)
