"""Prefect tasks of the fusion stages: thin wrappers over `distiller.fusion.run` (the per-domain stages
reuse the pipeline's own tasks in `tasks.stages`)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.states import State

from distiller import stages
from distiller.fusion import run as fusion
from distiller.fusion.config import FusionConfig
from distiller.fusion.domains import fused_config, load_domains
from tasks.stages import LLM_TAG, _finish, _llm_progress


@task(name="fuse-data", cache_policy=NO_CACHE, tags=["distiller", LLM_TAG])
def fuse_data_task(cfg: FusionConfig) -> State:
    fused = fused_config(cfg)
    with _llm_progress(fused):
        return _finish(fused, fusion.fuse_data_stage(stages.open_store(fused), cfg, fused, load_domains(cfg)))


@task(
    name="fuse-train", cache_policy=NO_CACHE, tags=["distiller", "gpu"], task_run_name="fuse-train-{strategy}"
)
def fuse_train_task(cfg: FusionConfig, strategy: str) -> State:
    fused = fused_config(cfg)
    return _finish(fused, fusion.fuse_train_stage(stages.open_store(fused), cfg, fused, strategy))


@task(name="retention", cache_policy=NO_CACHE, tags=["distiller"])
def retention_task(cfg: FusionConfig) -> State:
    fused = fused_config(cfg)
    domains = load_domains(cfg)
    specialists = {n: d.store.path("models/iter1") for n, d in domains.items()}
    return _finish(fused, fusion.retention_stage(stages.open_store(fused), cfg, fused, domains, specialists))
