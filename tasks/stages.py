"""Prefect tasks: one per pipeline stage, each a thin wrapper over its module in `distiller.stages`.

The stage cache lives in the run store (content-addressed, shared by every run), so Prefect's own
result cache is off; a stage served from the store finishes in a `Cached` state, which the UI shows.
Every task publishes a table artifact of what it wrote.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

from prefect import Task, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from distiller import stages
from distiller.config import DistillConfig
from distiller.generation.grants import GrantedDone
from distiller.generation.judge_shards import JudgeShard
from distiller.generation.progress import ProgressEvent, Throttled, progress_sink
from distiller.generation.shards import GenerateShard
from distiller.ingest.shards import IngestDone, IngestShard
from distiller.naming import default_run_name
from distiller.retrieval.shards import EncodeShard, SearchShard, ShardDone
from distiller.stages.plan import StageName, Step
from distiller.stages.shard_work import run_shard
from distiller.store import StageResult

LLM_TAG = "llm"
"""LLM stages carry this tag, so a Prefect concurrency limit on it caps calls across runs and workers."""


def artifact_key(run_name: str, stage: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", f"{run_name}-{stage}".lower()).strip("-")[:120]


def _finish(config: DistillConfig, result: StageResult) -> State:
    logger = get_run_logger()
    run_name = default_run_name(config)
    rows: list[dict] = [{"artifact": k, "rows": v if v >= 0 else "folder"} for k, v in result.outputs.items()]
    rows.append({"artifact": "(stage)", "rows": f"{result.status} in {result.seconds:.1f}s"})
    if result.stage == "evaluate":  # the metrics themselves, columns MRR@1, @5, @10, Recall@..., nDCG@10
        rows = _metric_table(config) or rows
    if result.cost_usd:  # from the run's ledger (store.record_stage), as every cost figure
        rows.append({"artifact": "(LLM cost, ledger)", "rows": f"${result.cost_usd:.4f}"})
    create_table_artifact(
        key=artifact_key(run_name, result.stage),
        table=rows,
        description=f"**{result.stage}** — {result.message or result.status} (run `{run_name}`)",
    )
    logger.info("%s: %s — %s", result.stage, result.status, result.message or "")
    if result.status == "cached":
        return Completed(name="Cached", data=result, message=f"served from the stage cache: {result.message}")
    if result.status == "skipped":
        return Completed(name="Skipped", data=result, message=result.message)
    return Completed(data=result, message=result.message)


def _metric_table(config: DistillConfig) -> list[dict]:
    from distiller.modelcard import metric_rows, metrics_frame
    from distiller.runview import RunView

    frame = metrics_frame(RunView(stages.open_store(config).dir))
    return metric_rows(frame) if frame is not None else []


class _ProgressArtifacts:
    """An LLM stage's progress (rows, cost so far, budget left) as a Prefect progress artifact per step,
    attached to the task run that installed it; events from elsewhere (another task's thread, code
    outside Prefect) are ignored, so outside a task this does nothing."""

    def __init__(self, run_name: str) -> None:
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
        self.task_run_id = ctx.task_run.id if ctx is not None else None
        self.run_name = run_name
        self.ids: dict[str, UUID] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        from prefect.context import TaskRunContext

        ctx = TaskRunContext.get()
        if self.task_run_id is None or ctx is None or ctx.task_run.id != self.task_run_id:
            return
        pct = 100.0 * ev.done / ev.total if ev.total else 100.0
        # _sync: the events come from inside the LLM client's event loop, where Prefect would otherwise
        # hand back an un-awaited coroutine.
        if ev.step not in self.ids:
            key = artifact_key(self.run_name, f"{ev.stage}-{ev.step}-progress")
            self.ids[ev.step] = create_progress_artifact(  # type: ignore[call-arg]
                progress=pct, key=key, description=ev.line(), _sync=True
            )
        else:
            update_progress_artifact(  # type: ignore[call-arg]
                self.ids[ev.step], progress=pct, description=ev.line(), _sync=True
            )


@contextmanager
def _llm_progress(config: DistillConfig) -> Iterator[None]:
    # At most one artifact update every 2 s per step: each one is an API call.
    with progress_sink(Throttled(_ProgressArtifacts(default_run_name(config)), every_s=2.0)):
        yield


def _store(config: DistillConfig):
    return stages.open_store(config)


@task(name="ingest", cache_policy=NO_CACHE, tags=["distiller"])
def ingest_task(config: DistillConfig) -> State:
    return _finish(config, stages.ingest_stage(_store(config), config))


@task(name="labeled", cache_policy=NO_CACHE, tags=["distiller"])
def labeled_task(config: DistillConfig) -> State:
    return _finish(config, stages.labeled_stage(_store(config), config))


@task(name="bootstrap", cache_policy=NO_CACHE, tags=["distiller", LLM_TAG])
def bootstrap_task(config: DistillConfig) -> State:
    with _llm_progress(config):
        return _finish(config, stages.bootstrap_stage(_store(config), config))


@task(name="generate", cache_policy=NO_CACHE, tags=["distiller", LLM_TAG])
def generate_task(config: DistillConfig) -> State:
    with _llm_progress(config):
        return _finish(config, stages.generate_stage(_store(config), config))


@task(name="validate", cache_policy=NO_CACHE, tags=["distiller", LLM_TAG])
def validate_task(config: DistillConfig) -> State:
    with _llm_progress(config):
        return _finish(config, stages.validate_stage(_store(config), config))


@task(name="mine", cache_policy=NO_CACHE, tags=["distiller"], task_run_name="mine-iter{iteration}")
def mine_task(config: DistillConfig, iteration: int) -> State:
    with _llm_progress(config):  # the false-negative judge's calls, when it is on
        return _finish(config, stages.mine_stage(_store(config), config, iteration))


def mine_task_for(config: DistillConfig) -> Task[..., State]:
    """The mine task, tagged as an LLM stage when its false-negative judge is on (so the `llm`
    concurrency limit counts it)."""
    if config.mining.judge_negatives:
        return mine_task.with_options(tags={"distiller", LLM_TAG})
    return mine_task


@task(
    name="encode-shard",
    cache_policy=NO_CACHE,
    tags=["distiller"],
    task_run_name="encode-{spec.label}-{spec.role}-{spec.index}",
)
def encode_shard_task(spec: EncodeShard, config: DistillConfig) -> State:
    """One encoding shard of mine or evaluate: its embeddings into its own file in the run folder."""
    done = run_shard(spec, config)
    assert isinstance(done, ShardDone)
    if done.cached:
        return Completed(name="Cached", data=done, message=f"{done.rows} rows already encoded")
    return Completed(data=done, message=f"{done.rows} rows in {done.seconds:.1f}s ({done.encoder})")


@task(
    name="search-shard",
    cache_policy=NO_CACHE,
    tags=["distiller"],
    task_run_name="search-{spec.label}-{spec.index}",
)
def search_shard_task(spec: SearchShard, config: DistillConfig) -> State:
    """One query shard of mining searched over the corpus shards: its neighbours into its own file."""
    done = run_shard(spec, config)
    assert isinstance(done, ShardDone)
    if done.cached:
        return Completed(name="Cached", data=done, message=f"{done.rows} queries already searched")
    return Completed(data=done, message=f"{done.rows} queries in {done.seconds:.1f}s")


@task(
    name="ingest-shard",
    cache_policy=NO_CACHE,
    tags=["distiller"],
    task_run_name="ingest-shard-{spec.index}",
)
def ingest_shard_task(spec: IngestShard, config: DistillConfig) -> State:
    """One group of input files read and chunked into its own part folder in the run folder."""
    done = run_shard(spec, config)
    assert isinstance(done, IngestDone)
    if done.cached:
        return Completed(name="Cached", data=done, message=f"{done.files} files already read")
    return Completed(
        data=done, message=f"{done.files} files, {done.documents} documents in {done.seconds:.1f}s"
    )


def _granted(spec: GenerateShard | JudgeShard, config: DistillConfig, done_as: str) -> State:
    with _llm_progress(config):
        done = run_shard(spec, config)
    assert isinstance(done, GrantedDone)
    if done.cached:
        return Completed(name="Cached", data=done, message=f"already {done_as}")
    return Completed(data=done, message=done.line())


@task(
    name="generate-shard",
    cache_policy=NO_CACHE,
    tags=["distiller", LLM_TAG],
    task_run_name="generate-shard-{spec.index}",
)
def generate_shard_task(spec: GenerateShard, config: DistillConfig) -> State:
    """One group of chunks' queries and Q&A pairs, under its grant of the budget, into its own folder."""
    return _granted(spec, config, "generated")


@task(
    name="judge-shard",
    cache_policy=NO_CACHE,
    tags=["distiller", LLM_TAG],
    task_run_name="judge-shard-{spec.index}",
)
def judge_shard_task(spec: JudgeShard, config: DistillConfig) -> State:
    """One group of the judge's sample, under its grant of the budget, into its own folder."""
    return _granted(spec, config, "judged")


@task(name="train", cache_policy=NO_CACHE, tags=["distiller", "gpu"], task_run_name="train-iter{iteration}")
def train_task(config: DistillConfig, iteration: int) -> State:
    return _finish(config, stages.train_stage(_store(config), config, iteration))


@task(name="evaluate", cache_policy=NO_CACHE, tags=["distiller"])
def evaluate_task(config: DistillConfig) -> State:
    return _finish(config, stages.evaluate_stage(_store(config), config))


@task(name="export", cache_policy=NO_CACHE, tags=["distiller"])
def export_task(config: DistillConfig, command: str | None = None) -> State:
    return _finish(config, stages.export_stage(_store(config), config, command))


@task(name="report", cache_policy=NO_CACHE, tags=["distiller"])
def report_task(config: DistillConfig) -> State:
    return _finish(config, stages.report_stage(_store(config), config))


STAGE_TASKS: dict[StageName, Task[..., State]] = {
    "ingest": ingest_task,
    "labeled": labeled_task,
    "bootstrap": bootstrap_task,
    "generate": generate_task,
    "validate": validate_task,
    "mine": mine_task,
    "train": train_task,
    "evaluate": evaluate_task,
    "export": export_task,
    "report": report_task,
}
"""Each stage's task (the same names as `distiller.stages`)."""


def task_for(step: Step, config: DistillConfig) -> Task[..., State]:
    """The task that runs `step` of `stage_plan(config)`."""
    if step.stage == "mine":
        return mine_task_for(config)
    return STAGE_TASKS[step.stage]
