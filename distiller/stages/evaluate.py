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
from distiller.retrieval.shards import EncodeShard, Mapper, SearchShard, gather_searches, search_shard
from distiller.stages.common import budget_cause, model_ref
from distiller.stages.encoding import (
    assign_groups,
    backend_tag,
    encode_all,
    encoder_detail,
    load_encoder_for,
    merge_details,
    model_identity,
    prune_model_files,
    prune_shards,
    searches_for,
    sharded,
    specs_for,
)
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


Model = tuple[str, int, str, str]
"""(name, iteration, path, identity) of a model evaluated."""


def _models(store: RunStore, cfg: DistillConfig) -> list[Model]:
    """Every model evaluated: the base, then each iteration's. A trained model's folder is hashed here,
    once, for the stage's key and each of its shards' keys."""
    model_dirs = [store.path(f"models/iter{k}") for k in range(1, cfg.mining.iterations + 1)]
    missing = [str(p) for p in model_dirs if not p.is_dir()]
    if missing:
        raise StageError(f"evaluate needs the trained models: missing {', '.join(missing)}")
    base_path, base_id = model_ref(store, cfg, 1)
    return [("base", 0, base_path, model_identity(base_id))] + [
        (f"iter{k}", k, str(d), model_identity(d)) for k, d in enumerate(model_dirs, 1)
    ]


def _key(store: RunStore, cfg: DistillConfig, models: list[Model]) -> str:
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
    models: list[Model],
    passages: list[Passage],
    queries: list[Query],
) -> dict[str, tuple[list[EncodeShard], list[EncodeShard]]]:
    """Each model's (corpus, query) shards: every passage and query, as mining plans them, so the
    models mining used (the base, each iteration but the last) are read from mining's shards."""
    texts, ids = [p.text for p in passages], [p.passage_id for p in passages]
    qtexts, qids = [q.text for q in queries], [q.query_id for q in queries]
    # The run's groups are the same for every model: read (and topped up) once.
    docs = assign_groups(store, "document", ids, cfg.encoding.shard_size)
    qs = assign_groups(store, "query", qids, cfg.encoding.shard_size)
    return {
        name: (
            specs_for(store, cfg, path, ident, texts, ids, "document", f"evaluate-{name}", rows=docs),
            specs_for(store, cfg, path, ident, qtexts, qids, "query", f"evaluate-{name}", rows=qs),
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


def _searches(
    cfg: DistillConfig,
    shards: dict[str, tuple[list[EncodeShard], list[EncodeShard]]],
    passages: list[Passage],
    queries: list[Query],
) -> dict[str, list[SearchShard]]:
    """Each dense model's exact search of the held-out queries over every passage, one per query shard
    holding any (a SPLADE student searches its sparse matrix in the stage)."""
    searches = {
        name: searches_for("evaluate", cfg, docs, qs, passages, queries, f"evaluate-{name}")
        for name, (docs, qs) in shards.items()
    }
    return {name: specs for name, specs in searches.items() if specs}


def shard_plan(store: RunStore, cfg: DistillConfig) -> tuple[list[EncodeShard], list[SearchShard]]:
    """The corpus and query shards evaluation still needs to encode, then the held-out searches over
    them, from one reading of its inputs (none when the stage is cached or not sharded)."""
    plan = _planned(store, cfg)
    if plan is None:
        return [], []
    searches = _searches(cfg, plan.shards, plan.passages, plan.queries)
    return (
        [s for d, q in plan.shards.values() for s in d + q if not s.done],
        [s for specs in searches.values() for s in specs if not s.done],
    )


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
        loaded: list[str] = []
        searched = {"searches": 0, "searches_run": 0}
        pruned_files = 0
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
                pruned_files += _prune(store, cfg, k, docs, qs, searches.get(name, []), passages, every_query)
            # The shards hold every embedding and search of the held-out queries: a model is loaded only
            # without them, or for the eval file, which it encodes itself.
            model = None
            if corpus is None or real:
                model, how = load_encoder_for(cfg, path)
                loaded.append(how)
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
        merged = merge_details(*encoded) if encoded else {}
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
                **merged,
                **({"shard_folders_pruned": pruned, "shard_files_pruned": pruned_files} if shards else {}),
                **(searched if searches else {}),
                # what the shards encoded here and the models loaded ran on (none: all read from disk)
                **encoder_detail(*loaded, merged.get("encoder")),
            },
        }

    return store.run_stage("evaluate", key, OUTPUTS, run)


def _prune(
    store: RunStore,
    cfg: DistillConfig,
    iteration: int,
    docs: list[EncodeShard],
    qs: list[EncodeShard],
    searches: list[SearchShard],
    passages: list[Passage],
    queries: list[Query],
) -> int:
    """Prune the shard folder of one model evaluated: what neither this stage nor mining plans goes.
    Mining iteration k+1 searches with iteration k's model (the base: k = 0), so those searches are
    live too, for every model but the last."""
    mined = iteration < cfg.mining.iterations
    live = searches + (searches_for("mine", cfg, docs, qs, passages, queries, write=False) if mined else [])
    return prune_model_files(store, cfg, docs + qs, live)


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
