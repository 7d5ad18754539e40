"""Near-duplicate queries, removed before any money is spent on them downstream (documents, judging).

Two queries are near-duplicates when their embeddings by the student have cosine similarity at or above
`generation.dedup_threshold`; exact copies (case and spacing folded) are caught without encoding. The
first query in order is kept and later ones that duplicate a *kept* query are dropped (greedy, so a chain
a~b~c with a and c far apart keeps a and c). Each removal names the query it duplicates.

Cost: the similarity matrix is computed in row blocks (peak memory block x n floats); for the query
counts of a generation run (thousands) this takes seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from distiller.config import DistillConfig
from distiller.records import Query

Encoder = Callable[[list[str]], np.ndarray]
BLOCK = 1024


@dataclass(frozen=True)
class Removed:
    query_id: str
    duplicate_of: str
    similarity: float


def student_encoder(cfg: DistillConfig) -> Encoder:
    """The student as it is before training: the model whose notion of 'same query' matters."""
    from distiller.retrieval.models import load_encoder

    # Dense even for a SPLADE run: cosine over sparse lexical weights would only find shared words.
    model, _ = load_encoder(
        cfg.training.student,
        max_seq_length=cfg.training.max_seq_length,
        backend=cfg.encoding.backend,
        quantize=cfg.encoding.quantize,
    )

    def encode(texts: list[str]) -> np.ndarray:
        return np.asarray(
            model.encode(
                texts,
                batch_size=cfg.mining.encode_batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )

    return encode


def duplicate_of(texts: Sequence[str], encode: Encoder, threshold: float) -> list[tuple[int, float] | None]:
    """For each text, (index of the earlier kept text it duplicates, similarity), or None if kept."""
    out: list[tuple[int, float] | None] = [None] * len(texts)
    first: dict[str, int] = {}
    unique: list[int] = []
    for i, t in enumerate(texts):
        key = " ".join(t.casefold().split())
        if key in first:
            out[i] = (first[key], 1.0)
        else:
            first[key] = i
            unique.append(i)
    if len(unique) < 2:
        return out
    emb = encode([texts[i] for i in unique]).astype(np.float32)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    kept = np.zeros(len(unique), dtype=bool)
    for a in range(0, len(unique), BLOCK):
        b = min(a + BLOCK, len(unique))
        sims = emb[a:b] @ emb[:b].T
        for r in range(a, b):
            row = sims[r - a, :r]
            hits = np.nonzero((row >= threshold) & kept[:r])[0]
            if hits.size:
                j = int(hits[np.argmax(row[hits])])
                out[unique[r]] = (unique[j], float(row[j]))
            else:
                kept[r] = True
    return out


def dedup_queries(
    queries: Sequence[Query], encode: Encoder, threshold: float
) -> tuple[list[Query], list[Removed]]:
    dup = duplicate_of([q.text for q in queries], encode, threshold)
    kept = [q for q, d in zip(queries, dup, strict=True) if d is None]
    removed = [
        Removed(q.query_id, queries[d[0]].query_id, round(d[1], 4))
        for q, d in zip(queries, dup, strict=True)
        if d is not None
    ]
    return kept, removed


__all__ = ["Encoder", "Removed", "dedup_queries", "duplicate_of", "student_encoder"]
