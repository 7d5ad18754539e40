"""The fusion DAG: each domain's own stages (the pipeline's tasks, one sub-run per domain) → fusion data
(generators, integration, coherence) → mining over the union corpus → one fused student per strategy →
each domain's specialist → retention → export → report.

Its parameter is the validated `FusionConfig`, so the Prefect UI renders domains and fusion settings as a
form; `distill fuse -c fusion.yaml` calls the same flow.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from distiller import stages
from distiller.fusion.config import FusionConfig, check_sources
from distiller.fusion.domains import domain_config, fused_config
from distiller.generation import bootstrap_mode
from distiller.summary import summary_markdown
from tasks.fusion import fuse_data_task, fuse_train_task, retention_task
from tasks.stages import (
    artifact_key,
    bootstrap_task,
    export_task,
    generate_task,
    ingest_task,
    labeled_task,
    mine_task_for,
    report_task,
    train_task,
    validate_task,
)


@flow(name="distill-fuse", log_prints=True)
def distill_fuse(fusion: FusionConfig, command: str | None = None) -> dict:
    """Fuse several domains into one retrieval student and report how much of each it retains.

    Args:
        fusion: The domains (each with its own source, teacher and budget share) and how to fuse them.
        command: The command line that started the run, recorded in the data cards; empty from the UI.
    """
    check_sources(fusion)
    domain_cfgs = [domain_config(fusion, spec) for spec in fusion.domains]
    for dcfg in domain_cfgs:
        if dcfg.input.qa_file:
            labeled_task(dcfg)
        else:
            (bootstrap_task if bootstrap_mode(dcfg) else ingest_task)(dcfg)
            generate_task(dcfg)
            validate_task(dcfg)
    fused = fused_config(fusion)
    store = stages.open_store(fused)
    fuse_data_task(fusion)
    mine_task_for(fused)(fused, 1)
    for strategy in fusion.fusion.strategies:
        fuse_train_task(fusion, strategy)
    if fusion.fusion.specialists:
        for dcfg in domain_cfgs:  # each domain's specialist: its own pipeline's mine + train
            mine_task_for(dcfg)(dcfg, 1)
            train_task(dcfg, 1)
        retention_task(fusion)
    export_task(fused, command)
    report_task(fused)
    summary = summary_markdown(store)
    retention = store.path("retention.md")
    if retention.is_file():
        summary += "\n\n" + retention.read_text(encoding="utf-8")
    create_markdown_artifact(
        key=artifact_key(store.name, "summary"), markdown=summary, description=f"Fusion run {store.name}"
    )
    return {"run_dir": str(store.dir), "stages": {k: v.status for k, v in store.stage_results().items()}}
