"""Planning rows before they are asked for: stable ids, and labels (complexity, query type, length,
strategy) dealt out from the configured mix, so the data set's mix is the configured one, not the
model's habit.

A row's labels are a pure function of the seed and *that row's* id (`deal`, `row_start`), never of the
other rows or of their number: documents added to a corpus leave every old row's prompt as it was, so
a rerun (or another run on the same documents) is answered from the call cache and pays only for the
new rows. Dealing labels by quota over the whole corpus made the mix exact but moved every row's labels
whenever one row came or went, and a corpus that grew by ten documents paid for all of its rows again.
Within a row the labels follow the mix to within one (a systematic sample); over many rows each label's
share is its weight.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence


def stable_id(*parts: str, n: int = 16) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:n]


def _unit(*parts: object) -> float:
    """A uniform number in [0, 1) from the parts' hash."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def deal(mix: Mapping[str, float], k: int, seed: int, salt: str, row: str) -> list[str]:
    """k labels for one row: k points spaced 1/k apart from a start hashed from (seed, salt, row), each
    taking the label whose share of the mix it falls in. Each label comes k x share times, to within
    one; the row's labels depend on nothing but its id."""
    if k <= 0 or not mix:
        return []
    total = sum(mix.values())
    bounds, acc = [], 0.0
    for label, w in mix.items():
        acc += w / total
        bounds.append((acc, label))
    u0 = _unit(seed, salt, row)
    out = []
    for j in range(k):
        u = (u0 + j / k) % 1.0
        out.append(next((label for b, label in bounds if u < b), bounds[-1][1]))
    # the points run in mix order from the start; the row's own order of them is hashed too
    random.Random(f"{seed}:{salt}:{row}").shuffle(out)
    return out


def row_start(n_options: int, seed: int, salt: str, row: str) -> int:
    """Where a row starts in a rotation of n options (`rotation`): hashed from its id."""
    return int(_unit(seed, salt, row) * n_options) if n_options else 0


def chunked(seq: Sequence[str], size: int) -> list[list[str]]:
    return [list(seq[i : i + size]) for i in range(0, len(seq), max(1, size))]


def rotation(options: Sequence[str], start: int, k: int) -> list[str]:
    """k options taken in turn from `start`: row i asks for strategies i*k .. i*k+k-1, so over many rows
    every option is used equally often."""
    if not options:
        return []
    return [options[(start + j) % len(options)] for j in range(k)]


__all__ = ["chunked", "deal", "rotation", "row_start", "stable_id"]
