"""Evaluate: base model, BM25 and every iteration on held-out queries; the best to models/best."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NamedTuple

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import (
    OFFLINE_WARNING,
    Chunk,
    Document,
    MetricRow,
    Passage,
    Query,
    query_set_label,
    query_set_of,
    read_parquet,
    write_parquet,
)
from distiller.retrieval.shards import (
    EncodeShard,
    Mapper,
    SearchShard,
    gather_searches,
    search_shard,
    search_shards,
)
from distiller.stages.common import budget_cause, model_ref
from distiller.stages.encoding import (
    backend_tag,
    encode_all,
    load_encoder_for,
    merge_details,
    prune_shards,
    sharded,
    specs_for,
)
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


def _models(store: RunStore, cfg: DistillConfig) -> list[tuple[str, int, str, Path | str]]:
    """(name, iteration, path, identity) of every model evaluated: the base, then each iteration's."""
    model_dirs = [store.path(f"models/iter{k}") for k in range(1, cfg.mining.iterations + 1)]
    missing = [str(p) for p in model_dirs if not p.is_dir()]
    if missing:
        raise StageError(f"evaluate needs the trained models: missing {', '.join(missing)}")
    base_path, base_id = model_ref(store, cfg, 1)
    return [("base", 0, base_path, base_id)] + [
        (f"iter{k}", k, str(d), d) for k, d in enumerate(model_dirs, 1)
    ]


def _key(store: RunStore, cfg: DistillConfig, models: list[tuple[str, int, str, Path | str]]) -> str:
    eval_file = Path(cfg.evaluation.eval_file).expanduser() if cfg.evaluation.eval_file else None
    return stage_key(
        "evaluate",
        VERSION,
        config_hash(cfg, "evaluation")
        + cfg.training.kind
        + str(cfg.training.max_seq_length)
        + backend_tag(cfg),
        [
            store.path("passages.parquet"),
            store.path("queries.parquet"),
            *(ident for *_, ident in models),
            *_eval_inputs(store, eval_file),
        ],
    )


def _shards(
    store: RunStore,
    cfg: DistillConfig,
    models: list[tuple[str, int, str, Path | str]],
    passages: list[Passage],
    queries: list[Query],
) -> dict[str, tuple[list[EncodeShard], list[EncodeShard]]]:
    """Each model's (corpus, query) shards: every passage and query, as mining plans them, so the
    models mining used (the base, each iteration but the last) are read from mining's shards."""
    texts, ids = [p.text for p in passages], [p.passage_id for p in passages]
    qtexts, qids = [q.text for q in queries], [q.query_id for q in queries]
    return {
        name: (
            specs_for(store, cfg, path, ident, texts, ids, "document", f"evaluate-{name}"),
            specs_for(store, cfg, path, ident, qtexts, qids, "query", f"evaluate-{name}"),
        )
        for name, _, path, ident in models
    }


class _Planned(NamedTuple):
    passages: list[Passage]
    queries: list[Query]
    shards: dict[str, tuple[list[EncodeShard], list[EncodeShard]]]


def _planned(store: RunStore, cfg: DistillConfig) -> _Planned | None:
    """What a flow plans the stage's shard tasks from; None when the stage is cached or not sharded."""
    if not sharded(cfg):
        return None
    models = _models(store, cfg)
    if store.cache.lookup("evaluate", _key(store, cfg, models), OUTPUTS) is not None:
        return None
    passages = read_parquet(store.path("passages.parquet"), Passage)
    queries = read_parquet(store.path("queries.parquet"), Query)
    return _Planned(passages, queries, _shards(store, cfg, models, passages, queries))


def shard_plan(store: RunStore, cfg: DistillConfig) -> list[EncodeShard]:
    """The corpus and query shards evaluation still needs to encode."""
    plan = _planned(store, cfg)
    return [] if plan is None else [s for d, q in plan.shards.values() for s in d + q if not s.done]


def _searches(
    cfg: DistillConfig,
    shards: dict[str, tuple[list[EncodeShard], list[EncodeShard]]],
    passages: list[Passage],
    queries: list[Query],
) -> dict[str, list[SearchShard]]:
    """Each dense model's exact search of the held-out queries over every passage, one per query shard
    holding any (a SPLADE student searches its sparse matrix in the stage)."""
    from distiller.retrieval.evaluation import eval_depth  # ir_measures: not at the CLI's start-up

    if cfg.training.kind != "dense" or not passages:
        return {}
    k = min(eval_depth(cfg.evaluation.ks), len(passages))
    held_out = [q.query_id for q in queries if q.split == "test"]
    pids = [p.passage_id for p in passages]
    return {
        name: search_shards(docs, pids, qs, held_out, k, Path(docs[0].out).parent, f"evaluate-{name}")
        for name, (docs, qs) in shards.items()
        if docs
    }


def search_plan(store: RunStore, cfg: DistillConfig) -> list[SearchShard]:
    """The held-out searches evaluation still needs, after its encoding shards."""
    plan = _planned(store, cfg)
    if plan is None:
        return []
    searches = _searches(cfg, plan.shards, plan.passages, plan.queries)
    return [s for specs in searches.values() for s in specs if not s.done]


OUTPUTS = ["metrics.parquet", "models/best"]


def evaluate_stage(store: RunStore, cfg: DistillConfig, mapper: Mapper | None = None) -> StageResult:
    """Base model, BM25 and every iteration's model on the held-out queries (and on the user's eval file,
    which then selects); the best goes to models/best, the base when no iteration beats it."""
    from distiller.modelcard import write_model_card
    from distiller.retrieval.evaluation import evaluate_bm25, evaluate_model, select_best

    passages_p, queries_p = store.path("passages.parquet"), store.path("queries.parquet")
    models = _models(store, cfg)
    base_path = models[0][2]
    key = _key(store, cfg, models)

    def run() -> dict[str, Any]:
        passages = read_parquet(passages_p, Passage)
        every_query = read_parquet(queries_p, Query)
        queries = [q for q in every_query if q.split == "test"]
        if not queries:
            raise StageError(
                "no held-out (test) queries to evaluate on: the corpus needs more documents"
                + budget_cause(store)
            )
        own_set = query_set_of(queries)
        real = _load_eval_set(store, cfg, passages)
        ks = cfg.evaluation.ks
        rows: list[MetricRow] = []
        rows += evaluate_bm25(passages, queries, ks, query_set=own_set)
        if real:
            rows += evaluate_bm25(real.corpus, real.queries, ks, query_set="eval-file", unit_of=real.unit_of)
        shards = _shards(store, cfg, models, passages, every_query) if sharded(cfg) else {}
        searches = _searches(cfg, shards, passages, every_query)
        encoded: list[dict[str, Any]] = []
        encoders: set[str] = set()
        searched = {"searches": 0, "searches_run": 0}
        for name, k, path, _ in models:
            corpus = qemb = neighbours = None
            if name in shards:
                docs, qs = shards[name]
                corpus, done = encode_all(docs, [p.passage_id for p in passages], mapper)
                held_out, qdone = encode_all(qs, [q.query_id for q in queries], mapper)
                encoded += [done, qdone]
                if searches.get(name):  # searched per query shard (by the flow's tasks, or here)
                    specs = searches[name]
                    searched["searches_run"] += sum(not search_shard(s).cached for s in specs)
                    searched["searches"] += len(specs)
                    neighbours = gather_searches(specs, [q.query_id for q in queries])
                else:
                    qemb = held_out.embeddings
            model, how = load_encoder_for(cfg, path)
            encoders.add(how)
            rows += evaluate_model(
                model,
                passages,
                queries,
                ks,
                name,
                k,
                query_set=own_set,
                corpus=corpus,
                query_embeddings=qemb,
                neighbours=neighbours,
            )
            if real:
                rows += evaluate_model(
                    model, real.corpus, real.queries, ks, name, k, query_set="eval-file", unit_of=real.unit_of
                )
        write_parquet(store.path("metrics.parquet"), rows, MetricRow)
        pruned = prune_shards(store, (s for d, q in shards.values() for s in d + q)) if shards else 0
        metric = cfg.evaluation.metric
        best, chosen = select_best(rows, metric)
        best_dir = store.path("models/best")
        if best_dir.exists():
            shutil.rmtree(best_dir)
        src = base_path if best == "base" else str(store.path(f"models/{best}"))
        shutil.copytree(src, best_dir)
        (best_dir / "distiller_best.txt").write_text(f"{best}\n", encoding="utf-8")
        write_model_card(store.dir, best=best)  # Hub-ready: base model id, labelled metrics, training
        table = {r.model: r.value for r in rows if r.metric == metric and r.query_set == chosen}
        n_sel = next(r.n_queries for r in rows if r.query_set == chosen)
        label = query_set_label(chosen)
        verdict = (
            f"models/best is the base model: no trained iteration beat it on {label}"
            if best == "base"
            else f"best: {best} on {label}"
        )
        warning = OFFLINE_WARNING if chosen == "inverse-cloze" else None
        return {
            "message": f"{verdict} ({metric} "
            + ", ".join(f"{m} {v:.3f}" for m, v in table.items())
            + f"; {n_sel} queries)"
            + (f". {warning}" if warning else ""),
            "details": {
                "best": best,
                "metric": metric,
                "values": table,
                "selected_on": chosen,
                "selected_on_label": label,
                "held_out_queries": len(queries),
                "eval_file": real.path if real else None,
                "eval_queries": len(real.queries) if real else None,
                "eval_notes": real.notes if real else [],
                "warning": warning,
                **(merge_details(*encoded) if encoded else {}),
                **({"shard_folders_pruned": pruned} if shards else {}),
                **(searched if searches else {}),
                "encoder": sorted(encoders)[0] if len(encoders) == 1 else sorted(encoders),
            },
        }

    return store.run_stage("evaluate", key, OUTPUTS, run)


def _eval_inputs(store: RunStore, eval_file: Path | None) -> list[Path]:
    """What the eval set is read from: the file (a BEIR queries.jsonl: its folder, qrels included) and
    the documents and chunks its ids are matched against."""
    if eval_file is None or not eval_file.exists():
        return []
    src = eval_file.parent if eval_file.name == "queries.jsonl" else eval_file
    return [src, store.path("sources.parquet"), store.path("chunks.parquet")]


def _load_eval_set(store: RunStore, cfg: DistillConfig, passages: list[Passage]) -> Any:
    """The user's eval file read against this run's corpus (documents and chunks in document mode)."""
    if not cfg.evaluation.eval_file:
        return None
    from distiller.evalset import load_eval_file

    docs_p, chunks_p = store.path("sources.parquet"), store.path("chunks.parquet")
    documents = read_parquet(docs_p, Document) if docs_p.is_file() else []
    chunks = read_parquet(chunks_p, Chunk) if chunks_p.is_file() and documents else []
    return load_eval_file(cfg.evaluation.eval_file, documents, chunks, passages)
