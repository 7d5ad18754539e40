"""A run's folder name when the config gives none (`run_name`): read by the pipeline, the mirror
(`remote.py`) and the Prefect tasks, so it lives apart from all of them."""

from __future__ import annotations

import re
from pathlib import Path

from distiller.config import DistillConfig


def default_run_name(cfg: DistillConfig) -> str:
    """A stable name, so the same command twice lands in the same folder and resumes."""
    if cfg.run_name:
        return cfg.run_name
    if cfg.input.qa_file:
        base = Path(cfg.input.qa_file).stem
    elif cfg.input.paths:
        first = cfg.input.paths[0].rstrip("/")
        base = Path(first.split("*")[0].rstrip("/") or "corpus").name or "corpus"
    elif cfg.generation.domain:
        base = f"{cfg.generation.domain}-{cfg.generation.language}"
    else:
        base = "run"
    # At most 100 characters: the folder's name and the temporary names made from it must fit the file
    # system's 255-byte limit.
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base)[:100].strip("-.") or "run"


__all__ = ["default_run_name"]
