"""Planning rows before they are asked for: stable ids, and labels (complexity, query type, length,
strategy) dealt out by quota so the data set's mix is the configured one, not the model's habit.

Everything is a pure function of the seed and the rows' ids: the same run plans the same prompts, so a
re-run is answered from the call cache."""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence


def stable_id(*parts: str, n: int = 16) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


def quota(mix: Mapping[str, float], n: int, seed: int, salt: str) -> list[str]:
    """n labels whose counts follow the mix as closely as integers allow (largest remainder: every count
    is within 1 of n x share), in an order shuffled by (seed, salt)."""
    if n <= 0 or not mix:
        return []
    total = sum(mix.values())
    exact = {k: n * w / total for k, w in mix.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    rest = n - sum(counts.values())
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], k))[:rest]:
        counts[k] += 1
    labels = [k for k in mix for _ in range(counts[k])]
    random.Random(f"{seed}:{salt}").shuffle(labels)
    return labels


def chunked(seq: Sequence[str], size: int) -> list[list[str]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), max(1, size))]


def rotation(options: Sequence[str], start: int, k: int) -> list[str]:
    """k options taken in turn from `start`: row i asks for strategies i*k .. i*k+k-1, so over many rows
    every option is used equally often."""
    if not options:
        return []
    return [options[(start + j) % len(options)] for j in range(k)]


__all__ = ["chunked", "quota", "rotation", "stable_id"]
