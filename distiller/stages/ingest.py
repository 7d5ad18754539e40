"""Ingest: read and chunk the input documents into sources.parquet and chunks.parquet."""

from __future__ import annotations

import logging
from typing import Any

from distiller.config import DistillConfig
from distiller.records import Chunk, Document, write_parquet
from distiller.stages.common import Progress
from distiller.stages.keys import config_hash, input_file_hashes
from distiller.store import RunStore, StageResult, stage_key

log = logging.getLogger("distiller")

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "1"


def ingest_stage(store: RunStore, cfg: DistillConfig, progress: Progress | None = None) -> StageResult:
    from distiller.ingest import ingest
    from distiller.ingest.chunking import chunk_tokenizer

    tokenizer = chunk_tokenizer(cfg)
    key = stage_key(
        "ingest",
        VERSION,
        config_hash(cfg, "input", "chunking", exclude={"input": {"paths"}}) + tokenizer,
        input_file_hashes(cfg),
    )

    def run() -> dict[str, Any]:
        result = ingest(cfg, on_file=progress)
        write_parquet(store.path("sources.parquet"), result.documents, Document)
        write_parquet(store.path("chunks.parquet"), result.chunks, Chunk)
        skipped = [s.model_dump() for s in result.skipped]
        for s in result.skipped:
            log.warning("skipped %s%s: %s", s.path, f":{s.line}" if s.line else "", s.reason)
        return {
            "message": f"{len(result.documents)} documents, {len(result.chunks)} chunks, "
            f"{len(result.skipped)} skipped",
            "details": {
                "documents": len(result.documents),
                "skipped_inputs": skipped,
                "short_chunks_dropped": result.short_chunks_dropped,
                "duplicate_documents": result.duplicates,
                "tokens": sum(c.n_tokens for c in result.chunks),
            },
        }

    res = store.run_stage("ingest", key, ["sources.parquet", "chunks.parquet"], run)
    store.update_manifest(lambda m: m.__setitem__("skipped_inputs", res.details.get("skipped_inputs", [])))
    return res
