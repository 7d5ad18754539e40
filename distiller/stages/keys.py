"""Cache-key helpers, in one place: each stage's key is `store.stage_key(stage, VERSION, config part,
inputs)`, where the config part comes from `config_hash` (the sections the stage reads) and the inputs
are the artifacts and input files it reads, by content."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from distiller.config import DistillConfig
from distiller.store import stage_key


def input_file_hashes(cfg: DistillConfig) -> list[str]:
    """The contents' hashes of the input files (`input.paths`), sorted."""
    from distiller.ingest.readers import expand_inputs
    from distiller.store import sha256_file

    files, _ = expand_inputs(cfg.input.paths)
    # Contents only, sorted: moving or renaming the corpus keeps the key.
    return sorted(sha256_file(f) for f in files)


def config_hash(cfg: DistillConfig, *sections: str, exclude: dict[str, set[str]] | None = None) -> str:
    """A stable hash of the named config sections (less the `exclude`d fields of each) and the seed: the
    part of the config a stage depends on."""
    dumped = cfg.model_dump(mode="json")
    payload: dict[str, Any] = {"seed": cfg.seed}
    for s in sections:
        value = dumped[s]
        if exclude and s in exclude and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in exclude[s]}
        payload[s] = value
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


__all__ = ["config_hash", "input_file_hashes", "stage_key"]
