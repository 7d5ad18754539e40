"""Retrieval-training formats: sentence-transformers triplets and n-tuples, SPLADE (query, positive,
negatives).

`triplets` and `ntuple` hold only text columns, in the order sentence-transformers' losses read them
(MultipleNegativesRankingLoss, TripletLoss, CachedMNRL...), so `load_dataset("json", ...)` feeds
`SentenceTransformerTrainer` as is; `triplets-full` keeps the ids, kind, iteration and scores beside them.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from distiller.export.io import atomic_path, write_jsonl

Rows = list[dict[str, Any]]

TRIPLET_COLUMNS = ("anchor", "positive", "negative")
FULL_TRIPLET_COLUMNS = (
    *TRIPLET_COLUMNS,
    "query_id",
    "positive_id",
    "negative_id",
    "kind",
    "iteration",
    "positive_score",
    "negative_score",
)


def write_triplets(rows: Rows, path: Path) -> int:
    """anchor/positive/negative JSONL and nothing else: any other column would be fed to the loss."""
    return write_jsonl([{k: r[k] for k in TRIPLET_COLUMNS} for r in rows], path)


def write_triplets_full(rows: Rows, path: Path) -> int:
    """The triplets with their provenance: ids, easy/hard kind, mining iteration, teacher scores."""
    return write_jsonl([{k: r.get(k) for k in FULL_TRIPLET_COLUMNS} for r in rows], path)


def group_negatives(rows: Rows) -> Rows:
    """One row per (query, positive) with all its negatives, in first-seen order, without repeats."""
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        g = grouped.setdefault(
            (r["query_id"], r["positive_id"]),
            {
                "query_id": r["query_id"],
                "query": r["anchor"],
                "positive_id": r["positive_id"],
                "positive": r["positive"],
                "negative_ids": [],
                "negatives": [],
                "positive_score": r.get("positive_score"),
                "negative_scores": [],
            },
        )
        if r["negative_id"] not in g["negative_ids"]:
            g["negative_ids"].append(r["negative_id"])
            g["negatives"].append(r["negative"])
            g["negative_scores"].append(r.get("negative_score"))
    return list(grouped.values())


def ntuple_size(groups: Rows) -> int:
    """How many negatives each n-tuple row carries: the most common count among the groups (ties: the
    larger). A dataset needs one column set, and the mode keeps the most rows whole."""
    counts = Counter(len(g["negatives"]) for g in groups)
    if not counts:
        return 0
    return max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]


def ntuple_rows(rows: Rows, n: int) -> tuple[Rows, int]:
    """anchor, positive, negative_1..negative_n per (query, positive), like sentence-transformers'
    `mine_hard_negatives(output_format="n-tuple")`: groups with more negatives keep their first n (mining
    order), groups with fewer are left out (as mine_hard_negatives does). Returns (rows, left out)."""
    out: Rows = []
    short = 0
    for g in group_negatives(rows):
        if len(g["negatives"]) < n:
            short += 1
            continue
        row = {"anchor": g["query"], "positive": g["positive"]}
        row.update({f"negative_{i + 1}": neg for i, neg in enumerate(g["negatives"][:n])})
        out.append(row)
    return out, short


def write_splade_jsonl(rows: Rows, path: Path) -> int:
    """{query, positive, negatives: [...]} per line (plus ids and teacher scores for distillation losses)."""
    return write_jsonl(group_negatives(rows), path)


_WS = re.compile(r"[\t\r\n]+")


def _one_line(text: str) -> str:
    # naver/splade's raw triplet reader splits lines on "\n" and fields on "\t" with no quoting, so those
    # characters cannot survive inside a field; they become spaces (only in this file).
    return _WS.sub(" ", text).strip()


def write_splade_raw_tsv(rows: Rows, path: Path) -> int:
    """query<TAB>positive<TAB>negative per line: naver/splade's raw triplet file."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write("\t".join(_one_line(r[k]) for k in TRIPLET_COLUMNS) + "\n")
    return len(rows)
