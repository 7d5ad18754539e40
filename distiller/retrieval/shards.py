"""Sharded encoding: a corpus (or query set) cut into shards, each encoded on its own and cached as one
`.npy` file, then searched as one matrix.

- In a run, which shard a row belongs to is kept (`ShardGroups`, a Parquet file in the shards folder):
  a row keeps its group across reruns, and rows seen for the first time top up the newest group, then
  fill new ones. Documents added to a finished run (wherever their names sort) therefore land in new
  shards, and every other shard keeps its rows, so its key, so its cached embeddings. A shard's rows
  are stored in group order; `ShardedEmbeddings` maps them back to the caller's row order.
- Without a run (`plan_shards`), boundaries are content-defined instead, as in the content-defined
  chunking of backup tools: past half the shard size, a shard ends after a row whose id hashes to 0
  modulo half the shard size (or at 4x the shard size).
- A shard's key is the hash of what decides its embeddings: the model, the role (query or document),
  the sequence length, the backend and the texts. Its file is written under a temporary name and
  renamed, so a killed encoding leaves no half shard: a rerun finds the finished shards and encodes the
  rest.
- `ShardedEmbeddings` opens the shard files as memory maps and reads like one (n, dim) matrix of the
  rows the caller asks for (all, or a subset such as the training passages, in the caller's order):
  slices and row gathers for the false-negative guard, and `blocks()` for search, which merges each
  block's top-k in one FAISS result heap. For exact search that is the same neighbours as one index
  over the whole corpus.

Shards are plain data (`EncodeShard`), so any executor can encode them: a loop here, Prefect tasks
mapped over a Dask cluster in the flow (`flows.stages`), or `distributed.Client.map` in a benchmark.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

Role = Literal["query", "document"]
MAX_FACTOR = 4
"""A shard ends at MAX_FACTOR x the shard size when no content boundary came first."""


def _hash_int(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def plan_shards(ids: Sequence[str], size: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges covering `ids`, with content-defined boundaries of mean length ~`size`."""
    if size <= 0 or len(ids) <= size:
        return [(0, len(ids))] if ids else []
    out: list[tuple[int, int]] = []
    start = 0
    # No boundary in a shard's first half; after it, one row in size/2 ends it: mean length ~size,
    # with a far narrower spread than a boundary anywhere (a geometric length), so the shard a new
    # document lands in is rarely a big one.
    low = max(1, size // 2)
    every = max(1, size - low)
    for i, rid in enumerate(ids):
        length = i + 1 - start
        if (length >= low and _hash_int(rid) % every == 0) or length >= MAX_FACTOR * size:
            out.append((start, i + 1))
            start = i + 1
    if start < len(ids):
        out.append((start, len(ids)))
    return out


class ShardGroups:
    """Which shard group each row id belongs to, kept in a Parquet file (id, group) across reruns.

    `assign` keeps every known id in its group; ids seen for the first time top up the newest group to
    `size` rows, then fill new groups of `size`, in the order given. So rows added to a finished run
    change at most one old shard (the newest, when it was not full), wherever they sort among the old
    rows. A file that cannot be read is started afresh: the groups only decide which shards can be
    reused, never an embedding.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved = False
        """Whether the last `assign` gave new ids groups (and wrote the file)."""

    def _load(self) -> dict[str, int]:
        if not self.path.is_file():
            return {}
        import pyarrow.parquet as pq

        try:
            t = pq.read_table(self.path, columns=["id", "group"])
        except Exception:  # a torn or foreign file: regroup (cost: shards encoded again, nothing lost)
            return {}
        return dict(zip(t.column("id").to_pylist(), t.column("group").to_pylist(), strict=True))

    def _save(self, known: dict[str, int]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.part-{os.getpid()}")
        table = pa.table(
            {"id": pa.array(list(known), pa.string()), "group": pa.array(list(known.values()), pa.int32())}
        )
        pq.write_table(table, tmp)
        os.replace(tmp, self.path)

    def assign(self, ids: Sequence[str], size: int) -> list[list[int]]:
        """The positions in `ids` of each group's rows, groups in order (empty ones left out); new ids
        are given groups and saved."""
        size = max(1, size)
        known = self._load()
        fresh = [i for i in dict.fromkeys(ids) if i not in known]
        if fresh:
            counts: dict[int, int] = {}
            for g in known.values():
                counts[g] = counts.get(g, 0) + 1
            group = max(counts, default=0)
            room = size - counts.get(group, 0)
            for rid in fresh:
                if room <= 0:
                    group, room = group + 1, size
                known[rid] = group
                room -= 1
            self._save(known)
        self.saved = bool(fresh)
        by_group: dict[int, list[int]] = {}
        for pos, rid in enumerate(ids):
            by_group.setdefault(known[rid], []).append(pos)
        return [by_group[g] for g in sorted(by_group)]


class EncodeShard(BaseModel):
    """One shard to encode: everything a worker process needs, nothing it must look up."""

    model_config = ConfigDict(frozen=True)

    index: int
    role: Role
    key: str
    label: str = ""
    """What the shard is for (e.g. mine_iter1, evaluate-base): the task run's name, not the key."""
    out: str
    texts: list[str]
    ids: list[str] = []
    """The rows' ids, in the shard's order (not in the key: the texts decide the embeddings)."""
    model_path: str
    kind: Literal["dense", "splade"] = "dense"
    max_seq_length: int | None = None
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    quantize: bool = False
    batch_size: int = 64

    @property
    def done(self) -> bool:
        return Path(self.out).is_file()

    @property
    def cost(self) -> int:
        """What encoding it takes, in characters: the texts' lengths, each capped where the model cuts
        it (about 4 characters a token)."""
        cap = 4 * self.max_seq_length if self.max_seq_length else None
        return sum(len(t) if cap is None else min(len(t), cap) for t in self.texts)


class ShardDone(BaseModel):
    """What encoding or searching one shard did (a Prefect task's result: small, no embeddings or
    neighbours); `encoder` is what an encoding ran on."""

    index: int
    out: str
    rows: int
    cached: bool
    seconds: float
    encoder: str = ""


def shard_specs(
    texts: Sequence[str],
    ids: Sequence[str],
    role: Role,
    model_path: str,
    model_id: str,
    folder: Path,
    size: int,
    *,
    kind: Literal["dense", "splade"] = "dense",
    max_seq_length: int | None = None,
    backend: Literal["torch", "onnx", "openvino"] = "torch",
    quantize: bool = False,
    batch_size: int = 64,
    label: str = "",
    groups: Sequence[Sequence[int]] | None = None,
) -> list[EncodeShard]:
    """The shards of `texts` (row ids `ids`), each with its cache file under `folder`: the rows at the
    positions of each of `groups` (`ShardGroups.assign`), or content-defined ranges (`plan_shards`)."""
    if len(texts) != len(ids):
        raise ValueError(f"{len(texts)} texts for {len(ids)} ids")
    head = f"{model_id}|{role}|{kind}|{max_seq_length}|{backend}|{quantize}"
    if groups is None:
        groups = [range(a, b) for a, b in plan_shards(ids, size)]
    specs = []
    for n, rows in enumerate(groups):
        shard_texts = [texts[i] for i in rows]
        h = hashlib.sha256(head.encode())
        for t in shard_texts:
            h.update(b"\x00" + t.encode("utf-8"))
        key = h.hexdigest()[:24]
        specs.append(
            EncodeShard(
                index=n,
                role=role,
                key=key,
                label=label,
                # SPLADE's sparse rows are a scipy CSR matrix in .npz; dense rows a float32 .npy
                out=str(folder / f"{role}-{key}.{'npz' if kind == 'splade' else 'npy'}"),
                texts=shard_texts,
                ids=[ids[i] for i in rows],
                model_path=model_path,
                kind=kind,
                max_seq_length=max_seq_length,
                backend=backend,
                quantize=quantize,
                batch_size=batch_size,
            )
        )
    return specs


@contextlib.contextmanager
def _atomic(out: Path) -> Iterator[Path]:
    """A temporary name next to `out` to write to, renamed to `out` when the block ends well (a kill
    leaves a `.part-<pid>` file, which is never read and is removed once every shard is in place)."""
    tmp = out.with_name(f"{out.stem}.part-{os.getpid()}{out.suffix}")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@lru_cache(maxsize=2)
def _encoder(
    model_path: str, kind: str, max_seq_length: int | None, backend: str, quantize: bool
) -> tuple[Any, str]:
    # One load per worker process and model, not one per shard.
    from distiller.retrieval.models import load_encoder

    return load_encoder(
        model_path,
        kind=kind,  # type: ignore[arg-type]
        max_seq_length=max_seq_length,
        backend=backend,  # type: ignore[arg-type]
        quantize=quantize,
    )


def encode_shard(spec: EncodeShard) -> ShardDone:
    """Encode one shard into its file (atomically), or report it cached."""
    t0 = time.perf_counter()
    out = Path(spec.out)
    if out.is_file():
        return ShardDone(index=spec.index, out=spec.out, rows=len(spec.texts), cached=True, seconds=0.0)
    from distiller.retrieval.index import encode_dense, encode_sparse

    model, used = _encoder(spec.model_path, spec.kind, spec.max_seq_length, spec.backend, spec.quantize)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _atomic(out) as tmp:
        if spec.kind == "splade":
            import scipy.sparse as sp

            sp.save_npz(tmp, encode_sparse(model, spec.texts, spec.role, spec.batch_size, progress=False))
        else:
            encode_dense(model, spec.texts, spec.role, spec.batch_size, path=tmp, progress=False)
    return ShardDone(
        index=spec.index,
        out=spec.out,
        rows=len(spec.texts),
        cached=False,
        seconds=round(time.perf_counter() - t0, 3),
        encoder=used,
    )


class SearchShard(BaseModel):
    """One query shard searched over a sharded corpus: the top k of each of its `rows` (positions in the
    query shard file; their ids `ids`) among the corpus rows at the stored positions in `select`."""

    model_config = ConfigDict(frozen=True)

    index: int
    key: str
    label: str = ""
    out: str
    corpus: list[str]
    select: str
    """An .npy of stored corpus positions: the rows searched (e.g. the training passages), in order."""
    queries: str
    rows: list[int]
    ids: list[str]
    k: int

    @property
    def done(self) -> bool:
        return Path(self.out).is_file()

    @property
    def cost(self) -> int:
        """What searching it takes: its queries (every search scans the same corpus)."""
        return len(self.rows)


def search_shards(
    corpus: list[EncodeShard],
    select_ids: Sequence[str],
    queries: list[EncodeShard],
    query_ids: Sequence[str],
    k: int,
    folder: Path,
    label: str = "",
    *,
    write: bool = True,
) -> list[SearchShard]:
    """The searches of the queries with ids `query_ids` (each in its query shard) over the corpus rows
    with ids `select_ids`: one per query shard holding any. The selection is written to `folder` here
    (small: 8 bytes a row), so a worker reads it instead of receiving it with every shard; `write=False`
    only names the files (what a prune keeps)."""
    where = {rid: n for n, rid in enumerate(r for s in corpus for r in s.ids)}
    select = np.fromiter((where[rid] for rid in select_ids), dtype=np.int64, count=len(select_ids))
    h = hashlib.sha256(select.tobytes())
    for s in corpus:
        h.update(s.key.encode())
    sel_key = h.hexdigest()[:24]
    sel_path = folder / f"select-{sel_key}.npy"
    if write and not sel_path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        with _atomic(sel_path) as tmp:
            np.save(tmp, select)
    wanted = set(query_ids)
    # the search's own settings: k and how ties are broken (index.TIE_DECIMALS)
    from distiller.retrieval.index import TIE_DECIMALS

    out: list[SearchShard] = []
    for qs in queries:
        rows = [n for n, rid in enumerate(qs.ids) if rid in wanted]
        if not rows:
            continue
        key = hashlib.sha256(f"{sel_key}|{qs.key}|{rows}|{k}|{TIE_DECIMALS}".encode()).hexdigest()[:24]
        out.append(
            SearchShard(
                index=len(out),
                key=key,
                label=label,
                out=str(folder / f"search-{key}.npz"),
                corpus=[s.out for s in corpus],
                select=str(sel_path),
                queries=qs.out,
                rows=rows,
                ids=[qs.ids[n] for n in rows],
                k=k,
            )
        )
    return out


def search_shard(spec: SearchShard) -> ShardDone:
    """Search one query shard over the corpus shards into its .npz (scores, corpus rows), atomically."""
    t0 = time.perf_counter()
    out = Path(spec.out)
    if out.is_file():
        return ShardDone(index=spec.index, out=spec.out, rows=len(spec.rows), cached=True, seconds=0.0)
    from distiller.retrieval.index import QUERY_BATCH, EncodedCorpus, _search_dense

    corpus = EncodedCorpus(
        ShardedEmbeddings([Path(p) for p in spec.corpus], np.load(spec.select)), sparse=False
    )
    q = np.asarray(np.load(spec.queries, mmap_mode="r")[np.asarray(spec.rows, dtype=np.int64)], np.float32)
    k = min(spec.k, len(corpus))
    parts = [_search_dense(corpus, q[s : s + QUERY_BATCH], k) for s in range(0, len(q), QUERY_BATCH)]
    with _atomic(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, scores=np.concatenate([d for d, _ in parts]), rows=np.concatenate([i for _, i in parts]))
    return ShardDone(
        index=spec.index,
        out=spec.out,
        rows=len(spec.rows),
        cached=False,
        seconds=round(time.perf_counter() - t0, 3),
    )


def gather_searches(specs: list[SearchShard], ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The searches' (scores, corpus rows), one row per id of `ids`, in that order."""
    at: dict[str, tuple[int, int]] = {}
    parts = []
    for n, s in enumerate(specs):
        with np.load(s.out) as z:
            parts.append((z["scores"], z["rows"]))
        at.update({rid: (n, r) for r, rid in enumerate(s.ids)})
    k = max((p[0].shape[1] for p in parts), default=0)
    scores = np.full((len(ids), k), -np.inf, dtype=np.float32)
    rows = np.full((len(ids), k), -1, dtype=np.int64)
    for j, rid in enumerate(ids):
        n, r = at[rid]
        d, i = parts[n]
        scores[j, : d.shape[1]], rows[j, : i.shape[1]] = d[r], i[r]
    return scores, rows


class _Costed(Protocol):
    @property
    def cost(self) -> int: ...


Costed = TypeVar("Costed", bound=_Costed)


def largest_first(specs: Sequence[Costed]) -> list[Costed]:
    """The shards in the order to hand them to workers: the costliest first (longest processing time
    first), so that the last shards to finish are short ones and no worker idles while another ends a
    big one; content-defined shards differ in size up to 8x. Ties keep the plan's order."""
    return sorted(specs, key=lambda s: -s.cost)


Mapper = Callable[[Callable[[EncodeShard], ShardDone], list[EncodeShard]], list[ShardDone]]


def serial_map(fn: Callable[[EncodeShard], ShardDone], specs: list[EncodeShard]) -> list[ShardDone]:
    from distiller.progress import Counter

    counter = Counter("encoding shards", len(specs), "shards")
    out = []
    for n, s in enumerate(specs, 1):
        out.append(fn(s))
        counter.update(n)
    return out


def encode_shards(
    specs: list[EncodeShard], mapper: Mapper | None = None, select: Sequence[str] | None = None
) -> tuple[Any, list[ShardDone]]:
    """Encode the shards not on disk yet (with `mapper`, a loop by default) and open them all: as the
    rows with ids `select` in that order (the specs must carry their ids), or all rows in shard order.
    Dense shards open as a `ShardedEmbeddings` (memory maps); SPLADE's as one scipy CSR matrix."""
    todo = [s for s in specs if not s.done]
    done = (mapper or serial_map)(encode_shard, todo) if todo else []
    missing = [s.out for s in specs if not s.done]
    if missing:
        raise RuntimeError(f"{len(missing)} shard files missing after encoding, e.g. {missing[0]}")
    # Every shard is in place: a part file left is a kill's torn write, never read; remove it.
    for folder in {Path(s.out).parent for s in specs}:
        for torn in folder.glob("*.part-*.np[yz]"):
            with contextlib.suppress(FileNotFoundError):
                torn.unlink()
    rows = None
    if select is not None:
        where = {rid: n for n, rid in enumerate(r for s in specs for r in s.ids)}
        lost = [rid for rid in select if rid not in where]
        if lost:
            raise KeyError(f"{len(lost)} rows are in no shard, e.g. {lost[0]!r}")
        rows = np.fromiter((where[rid] for rid in select), dtype=np.int64, count=len(select))
    if specs and specs[0].kind == "splade":
        import scipy.sparse as sp

        parts = [sp.load_npz(s.out) for s in specs]
        dim = max(p.shape[1] for p in parts)
        # rows of another vocabulary width cannot come from one model; pad only for safety of vstack
        matrix = sp.vstack(
            [p if p.shape[1] == dim else sp.csr_matrix(p, shape=(p.shape[0], dim)) for p in parts]
        )
        matrix = matrix.tocsr()
        return (matrix if rows is None else matrix[rows]), done
    return ShardedEmbeddings([Path(s.out) for s in specs], rows), done


class ShardedEmbeddings:
    """Shard files read as one (n, dim) float32 matrix, without loading them into memory.

    `rows` (optional): the stored position (shard files concatenated) of each row the matrix shows, in
    the order it shows them, e.g. the training passages only, in the caller's passage order. Without
    it, the matrix is every stored row in stored order."""

    def __init__(self, paths: Sequence[Path], rows: np.ndarray | None = None) -> None:
        self.parts: list[np.ndarray] = [np.load(p, mmap_mode="r") for p in paths]
        sizes = [len(p) for p in self.parts]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        dims = {p.shape[1] for p in self.parts}
        if len(dims) > 1:
            raise ValueError(f"shards of different dimensions: {sorted(dims)}")
        self.dim = dims.pop() if dims else 0
        self.dtype = np.dtype(np.float32)
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if (
            self.rows is not None
            and self.rows.size
            and (self.rows.min() < 0 or self.rows.max() >= self.offsets[-1])
        ):
            raise IndexError(f"stored row out of range for {int(self.offsets[-1])} rows")

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.rows is None else len(self.rows)

    def blocks(self, block: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(row numbers, rows) per shard, in pieces of at most `block` rows: each shard is read once,
        in stored order, and only the rows this matrix shows."""
        if self.rows is None:
            for off, part in zip(self.offsets[:-1], self.parts, strict=True):
                for s in range(0, len(part), block):
                    n = min(block, len(part) - s)
                    yield np.arange(int(off) + s, int(off) + s + n, dtype=np.int64), part[s : s + block]
            return
        order = np.argsort(self.rows, kind="stable")
        stored = self.rows[order]
        bounds = np.searchsorted(stored, self.offsets)
        for n, part in enumerate(self.parts):
            a, b = int(bounds[n]), int(bounds[n + 1])
            for s in range(a, b, block):
                e = min(s + block, b)
                yield order[s:e], part[stored[s:e] - self.offsets[n]]

    def _gather(self, stored: np.ndarray) -> np.ndarray:
        which = np.searchsorted(self.offsets, stored, side="right") - 1
        out = np.empty((len(stored), self.dim), dtype=np.float32)
        for s in np.unique(which):
            mask = which == s
            out[mask] = self.parts[s][stored[mask] - self.offsets[s]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1 or self.rows is not None:
                return self[np.arange(start, stop, step)]
            pieces = []
            for off, part in zip(self.offsets[:-1], self.parts, strict=True):
                a, b = max(start - off, 0), min(stop - off, len(part))
                if a < b:
                    pieces.append(np.asarray(part[a:b]))
            return np.concatenate(pieces) if pieces else np.empty((0, self.dim), np.float32)
        rows = np.asarray(key, dtype=np.int64)
        if rows.ndim == 0:
            return self[rows.reshape(1)][0]
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"row out of range for {len(self)} rows")
        rows = np.where(rows < 0, rows + len(self), rows)
        return self._gather(rows if self.rows is None else self.rows[rows])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[0 : len(self)]
        return arr.astype(dtype) if dtype is not None else arr


__all__ = [
    "EncodeShard",
    "Mapper",
    "SearchShard",
    "ShardDone",
    "ShardGroups",
    "ShardedEmbeddings",
    "encode_shard",
    "encode_shards",
    "gather_searches",
    "largest_first",
    "plan_shards",
    "search_shard",
    "search_shards",
    "serial_map",
    "shard_specs",
]
