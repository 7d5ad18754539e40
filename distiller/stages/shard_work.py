"""One shard (an ingest file group, a generation chunk group, an encoding of passages or queries, a
search) done where it is scheduled: on
the flow's machine, or on a Dask worker of another machine.

Workers share the run folder through a shared file system, or through `storage_url`: each machine then
has its own copy of the run folder, so a shard planned on the flow's machine is written into this
machine's copy (the same place relative to the run folder), with a model this run trained fetched from
the mirror first, and pushed to the mirror when done. The stage that reads the shards opens its run
folder by pulling the mirror (`open_store`), and so finds every shard wherever it was made.

An LLM shard (generate, judge) spends money, so it does more (`distiller.generation.grants`): it fetches
its folder (grant, and what earlier executions journaled), journals in a file of its own, pushes a hold
on what it may spend before its first call, and pushes only its own files, so a worker killed with
`kill -9` stays charged on the flow's machine and a rerun of its task does not spend its grant again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.generation.grants import GrantedDone, GrantedShard
from distiller.generation.judge_shards import JudgeShard, judge_shard
from distiller.generation.shards import GenerateShard, generate_shard
from distiller.ingest.shards import IngestDone, IngestShard, ingest_shard
from distiller.retrieval.shards import (
    EncodeShard,
    SearchShard,
    ShardDone,
    encode_shard,
    search_shard,
)

RUN_DEPTH = 2
"""A shard's output sits at <run>/shards/<model or "ingest">/<name>: the run folder is its parents[2]."""


def _here(spec: Any, run_dir: Path, mirror: Any) -> Any:
    """The spec with its paths in this machine's copy of the run folder."""
    planned = Path(spec.out).parents[RUN_DEPTH]
    update: dict[str, Any] = {}
    if planned != run_dir:
        update["out"] = str(run_dir / Path(spec.out).relative_to(planned))

    def here(p: str) -> Path:
        return run_dir / Path(p).relative_to(planned)

    if isinstance(spec, SearchShard):
        # the corpus and query shards it searches: this machine's copies, fetched from the mirror
        needed = [here(p) for p in (*spec.corpus, spec.select, spec.queries)]
        if not all(p.is_file() for p in needed):
            mirror.pull_run(only=Path(spec.out).parent.relative_to(planned).as_posix() + "/")
        update |= {"corpus": [str(p) for p in needed[:-2]], "select": str(needed[-2])}
        update["queries"] = str(needed[-1])
    if isinstance(spec, GrantedShard):
        # its grant (`grant.json`, which the fence reads) and what its earlier executions journaled
        mirror.pull_run(only=Path(spec.out).relative_to(planned).as_posix() + "/")
    if isinstance(spec, EncodeShard) and Path(spec.model_path).is_relative_to(planned):
        # a model this run trained (models/iterK): its files come from the mirror
        model = here(spec.model_path)
        if not (model / "config.json").is_file() and not (model / "modules.json").is_file():
            mirror.pull_run(only=model.relative_to(run_dir).as_posix() + "/")
        update["model_path"] = str(model)
    return spec.model_copy(update=update) if update else spec


Spec = EncodeShard | IngestShard | SearchShard | GenerateShard | JudgeShard


def run_shard(spec: Spec, cfg: DistillConfig) -> ShardDone | IngestDone | GrantedDone:
    """Do one shard here; with `storage_url`, in this machine's copy of the run and pushed when done."""
    from distiller.remote import remote_for

    mirror = remote_for(cfg)
    if mirror is not None:
        spec = _here(spec, mirror.run_dir, mirror)
    done: ShardDone | IngestDone | GrantedDone
    if isinstance(spec, GenerateShard):
        # With a mirror it journals in a file of its own, holds its grant on the mirror before its first
        # call, and pushes its own files when it ends, failed or not (`distiller.generation.grants`).
        return generate_shard(spec, remote=mirror)
    if isinstance(spec, JudgeShard):
        return judge_shard(spec, remote=mirror)
    if isinstance(spec, EncodeShard):
        done = encode_shard(spec)
    elif isinstance(spec, SearchShard):
        done = search_shard(spec)
    else:
        done = ingest_shard(spec)
    if mirror is not None and not done.cached:
        mirror.push([Path(spec.out)])
    return done


__all__ = ["run_shard"]
