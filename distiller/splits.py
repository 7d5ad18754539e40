"""Train/val/test splits by group (source document, topic, near-duplicate cluster), never by row.

A group's split depends only on (seed, group id) and the set of groups, so adding a row to a group never
moves it, and the same seed always gives the same split.

Near-duplicates: two queries that differ only in case, punctuation, word order or a word or two would leak
a test answer into training if they sat in different splits. `near_duplicate_clusters` finds them
(MinHash-LSH over word sets, every candidate checked by exact Jaccard), and `merge_groups` joins the
documents they come from into one group before `assign_groups` places it.
"""

from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np

from distiller.records import Split

SPLITS: tuple[Split, ...] = ("train", "val", "test")


def validate_ratios(train_ratio: float, val_ratio: float) -> float:
    """Check split ratios and return the test ratio. Errors say which ratio is wrong and how."""
    for name, r in (("train_ratio", train_ratio), ("val_ratio", val_ratio)):
        if not isinstance(r, int | float) or math.isnan(r) or r < 0 or r > 1:
            raise ValueError(f"{name} must be a number in [0, 1] (got {r!r})")
    if train_ratio + val_ratio > 1 + 1e-9:
        raise ValueError(f"split ratios must be >= 0 and sum to <= 1 (train={train_ratio}, val={val_ratio})")
    return max(0.0, 1.0 - train_ratio - val_ratio)


def _rank(seed: int, group: Hashable) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def assign_groups(
    groups: Iterable[Hashable],
    train_ratio: float,
    val_ratio: float,
    seed: int,
    weights: Mapping[Hashable, int] | None = None,
) -> dict[Hashable, Split]:
    """Assign each group to a split so that the splits' *weights* (rows per group; 1 by default) come
    close to the ratios. Groups are ordered by a seeded hash and filled test first, then val, then
    train: with at least three groups and non-zero ratios every split gets at least one group."""
    test_ratio = validate_ratios(train_ratio, val_ratio)
    unique = sorted(set(groups), key=lambda g: _rank(seed, g))
    if not unique:
        return {}
    # A group with no rows (weight 0) would be swallowed by whichever split is filling; count it as 1 so
    # it still takes a share of its own.
    w = {g: max(1, (weights or {}).get(g, 1)) for g in unique}
    total = sum(w.values())
    targets: list[tuple[Split, float]] = [("test", test_ratio * total), ("val", val_ratio * total)]
    out: dict[Hashable, Split] = {}
    i = 0
    for split, target in targets:
        if target <= 0:
            continue
        filled = 0.0
        # take at least one group for a non-empty split, but always leave one for train
        while i < len(unique) - 1 and (filled == 0 or filled + w[unique[i]] / 2 <= target):
            out[unique[i]] = split
            filled += w[unique[i]]
            i += 1
    for g in unique[i:]:
        out[g] = "train"
    return out


# --- grouping ----------------------------------------------------------------------------------------


class UnionFind:
    """Disjoint sets over hashable items; `root` is the smallest member (by str), so labels are stable."""

    def __init__(self, items: Iterable[Hashable] = ()) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        for x in items:
            self.add(x)

    def add(self, x: Hashable) -> None:
        self._parent.setdefault(x, x)

    def find(self, x: Hashable) -> Hashable:
        self.add(x)
        root = x
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[x] != root:  # path compression
            self._parent[x], x = root, self._parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb), key=str)
            self._parent[hi] = lo

    def groups(self) -> dict[Hashable, Hashable]:
        """item -> its group's label."""
        return {x: self.find(x) for x in self._parent}


def merge_groups(
    items: Iterable[Hashable], links: Iterable[tuple[Hashable, Hashable]]
) -> dict[Hashable, Hashable]:
    """item -> group label, where linked items (transitively) share a group."""
    uf = UnionFind(items)
    for a, b in links:
        uf.union(a, b)
    return uf.groups()


# --- near-duplicate detection ---------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = (1 << 31) - 1  # products of two values below 2**31 fit in int64


def word_set(text: str) -> frozenset[str]:
    """Lower-cased word set: insensitive to case, punctuation, spacing and word order."""
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_clusters(
    texts: Sequence[str], threshold: float = 0.9, bands: int = 16, rows: int = 4
) -> list[int]:
    """A cluster label per text; texts whose word sets have Jaccard >= threshold share a cluster
    (transitively). Word sets catch copies that differ in case, punctuation, order or a word of a long
    query; paraphrases need embeddings (generation's own dedup). The threshold is high because short
    queries that differ in one word (the entity) are different questions: 9 shared words of 11 is 0.82.

    MinHash-LSH proposes candidate pairs in about linear time and every candidate is checked exactly, so
    no false link is ever made; with 16 bands of 4 rows a pair at Jaccard 0.9 is proposed with probability
    1 - (1 - 0.9^4)^16 > 0.999999, while unrelated pairs (Jaccard 0.2) rarely are (2.5%)."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
    sets = [word_set(t) for t in texts]
    n_hash = bands * rows
    # A fixed universal hash family (a*x + b mod p) over CRC32 word ids: deterministic across processes,
    # unlike Python's salted str hash.
    rng = np.random.default_rng(0x5EED)
    a = rng.integers(1, _PRIME, size=n_hash, dtype=np.int64)
    b = rng.integers(0, _PRIME, size=n_hash, dtype=np.int64)
    uf = UnionFind(range(len(texts)))
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for idx, words in enumerate(sets):
        if not words:
            continue
        ids = np.fromiter((zlib.crc32(w.encode()) % _PRIME for w in words), dtype=np.int64, count=len(words))
        sig = ((ids[:, None] * a[None, :] + b[None, :]) % _PRIME).min(axis=0)
        for band in range(bands):
            buckets[(band, sig[band * rows : (band + 1) * rows].tobytes())].append(idx)
    for members in buckets.values():
        for i, x in enumerate(members):
            for y in members[i + 1 :]:
                if uf.find(x) != uf.find(y) and jaccard(sets[x], sets[y]) >= threshold:
                    uf.union(x, y)
    labels = uf.groups()
    return [int(labels[i]) for i in range(len(texts))]  # type: ignore[call-overload]
