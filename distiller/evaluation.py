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

from distiller.index import EncodedCorpus, encode_corpus, scratch_dir, search_batches
from distiller.records import MetricRow, Passage, Query

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
    run: dict[str, list[str]], queries: Sequence[Query], ks: Sequence[int], name: str, iteration: int
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
        MetricRow(model=name, iteration=iteration, metric=label, value=float(agg.get(m, 0.0)), n_queries=n)
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
) -> list[MetricRow]:
    """Encode the corpus once (or reuse `corpus`, encoded by this same model), retrieve top-max(ks)
    for each held-out query, score with ir-measures."""
    if not passages or not queries:
        return []
    k = max(max(ks), 10)
    run: dict[str, list[str]] = {}
    with scratch_dir() as work:
        if corpus is None:
            corpus = encode_corpus(model, [p.text for p in passages], ENCODE_BATCH, workdir=work)
        for off, _, idx, _ in search_batches(model, corpus, [q.text for q in queries], k, ENCODE_BATCH):
            for row, ids in enumerate(idx):
                run[queries[off + row].query_id] = [passages[i].passage_id for i in ids if i >= 0]
    return score_run(run, queries, ks, name, iteration)


_TOKEN = re.compile(r"\w+")


def evaluate_bm25(passages: list[Passage], queries: list[Query], ks: list[int]) -> list[MetricRow]:
    """The lexical baseline: bm25s (Lucene BM25 variant, English stop words, no stemming)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs each index build at DEBUG

    if not passages or not queries:
        return []
    k = min(max(max(ks), 10), len(passages))
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([p.text for p in passages], stopwords="en", show_progress=False), show_progress=False
    )
    q_tokens = bm25s.tokenize([q.text for q in queries], stopwords="en", show_progress=False)
    docs, _ = retriever.retrieve(q_tokens, k=k, show_progress=False, n_threads=1)
    run = {q.query_id: [passages[int(i)].passage_id for i in docs[j]] for j, q in enumerate(queries)}
    return score_run(run, queries, ks, "bm25", 0)


def _model_order(name: str) -> int:
    return 0 if name == "base" else int(name[4:]) if name.startswith("iter") and name[4:].isdigit() else 10**6


def pick_best(rows: Iterable[MetricRow], metric: str) -> str:
    """The model ('base' or 'iter<k>') with the best `metric`; on a tie the earlier one (less training)."""
    cands = [r for r in rows if r.metric == metric and r.model != "bm25"]
    if not cands:
        raise ValueError(f"no rows for metric {metric!r} among the models evaluated")
    best = max(cands, key=lambda r: (r.value, -_model_order(r.model)))
    return best.model


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


__all__ = ["evaluate_bm25", "evaluate_model", "metrics_table", "pick_best", "score_run"]
