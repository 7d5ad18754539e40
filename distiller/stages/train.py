"""Train: one iteration of the student on its mined triplets."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig, TrainingConfig
from distiller.errors import StageError
from distiller.records import Triplet, read_parquet
from distiller.stages.common import model_ref
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "1"


def training_settings(cfg: DistillConfig) -> TrainingConfig:
    """The training section as used: offline pseudo-queries train at training.offline_learning_rate;
    labeled and LLM-taught runs at training.learning_rate."""
    lr = cfg.training.offline_learning_rate
    if cfg.teacher.offline and not cfg.input.qa_file and lr is not None:
        return cfg.training.model_copy(update={"learning_rate": lr})
    return cfg.training


def train_stage(store: RunStore, cfg: DistillConfig, iteration: int) -> StageResult:
    from distiller.retrieval.training import train_student

    triplets_p = store.path(f"triplets_iter{iteration}.parquet")
    if not triplets_p.is_file():
        raise StageError(f"train needs triplets_iter{iteration}.parquet: run mine first")
    model_path, model_id = model_ref(store, cfg, iteration)
    key = stage_key(
        "train",
        VERSION,
        # Where training runs (a deployment or in-process) and how often it checkpoints by time do not
        # change what it makes.
        config_hash(
            cfg, "training", exclude={"training": {"deployment", "deployment_timeout_s", "save_minutes"}}
        )
        + str(iteration),
        [triplets_p, model_id],
    )
    out_rel = f"models/iter{iteration}"

    def run() -> dict[str, Any]:
        triplets = read_parquet(triplets_p, Triplet)
        # Checkpoints are keyed like the stage, so a changed config never resumes a stale training.
        ckpt = store.path(f"checkpoints/{key[:16]}")
        result = train_student(
            model_path, triplets, training_settings(cfg), store.path(out_rel), cfg.seed, ckpt
        )
        shutil.rmtree(ckpt, ignore_errors=True)
        return {
            "message": f"{result.steps} steps on {result.device} in {result.seconds:.0f}s"
            + (f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""),
            "details": {
                "steps": result.steps,
                "train_loss": result.train_loss,
                "device": result.device,
                "resumed_from": result.resumed_from,
                "triplets": len(triplets),
            },
        }

    return store.run_stage(f"train_iter{iteration}", key, [out_rel], run)
