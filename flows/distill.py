"""The end-to-end DAG: ingest (or bootstrap) → generate → validate → (mine → train) × iterations →
evaluate → export → report.

Its one parameter is the validated `DistillConfig`, so the Prefect UI renders the whole configuration as
a form; `distill run` calls the same flow from the command line.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distiller import pipeline
from distiller.config import DistillConfig
from distiller.generation import bootstrap_mode
from flows.stages import on_runner, train_step
from tasks.stages import (
    artifact_key,
    bootstrap_task,
    evaluate_task,
    export_task,
    generate_task,
    ingest_task,
    labeled_task,
    mine_task_for,
    report_task,
    validate_task,
)


@flow(name="distill", log_prints=True)
def distill(config: DistillConfig = DistillConfig(), command: str | None = None) -> dict:
    """Distill a corpus into training data and a domain-adapted retrieval model."""
    with pipeline.lock_run(config):  # one process per run folder (re-entrant: the CLI may hold it)
        return _distill(config, command)


def _distill(config: DistillConfig, command: str | None) -> dict:
    store = pipeline.open_store(config)
    # Stages run on the flow's task runner (threads, or Dask: config.runner); training may run as a
    # deployment on a GPU work pool (config.training.deployment).
    if config.input.qa_file:  # labeled mode: the user's Q&A pairs stand in for ingest + generate
        on_runner(labeled_task, config)
    else:
        # Bootstrap mode (a domain, no documents) writes its corpus; document mode reads one.
        on_runner(bootstrap_task if bootstrap_mode(config) else ingest_task, config)
        on_runner(generate_task, config)
        on_runner(validate_task, config)
    for k in range(1, config.mining.iterations + 1):
        on_runner(mine_task_for(config), config, k)
        train_step(config, k)
    on_runner(evaluate_task, config)
    on_runner(export_task, config, command)
    on_runner(report_task, config)
    summary = pipeline.summary_markdown(store)
    create_markdown_artifact(
        key=artifact_key(store.name, "summary"), markdown=summary, description=f"Run {store.name}"
    )
    return {"run_dir": str(store.dir), "stages": {k: v.status for k, v in store.stage_results().items()}}


if __name__ == "__main__":
    distill()
