"""Held-out retrieval metrics with ir-measures: the base model, each iteration and BM25 side by side.

Metrics (names as they appear in `metrics.parquet`): MRR@k for k <= 10 in `ks`, Recall@k for every k in
`ks`, and nDCG@10. Runs are handed to ir-measures with a rank-derived score so that ties in model scores
cannot reorder results behind our back: what is evaluated is exactly the ranking retrieval produced.
A query with no retrieved ground truth counts as 0, and every held-out query counts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import ir_measures
from ir_measures import RR, Qrel, R, ScoredDoc, nDCG

from distiller.records import (
    MetricRow,
    Passage,
    Query,
    QuerySet,
    selection_set,
)
from distiller.retrieval.index import EncodedCorpus, encode_corpus, scratch_dir, search_batches

logger = logging.getLogger(__name__)

ENCODE_BATCH = 64


def _measures(ks: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(set(ks)):
        if k <= 10:
            out[f"MRR@{k}"] = RR @ k
    for k in sorted(set(ks)):
        out[f"Recall@{k}"] = R @ k
    out["nDCG@10"] = nDCG @ 10
    return out


def score_run(
    run: dict[str, list[str]],
    queries: Sequence[Query],
    ks: Sequence[int],
    name: str,
    iteration: int,
    query_set: QuerySet = "unknown",
) -> list[MetricRow]:
    """Metric rows for a ranked run {query_id: [passage_id, best first]} against the queries' qrels."""
    qrels = [Qrel(q.query_id, pid, 1) for q in queries for pid in dict.fromkeys(q.positive_ids)]
    scored = [
        ScoredDoc(qid, pid, float(len(pids) - r)) for qid, pids in run.items() for r, pid in enumerate(pids)
    ]
    measures = _measures(ks)
    n = len({q.query_id for q in queries if q.positive_ids})
    if n == 0:
        return []
    agg = ir_measures.calc_aggregate(list(measures.values()), qrels, scored)
    return [
        MetricRow(
            model=name,
            iteration=iteration,
            metric=label,
            value=float(agg.get(m, 0.0)),
            n_queries=n,
            query_set=query_set,
        )
        for label, m in measures.items()
    ]


def evaluate_model(
    model: Any,
    passages: list[Passage],
    queries: list[Query],
    ks: list[int],
    name: str,
    iteration: int,
    *,
    corpus: EncodedCorpus | None = None,
    query_set: QuerySet = "unknown",
    unit_of: dict[str, str] | None = None,
    query_embeddings: Any = None,
    neighbours: tuple[Any, Any] | None = None,
) -> list[MetricRow]:
    """Encode the corpus once (or reuse `corpus`, encoded by this same model), retrieve top-max(ks)
    for each held-out query (or search `query_embeddings`, one row per query, by this same model; or
    take `neighbours`, the (scores, passage rows) of each query's exact top `eval_depth(ks)`, searched
    per query shard), score with ir-measures.

    `unit_of` (passage id -> document id): score documents, not passages, as BEIR does for a corpus of
    whole documents: a document ranks where its best passage ranks, and the queries' positive_ids are
    document ids then."""
    if not passages or not queries:
        return []
    k = eval_depth(ks)
    if unit_of is not None:  # several passages of one document collapse into one entry
        k = min(len(passages), k * UNIT_DEPTH)
    run: dict[str, list[str]] = {}
    if neighbours is not None and unit_of is None:
        for q, idx in zip(queries, neighbours[1], strict=True):
            run[q.query_id] = [passages[i].passage_id for i in idx[:k] if i >= 0]
        return score_run(run, queries, ks, name, iteration, query_set)
    with scratch_dir() as work:
        if corpus is None:
            corpus = encode_corpus(model, [p.text for p in passages], ENCODE_BATCH, workdir=work)
        for off, _, idx, _ in search_batches(
            model, corpus, [q.text for q in queries], k, ENCODE_BATCH, query_embeddings=query_embeddings
        ):
            for row, ids in enumerate(idx):
                run[queries[off + row].query_id] = [passages[i].passage_id for i in ids if i >= 0]
    if unit_of is not None:
        run = collapse_run(run, unit_of, max(max(ks), 10))
    return score_run(run, queries, ks, name, iteration, query_set)


def eval_depth(ks: list[int]) -> int:
    """How deep each held-out query is searched: the largest k, and at least 10."""
    return max(max(ks), 10)


UNIT_DEPTH = 4
"""Document-level scoring retrieves this many times more passages, so that max(ks) distinct documents
are left after collapsing (a document is rarely more than a few chunks in the top ranks)."""


def collapse_run(run: dict[str, list[str]], unit_of: dict[str, str], k: int) -> dict[str, list[str]]:
    """{query: passage ids} -> {query: document ids}, each document at its best passage's rank, top k."""
    return {qid: list(dict.fromkeys(unit_of.get(p, p) for p in pids))[:k] for qid, pids in run.items()}


_TOKEN = re.compile(r"\w+")


def evaluate_bm25(
    passages: list[Passage],
    queries: list[Query],
    ks: list[int],
    *,
    query_set: QuerySet = "unknown",
    unit_of: dict[str, str] | None = None,
) -> list[MetricRow]:
    """The lexical baseline: bm25s (Lucene BM25 variant, English stop words, no stemming)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at DEBUG

    if not passages or not queries:
        return []
    k = min(max(max(ks), 10) * (UNIT_DEPTH if unit_of is not None else 1), len(passages))
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([p.text for p in passages], stopwords="en", show_progress=False), show_progress=False
    )
    q_tokens = bm25s.tokenize([q.text for q in queries], stopwords="en", show_progress=False)
    docs, _ = retriever.retrieve(q_tokens, k=k, show_progress=False, n_threads=1)
    run = {q.query_id: [passages[int(i)].passage_id for i in docs[j]] for j, q in enumerate(queries)}
    if unit_of is not None:
        run = collapse_run(run, unit_of, max(max(ks), 10))
    return score_run(run, queries, ks, "bm25", 0, query_set)


def _model_order(name: str) -> int:
    return 0 if name == "base" else int(name[4:]) if name.startswith("iter") and name[4:].isdigit() else 10**6


def pick_best(rows: Iterable[MetricRow], metric: str) -> str:
    """The model ('base' or 'iter<k>') with the best `metric`; on a tie the earlier one (less training)."""
    cands = [r for r in rows if r.metric == metric and r.model != "bm25"]
    if not cands:
        raise ValueError(f"no rows for metric {metric!r} among the models evaluated")
    best = max(cands, key=lambda r: (r.value, -_model_order(r.model)))
    return best.model


def select_best(rows: list[MetricRow], metric: str) -> tuple[str, str]:
    """(best model, query set it was chosen on). The user's eval file decides when there is one, else the
    run's own held-out queries; the base model is a candidate and wins unless an iteration beats it."""
    chosen = selection_set(rows)
    if chosen is None:
        raise ValueError("no metric rows to select from")
    return pick_best([r for r in rows if r.query_set == chosen], metric), chosen


def metrics_table(rows: Iterable[MetricRow]) -> str:
    """A plain-text table, one line per model, one column per metric (benchmarks, logs)."""
    rows = list(rows)
    metrics = list(dict.fromkeys(r.metric for r in rows))
    models = list(dict.fromkeys(r.model for r in rows))
    val = {(r.model, r.metric): r.value for r in rows}
    width = max(len(m) for m in [*models, "model"])
    head = "model".ljust(width) + "".join(f"{m:>11}" for m in metrics)
    lines = [head, "-" * len(head)]
    for m in models:
        lines.append(m.ljust(width) + "".join(f"{val.get((m, x), float('nan')):>11.4f}" for x in metrics))
    return "\n".join(lines)


__all__ = [
    "collapse_run",
    "evaluate_bm25",
    "evaluate_model",
    "metrics_table",
    "pick_best",
    "score_run",
    "select_best",
]
