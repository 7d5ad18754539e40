"""The end-to-end DAG: the steps of `distiller.stages.stage_plan` (ingest or bootstrap or labeled →
generate → validate → (mine → train) × iterations → evaluate → export → report), each as its task.

Its parameters are a few settings most runs change (input, run name, teacher, budget, iterations,
formats: the first screen of the Prefect "Custom run" form) and the validated `DistillConfig` with
everything else, so the Prefect UI renders the whole configuration as a form; `distill run` calls the
same flow from the command line with `config` alone.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from distiller import stages
from distiller.config import DistillConfig, ExportFormat
from distiller.preflight import preflight
from distiller.summary import summary_markdown
from flows.stages import run_step
from tasks.stages import artifact_key

QUICK_FIELDS = {
    "input_paths": "input.paths",
    "run_name": "run_name",
    "teacher_provider": "teacher.provider",
    "teacher_model": "teacher.model",
    "budget_usd": "budget.run_usd",
    "iterations": "mining.iterations",
    "formats": "export.formats",
}
"""The distill flow's first-screen parameters -> the config setting each one stands for."""


@flow(name="distill", log_prints=True)
def distill(
    input_paths: list[str] = [],  # noqa: B006 - Prefect shows the default; it is never mutated
    run_name: str = "",
    teacher_provider: Literal["offline", "openai", "anthropic"] = "offline",
    teacher_model: str = "gpt-4o-mini",
    budget_usd: float = 5.0,
    iterations: int = 1,
    formats: list[ExportFormat] = ["jsonl"],  # noqa: B006
    config: DistillConfig = DistillConfig(),
    command: str | None = None,
) -> dict:
    """Distill a corpus into training data and a domain-adapted retrieval model.

    The first fields are the ones most runs change, with the config's defaults; each one changed from
    its default replaces the same setting in `config`, which holds every setting.

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
    given = locals()
    config = with_quick_fields(config, {QUICK_FIELDS[k]: given[k] for k in QUICK_FIELDS})
    # The command line's checks, first: a deployment run fails here as `distill run` would, before any
    # stage starts.
    preflight(config)
    with stages.lock_run(config):  # one process per run folder (re-entrant: the CLI may hold it)
        return _distill(config, command)


def _distill(config: DistillConfig, command: str | None) -> dict:
    store = stages.open_store(config)
    # Stages run on the flow's task runner (threads, or Dask: config.runner); training may run as a
    # deployment on a GPU work pool (config.training.deployment). The order is `stage_plan`'s.
    for step in stages.stage_plan(config):
        run_step(step, config, command)
    summary = summary_markdown(store)
    create_markdown_artifact(
        key=artifact_key(store.name, "summary"), markdown=summary, description=f"Run {store.name}"
    )
    return {"run_dir": str(store.dir), "stages": {k: v.status for k, v in store.stage_results().items()}}


def _setting(config: BaseModel, dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def with_quick_fields(config: DistillConfig, values: dict[str, Any]) -> DistillConfig:
    """`config` with each dotted setting replaced by its value there, unless the value is empty or the
    setting's default (then the config's own value stands), validated as a whole."""
    defaults = DistillConfig.model_construct()
    data = config.model_dump()
    for dotted, value in values.items():
        if value is None or value == "" or value == [] or value == _setting(defaults, dotted):
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return config if data == config.model_dump() else DistillConfig(**data)


if __name__ == "__main__":
    distill()
