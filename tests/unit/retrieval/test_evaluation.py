"""Evaluation: ir-measures metrics agree with a hand-computed example; a model and BM25 are scored on
the ranking they produce; the best model is picked among base and iterations only."""

from __future__ import annotations

import math

import numpy as np
import pytest

from distiller.records import MetricRow, Passage, Query
from distiller.retrieval.evaluation import evaluate_bm25, evaluate_model, metrics_table, pick_best, score_run


def q(qid: str, positives: list[str], split: str = "test") -> Query:
    return Query(query_id=qid, text=qid, positive_ids=positives, doc_id=qid, split=split, teacher="t")


def test_metrics_match_hand_computed_example() -> None:
    queries = [q("q1", ["b"]), q("q2", ["x"]), q("q3", ["z"]), q("q4", ["c", "y"])]
    run = {
        "q1": ["a", "b", "c"],  # first relevant at rank 2
        "q2": ["x", "a"],  # rank 1
        "q3": ["a", "b", "c", "d", "e", "f", "z"],  # rank 7: outside @5, inside @10
        "q4": ["y", "a", "c"],  # two relevant, ranks 1 and 3
    }
    rows = score_run(run, queries, [1, 5, 10, 100], "base", 0)
    got = {r.metric: r.value for r in rows}
    assert {r.n_queries for r in rows} == {4}
    assert got["MRR@1"] == pytest.approx((0 + 1 + 0 + 1) / 4)
    assert got["MRR@5"] == pytest.approx((1 / 2 + 1 + 0 + 1) / 4)
    assert got["MRR@10"] == pytest.approx((1 / 2 + 1 + 1 / 7 + 1) / 4)
    assert got["Recall@1"] == pytest.approx((0 + 1 + 0 + 0.5) / 4)
    assert got["Recall@5"] == pytest.approx((1 + 1 + 0 + 1) / 4)
    assert got["Recall@100"] == pytest.approx(1.0)
    lg = math.log2
    ndcg = [
        (1 / lg(3)) / 1,
        1.0,
        (1 / lg(8)) / 1,
        (1 / lg(2) + 1 / lg(4)) / (1 / lg(2) + 1 / lg(3)),
    ]
    assert got["nDCG@10"] == pytest.approx(sum(ndcg) / 4)
    assert "MRR@100" not in got  # MRR only at cut-offs up to 10


def test_query_missing_from_run_counts_as_zero() -> None:
    rows = score_run({"q1": ["b"]}, [q("q1", ["b"]), q("q2", ["b"])], [1], "base", 0)
    assert {r.metric: r.value for r in rows}["MRR@1"] == pytest.approx(0.5)


class AxisEncoder:
    """Texts name their vector: 'v:i' is the unit vector on axis i, 'v:i,j' the mean of two axes."""

    similarity_fn_name = "cosine"

    def get_embedding_dimension(self) -> int:
        return 8

    def _enc(self, texts: list[str], **_: object) -> np.ndarray:
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for r, t in enumerate(texts):
            for a in t.split(":")[1].split(","):
                out[r, int(a)] += 1
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    encode_query = encode_document = _enc


def test_evaluate_model_scores_its_own_ranking() -> None:
    passages = [Passage(passage_id=f"p{i}", doc_id="d", text=f"v:{i}") for i in range(4)]
    passages.append(Passage(passage_id="p01", doc_id="d", text="v:0,1"))
    queries = [
        Query(
            query_id="a", text="v:0", positive_ids=["p01"], doc_id="a", split="test", teacher="t"
        ),  # rank 2
        Query(query_id="b", text="v:3", positive_ids=["p3"], doc_id="b", split="test", teacher="t"),  # rank 1
    ]
    rows = evaluate_model(AxisEncoder(), passages, queries, [1, 5], "iter1", 1)
    got = {r.metric: r.value for r in rows}
    assert got["MRR@1"] == pytest.approx(0.5)
    assert got["MRR@5"] == pytest.approx(0.75)
    assert {(r.model, r.iteration) for r in rows} == {("iter1", 1)}


def test_bm25_baseline() -> None:
    passages = [
        Passage(passage_id="p1", doc_id="d1", text="Gout is treated with colchicine and rest."),
        Passage(passage_id="p2", doc_id="d2", text="Asthma inhalers open the airways."),
        Passage(passage_id="p3", doc_id="d3", text="Migraine headaches come with aura and nausea."),
    ]
    queries = [q("how is gout treated", ["p1"]), q("what opens the airways in asthma", ["p2"])]
    queries = [x.model_copy(update={"text": x.query_id}) for x in queries]
    rows = evaluate_bm25(passages, queries, [1, 5])
    got = {r.metric: r.value for r in rows}
    assert got["MRR@1"] == pytest.approx(1.0)
    assert {r.model for r in rows} == {"bm25"} and {r.iteration for r in rows} == {0}


def test_pick_best_ignores_bm25_and_prefers_earlier_on_tie() -> None:
    rows = [
        MetricRow(model="base", iteration=0, metric="MRR@5", value=0.50, n_queries=10),
        MetricRow(model="bm25", iteration=0, metric="MRR@5", value=0.90, n_queries=10),
        MetricRow(model="iter1", iteration=1, metric="MRR@5", value=0.60, n_queries=10),
        MetricRow(model="iter2", iteration=2, metric="MRR@5", value=0.60, n_queries=10),
        MetricRow(model="iter2", iteration=2, metric="MRR@1", value=0.99, n_queries=10),
    ]
    assert pick_best(rows, "MRR@5") == "iter1"
    assert pick_best(rows, "MRR@1") == "iter2"
    with pytest.raises(ValueError, match="nDCG@10"):
        pick_best(rows, "nDCG@10")
    table = metrics_table(rows)
    assert "iter1" in table and "0.6000" in table
