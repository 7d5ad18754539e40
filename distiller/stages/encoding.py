"""Sharded encoding for the stages that encode a corpus with a model (mine, evaluate): where a model's
shards live in the run folder, which shards a stage needs, and encoding the missing ones.

A model's shards cover a whole row set (every passage, every query) in the run's kept shard groups
(`ShardGroups`, `shards/groups-<role>.parquet`), so mining (training rows) and evaluation (all rows) of
the same model share them, and rows added to a finished run land in new shards. A stage run alone
encodes its missing shards in a loop; the flow encodes them first as mapped Prefect tasks (on Dask: one
shard per worker at a time), so the stage finds them all on disk.

A model's shard folder is pruned by the stages that read it: a file no current plan of mining or evaluation
names (the old version of a group topped up with new rows, searches of encodings gone) is removed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from distiller.config import DistillConfig
from distiller.records import Passage, Query
from distiller.retrieval.index import EncodedCorpus
from distiller.retrieval.shards import (
    EncodeShard,
    Mapper,
    Role,
    SearchShard,
    ShardGroups,
    encode_shards,
    search_shards,
    shard_specs,
)
from distiller.store import RunStore, sha256_path

SHARDS_DIR = "shards"
DEDUP_GROUPS = "dedup"
"""The groups (`groups-dedup.parquet`) of generation's near-duplicate check, in the base model's folder."""
SHARD_FILE = re.compile(r"(document|query|search|select)-[0-9a-f]{24}\.np[yz]")
"""A model folder's files: encodings, searches and their selections (not a `.part-` file being written)."""


def sharded(cfg: DistillConfig) -> bool:
    """Whether mining and evaluation encode in shards (dense or SPLADE students alike)."""
    return cfg.encoding.shard_size > 0


def backend_tag(cfg: DistillConfig) -> str:
    """What the encoding backend adds to a cache key: nothing for plain torch (so keys made before the
    setting existed still match), else the backend and quantisation, which change embeddings slightly."""
    e = cfg.encoding
    return "" if (e.backend, e.quantize) == ("torch", False) else f"|{e.backend}|{e.quantize}"


def load_encoder_for(cfg: DistillConfig, model_path: str) -> tuple[Any, str]:
    """The model at `model_path` for encoding, on the run's encoding backend."""
    from distiller.retrieval.models import load_encoder

    return load_encoder(
        model_path,
        kind=cfg.training.kind,
        max_seq_length=cfg.training.max_seq_length,
        backend=cfg.encoding.backend,
        quantize=cfg.encoding.quantize,
    )


def model_identity(model_id: Path | str) -> str:
    """What names a model in cache and shard keys: a trained model's folder (~90 MB) by its files' hash,
    so a stage hashes it once and passes this on; any other model by its name. `stage_key` gives a
    folder and its hash the same key."""
    return sha256_path(model_id) if isinstance(model_id, Path) else model_id


def model_folder(store: RunStore, model_id: Path | str) -> Path:
    """The folder of one model's shard files."""
    return _folder(store, model_identity(model_id))


def assign_groups(store: RunStore, kind: str, ids: Sequence[str], size: int) -> list[list[int]]:
    """The run's shard groups of `ids` (`ShardGroups`, `shards/groups-<kind>.parquet`); new ones are
    pushed to the `storage_url` mirror at once, so a stage on another machine plans the same shards."""
    groups = ShardGroups(store.path(SHARDS_DIR) / f"groups-{kind}.parquet")
    out = groups.assign(ids, size)
    if groups.saved and store.mirror is not None:
        store.mirror.push([groups.path])
    return out


def _folder(store: RunStore, ident: str) -> Path:
    return store.path(SHARDS_DIR) / hashlib.sha256(ident.encode()).hexdigest()[:16]


def specs_for(
    store: RunStore,
    cfg: DistillConfig,
    model_path: str,
    model_id: Path | str,
    texts: Sequence[str],
    ids: Sequence[str],
    role: Role,
    label: str = "",
    groups: str | None = None,
    rows: Sequence[Sequence[int]] | None = None,
) -> list[EncodeShard]:
    """The shards of one model's encoding of `texts` (ids `ids`: the whole row set, so that every stage
    encoding with that model reads the same shards), in the run's shard groups (`rows`, when the caller
    assigned them already: one `assign_groups` for all the models of a stage)."""
    ident = model_identity(model_id)
    if rows is None:
        rows = assign_groups(store, groups or role, ids, cfg.encoding.shard_size)
    return shard_specs(
        texts,
        ids,
        role,
        model_path,
        ident,
        _folder(store, ident),
        cfg.encoding.shard_size,
        kind=cfg.training.kind,
        max_seq_length=cfg.training.max_seq_length,
        backend=cfg.encoding.backend,
        quantize=cfg.encoding.quantize,
        batch_size=cfg.mining.encode_batch_size,
        label=label,
        groups=rows,
    )


def train_passages(passages: list[Passage], queries: list[Query]) -> list[Passage]:
    """The passages mining searches: those of documents with a training query. A held-out passage must
    never be seen in training, not even as a negative."""
    train_docs = {q.doc_id for q in queries if q.split == "train"}
    return [p for p in passages if p.doc_id in train_docs]


def searches_for(
    stage: Literal["mine", "evaluate"],
    cfg: DistillConfig,
    docs: list[EncodeShard],
    qs: list[EncodeShard],
    passages: list[Passage],
    queries: list[Query],
    label: str = "",
    *,
    write: bool = True,
) -> list[SearchShard]:
    """A stage's exact searches with the model of `docs` (every passage) and `qs` (every query), one per
    query shard holding any: mining's of the training queries over the training passages (none past
    `exact_index_max_corpus`, where an approximate index is built instead), evaluation's of the held-out
    queries over every passage. None for a SPLADE student: its stages search its sparse matrix."""
    if not docs or cfg.training.kind != "dense":
        return []
    if stage == "mine":
        corpus, split, k = train_passages(passages, queries), "train", cfg.mining.top_k
        exact_max = cfg.mining.exact_index_max_corpus
        if exact_max is not None and len(corpus) > exact_max:
            return []
    else:
        from distiller.retrieval.evaluation import eval_depth  # ir_measures: not at the CLI's start-up

        corpus, split, k = passages, "test", eval_depth(cfg.evaluation.ks)
        if not corpus:
            return []
    return search_shards(
        docs,
        [p.passage_id for p in corpus],
        qs,
        [q.query_id for q in queries if q.split == split],
        min(k, len(corpus)),
        Path(docs[0].out).parent,
        label,
        write=write,
    )


def encode_all(
    specs: list[EncodeShard], select: Sequence[str], mapper: Mapper | None = None
) -> tuple[EncodedCorpus, dict[str, Any]]:
    """Encode the shards not on disk (resume: the finished ones are kept) and open them as one matrix of
    the rows `select` (ids, in the stage's order); with what was done, for the stage's details."""
    emb, done = encode_shards(specs, mapper, select)
    sparse = hasattr(emb, "multiply")  # a SPLADE student's CSR matrix
    details: dict[str, Any] = {
        "shards": len(specs),
        "shards_encoded": sum(not d.cached for d in done),
        "shards_reused": len(specs) - sum(not d.cached for d in done),
        **encoder_detail(*(d.encoder for d in done)),
    }
    return EncodedCorpus(emb, sparse=sparse), details


def dedup_encoder(store: RunStore, cfg: DistillConfig) -> Any:
    """Generation's near-duplicate check's `Encoder` (texts -> embeddings) by the base student, in the
    run's shards (rows named by their text's hash, grouped apart from the queries in `groups-dedup`): a
    rerun after new documents encodes only the new queries. None for a SPLADE run or with shards off
    (the check then encodes dense, in one go)."""
    if not sharded(cfg) or cfg.training.kind != "dense":
        return None
    import numpy as np

    from distiller.stages.common import model_ref

    path, ident = model_ref(store, cfg, 1)

    def encode(texts: list[str]) -> Any:
        unique = list(dict.fromkeys(texts))
        ids = [hashlib.sha256(t.encode()).hexdigest()[:20] for t in unique]
        specs = specs_for(store, cfg, path, ident, unique, ids, "query", "generate-dedup", DEDUP_GROUPS)
        emb, _ = encode_shards(specs, select=ids)
        row = {t: n for n, t in enumerate(unique)}
        return np.asarray(emb[np.array([row[t] for t in texts], dtype=np.int64)], dtype=np.float32)

    return encode


def prune_shards(store: RunStore, keep: Iterable[EncodeShard]) -> int:
    """Remove the shard folders of models other than those of `keep` (the models of this run: the base
    and each iteration), i.e. of iterations an earlier training of this run folder wrote and a retraining
    replaced: at 4 bytes x 384 dimensions a model's shards of 10M passages are 15 GB. Returns how many."""
    import shutil

    root = store.path(SHARDS_DIR)
    live = {Path(s.out).parent.resolve() for s in keep}
    gone = 0
    for folder in root.iterdir() if root.is_dir() else []:
        is_model = re.fullmatch(r"[0-9a-f]{16}", folder.name) is not None  # not shards/ingest
        if is_model and folder.is_dir() and folder.resolve() not in live:
            shutil.rmtree(folder, ignore_errors=True)
            gone += 1
    return gone


def prune_model_files(
    store: RunStore, cfg: DistillConfig, specs: list[EncodeShard], searches: Iterable[SearchShard]
) -> int:
    """Remove the files of the shard folder of `specs` (one model's encodings of every group of every
    passage and query: what mining and evaluation both read) that neither those nor `searches` name. The
    caller passes the searches of both stages with that model (the one reading only training rows, the
    other held-out ones), so a file one stage does not use but the other does stays. Gone: the old
    version of a group topped up with new rows (or whose texts changed), and the searches and selections
    of encodings gone. Query shards stay in the base model's folder when generation's near-duplicate
    check keeps its own there (`dedup_encoder`: in groups of its own, which no stage here plans). Returns
    how many files went."""
    if not specs:
        return 0
    folder = Path(specs[0].out).parent
    live = {Path(s.out).name for s in specs}
    for s in searches:
        live |= {Path(s.out).name, Path(s.select).name}
    shared = _dedup_shares(store, cfg, folder)
    gone = 0
    for f in folder.iterdir() if folder.is_dir() else []:
        kind = SHARD_FILE.fullmatch(f.name)
        if kind is None or f.name in live or (shared and kind.group(1) == "query"):
            continue
        f.unlink(missing_ok=True)
        gone += 1
    return gone


def _dedup_shares(store: RunStore, cfg: DistillConfig, folder: Path) -> bool:
    """Whether generation's near-duplicate check has query shards in `folder` (the base model's)."""
    from distiller.stages.common import model_ref

    groups = store.path(SHARDS_DIR) / f"groups-{DEDUP_GROUPS}.parquet"
    return groups.is_file() and model_folder(store, model_ref(store, cfg, 1)[1]) == folder


def encoder_detail(*names: str | list[str] | None) -> dict[str, Any]:
    """A stage's `encoder` detail from what its encodings ran on (each a name, a list of names, or
    nothing): one name, the sorted names, or no detail when it encoded nothing and loaded no model."""
    found = sorted({n for v in names for n in ([v] if isinstance(v, str) else v or []) if n})
    return {"encoder": found[0] if len(found) == 1 else found} if found else {}


def merge_details(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"shards": 0, "shards_encoded": 0, "shards_reused": 0}
    for p in parts:
        for k in out:
            out[k] += p.get(k, 0)
    return out | encoder_detail(*(p.get("encoder") for p in parts))


__all__ = [
    "assign_groups",
    "backend_tag",
    "dedup_encoder",
    "encode_all",
    "encoder_detail",
    "load_encoder_for",
    "merge_details",
    "model_folder",
    "model_identity",
    "prune_model_files",
    "prune_shards",
    "searches_for",
    "sharded",
    "specs_for",
    "train_passages",
]
