"""The end-to-end DAG: ingest (or bootstrap) → generate → validate → (mine → train) × iterations →
evaluate → export → report.

Its parameters are a few settings most runs change (input, run name, teacher, budget, iterations,
formats: the first screen of the Prefect "Custom run" form) and the validated `DistillConfig` with
everything else, so the Prefect UI renders the whole configuration as a form; `distill run` calls the
same flow from the command line with `config` alone.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distiller import pipeline
from distiller.config import DistillConfig, ExportFormat
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
def distill(
    input_paths: list[str] | None = None,
    run_name: str | None = None,
    teacher_provider: Literal["offline", "openai", "anthropic"] | None = None,
    teacher_model: str | None = None,
    budget_usd: float | None = None,
    iterations: int | None = None,
    formats: list[ExportFormat] | None = None,
    config: DistillConfig = DistillConfig(),
    command: str | None = None,
) -> dict:
    """Distill a corpus into training data and a domain-adapted retrieval model.

    The first fields are the ones most runs change; each one given replaces the same setting in
    `config`, which holds every setting with its default.

    Args:
        input_paths: Documents: files, folders or glob patterns (config.input.paths).
        run_name: Run folder name under runs_dir; empty: derived from the inputs (config.run_name).
        teacher_provider: The LLM that writes queries: offline (no LLM), openai or anthropic
            (config.teacher.provider).
        teacher_model: The teacher's model, e.g. gpt-4o-mini (config.teacher.model).
        budget_usd: Hard cap on the run's LLM spend in USD (config.budget.run_usd).
        iterations: Mine-and-train rounds (config.mining.iterations).
        formats: Export formats (config.export.formats).
        config: Every setting of the run, with its default (see README, Configuration).
        command: The command line that started the run, recorded in the data cards; empty from the UI.
    """
    config = with_quick_fields(
        config,
        {
            "input.paths": input_paths,
            "run_name": run_name,
            "teacher.provider": teacher_provider,
            "teacher.model": teacher_model,
            "budget.run_usd": budget_usd,
            "mining.iterations": iterations,
            "export.formats": formats,
        },
    )
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


def with_quick_fields(config: DistillConfig, values: dict[str, Any]) -> DistillConfig:
    """`config` with each given (not None) dotted setting replaced, validated as a whole."""
    data = config.model_dump()
    for dotted, value in values.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config if data == config.model_dump() else DistillConfig(**data)


if __name__ == "__main__":
    distill()
