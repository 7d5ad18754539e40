"""The fused student's loss: answer units, label rows, masking of in-batch false negatives, the anchor."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from distiller.records import Triplet
from distiller.retrieval.anchored import Anchor, Pool, answer_units, label_rows, make_loss


def _t(q: str, pos: str, neg: str) -> Triplet:
    return Triplet(
        query_id=q,
        query=f"query {q}",
        positive_id=pos,
        positive=f"passage {pos}",
        negative_id=neg,
        negative=f"passage {neg}",
        kind="easy",
        iteration=1,
    )


def test_answer_units_join_the_chunks_of_an_answer_and_answers_a_query_shares() -> None:
    units = answer_units(
        {
            "claim-a": ["x-0", "x-1", "x-2"],  # one abstract, three chunks
            "claim-b": ["x-2", "y-0"],  # cites x and y: one unit with x
            "claim-c": ["z-0"],
            "claim-d": ["z-0"],  # same answer as c
        }
    )
    assert units["x-0"] == units["x-1"] == units["x-2"] == units["y-0"]
    assert units["z-0"] != units["x-0"]
    assert len(set(units.values())) == 2


def test_label_rows_carry_units_and_the_reference_embeddings() -> None:
    units = {"x-0": 0, "x-1": 0, "z-0": 1}
    rows = [_t("a", "x-0", "z-0"), _t("b", "x-1", "w-0"), _t("c", "z-0", "w-0")]
    plain = label_rows(rows, units, None)
    assert [r[:3] for r in plain] == [[0, 0, 1], [0, 0, -1], [1, 1, -1]]  # w-0: a unit of its own
    assert all(len(r) == 3 for r in plain)
    ref = {
        t: np.full(2, i, dtype=np.float32)
        for i, t in enumerate(sorted({x for r in rows for x in (r.query, r.positive, r.negative)}))
    }
    full = label_rows(rows, units, ref)
    assert len(full[0]) == 3 + 3 * 2
    assert full[0][3:5] == ref["query a"].tolist() and full[0][7:9] == ref["passage z-0"].tolist()
    # the anchor's labels leave the embeddings out when its weight is 0
    assert len(Anchor(units, ref, 0.0).labels(rows)[0]) == 3
    assert len(Anchor(units, ref, 1.0).labels(rows)[0]) == 9


class _Identity:
    """A stand-in model: the 'features' are already the embeddings."""

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        return {"sentence_embedding": features["emb"]}


def _loss(weight: float, q: Any, pos: Any, neg: Any, labels: Any) -> float:
    torch = pytest.importorskip("torch")
    loss = make_loss(_Identity(), weight)
    out = loss([{"emb": q}, {"emb": pos}, {"emb": neg}], torch.tensor(labels, dtype=torch.float32))
    return float(out)


def _batch(seed: int = 0) -> tuple[Any, Any, Any]:
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(seed)
    q, p, n = (torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=-1) for _ in range(3))
    return q, p, n


def _mnrl(q: Any, p: Any, n: Any, masked: tuple[tuple[int, int], ...] = ()) -> float:
    """MultipleNegativesRankingLoss by hand (scale 20, cosine), the given (row, column) scores left out."""
    torch = pytest.importorskip("torch")
    from sentence_transformers.util import cos_sim

    scores = cos_sim(q, torch.cat([p, n])) * 20.0
    for r, c in masked:
        scores[r, c] = float("-inf")
    return float(torch.nn.functional.cross_entropy(scores, torch.arange(q.size(0))))


def test_without_shared_answers_it_is_sentence_transformers_mnrl() -> None:
    q, p, n = _batch()
    labels = [[i, i, -1 - i] for i in range(4)]  # every row its own unit
    assert _loss(0.0, q, p, n, labels) == pytest.approx(_mnrl(q, p, n), rel=1e-5)


def test_another_rows_passage_of_the_same_answer_is_no_negative() -> None:
    q, p, n = _batch(1)
    p[1] = q[0]  # row 1's positive matches query 0 best of all: a false negative if counted
    # rows 0 and 1 are claims citing one abstract (unit 7): row 1's positive must not count against row 0
    labels = [[7, 7, -1], [7, 7, -2], [2, 2, -3], [3, 3, -4]]
    masked = _loss(0.0, q, p, n, labels)
    assert masked == pytest.approx(_mnrl(q, p, n, ((0, 1), (1, 0))), rel=1e-5)
    unmasked = _loss(0.0, q, p, n, [[i, i, -1 - i] for i in range(4)])
    assert masked < unmasked  # fewer candidates in the softmax


def test_a_rows_own_negative_stays_even_in_its_unit() -> None:
    """Mining chose it as not answering the query: only other rows' passages are masked."""
    q, p, n = _batch(2)
    labels = [[5, 5, 5], [1, 1, -1], [2, 2, -2], [3, 3, -3]]
    assert _loss(0.0, q, p, n, labels) == pytest.approx(_mnrl(q, p, n), rel=1e-5)


def test_the_anchor_term_is_zero_at_the_reference_and_grows_with_the_distance() -> None:
    torch = pytest.importorskip("torch")
    q, p, n = _batch(3)
    units = [[i, i, -1 - i] for i in range(4)]
    at_ref = [u + torch.stack([q[i], p[i], n[i]]).flatten().tolist() for i, u in enumerate(units)]
    base = _loss(0.0, q, p, n, units)
    assert _loss(5.0, q, p, n, at_ref) == pytest.approx(base, rel=1e-5)
    moved = [u + (torch.stack([q[i], p[i], n[i]]) * 0.5).flatten().tolist() for i, u in enumerate(units)]
    # each embedding is unit length, the reference half of it: squared distance 0.25 per text
    assert _loss(2.0, q, p, n, moved) == pytest.approx(base + 2.0 * 0.25, rel=1e-4)


def test_pool_draws_evenly_from_every_domain_without_replacement_seeded() -> None:
    texts = {"med": [f"m{i}" for i in range(5)], "sci": [f"s{i}" for i in range(3)], "empty": []}
    pool = Pool(texts, {}, sample=5, seed=7)
    draws = pool.draws()
    steps = [next(draws) for _ in range(6)]
    # 5 a step over the two non-empty domains: 3 medical (the first gets the remainder), 2 science
    assert all(len(s) == 5 for s in steps)
    assert all(sum(t.startswith("m") for t in s) == 3 for s in steps)
    # each domain's texts all come round before any comes again
    med = [t for s in steps for t in s if t.startswith("m")]
    assert sorted(med[:5]) == texts["med"] and sorted(med[5:10]) == texts["med"]
    sci = [t for s in steps for t in s if t.startswith("s")]
    assert sorted(sci[:3]) == texts["sci"]
    again = Pool(texts, {}, sample=5, seed=7).draws()
    assert [next(again) for _ in range(6)] == steps
    other = Pool(texts, {}, sample=5, seed=8).draws()
    assert [next(other) for _ in range(6)] != steps
    assert next(Pool({"med": []}, {}, sample=4).draws(), None) is None


class _Lookup(_Identity):
    """A stand-in model that also 'tokenizes' pool texts into their current embeddings."""

    device = "cpu"

    def __init__(self, current: dict[str, Any]) -> None:
        self.current = current
        self.calls: list[list[str]] = []

    def preprocess(self, texts: list[str]) -> dict[str, Any]:
        torch = pytest.importorskip("torch")
        self.calls.append(list(texts))
        return {"emb": torch.stack([self.current[t] for t in texts])}


def test_the_pool_adds_its_sampled_texts_distance_to_the_anchor_term() -> None:
    torch = pytest.importorskip("torch")
    q, p, n = _batch(4)
    units = [[i, i, -1 - i] for i in range(4)]
    at_ref = [u + torch.stack([q[i], p[i], n[i]]).flatten().tolist() for i, u in enumerate(units)]
    labels = torch.tensor(at_ref, dtype=torch.float32)
    g = torch.Generator().manual_seed(9)
    current = {t: torch.nn.functional.normalize(torch.randn(8, generator=g), dim=-1) for t in ("a", "b", "c")}
    # the references are half the current embeddings: squared distance 0.25 per text
    ref = {t: (e * 0.5).numpy() for t, e in current.items()}
    model = _Lookup(current)
    pool = Pool({"med": ["a", "b"], "sci": ["c"]}, ref, sample=2, seed=0)
    plain = float(make_loss(model, 3.0)([{"emb": q}, {"emb": p}, {"emb": n}], labels))
    with_pool = make_loss(model, 3.0, pool=pool)
    got = float(with_pool([{"emb": q}, {"emb": p}, {"emb": n}], labels))
    # two sampled texts (one per domain), summed and divided by the batch size (4), times the weight
    assert got == pytest.approx(plain + 3.0 * 2 * 0.25 / 4, rel=1e-4)
    (drawn,) = model.calls
    assert "c" in drawn and len(set(drawn) & {"a", "b"}) == 1
    # weight 0: no anchor term at all, and no extra forward
    model.calls.clear()
    Anchor({}, None, 0.0, pool).loss(model)([{"emb": q}, {"emb": p}, {"emb": n}], labels[:, :3])
    assert model.calls == []
