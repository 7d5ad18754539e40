"""Ingest: read and chunk the input documents into sources.parquet and chunks.parquet; in shards of
`input.files_per_shard` files (`distiller.ingest.shards`), each a part folder in the run's shards/ingest,
merged in input order."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distiller.config import DistillConfig
from distiller.records import Chunk, Document, SkippedInput, write_parquet
from distiller.stages.common import Progress, shards_note
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, sha256_file, stage_key

if TYPE_CHECKING:
    from distiller.ingest.shards import IngestDone, IngestShard

log = logging.getLogger("distiller")

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "1"
PARTS_DIR = "shards/ingest"
OUTPUTS = ["sources.parquet", "chunks.parquet"]
IngestMapper = Callable[[Callable[["IngestShard"], "IngestDone"], list["IngestShard"]], list["IngestDone"]]


class _Plan:
    """The input files, their hashes and the stage's key: shared by the stage and its shard plan."""

    def __init__(self, store: RunStore, cfg: DistillConfig) -> None:
        from distiller.ingest import expand_inputs
        from distiller.ingest.chunking import chunk_tokenizer

        self.paths, self.skipped = expand_inputs(cfg.input.paths)
        self.hashes = {str(p): sha256_file(p) for p in self.paths}
        # How files are grouped never changes what ingest writes: not in any key.
        self.settings = config_hash(
            cfg, "input", "chunking", exclude={"input": {"paths", "files_per_shard"}}
        ) + chunk_tokenizer(cfg)
        # Contents only, sorted: moving or renaming the corpus keeps the key.
        self.key = stage_key("ingest", VERSION, self.settings, sorted(self.hashes.values()))

    def shards(self, store: RunStore, cfg: DistillConfig) -> list[IngestShard]:
        from distiller.ingest.shards import IngestShard, part_key
        from distiller.stages.encoding import assign_groups

        names = [str(p) for p in self.paths]
        groups = assign_groups(store, "file", names, cfg.input.files_per_shard)
        specs = []
        for n, rows in enumerate(groups):
            paths = [names[i] for i in rows]
            key = part_key(paths, self.hashes, f"{VERSION}|{self.settings}")
            specs.append(
                IngestShard(index=n, key=key, out=str(store.path(PARTS_DIR) / key), paths=paths, config=cfg)
            )
        return specs


def sharded(cfg: DistillConfig) -> bool:
    return cfg.input.files_per_shard > 0


def shard_plan(store: RunStore, cfg: DistillConfig) -> list[IngestShard]:
    """The file groups ingest still needs to read (none when it is cached or not sharded): what the flow
    fans out before the stage runs."""
    if not sharded(cfg):
        return []
    plan = _Plan(store, cfg)
    if store.cache.lookup("ingest", plan.key, OUTPUTS) is not None:
        return []
    return [s for s in plan.shards(store, cfg) if not s.done]


def _read_sharded(
    store: RunStore, plan: _Plan, cfg: DistillConfig, progress: Progress | None, mapper: IngestMapper | None
) -> tuple[Any, dict[str, int]]:
    from distiller.ingest import merge
    from distiller.ingest.shards import ingest_shard, load_part, remove_torn

    specs = plan.shards(store, cfg)
    todo = [s for s in specs if not s.done]
    if mapper is not None:
        done = mapper(ingest_shard, todo)
    else:  # in this process: the progress bar sees each file
        done = [ingest_shard(s, on_file=progress) for s in todo]
    parts = store.path(PARTS_DIR)
    remove_torn(parts)
    reads = {r.path: r for s in specs for r in load_part(Path(s.out))}
    result = merge([reads[str(p)] for p in plan.paths], plan.skipped)
    # Parts of groups whose files changed or went: never read again.
    live = {Path(s.out).name for s in specs}
    pruned = 0
    for old in parts.iterdir():
        if old.is_dir() and old.name not in live and re.fullmatch(r"[0-9a-f]{24}", old.name):
            import shutil

            shutil.rmtree(old, ignore_errors=True)
            pruned += 1
    encoded = sum(not d.cached for d in done)
    return result, {
        "shards": len(specs),
        "shards_read": encoded,
        "shards_reused": len(specs) - encoded,
        "shard_parts_pruned": pruned,
    }


def ingest_stage(
    store: RunStore,
    cfg: DistillConfig,
    progress: Progress | None = None,
    mapper: IngestMapper | None = None,
) -> StageResult:
    from distiller.ingest import ingest

    plan = _Plan(store, cfg)

    def run() -> dict[str, Any]:
        shards: dict[str, int] = {}
        if sharded(cfg):
            result, shards = _read_sharded(store, plan, cfg, progress, mapper)
        else:
            result = ingest(cfg, on_file=progress)
        write_parquet(store.path("sources.parquet"), result.documents, Document)
        write_parquet(store.path("chunks.parquet"), result.chunks, Chunk)
        skipped = [s.model_dump() for s in result.skipped]
        for s in result.skipped:
            log.warning("skipped %s%s: %s", s.path, f":{s.line}" if s.line else "", s.reason)
        return {
            "message": f"{len(result.documents)} documents, {len(result.chunks)} chunks, "
            f"{len(result.skipped)} skipped" + shards_note(shards, "read"),
            "details": {
                "documents": len(result.documents),
                "skipped_inputs": skipped,
                "short_chunks_dropped": result.short_chunks_dropped,
                "duplicate_documents": result.duplicates,
                "tokens": sum(c.n_tokens for c in result.chunks),
                **shards,
            },
        }

    res = store.run_stage("ingest", plan.key, OUTPUTS, run)
    store.update_manifest(lambda m: m.__setitem__("skipped_inputs", res.details.get("skipped_inputs", [])))
    return res


__all__ = ["SkippedInput", "ingest_stage", "shard_plan", "sharded"]
