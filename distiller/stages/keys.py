"""Cache-key helpers, in one place: each stage's key is `store.stage_key(stage, VERSION, config part,
inputs)`, where the config part comes from `config_hash` (the sections the stage reads) and the inputs
are the artifacts and input files it reads, by content."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from distiller.config import DistillConfig
from distiller.store import stage_key


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


__all__ = ["config_hash", "stage_key"]
