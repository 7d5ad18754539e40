"""Retrieval-training formats: sentence-transformers triplets and SPLADE (query, positive, negatives)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from distiller.export.io import atomic_path, write_jsonl

Rows = list[dict[str, Any]]


def write_triplets(rows: Rows, path: Path) -> int:
    """anchor/positive/negative JSONL: the column order sentence-transformers' (Multiple Negatives
    Ranking / Triplet) losses read; the remaining columns must be dropped before training (ids, scores)."""
    keep = (
        "anchor",
        "positive",
        "negative",
        "query_id",
        "positive_id",
        "negative_id",
        "kind",
        "iteration",
        "positive_score",
        "negative_score",
    )
    return write_jsonl([{k: r.get(k) for k in keep} for r in rows], path)


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
            f.write("\t".join(_one_line(r[k]) for k in ("anchor", "positive", "negative")) + "\n")
    return len(rows)
