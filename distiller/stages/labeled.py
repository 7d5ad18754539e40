"""Labeled mode: the user's own Q&A pairs stand in for ingest + generate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Passage, QAPair, Query, write_parquet
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "1"


def labeled_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """Labeled mode: the user's own Q&A pairs are the queries and (chunked) answers the corpus; they
    stand in for ingest + generate."""
    from distiller.ingest.chunking import chunk_tokenizer
    from distiller.labeled import load_labeled, qa_pairs_of
    from distiller.store import sha256_file

    if not cfg.input.qa_file:
        raise StageError("labeled mode needs input.qa_file (--qa-file)")
    qa_path = Path(cfg.input.qa_file)
    if not qa_path.is_file():
        raise StageError(f"{qa_path}: no such file (--qa-file)")
    key = stage_key(
        "labeled",
        VERSION,
        config_hash(cfg, "input", "chunking", "split", exclude={"input": {"paths", "qa_file"}})
        + chunk_tokenizer(cfg),
        [sha256_file(qa_path)],
    )

    def run() -> dict[str, Any]:
        passages, queries = load_labeled(cfg)
        qa_pairs = qa_pairs_of(passages, queries)
        write_parquet(store.path("passages.parquet"), passages, Passage)
        write_parquet(store.path("queries.parquet"), queries, Query)
        write_parquet(store.path("qa_pairs.parquet"), qa_pairs, QAPair)
        by_split: dict[str, int] = {}
        for q in queries:
            by_split[q.split] = by_split.get(q.split, 0) + 1
        groups = len({q.doc_id for q in queries})
        splits = ", ".join(f"{k} {v}" for k, v in sorted(by_split.items()))
        return {
            "message": f"{len(queries)} questions ({splits}) in {groups} groups, {len(passages)} passages",
            "details": {"queries_by_split": by_split, "groups": groups},
        }

    return store.run_stage("labeled", key, ["passages.parquet", "queries.parquet", "qa_pairs.parquet"], run)
