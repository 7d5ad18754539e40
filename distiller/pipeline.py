"""The whole pipeline in this process, without Prefect (`distill run --no-prefect`, tests, benchmarks):
the steps of `stage_plan` run one after the other under the run folder's lock. The stages themselves
live in `distiller.stages`; the Prefect flow (`flows/distill.py`) iterates the same plan.
"""

from __future__ import annotations

from distiller.config import DistillConfig
from distiller.stages import Progress, lock_run, open_store, run_step, stage_plan
from distiller.store import RunStore


def run_pipeline(
    cfg: DistillConfig, progress: Progress | None = None, command: str | None = None
) -> RunStore:
    """The whole pipeline without Prefect (used by tests and `distill run --no-prefect`)."""
    with lock_run(cfg):
        store = open_store(cfg)
        for step in stage_plan(cfg):
            run_step(step, store, cfg, progress=progress, command=command)
        return store


__all__ = ["run_pipeline"]
