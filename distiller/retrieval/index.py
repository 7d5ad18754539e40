"""Encode a corpus once and search it in batches, with memory bounded by batch size, not corpus size.

Dense models: passage embeddings are streamed into a float32 numpy memmap on disk, `encode_batch_size`
texts at a time; exact search runs per query batch over corpus blocks read from the memmap (FAISS
`knn` per block, merged in a `ResultHeap`), so resident memory is one query batch x one corpus block plus
the top-k of that query batch. Above `exact_index_max_corpus` passages an IVF index with 8-bit scalar
quantisation is trained on a sample and filled block by block (its codes take N x dim bytes, a quarter
of the float32 embeddings; the float vectors stay on disk).

Sparse (SPLADE) models: embeddings go into a scipy CSR matrix built batch by batch (memory grows with
the number of active terms, not the vocabulary); search is a sparse product per query batch.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from distiller.progress import Counter

logger = logging.getLogger(__name__)

Role = Literal["query", "document"]
_ENCODING: dict[str, str] = {"query": "encoding queries", "document": "encoding documents"}

QUERY_BATCH = 1024
"""Queries searched at once: their scores against one corpus block are QUERY_BATCH x CORPUS_BLOCK floats."""
CORPUS_BLOCK = 65_536
TIE_DECIMALS = 5
"""Exact search ranks scores equal to this many decimals by corpus row (see `_break_ties`)."""
TIE_MARGIN = 16
"""Extra neighbours fetched so that ties at the k-th place are all seen before they are broken."""
"""Corpus rows read from the memmap per search step (100 MB at 384 dimensions)."""


def is_sparse_model(model: Any) -> bool:
    from sentence_transformers import SparseEncoder

    return isinstance(model, SparseEncoder)


def _normalize(model: Any) -> bool:
    # Cosine models get unit vectors so that inner product = cosine; "dot" models are searched raw.
    return getattr(model, "similarity_fn_name", "cosine") != "dot"


def _encode_batch(model: Any, texts: Sequence[str], role: Role, batch_size: int, **kw: Any) -> Any:
    fn = model.encode_query if role == "query" else model.encode_document
    return fn(list(texts), batch_size=batch_size, show_progress_bar=False, **kw)


def encode_dense(
    model: Any,
    texts: Sequence[str],
    role: Role,
    batch_size: int,
    path: Path | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Encode `texts` into a float32 memmap at `path` (or an in-memory array when `path` is None),
    `batch_size` x 16 texts per encode call so the model's own batching and sorting still pay off."""
    dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else None
    if dim is None:
        dim = model.get_sentence_embedding_dimension()
    n = len(texts)
    out: np.ndarray = (
        np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
        if path is not None
        else np.empty((n, dim), dtype=np.float32)
    )
    step = batch_size * 16
    norm = _normalize(model)
    counter = Counter(_ENCODING[role], n, "texts") if progress else None
    for start in range(0, n, step):
        emb = _encode_batch(
            model,
            texts[start : start + step],
            role,
            batch_size,
            normalize_embeddings=norm,
            convert_to_numpy=True,
        )
        out[start : start + len(emb)] = emb
        if counter is not None:
            counter.update(start + len(emb))
    if isinstance(out, np.memmap):
        out.flush()
    return out


def encode_sparse(
    model: Any, texts: Sequence[str], role: Role, batch_size: int, progress: bool = True
) -> Any:
    """Encode with a SparseEncoder into a scipy CSR matrix, one batch at a time."""
    import scipy.sparse as sp

    parts = []
    step = batch_size * 16
    counter = Counter(_ENCODING[role], len(texts), "texts") if progress else None
    for start in range(0, len(texts), step):
        emb = _encode_batch(
            model, texts[start : start + step], role, batch_size, convert_to_sparse_tensor=True
        )
        coo = emb.coalesce().cpu()
        idx = coo.indices().numpy()
        parts.append(
            sp.csr_matrix(
                (coo.values().float().numpy(), (idx[0], idx[1])), shape=tuple(coo.shape), dtype=np.float32
            )
        )
        if counter is not None:
            counter.update(min(len(texts), start + step))
    if not parts:
        return sp.csr_matrix((0, 1), dtype=np.float32)
    return sp.vstack(parts).tocsr()


@dataclass
class EncodedCorpus:
    """Document embeddings of one model: a memmap (dense) or CSR matrix (sparse), plus an optional
    approximate FAISS index."""

    embeddings: Any
    sparse: bool
    ann: Any = None

    def __len__(self) -> int:
        return self.embeddings.shape[0]


def _build_ann(emb: np.ndarray, block: int, seed: int) -> Any:
    """IVF + 8-bit scalar quantiser, inner product; trained on a sample, filled block by block."""
    import faiss

    n, dim = emb.shape
    nlist = max(1, min(65_536, int(4 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, max(nlist * 39, 10_000)), replace=False))
    index.train(np.ascontiguousarray(emb[sample]))
    for start in range(0, n, block):
        index.add(np.ascontiguousarray(emb[start : start + block]))
    index.nprobe = max(1, min(nlist, 32))
    return index


def build_ann(emb: Any, seed: int) -> Any:
    """The approximate IVF-SQ8 index over embeddings already encoded (an array, memmap or shards)."""
    logger.info("corpus of %d passages: approximate IVF-SQ8 index", len(emb))
    return _build_ann(emb, CORPUS_BLOCK, seed)


def encode_corpus(
    model: Any,
    texts: Sequence[str],
    batch_size: int,
    workdir: Path | None = None,
    exact_max: int | None = None,
    seed: int = 0,
) -> EncodedCorpus:
    """Encode the corpus once (dense: into `workdir/corpus.npy` as a memmap)."""
    if is_sparse_model(model):
        return EncodedCorpus(encode_sparse(model, texts, "document", batch_size), sparse=True)
    emb = encode_dense(
        model, texts, "document", batch_size, path=(workdir / "corpus.npy") if workdir else None
    )
    ann = None
    if exact_max is not None and len(texts) > exact_max:
        logger.info("corpus of %d > %d passages: approximate IVF-SQ8 index", len(texts), exact_max)
        ann = _build_ann(emb, CORPUS_BLOCK, seed)
    return EncodedCorpus(emb, sparse=False, ann=ann)


def _search_dense(corpus: EncodedCorpus, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    q = np.ascontiguousarray(q, dtype=np.float32)
    if corpus.ann is not None:
        return corpus.ann.search(q, k)
    emb = corpus.embeddings
    want, k = k, min(k + TIE_MARGIN, max(len(emb), 1))
    heap = faiss.ResultHeap(len(q), k, keep_max=True)
    # A sharded corpus is searched shard by shard; the heap merges the blocks' top-k exactly.
    blocks = (
        emb.blocks(CORPUS_BLOCK)
        if hasattr(emb, "blocks")
        else (
            (np.arange(s, min(s + CORPUS_BLOCK, len(emb)), dtype=np.int64), emb[s : s + CORPUS_BLOCK])
            for s in range(0, len(emb), CORPUS_BLOCK)
        )
    )
    for ids, rows in blocks:
        block = np.ascontiguousarray(rows)
        d, i = faiss.knn(q, block, min(k, len(block)), metric=faiss.METRIC_INNER_PRODUCT)
        i = np.where(i >= 0, ids[i], -1)  # block positions -> corpus rows
        if d.shape[1] < k:  # a last block smaller than k: pad so the heap sees (nq, k)
            pad = k - d.shape[1]
            d = np.hstack([d, np.full((len(q), pad), -np.inf, dtype=np.float32)])
            i = np.hstack([i, np.full((len(q), pad), -1, dtype=np.int64)])
        heap.add_result(d, i)
    heap.finalize()
    return _break_ties(heap.D, heap.I, want)


def _break_ties(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top k of each row, scores equal to TIE_DECIMALS ranked by corpus row. Which of two tied
    passages (duplicates, or texts whose embeddings differ only by float noise: the same text encoded in
    another batch) comes first otherwise depends on the order the corpus is stored and searched in (shards,
    workers); this way the neighbours are the same however the corpus was cut."""
    rounded = np.where(i >= 0, np.round(d, TIE_DECIMALS), -np.inf)
    order = np.lexsort((np.where(i >= 0, i, np.iinfo(np.int64).max), -rounded))[:, :k]
    return np.take_along_axis(d, order, axis=1), np.take_along_axis(i, order, axis=1)


def _search_sparse(corpus: EncodedCorpus, q: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = (q @ corpus.embeddings.T).toarray()
    want, k = min(k, scores.shape[1]), min(k + TIE_MARGIN, scores.shape[1])
    idx = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(scores, idx, axis=1)
    return _break_ties(part, idx.astype(np.int64), want)


def search_batches(
    model: Any,
    corpus: EncodedCorpus,
    queries: Sequence[str],
    k: int,
    batch_size: int,
    query_batch: int = QUERY_BATCH,
    query_embeddings: Any = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, Any]]:
    """Yield (offset, scores [b, k], corpus indices [b, k], query embeddings) for each query batch,
    best first. Indices < 0 mean fewer than k passages exist. `query_embeddings` (one row per query,
    encoded by the same model: dense rows, or a CSR matrix for a sparse corpus): searched as they are
    instead of encoding `queries`."""
    k = min(k, len(corpus)) if len(corpus) else k
    for start in range(0, len(queries), query_batch):
        chunk = queries[start : start + query_batch]
        if query_embeddings is not None and corpus.sparse:
            q = query_embeddings[start : start + len(chunk)]
            d, i = _search_sparse(corpus, q, k)
        elif query_embeddings is not None:
            q = np.asarray(query_embeddings[start : start + len(chunk)], dtype=np.float32)
            d, i = _search_dense(corpus, q, k)
        elif corpus.sparse:
            q = encode_sparse(model, chunk, "query", batch_size)
            d, i = _search_sparse(corpus, q, k)
        else:
            q = encode_dense(model, chunk, "query", batch_size)
            d, i = _search_dense(corpus, q, k)
        yield start, d, i, q


ROW_COSINE_BLOCK = 4096
"""Pairs per block in `row_cosine` (two gathered blocks of 4096 x 384 float32 are 12 MB)."""


def row_cosine(matrix: Any, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of rows a[j] and b[j] of a dense array/memmap or a scipy sparse matrix
    (near-duplicate passages, near-duplicate queries)."""
    if len(a) == 0:
        return np.zeros(0, dtype=np.float32)
    if len(a) > ROW_COSINE_BLOCK:  # gathered rows are copies: bound them, whatever the number of pairs
        return np.concatenate(
            [
                row_cosine(matrix, a[i : i + ROW_COSINE_BLOCK], b[i : i + ROW_COSINE_BLOCK])
                for i in range(0, len(a), ROW_COSINE_BLOCK)
            ]
        )
    if hasattr(matrix, "multiply"):  # scipy sparse
        x, y = matrix[a], matrix[b]
        dots = np.asarray(x.multiply(y).sum(axis=1)).ravel()
        nx = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        ny = np.sqrt(np.asarray(y.multiply(y).sum(axis=1)).ravel())
    else:
        x, y = np.asarray(matrix[a]), np.asarray(matrix[b])
        dots = np.einsum("ij,ij->i", x, y)
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    return (dots / np.maximum(nx * ny, 1e-12)).astype(np.float32)


@contextmanager
def scratch_dir(prefix: str = "distiller-") -> Iterator[Path]:
    """A temporary folder for memmaps (under $TMPDIR), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


__all__ = [
    "EncodedCorpus",
    "build_ann",
    "encode_corpus",
    "encode_dense",
    "encode_sparse",
    "is_sparse_model",
    "row_cosine",
    "scratch_dir",
    "search_batches",
]
