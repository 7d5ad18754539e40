"""One flow per stage, so a stage can run alone (from the UI with the config as a form, from the CLI, or
as a deployment) on the run folder the stages before it left; and what the end-to-end flow shares with
them: where stage tasks run (`task_runner_for`, `on_runner`) and where training runs (`train_step`).

Each flow takes the same `DistillConfig` as `distill`: the run folder is `<runs_dir>/<run_name>`, so a
stage flow given the config of an earlier end-to-end run continues that run.
"""

from __future__ import annotations

import os
from typing import Any

from prefect import Flow, Task, flow, unmapped
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from distiller import stages
from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.generation.grants import GrantedShard
from distiller.generation.judge_shards import JudgeShard
from distiller.generation.shards import GenerateShard
from distiller.ingest.shards import IngestShard
from distiller.retrieval.shards import EncodeShard, SearchShard, largest_first
from distiller.stages.plan import Step
from distiller.store import StageResult
from tasks.stages import (
    encode_shard_task,
    evaluate_task,
    export_task,
    generate_shard_task,
    ingest_shard_task,
    judge_shard_task,
    mine_task_for,
    report_task,
    search_shard_task,
    task_for,
    train_task,
)


# -- where tasks run ------------------------------------------------------------------------------------
def task_runner_for(config: DistillConfig) -> TaskRunner:
    """The task runner `config.runner` names: threads of the flow's process, or a Dask cluster."""
    if config.runner == "dask":
        from prefect_dask import DaskTaskRunner

        if config.dask_address:
            return DaskTaskRunner(address=config.dask_address)
        # Processes with one thread each: tokenizers and torch hold the GIL for long stretches.
        kwargs: dict[str, Any] = {"processes": True, "threads_per_worker": 1}
        if config.dask_workers:
            kwargs["n_workers"] = config.dask_workers
        return DaskTaskRunner(cluster_class=local_cluster, cluster_kwargs=kwargs)
    return ThreadPoolTaskRunner()


def local_cluster(**kwargs: Any) -> Any:
    """A `distributed.LocalCluster` whose workers start without the MALLOC_TRIM_THRESHOLD_=65536 that
    Dask's nanny sets (`distributed.nanny.pre-spawn-environ`, to hand freed memory back to the OS at once).
    Torch frees and allocates its activation buffers every batch, so in a worker with it CPU encoding ran
    1.22x slower (6,000 sentences, MiniLM, one thread: 56.5 s vs 46.2 s; 63.2 s vs 44.3 s in a plain
    process), and setting it at all turns off glibc's adaptive thresholds. The thread caps it sets stay.

    Changed only while the workers start. The nanny writes its pre-spawn variables into this process's
    own environment, so a cluster started earlier with Dask's defaults leaves the variable here for every
    later child to inherit: when it holds exactly Dask's value it is left out of the workers too."""
    import dask
    from distributed import LocalCluster

    name, key = "MALLOC_TRIM_THRESHOLD_", "distributed.nanny.pre-spawn-environ"
    environ = dict(dask.config.get(key, default={}) or {})
    dasks = environ.pop(name, None)
    inherited = os.environ.get(name)
    leaked = dasks is not None and inherited == str(dasks)
    if leaked:
        del os.environ[name]
    try:
        with dask.config.set({key: environ}):
            return LocalCluster(**kwargs)
    finally:
        if leaked and inherited is not None:
            os.environ[name] = inherited


def with_runner(flow_: Flow[..., Any], config: DistillConfig) -> Flow[..., Any]:
    """`flow_` on the task runner its config asks for: `with_runner(distill, cfg)(config=cfg)`."""
    return flow_.with_options(task_runner=task_runner_for(config))


def on_runner(task_: Task[..., Any], config: DistillConfig, *args: Any) -> StageResult:
    """Run a stage task on the flow's task runner and wait for it. The stages form a chain, so this is
    no parallelism within a run: with Dask the work moves to a cluster's workers (processes, or other
    machines that see the same runs_dir or storage_url), while the flow's own process only orchestrates."""
    ctx = FlowRunContext.get()
    if config.runner == "dask" and ctx is not None and type(ctx.task_runner).__name__ != "DaskTaskRunner":
        get_run_logger().warning(
            "config.runner is 'dask' but this flow runs on %s: start it with `distill run` or the "
            "'distill/dask' deployment to use Dask",
            type(ctx.task_runner).__name__,
        )
    return task_.submit(config, *args).result()


def run_step(step: Step, config: DistillConfig, command: str | None = None) -> StageResult:
    """One step of `stage_plan(config)` as its task on the flow's task runner (training: `train_step`);
    `command` is recorded by export. Ingest, mine and evaluate first run their missing shards as tasks
    (`run_shards`)."""
    if step.stage in ("ingest", "generate", "validate", "mine", "evaluate"):
        run_shards(step, config)
    if step.stage == "train":
        return train_step(config, *step.args)
    if step.stage == "export":
        return on_runner(export_task, config, command)
    return on_runner(task_for(step, config), config, *step.args)


def run_shards(step: Step, config: DistillConfig) -> list[Any]:
    """The step's missing shards, each a task (`ingest-shard`: a group of input files; `generate-shard`: a
    group of chunks' queries and Q&A pairs, `judge-shard`: a group of the judge's sample, each under its
    grant of the budget; `encode-shard`:
    one model's embeddings of a group of passages or queries; then, for mining and evaluation,
    `search-shard`: one query shard's exact search over the corpus shards): mapped over the workers
    with Dask (one shard per worker process at a time), one after another in this process with threads
    (torch already uses every core, and one model serves them all). A shard already in the run folder
    is not planned, so a stopped run resumes at the first unfinished shard. Shards and searches come from
    one plan (planning reads the step's inputs and hashes its models); the searches read the encodings,
    so they are mapped once every shard is done."""
    plan = stages.shard_plan(step, stages.open_store(config), config)
    return _map_shards(step, config, list(plan.shards)) + _map_shards(step, config, plan.searches)


def _map_shards(step: Step, config: DistillConfig, specs: list[Any]) -> list[Any]:
    if not specs:
        return []
    logger = get_run_logger()
    name = step.stage + (f"_iter{step.iteration}" if step.iteration else "")
    ctx = FlowRunContext.get()
    on_dask = ctx is not None and type(ctx.task_runner).__name__ == "DaskTaskRunner"
    task_: Task[..., Any]
    if isinstance(specs[0], IngestShard):
        what, task_ = "reading", ingest_shard_task
    elif isinstance(specs[0], GenerateShard):
        what, task_ = "generating", generate_shard_task
    elif isinstance(specs[0], JudgeShard):
        what, task_ = "judging", judge_shard_task
    elif isinstance(specs[0], SearchShard):
        what, task_ = "searching", search_shard_task
    else:
        what, task_ = "encoding", encode_shard_task
    logger.info(
        "%s: %s %d shards on %s", name, what, len(specs), "Dask workers" if on_dask else "this process"
    )
    if on_dask:
        if isinstance(specs[0], IngestShard | EncodeShard | SearchShard):
            # Dask starts tasks in the order they are submitted: the big shards first, so that the
            # workers end together (benchmarks/scale.py, 2 workers vs 1: 1.65x in plan order, 1.8x so).
            # The LLM shards keep plan order: their grants of the budget were planned in it.
            specs = largest_first(specs)
        results = [f.result() for f in task_.map(specs, config=unmapped(config))]
    elif isinstance(specs[0], GrantedShard):
        # One after another: each shard's grant is its share of what the ones before it left.
        run_dir, total = stages.open_store(config).dir, sum(s.weight for s in specs)
        specs = stages.revoke(specs)  # an older execution of any of them still running stops
        results = [
            task_(stages.with_grants(specs[i:], config, run_dir, hard=False, all_weight=total)[0], config)
            for i in range(len(specs))
        ]
    else:
        results = [task_(s, config) for s in specs]
    # The task returns a State (so that a shard found on disk shows as Cached): its data is the result.
    done = [r.result() if isinstance(r, State) else r for r in results]
    logger.info(
        "%s: %d shards done (%.0f s of work)", name, len(done), sum(getattr(d, "seconds", 0.0) for d in done)
    )
    return done


# -- where training runs --------------------------------------------------------------------------------
def train_step(config: DistillConfig, iteration: int) -> StageResult:
    """Train iteration k here, or, when `training.deployment` is set, as a run of that deployment (the
    train-only flow on a GPU work pool), waiting for it and picking up the model it wrote."""
    if not config.training.deployment:
        return on_runner(train_task, config, iteration)
    return train_on_deployment(config, iteration)


def train_on_deployment(config: DistillConfig, iteration: int) -> StageResult:
    from prefect.deployments import run_deployment

    name = config.training.deployment
    assert name
    # The remote run trains in-process; it must not send the work on again.
    local = config.model_copy(update={"training": config.training.model_copy(update={"deployment": None})})
    run = run_deployment(
        name=name,
        parameters={"config": local.model_dump(mode="json"), "iteration": iteration},
        timeout=config.training.deployment_timeout_s,
    )
    state = run.state
    if state is None or not state.is_completed():
        shown = state.name if state else "no state"
        raise StageError(
            f"training deployment {name!r} (flow run {run.name}, {run.id}) ended {shown}; "
            "see its logs in the Prefect UI"
        )
    # Opened only now: with storage_url this pulls what the training worker pushed (the model and the
    # manifest's train entry) before either is read.
    store = stages.open_store(config)
    if not store.path(f"models/iter{iteration}").is_dir():
        raise StageError(
            f"training deployment {name!r} completed but models/iter{iteration} is not in {store.dir}: "
            "runs_dir must be storage both work pools' workers share, or storage_url a mirror both "
            "reach (see README, 'Running in production')"
        )
    result = store.stage_results().get(f"train_iter{iteration}")
    if result is None:
        raise StageError(f"training deployment {name!r} left no train_iter{iteration} entry in the manifest")
    return result


# -- one flow per stage ---------------------------------------------------------------------------------
def _done(config: DistillConfig, *results: StageResult) -> dict[str, Any]:
    store = stages.open_store(config)
    return {"run_dir": str(store.dir), "stages": {r.stage: r.status for r in results}}


@flow(name="distill-ingest", log_prints=True)
def ingest_flow(config: DistillConfig = DistillConfig()) -> dict[str, Any]:
    """Read and chunk the documents into the run folder's sources.parquet and chunks.parquet.

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
    """
    return _done(config, run_step(Step("ingest"), config))


@flow(name="distill-generate", log_prints=True)
def generate_flow(config: DistillConfig = DistillConfig()) -> dict[str, Any]:
    """Make queries and Q&A pairs from the run's chunks (the LLM teacher, or offline inverse-cloze).

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
    """
    return _done(config, run_step(Step("generate"), config))


@flow(name="distill-validate", log_prints=True)
def validate_flow(config: DistillConfig = DistillConfig()) -> dict[str, Any]:
    """Have the judge check a sample of the generated rows (in shards, each under its grant of the budget).

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
    """
    return _done(config, run_step(Step("validate"), config))


@flow(name="distill-iteration", log_prints=True)
def iteration_flow(config: DistillConfig = DistillConfig(), iteration: int = 1) -> dict[str, Any]:
    """One mine-and-train iteration: hard triplets with the current student, then train on them.

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
        iteration: Which iteration (1 mines with the base model, k with iteration k-1's).
    """
    mined = on_runner(mine_task_for(config), config, iteration)
    return _done(config, mined, train_step(config, iteration))


@flow(name="distill-train", log_prints=True)
def train_flow(config: DistillConfig = DistillConfig(), iteration: int = 1) -> dict[str, Any]:
    """Train iteration k on this worker: the deployment a GPU work pool serves (`training.deployment`).

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
        iteration: Which iteration's triplets to train on.
    """
    if config.training.deployment:
        raise StageError("distill-train trains where it runs: give it a config without training.deployment")
    return _done(config, on_runner(train_task, config, iteration))


@flow(name="distill-evaluate", log_prints=True)
def evaluate_flow(config: DistillConfig = DistillConfig()) -> dict[str, Any]:
    """Score the base model, BM25 and each iteration on held-out queries; copy the best to models/best.

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
    """
    return _done(config, on_runner(evaluate_task, config))


@flow(name="distill-export", log_prints=True)
def export_flow(config: DistillConfig = DistillConfig(), command: str | None = None) -> dict[str, Any]:
    """Write the run's data in the configured formats into the run folder's exports/.

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
        command: The command line recorded in the data cards; empty from the UI.
    """
    return _done(config, on_runner(export_task, config, command))


@flow(name="distill-report", log_prints=True)
def report_flow(config: DistillConfig = DistillConfig()) -> dict[str, Any]:
    """Render the run folder's report.html from its artifacts.

    Args:
        config: Every setting of the run, with its default (see README, Configuration).
    """
    return _done(config, on_runner(report_task, config))
