"""The fusion run as plain Python: per-domain stages (the pipeline's own, one sub-run each), then the
fusion stages in the fused run folder, each cached by its inputs like every pipeline stage:

  domains/<name>/  labeled | (ingest|bootstrap) + generate + validate      (per domain)
  fuse_data        generators + integration + coherence judge → union passages, queries, qa_pairs,
                   provenance, integrated answers, generated triplets
  mine_iter1       the pipeline's mining over the union corpus
  fuse_train_<s>   one fused student per strategy → fused-<s>/ (top level: see FUSED_DIR)
  specialists      the pipeline's mine + train in each domain's sub-run → domains/<name>/models/iter1
  retention        base / specialist / fused per domain, DER, cross-domain accuracy, coherence
  export, report   the pipeline's own
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from distiller import stages
from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.generation.validation import wilson
from distiller.records import Judgment, Passage, QAPair, Query, Triplet, read_parquet, write_parquet
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, sha256_file, stage_key

from .config import FusionConfig, check_sources
from .domains import DomainData, fused_config, prepare_domains
from .generators import FusionContext, Rows, fusion_generators
from .integration import integrate
from .records import IntegratedAnswer, Provenance, RetentionRow

log = logging.getLogger("distiller")

VERSIONS = {"fuse_data": "1", "fuse_train": "2", "retention": "1"}
# At the top of the run folder, not under models/: the stage cache restores an output by its first path
# part, so a cached `models/fused-a` would replace the whole models/ folder and drop `models/fused-b`.
FUSED_DIR = "fused-{strategy}"
DATA_OUTPUTS = [
    "passages.parquet",
    "queries.parquet",
    "qa_pairs.parquet",
    "provenance.parquet",
    "integrated.parquet",
    "fusion_triplets.parquet",
    "coherence.parquet",
]


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _domain_inputs(domains: dict[str, DomainData]) -> list[Path | str]:
    out: list[Path | str] = []
    for name, d in sorted(domains.items()):
        out.append(f"domain:{name}:{d.description}:{d.teacher.model_dump_json()}")
        out += [d.store.path(f) for f in ("passages.parquet", "queries.parquet", "qa_pairs.parquet")]
    return out


def _coherence(ctx: FusionContext, rows: Rows) -> tuple[list[Judgment], dict[str, Any]]:
    """Judge a sample of the integrated answers against all their passages (the validation judge)."""
    from distiller.generation.context import GenContext
    from distiller.generation.runner import StageLLM
    from distiller.generation.validation import (
        JudgeItem,
        judge_endpoint,
        judge_request,
        judgment,
        stable_sample,
    )

    endpoint = judge_endpoint(ctx.fused_cfg)
    n = ctx.cfg.fusion.coherence_sample
    if not rows.integrated:
        return [], {"why": "no integrated answers"}
    if endpoint.offline or n == 0 or not ctx.fused_cfg.validation.enabled:
        why = "offline judge" if endpoint.offline else "coherence_sample 0 or validation disabled"
        return [], {"why": why}
    passages = {p.passage_id: p for d in ctx.domains.values() for p in d.passages}
    queries = {q.query_id: q for q in rows.queries}
    items = []
    for ia in rows.integrated:
        q = queries.get(ia.qa_id.removeprefix("int:"))
        src = [passages[p] for p in (q.positive_ids if q else []) if p in passages]
        if src:
            items.append(
                JudgeItem(
                    item_id=ia.qa_id,
                    kind="qa",
                    question=ia.question,
                    answer=ia.answer,
                    source_id=src[0].passage_id,
                    source="\n\n".join(p.text for p in src),
                    group="+".join(ia.domains),
                    level="integrated",
                )
            )
    sample = stable_sample(items, n, ctx.seed)
    gctx = GenContext.from_config(ctx.fused_cfg)
    judge = f"{endpoint.provider}:{endpoint.model}"
    with StageLLM(ctx.fused_cfg, ctx.run_dir, "validate", endpoint) as llm:
        results = llm.run("judge integrated answers", [judge_request(it, gctx) for it in sample])
        rows.cost_usd += llm.cost_usd
        rows.notes += [f"coherence: {x}" for x in llm.notes]
    judgments = [judgment(it, r, judge) for it, r in zip(sample, results, strict=True)]
    approved = sum(j.verdict == "approved" for j in judgments)
    judged = approved + sum(j.verdict == "rejected" for j in judgments)
    lo, hi = wilson(approved, judged)
    return judgments, {
        "sampled": len(sample),
        "judged": judged,
        "approved": approved,
        "rate": approved / judged if judged else None,
        "ci95": [lo, hi],
        "judge": judge,
        "why": "" if judged else "no verdicts (failed or over budget)",
    }


def fuse_data_stage(
    store: RunStore, cfg: FusionConfig, fused_cfg: DistillConfig, domains: dict[str, DomainData]
) -> StageResult:
    gens = fusion_generators(cfg)
    inputs = _domain_inputs(domains)
    if cfg.fusion.curated_file:
        inputs.append(sha256_file(Path(cfg.fusion.curated_file)))
    key = stage_key(
        "fuse_data",
        VERSIONS["fuse_data"],
        _hash(
            {
                "fusion": cfg.fusion.model_dump(
                    mode="json",
                    exclude={
                        "strategy",
                        "sampler",
                        "order",
                        "replay_share",
                        "specialists",
                        "mask_shared_answers",
                        "anchor_weight",
                        "anchor_sample",
                    },
                ),
                "generators": [g.name for g in gens],
                "fused": config_hash(fused_cfg, "teacher", "validation", "budget", "generation"),
            }
        ),
        inputs,
    )

    def run() -> dict[str, Any]:
        ctx = FusionContext(cfg, domains, fused_cfg, store.dir)
        rows = Rows()
        for g in gens:
            rows.extend(g.generate(ctx))
        cross = [q for q in rows.queries if q.query_id.startswith("cross:")]
        rows.extend(integrate(ctx, cross))
        judgments, coherence = _coherence(ctx, rows)
        verdicts = {j.item_id: j.verdict for j in judgments if j.verdict in ("approved", "rejected")}
        qa = [
            a.model_copy(update={"validation": verdicts[a.qa_id]}) if a.qa_id in verdicts else a
            for a in rows.qa_pairs
        ]
        for note in rows.notes:
            log.warning(note)
        write_parquet(store.path("passages.parquet"), rows.passages, Passage)
        write_parquet(store.path("queries.parquet"), rows.queries, Query)
        write_parquet(store.path("qa_pairs.parquet"), qa, QAPair)
        write_parquet(store.path("provenance.parquet"), rows.provenance, Provenance)
        write_parquet(store.path("integrated.parquet"), rows.integrated, IntegratedAnswer)
        write_parquet(store.path("fusion_triplets.parquet"), rows.triplets, Triplet)
        write_parquet(store.path("coherence.parquet"), judgments, Judgment)
        by_gen: dict[str, int] = {}
        for p in rows.provenance:
            by_gen[f"{p.generator} {p.item_kind}"] = by_gen.get(f"{p.generator} {p.item_kind}", 0) + 1
        return {
            "message": f"{len(rows.queries)} queries, {len(rows.qa_pairs)} Q&A pairs ({len(rows.integrated)} "
            f"integrated), {len(rows.triplets)} generated triplets over {len(rows.passages)} passages of "
            f"{len(domains)} domains" + "".join(f"; {n}" for n in rows.notes),
            "details": {"rows": by_gen, "coherence": coherence, "notes": rows.notes},
            "cost_usd": rows.cost_usd,
        }

    return store.run_stage("fuse_data", key, DATA_OUTPUTS, run)


def domain_positives(store: RunStore) -> dict[str, list[str]]:
    """Each single-domain query's positive passages (what the anchored loss's answer units are made of;
    a cross-domain query would join answers of two domains into one unit)."""
    single = {
        p.item_id
        for p in read_parquet(store.path("provenance.parquet"), Provenance)
        if p.item_kind == "query" and len(p.domains) == 1
    }
    return {
        q.query_id: list(q.positive_ids)
        for q in read_parquet(store.path("queries.parquet"), Query)
        if q.query_id in single
    }


def _datasets(store: RunStore) -> tuple[dict[str, list[Triplet]], list[Triplet]]:
    """Mined triplets grouped by the domain of their query; cross-domain, adversarial and domain-less
    curated rows (and the generated adversarial triplets) are the 'fusion' rows."""
    prov = {
        p.item_id: p
        for p in read_parquet(store.path("provenance.parquet"), Provenance)
        if p.item_kind == "query"
    }
    by_domain: dict[str, list[Triplet]] = {}
    fusion: list[Triplet] = read_parquet(store.path("fusion_triplets.parquet"), Triplet)
    for t in read_parquet(store.path("triplets_iter1.parquet"), Triplet):
        p = prov.get(t.query_id)
        if (
            p is not None
            and len(p.domains) == 1
            and p.generator in ("single", "curated")
            and p.domains[0] != "curated"
        ):
            by_domain.setdefault(p.domains[0], []).append(t)
        else:
            fusion.append(t)
    return by_domain, fusion


def fuse_train_stage(
    store: RunStore, cfg: FusionConfig, fused_cfg: DistillConfig, strategy: str
) -> StageResult:
    from distiller.retrieval.models import resolve_student

    from .strategies import train_strategy

    files = [
        store.path(n)
        for n in (
            "triplets_iter1.parquet",
            "provenance.parquet",
            "fusion_triplets.parquet",
            "queries.parquet",
        )
    ]
    if missing := [f.name for f in files if not f.is_file()]:
        raise StageError(f"fuse_train needs {', '.join(missing)}: run fuse_data and mining first")
    f = cfg.fusion
    key = stage_key(
        "fuse_train",
        VERSIONS["fuse_train"],
        config_hash(fused_cfg, "training", exclude={"training": {"deployment", "deployment_timeout_s"}})
        + _hash(
            [
                strategy,
                f.order,
                f.replay_share,
                f.sampler,
                [d.name for d in cfg.domains],
                f.mask_shared_answers,
                f.anchor_weight,
                f.anchor_sample,
            ]
        ),
        files,
    )
    out_rel = FUSED_DIR.format(strategy=strategy)

    def run() -> dict[str, Any]:
        by_domain, fusion = _datasets(store)
        res = train_strategy(
            strategy,
            resolve_student(fused_cfg.training.student),
            by_domain,
            fusion,
            fused_cfg.training,
            store.path(out_rel),
            fused_cfg.seed,
            store.path(f"checkpoints/fuse-{key[:16]}"),
            order=f.order,
            replay_share=f.replay_share,
            sampler=f.sampler,
            positives=domain_positives(store) if f.mask_shared_answers else None,
            anchor_weight=f.anchor_weight,
            anchor_sample=f.anchor_sample,
        )
        return {
            "message": f"{strategy}: {res.steps} steps in {res.seconds:.0f}s",
            "details": {
                "steps": res.steps,
                "phases": res.phases,
                "rows": {k: len(v) for k, v in by_domain.items()} | {"fusion": len(fusion)},
            },
        }

    return store.run_stage(f"fuse_train_{strategy}", key, [out_rel], run)


def specialist_stages(domains: dict[str, DomainData]) -> dict[str, Path]:
    """Each domain's specialist: the single-domain pipeline's mine + train in its own sub-run (cached)."""
    out = {}
    for name, d in domains.items():
        stages.mine_stage(d.store, d.cfg, 1)
        stages.train_stage(d.store, d.cfg, 1)
        out[name] = d.store.path("models/iter1")
    return out


def retention_stage(
    store: RunStore,
    cfg: FusionConfig,
    fused_cfg: DistillConfig,
    domains: dict[str, DomainData],
    specialists: dict[str, Path],
) -> StageResult:
    from distiller.retrieval.models import load_student

    from .retention import cross_domain_rows, der_rows, domain_rows, retention_markdown

    strategies = cfg.fusion.strategies
    fused = {s: store.path(FUSED_DIR.format(strategy=s)) for s in strategies}
    base_path, base_id = stages.model_ref(store, fused_cfg, 1)
    inputs: list[Path | str] = [
        store.path("passages.parquet"),
        store.path("queries.parquet"),
        store.path("coherence.parquet"),
        base_id,
    ]
    inputs += [fused[s] for s in strategies] + [specialists[n] for n in sorted(specialists)]
    key = stage_key(
        "retention",
        VERSIONS["retention"],
        config_hash(fused_cfg, "evaluation") + _hash(strategies),
        inputs,
    )

    def run() -> dict[str, Any]:
        kind, msl, ks = fused_cfg.training.kind, fused_cfg.training.max_seq_length, fused_cfg.evaluation.ks
        union = read_parquet(store.path("passages.parquet"), Passage)
        cross = [
            q
            for q in read_parquet(store.path("queries.parquet"), Query)
            if q.split == "test" and q.query_id.startswith("cross:")
        ]
        models = {"base": (base_path, "")} | {f"fused-{s}": (str(p), s) for s, p in fused.items()}
        rows: list[RetentionRow] = []
        for label, (path, strategy) in models.items():
            model = load_student(path, kind=kind, max_seq_length=msl)
            who = "base" if label == "base" else "fused"
            for name, d in domains.items():
                held = [q for q in d.queries if q.split == "test"]
                rows += domain_rows(model, d.passages, held, ks, name, who, strategy)
            rows += cross_domain_rows(model, union, cross, strategy, who)
        for name, d in domains.items():
            model = load_student(str(specialists[name]), kind=kind, max_seq_length=msl)
            rows += domain_rows(
                model, d.passages, [q for q in d.queries if q.split == "test"], ks, name, "specialist", ""
            )
        if not any(r.model == "base" and r.domain != "cross" for r in rows):
            raise StageError("no held-out (test) queries in any domain to evaluate retention on")
        rows += der_rows(rows)
        write_parquet(store.path("retention.parquet"), rows, RetentionRow)
        coherence = store.stage_results().get("fuse_data")
        coh = (coherence.details.get("coherence") if coherence else None) or {}
        (store.path("retention.md")).write_text(retention_markdown(rows, coh), encoding="utf-8")
        metric = fused_cfg.evaluation.metric
        der = {
            f"{r.strategy}/{r.domain}": round(r.value, 4)
            for r in rows
            if r.model == "DER" and r.metric == metric
        }
        return {
            "message": f"DER ({metric}) " + ", ".join(f"{k} {v:.3f}" for k, v in der.items()),
            "details": {"der": der},
        }

    return store.run_stage("retention", key, ["retention.parquet", "retention.md"], run)


def fuse(cfg: FusionConfig, progress: stages.Progress | None = None, command: str | None = None) -> RunStore:
    """The whole fusion run without Prefect (tests, `distill fuse --no-prefect`)."""
    check_sources(cfg)
    domains = prepare_domains(cfg, progress)
    fused_cfg = fused_config(cfg)
    store = stages.open_store(fused_cfg)
    fuse_data_stage(store, cfg, fused_cfg, domains)
    stages.mine_stage(store, fused_cfg, 1)
    for s in cfg.fusion.strategies:
        fuse_train_stage(store, cfg, fused_cfg, s)
    specialists = specialist_stages(domains) if cfg.fusion.specialists else {}
    if specialists:
        retention_stage(store, cfg, fused_cfg, domains, specialists)
    stages.export_stage(store, fused_cfg, command)
    stages.report_stage(store, fused_cfg)
    return store


__all__ = ["fuse", "fuse_data_stage", "fuse_train_stage", "retention_stage", "specialist_stages"]
