"""Bootstrap mode: the domain's knowledge base (`concepts.parquet`) from its name alone."""

from __future__ import annotations

from typing import Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Concept, write_parquet
from distiller.stages.common import plan_llm_budget
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "1"


def bootstrap_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """Bootstrap mode: the domain's knowledge base (`concepts.parquet`) from its name alone."""
    from distiller.generation import stage_fingerprint

    gen = cfg.generation
    if not gen.domain:
        raise StageError("bootstrap needs a domain: set generation.domain (--domain)")
    if cfg.teacher.offline:
        raise StageError(
            "bootstrap needs an LLM teacher (the offline teacher cannot write a domain's knowledge): "
            "--teacher openai|anthropic --model NAME, or --base-url for an OpenAI-compatible server"
        )
    reads = [gen.domain, gen.language, gen.template, gen.concepts, gen.concepts_per_call]
    reads.append(gen.relationships_per_call)
    key = stage_key(
        "bootstrap",
        VERSION,
        config_hash(cfg, "teacher", "budget") + repr(reads) + stage_fingerprint(cfg, "bootstrap"),
        [],
    )

    def run() -> dict[str, Any]:
        from distiller.generation.bootstrap import bootstrap

        plan_llm_budget(store, cfg)
        res = bootstrap(cfg, store.dir)
        write_parquet(store.path("concepts.parquet"), res.rows, Concept)
        return {"message": res.message, "details": res.details, "cost_usd": res.cost_usd}

    return store.run_stage("bootstrap", key, ["concepts.parquet"], run)
