"""The example corpus and a config small enough for a 2-core CI machine."""

from __future__ import annotations

from pathlib import Path

from helpers import ROOT

EXAMPLES = ROOT / "examples" / "medquad-mini"


def tiny_overrides(corpus: Path, runs: Path, **extra: object) -> dict:
    """A config small enough for a 2-core CI machine: short chunks and sequences, one short epoch."""
    cfg: dict = {
        "input": {"paths": [str(corpus)]},
        "runs_dir": str(runs),
        "run_name": "tiny",
        "chunking": {"chunk_size": 96},
        "training": {"max_seq_length": 64, "batch_size": 8, "epochs": 1, "save_steps": 2},
        "mining": {"iterations": 1, "top_k": 20, "encode_batch_size": 32},
        "evaluation": {"ks": [1, 5, 10]},
        "export": {"formats": ["jsonl", "triplets"]},
    }
    for k, v in extra.items():
        cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg


__all__ = ["EXAMPLES", "ROOT", "tiny_overrides"]
