from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distiller.records import Chunk, Passage, QAPair, Query, Split
from distiller.splits import assign_groups


@dataclass
class GenerationOutput:
    """What the generate stage writes: the retrieval corpus, the queries with their qrels, Q&A pairs."""

    passages: list[Passage]
    queries: list[Query]
    qa_pairs: list[QAPair]
    notes: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def document_splits(chunks: list[Chunk], train_ratio: float, val_ratio: float, seed: int) -> dict[str, Split]:
    """Split by source document, weighted by chunks, so no document feeds two splits."""
    weights: dict[str, int] = {}
    for c in chunks:
        weights[c.doc_id] = weights.get(c.doc_id, 0) + 1
    return {str(k): v for k, v in assign_groups(weights, train_ratio, val_ratio, seed, weights).items()}
