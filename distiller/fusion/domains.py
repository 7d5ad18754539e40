"""Each domain as an ordinary single-domain run in its own sub-run folder (`<fused run>/domains/<name>/`).

A domain's `DistillConfig` is the base settings with the domain's source, teacher, budget share and own
settings laid over them; its stages are the pipeline's own (labeled, or bootstrap/ingest + generate +
validate), keyed on that config and the domain's inputs only, in the shared stage cache. So adding a
domain, or editing one domain's documents, re-runs that domain's stages and the fusion stages: the
other domains' stages are cache hits.

Ids are namespaced `<domain>:<id>` when a domain's rows join the union, so two domains never collide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from distiller import stages
from distiller.config import DistillConfig, LLMConfig, _deep_merge
from distiller.errors import StageError
from distiller.fusion.config import DomainSpec, FusionConfig, shares
from distiller.records import Passage, QAPair, Query, read_parquet
from distiller.store import RunStore, StageResult

# Budget caps that a domain's share scales (the run cap and the optional per-stage caps).
_CAPS = ("run_usd", "generation_usd", "validation_usd", "mining_usd")


def domain_config(cfg: FusionConfig, spec: DomainSpec) -> DistillConfig:
    """The domain's own DistillConfig: base + settings + source + teacher + its share of the budget."""
    data: dict[str, Any] = cfg.base.model_dump(mode="json")
    data = _deep_merge(data, spec.settings)
    data["runs_dir"] = str(cfg.fused_run_dir / "domains")
    data["run_name"] = spec.name
    data["cache_dir"] = str(cfg.base.cache_path)  # one stage cache: keys, not folders, decide reuse
    data["storage_url"] = None  # mirrors are the fused run's business, not each sub-run's
    inp = dict(data.get("input", {}))
    inp["paths"], inp["qa_file"] = list(spec.paths), spec.qa_file
    data["input"] = inp
    gen = dict(data.get("generation", {}))
    if spec.bootstrap:
        gen["domain"] = spec.bootstrap
    data["generation"] = gen
    if spec.teacher is not None:
        data["teacher"] = spec.teacher.model_dump(mode="json")
    share = shares(cfg)[spec.name]
    budget = dict(data.get("budget", {}))
    for cap in _CAPS:
        if budget.get(cap) is not None:
            budget[cap] = float(budget[cap]) * share
    data["budget"] = budget
    return DistillConfig(**data)


def fused_config(cfg: FusionConfig) -> DistillConfig:
    """The fused run's own DistillConfig: base, its run name, and the fusion share of the budget."""
    data = cfg.base.model_dump(mode="json")
    data["run_name"] = cfg.run_name
    data["cache_dir"] = str(cfg.base.cache_path)
    budget = dict(data.get("budget", {}))
    for cap in _CAPS:
        if budget.get(cap) is not None:
            budget[cap] = float(budget[cap]) * cfg.fusion.budget_share
    data["budget"] = budget
    return DistillConfig(**data)


@dataclass
class DomainData:
    """A domain's rows, ids namespaced, ready for the union."""

    name: str
    description: str
    cfg: DistillConfig
    store: RunStore
    passages: list[Passage]
    queries: list[Query]
    qa_pairs: list[QAPair]
    stages: dict[str, StageResult] = field(default_factory=dict)

    @property
    def teacher(self) -> LLMConfig:
        return self.cfg.teacher

    @cached_property
    def by_id(self) -> dict[str, Passage]:
        return {p.passage_id: p for p in self.passages}


def ns(domain: str, ident: str | None) -> str | None:
    return None if ident is None else f"{domain}:{ident}"


def run_domain_stages(dcfg: DistillConfig, progress: stages.Progress | None = None) -> RunStore:
    """The pipeline's data stages for one domain, in its sub-run folder (cache hits when unchanged)."""
    store = stages.open_store(dcfg)
    for step in stages.data_plan(dcfg):
        stages.run_step(step, store, dcfg, progress=progress)
    return store


def load_domain(spec: DomainSpec, dcfg: DistillConfig, store: RunStore) -> DomainData:
    """Read a domain's finished stages, ids namespaced `<domain>:...`."""
    n = spec.name
    passages = [
        p.model_copy(
            update={
                "passage_id": ns(n, p.passage_id),
                "doc_id": ns(n, p.doc_id),
                "chunk_id": ns(n, p.chunk_id),
            }
        )
        for p in read_parquet(store.path("passages.parquet"), Passage)
    ]
    queries = [
        q.model_copy(
            update={
                "query_id": ns(n, q.query_id),
                "positive_ids": [f"{n}:{p}" for p in q.positive_ids],
                "doc_id": ns(n, q.doc_id),
                "chunk_id": ns(n, q.chunk_id),
                "concept_id": ns(n, q.concept_id),
            }
        )
        for q in read_parquet(store.path("queries.parquet"), Query)
    ]
    qa = [
        a.model_copy(
            update={"qa_id": ns(n, a.qa_id), "doc_id": ns(n, a.doc_id), "source_chunk": ns(n, a.source_chunk)}
        )
        for a in read_parquet(store.path("qa_pairs.parquet"), QAPair)
    ]
    return DomainData(n, spec.description, dcfg, store, passages, queries, qa, store.stage_results())


def prepare_domains(cfg: FusionConfig, progress: stages.Progress | None = None) -> dict[str, DomainData]:
    """Run (or find in the cache) every domain's stages and read their rows."""
    out: dict[str, DomainData] = {}
    for spec in cfg.domains:
        dcfg = domain_config(cfg, spec)
        store = run_domain_stages(dcfg, progress)
        out[spec.name] = load_domain(spec, dcfg, store)
    return out


def load_domains(cfg: FusionConfig) -> dict[str, DomainData]:
    """The domains' rows from their sub-runs, whose stages ran already (the Prefect flow's tasks)."""
    out: dict[str, DomainData] = {}
    for spec in cfg.domains:
        dcfg = domain_config(cfg, spec)
        store = stages.open_store(dcfg)
        if not store.path("queries.parquet").is_file():
            raise StageError(
                f"domain {spec.name!r}: its stages have not run yet (no queries.parquet in {store.dir})"
            )
        out[spec.name] = load_domain(spec, dcfg, store)
    return out


__all__ = [
    "DomainData",
    "domain_config",
    "fused_config",
    "load_domain",
    "load_domains",
    "ns",
    "prepare_domains",
    "run_domain_stages",
]
