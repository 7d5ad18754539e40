"""The pipeline's stages as plain Python, one module per stage (matching `tasks/stages.py` one to one):
each reads the artifacts of the stages before it from the run folder, writes its own, and is served from
the stage cache when its key (config sections + input contents + its `VERSION`) was seen before.

`plan.stage_plan` is the stage order; `keys` the cache-key helpers; `common` what stages share (the run
folder, the budget's plan, the model an iteration starts from). `distiller.pipeline` runs the plan
in-process; Prefect tasks in `tasks/` are thin wrappers around the same functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from distiller.config import DistillConfig
from distiller.generation.grants import revoke, with_grants
from distiller.retrieval.shards import EncodeShard, SearchShard
from distiller.stages import evaluate as _evaluate
from distiller.stages import generate as _generate
from distiller.stages import ingest as _ingest
from distiller.stages import mine as _mine
from distiller.stages import validate as _validate
from distiller.stages.bootstrap import bootstrap_stage
from distiller.stages.common import Progress, budget_cause, lock_run, model_ref, open_store, plan_llm_budget
from distiller.stages.evaluate import evaluate_stage
from distiller.stages.export import export_stage
from distiller.stages.generate import generate_stage
from distiller.stages.ingest import ingest_stage
from distiller.stages.labeled import labeled_stage
from distiller.stages.mine import mine_stage
from distiller.stages.plan import DATA_STAGES, StageName, Step, data_plan, stage_plan
from distiller.stages.report import report_stage
from distiller.stages.train import train_stage, training_settings
from distiller.stages.validate import validate_stage
from distiller.store import RunStore, StageResult

if TYPE_CHECKING:
    from distiller.generation.judge_shards import JudgeShard
    from distiller.generation.shards import GenerateShard
    from distiller.ingest.shards import IngestShard

STAGE_FUNCTIONS: dict[StageName, Callable[..., StageResult]] = {
    "ingest": ingest_stage,
    "labeled": labeled_stage,
    "bootstrap": bootstrap_stage,
    "generate": generate_stage,
    "validate": validate_stage,
    "mine": mine_stage,
    "train": train_stage,
    "evaluate": evaluate_stage,
    "export": export_stage,
    "report": report_stage,
}
"""Each stage's function: (store, config, *step.args) -> StageResult."""


def run_step(
    step: Step,
    store: RunStore,
    cfg: DistillConfig,
    *,
    progress: Progress | None = None,
    command: str | None = None,
) -> StageResult:
    """Run one step of `stage_plan(cfg)` in this process. `progress` is told each file ingest reads;
    `command` is the command line export records in the data cards."""
    if step.stage == "ingest":
        return ingest_stage(store, cfg, progress)
    if step.stage == "export":
        return export_stage(store, cfg, command)
    return STAGE_FUNCTIONS[step.stage](store, cfg, *step.args)


class ShardPlan(NamedTuple):
    """What a flow fans out before running a step, which then finds it all in the run folder."""

    shards: list[EncodeShard] | list[IngestShard] | list[GenerateShard] | list[JudgeShard]
    """Ingest's file groups; generation's chunk groups and the judge's sample groups, each with its grant
    of the budget; mine's and evaluate's encodings."""
    searches: list[SearchShard]
    """Mine's searches of the training queries, evaluate's of the held-out queries of each model (one
    per query shard): they read the encodings, so they run once all of `shards` are done."""


def shard_plan(step: Step, store: RunStore, cfg: DistillConfig) -> ShardPlan:
    """The shards and searches `step` still needs, planned together (one reading of the step's inputs,
    one hashing of its models); none when the step is cached."""
    if step.stage == "ingest":
        return ShardPlan(_ingest.shard_plan(store, cfg), [])
    if step.stage == "generate":
        return ShardPlan(_generate.shard_plan(store, cfg), [])
    if step.stage == "validate":
        return ShardPlan(_validate.shard_plan(store, cfg), [])
    if step.stage == "mine":
        return ShardPlan(*_mine.shard_plan(store, cfg, *step.args))
    if step.stage == "evaluate":
        return ShardPlan(*_evaluate.shard_plan(store, cfg))
    return ShardPlan([], [])


__all__ = [
    "DATA_STAGES",
    "STAGE_FUNCTIONS",
    "Progress",
    "ShardPlan",
    "StageName",
    "Step",
    "bootstrap_stage",
    "budget_cause",
    "data_plan",
    "evaluate_stage",
    "export_stage",
    "generate_stage",
    "ingest_stage",
    "labeled_stage",
    "lock_run",
    "mine_stage",
    "model_ref",
    "open_store",
    "plan_llm_budget",
    "report_stage",
    "revoke",
    "run_step",
    "shard_plan",
    "stage_plan",
    "train_stage",
    "training_settings",
    "validate_stage",
    "with_grants",
]
