"""Sharded encoding for the stages that encode a corpus with a model (mine, evaluate): where a model's
shards live in the run folder, which shards a stage needs, and encoding the missing ones.

A model's shards cover a whole row set (every passage, every query) in the run's kept shard groups
(`ShardGroups`, `shards/groups-<role>.parquet`), so mining (training rows) and evaluation (all rows) of
the same model share them, and rows added to a finished run land in new shards. A stage run alone
encodes its missing shards in a loop; the flow encodes them first as mapped Prefect tasks (on Dask: one
shard per worker at a time), so the stage finds them all on disk.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.retrieval.index import EncodedCorpus
from distiller.retrieval.shards import (
    EncodeShard,
    Mapper,
    Role,
    ShardGroups,
    encode_shards,
    shard_specs,
)
from distiller.store import RunStore, sha256_path

SHARDS_DIR = "shards"


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


def _identity(model_id: Path | str) -> str:
    # A trained model is named by its files' hash (hashed once per call: a model folder is ~90 MB).
    return sha256_path(model_id) if isinstance(model_id, Path) else model_id


def model_folder(store: RunStore, model_id: Path | str) -> Path:
    """The folder of one model's shard files."""
    return _folder(store, _identity(model_id))


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
) -> list[EncodeShard]:
    """The shards of one model's encoding of `texts` (ids `ids`: the whole row set, so that every stage
    encoding with that model reads the same shards), in the run's shard groups."""
    ident = _identity(model_id)
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
        groups=assign_groups(store, groups or role, ids, cfg.encoding.shard_size),
    )


def encode_all(
    specs: list[EncodeShard], select: Sequence[str], mapper: Mapper | None = None
) -> tuple[EncodedCorpus, dict[str, Any]]:
    """Encode the shards not on disk (resume: the finished ones are kept) and open them as one matrix of
    the rows `select` (ids, in the stage's order); with what was done, for the stage's details."""
    emb, done = encode_shards(specs, mapper, select)
    sparse = hasattr(emb, "multiply")  # a SPLADE student's CSR matrix
    encoders = sorted({d.encoder for d in done if d.encoder})
    details: dict[str, Any] = {
        "shards": len(specs),
        "shards_encoded": sum(not d.cached for d in done),
        "shards_reused": len(specs) - sum(not d.cached for d in done),
    }
    if encoders:
        details["encoder"] = encoders[0] if len(encoders) == 1 else encoders
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
        specs = specs_for(store, cfg, path, ident, unique, ids, "query", "generate-dedup", groups="dedup")
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


def merge_details(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"shards": 0, "shards_encoded": 0, "shards_reused": 0}
    for p in parts:
        for k in out:
            out[k] += p.get(k, 0)
        if "encoder" in p:
            out["encoder"] = p["encoder"]
    return out


__all__ = [
    "assign_groups",
    "backend_tag",
    "dedup_encoder",
    "encode_all",
    "load_encoder_for",
    "merge_details",
    "model_folder",
    "prune_shards",
    "sharded",
    "specs_for",
]
