"""Hard-negative mining with the current student, one iteration at a time.

Per iteration: encode the corpus and the training queries once (`distiller.retrieval.index`), retrieve the top
`top_k` passages per query, then

- hard triplets: the ground-truth passage ranked `hard_positive_rank_min`..`hard_positive_rank_max`
  (the student misses it) as positive, with non-ground-truth passages ranked 1..`negative_rank_max`
  (what the student wrongly prefers) as negatives;
- easy triplets: the ground truth already ranked above `hard_positive_rank_min`, with its top-ranked
  non-ground-truth passages as negatives; they keep what the student already knows (anti-forgetting),
  `easy_hard_ratio` easy triplets per hard one (one per query when no query is hard);
- a false-negative guard (see `MiningConfig.false_negative_guard`) drops mined negatives that probably
  answer the query too.

The caller accumulates iterations; `previous` only serves to skip triplets already mined.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distiller.config import MiningConfig
from distiller.records import Passage, Query, Triplet
from distiller.retrieval.index import (
    QUERY_BATCH,
    EncodedCorpus,
    encode_corpus,
    row_cosine,
    scratch_dir,
    search_batches,
)

logger = logging.getLogger(__name__)


@dataclass
class MiningResult:
    triplets: list[Triplet]
    stats: dict[str, float | int] = field(default_factory=dict)


@dataclass
class _Candidate:
    """One training query's retrieval outcome, reduced to what triplet building needs."""

    q: Query
    qi: int  # row in the training-query embeddings
    pos_idx: int
    gt: tuple[int, ...]  # every ground-truth passage of the query (the positive among them)
    pos_rank: int  # 1-based
    pos_score: float
    negs: list[tuple[int, int, float]]  # (corpus index, 1-based rank, score), best first


def _is_false_negative(
    cfg: MiningConfig,
    pos_score: float,
    neg_score: float,
    dup_sim: float,
    qdup_sim: float,
    neg: str,
    query: str,
) -> bool:
    """The guard. 'duplicate': the negative is a near-copy of a ground-truth passage of the query (cosine
    of the two passages >= 1 - margin), the ground truth of a near-copy of the query (another training
    query with cosine >= 1 - margin; its answer answers this one too), or contains the query verbatim.
    'score': the negative scores above (1 - margin) x the positive's score (sentence-transformers'
    relative margin; it also drops every negative ranked above a hard positive). 'both': either."""
    m = cfg.false_negative_margin
    dup = (
        dup_sim >= 1.0 - m
        or qdup_sim >= 1.0 - m
        or (len(query) >= 20 and query.strip().lower() in neg.lower())
    )
    score = neg_score > (1.0 - m) * pos_score if pos_score > 0 else neg_score > pos_score
    if cfg.false_negative_guard == "duplicate":
        return dup
    if cfg.false_negative_guard == "score":
        return score
    if cfg.false_negative_guard == "both":
        return dup or score
    return False


def _rank_summary(ranks: Sequence[int], top_k: int) -> dict[str, float | int]:
    """Where the ground truth sits before training: the histogram summary mining reports."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        return {"positive_rank_median": 0.0, "positive_rank_mean": 0.0, "train_mrr": 0.0}
    found = r[r <= top_k]
    return {
        "positive_rank_median": float(np.median(found)) if found.size else float(top_k + 1),
        "positive_rank_mean": float(found.mean()) if found.size else float(top_k + 1),
        "positive_rank_1": int((r == 1).sum()),
        "positive_rank_2_4": int(((r >= 2) & (r <= 4)).sum()),
        "positive_rank_5_15": int(((r >= 5) & (r <= 15)).sum()),
        "positive_rank_16_100": int(((r >= 16) & (r <= top_k)).sum()),
        "positive_not_in_top_k": int((r > top_k).sum()),
        "train_mrr": float(np.where(r <= top_k, 1.0 / r, 0.0).mean()),
    }


def _given(
    neighbours: tuple[np.ndarray, np.ndarray], rows: np.ndarray, qemb: Any, k: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, Any]]:
    """search_batches' batches from neighbours searched beforehand (rows: the usable training queries)."""
    scores, idx = neighbours
    for start in range(0, len(rows), QUERY_BATCH):
        sel = rows[start : start + QUERY_BATCH]
        yield start, scores[sel, :k], idx[sel, :k], qemb[start : start + len(sel)]


def mine_triplets(
    model: Any,
    passages: list[Passage],
    queries: list[Query],
    cfg: MiningConfig,
    iteration: int,
    seed: int,
    previous: list[Triplet] | None = None,
    *,
    corpus: EncodedCorpus | None = None,
    query_embeddings: Any = None,
    neighbours: tuple[np.ndarray, np.ndarray] | None = None,
) -> MiningResult:
    """Mine this iteration's new triplets from the training queries (split == "train").

    `corpus`: the passages already encoded by this same model (`distiller.retrieval.index.encode_corpus`,
    or shards: `distiller.retrieval.shards`), to reuse one encoding; encoded here otherwise.
    `query_embeddings`: the training queries' dense embeddings by the same model, one row per training
    query in order; encoded here otherwise. `neighbours`: (scores, corpus rows) of each training query's
    top k (at least `cfg.top_k` columns, best first, searched over `corpus` by the same model: the search
    shards of `distiller.retrieval.shards`), used instead of searching here; needs `query_embeddings`."""
    train = [q for q in queries if q.split == "train"]
    pid_index = {p.passage_id: i for i, p in enumerate(passages)}
    seen = {(t.query_id, t.positive_id, t.negative_id) for t in previous or []}
    stats: dict[str, float | int] = {
        "n_queries": len(train),
        "n_corpus": len(passages),
        "iteration": iteration,
    }
    usable_rows = [i for i, q in enumerate(train) if any(pid in pid_index for pid in q.positive_ids)]
    usable = [train[i] for i in usable_rows]
    if query_embeddings is not None and query_embeddings.shape[0] != len(train):
        raise ValueError(f"{query_embeddings.shape[0]} query embeddings for {len(train)} training queries")
    stats["n_missing_positive"] = len(train) - len(usable)
    if not usable or not passages:
        stats.update(n_hard=0, n_easy=0, easy_fallback=False, n_false_neg_dropped=0, n_duplicates_skipped=0)
        return MiningResult([], stats)

    top_k = min(cfg.top_k, len(passages))
    texts = [p.text for p in passages]
    cands: list[_Candidate] = []
    ranks: list[int] = []
    # passage -> training queries it answers (for the near-duplicate-query guard)
    owners: dict[int, list[int]] = {}
    for qi, q in enumerate(usable):
        for p in q.positive_ids:
            if p in pid_index:
                owners.setdefault(pid_index[p], []).append(qi)
    qsparse: list[Any] = []  # sparse query batches (CSR), or
    qdense: np.ndarray | None = None  # dense query embeddings, a memmap filled batch by batch
    with scratch_dir() as work:
        if corpus is None:
            corpus = encode_corpus(
                model,
                texts,
                cfg.encode_batch_size,
                workdir=work,
                exact_max=cfg.exact_index_max_corpus,
                seed=seed,
            )
        elif len(corpus) != len(passages):
            raise ValueError(f"encoded corpus has {len(corpus)} rows for {len(passages)} passages")
        rows = np.asarray(usable_rows, dtype=np.int64)
        qgiven = (
            None
            if query_embeddings is None
            else query_embeddings[rows]  # CSR rows
            if corpus.sparse
            else np.asarray(query_embeddings[rows], dtype=np.float32)
        )
        if neighbours is not None and qgiven is None:
            raise ValueError("neighbours need the query embeddings they were searched with")
        batches = (
            _given(neighbours, rows, qgiven, top_k)
            if neighbours is not None
            else search_batches(
                model, corpus, [q.text for q in usable], top_k, cfg.encode_batch_size, query_embeddings=qgiven
            )
        )
        for off, scores, idx, qemb in batches:
            if hasattr(qemb, "multiply"):
                qsparse.append(qemb)
            else:
                if qdense is None:
                    shape = (len(usable), qemb.shape[1])
                    qdense = np.lib.format.open_memmap(work / "queries.npy", "w+", np.float32, shape)
                qdense[off : off + len(qemb)] = qemb
            for row in range(len(idx)):
                q = usable[off + row]
                gt = {pid_index[p] for p in q.positive_ids if p in pid_index}
                hit = [
                    (r, int(i), float(s))
                    for r, (i, s) in enumerate(zip(idx[row], scores[row], strict=True))
                    if i in gt
                ]
                if not hit:
                    ranks.append(top_k + 1)
                    continue
                r0, pos_idx, pos_score = hit[0]
                ranks.append(r0 + 1)
                negs = [
                    (int(i), r + 1, float(s))
                    for r, (i, s) in enumerate(zip(idx[row], scores[row], strict=True))
                    if r < cfg.negative_rank_max and i >= 0 and int(i) not in gt
                ]
                cands.append(_Candidate(q, off + row, pos_idx, tuple(sorted(gt)), r0 + 1, pos_score, negs))
        # the guard's similarities, each in one vectorised pass: every ground-truth passage of the query vs
        # the negative (the nearest counts: a long answer is chunked, and a negative that copies any chunk
        # of it is no negative), and this query vs the other training queries the negative answers
        flat = [(c.qi, n[0]) for c in cands for n in c.negs]
        gpairs = [
            (j, g, neg) for j, (c, neg) in enumerate((c, n[0]) for c in cands for n in c.negs) for g in c.gt
        ]
        sims = np.full(len(flat), -1.0, dtype=np.float32)
        if gpairs:
            per_gt = row_cosine(corpus.embeddings, *_columns([(g, neg) for _, g, neg in gpairs]))
            np.maximum.at(sims, np.array([j for j, _, _ in gpairs], dtype=np.int64), per_gt)
        qpairs = [(j, qi, o) for j, (qi, neg) in enumerate(flat) for o in owners.get(neg, ()) if o != qi]
        qsims = np.zeros(len(flat), dtype=np.float32)
        if qpairs:
            qmat = qdense if qdense is not None else _vstack(qsparse)
            per_pair = row_cosine(qmat, *_columns([(a, o) for _, a, o in qpairs]))
            np.maximum.at(qsims, np.array([j for j, _, _ in qpairs], dtype=np.int64), per_pair)

    stats.update(_rank_summary(ranks, top_k))
    dropped = dup_skipped = 0
    hard: list[Triplet] = []
    easy_pool: list[list[Triplet]] = []
    j = 0
    for c in cands:
        is_hard = cfg.hard_positive_rank_min <= c.pos_rank <= cfg.hard_positive_rank_max
        is_easy = c.pos_rank < cfg.hard_positive_rank_min
        chosen: list[Triplet] = []
        for neg_idx, neg_rank, neg_score in c.negs:
            sim, qsim = float(sims[j]), float(qsims[j])
            j += 1
            if not (is_hard or is_easy) or len(chosen) >= cfg.negatives_per_query:
                continue
            neg = passages[neg_idx]
            if _is_false_negative(cfg, c.pos_score, neg_score, sim, qsim, neg.text, c.q.text):
                dropped += 1
                continue
            pos = passages[c.pos_idx]
            key = (c.q.query_id, pos.passage_id, neg.passage_id)
            if key in seen:
                dup_skipped += 1
                continue
            seen.add(key)
            chosen.append(
                Triplet(
                    query_id=c.q.query_id,
                    query=c.q.text,
                    positive_id=pos.passage_id,
                    positive=pos.text,
                    negative_id=neg.passage_id,
                    negative=neg.text,
                    kind="hard" if is_hard else "easy",
                    iteration=iteration,
                    positive_rank=c.pos_rank,
                    negative_rank=neg_rank,
                    positive_score=c.pos_score,
                    negative_score=neg_score,
                )
            )
        if is_hard:
            hard.extend(chosen)
        elif chosen:
            easy_pool.append(chosen)

    quota = round(cfg.easy_hard_ratio * len(hard))
    # No query is hard: a small corpus, or document-level positives that the student already ranks first.
    # One easy triplet per query still teaches (in-batch negatives do the rest); an iteration with no
    # data at all would stop the run.
    easy_fallback = not hard and cfg.easy_hard_ratio > 0
    if easy_fallback:
        quota = len(easy_pool)
    easy = _sample_easy(easy_pool, quota, np.random.default_rng([seed, iteration]))
    stats.update(
        easy_fallback=easy_fallback,
        n_hard=len(hard),
        n_easy=len(easy),
        n_hard_queries=len({t.query_id for t in hard}),
        n_easy_queries=len({t.query_id for t in easy}),
        n_false_neg_dropped=dropped,
        n_duplicates_skipped=dup_skipped,
    )
    logger.info("mining iteration %d: %s", iteration, stats)
    return MiningResult(hard + easy, stats)


def _columns(pairs: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([a for a, _ in pairs], dtype=np.int64), np.array([b for _, b in pairs], dtype=np.int64)


def _vstack(parts: list[Any]) -> Any:
    import scipy.sparse as sp

    return sp.vstack(parts).tocsr()


def _sample_easy(pool: list[list[Triplet]], quota: int, rng: np.random.Generator) -> list[Triplet]:
    """Spread the easy quota over as many queries as possible: shuffled queries, one negative each per
    round, hardest negative first."""
    order = rng.permutation(len(pool))
    out: list[Triplet] = []
    rnd = 0
    while len(out) < quota:
        took = False
        for qi in order:
            if rnd < len(pool[qi]):
                out.append(pool[qi][rnd])
                took = True
                if len(out) >= quota:
                    break
        if not took:
            break
        rnd += 1
    return out


__all__ = ["MiningResult", "mine_triplets"]
