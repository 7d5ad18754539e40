"""Train/val/test splits by group (source document, topic, near-duplicate cluster), never by row.

A group's split depends only on (seed, group id) and the set of groups, so adding a row to a group never
moves it, and the same seed always gives the same split.

Near-duplicates: two queries that differ only in case, punctuation, word order or a word or two would leak
a test answer into training if they sat in different splits. `near_duplicate_clusters` finds them
(exact Jaccard over word sets, with prefix filtering), and `merge_groups` joins the
documents they come from into one group before `assign_groups` places it.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

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
    weights: Mapping[Any, int] | None = None,
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
    to_fill = [(split, target) for split, target in targets if target > 0]
    for k, (split, target) in enumerate(to_fill):
        # take at least one group for a non-empty split, but leave one for each split still to fill
        # (val, then train always): greedy test-first filling must not starve val with few groups
        reserve = len(to_fill) - k
        filled = 0.0
        while i < len(unique) - reserve and (filled == 0 or filled + w[unique[i]] / 2 <= target):
            out[unique[i]] = split
            filled += w[unique[i]]
            i += 1
    for g in unique[i:]:
        out[g] = "train"
    return out


# --- grouping ----------------------------------------------------------------------------------------


class UnionFind:
    """Disjoint sets over hashable items. A set's root is its smallest member by `key` (default: by str),
    so labels do not depend on the order of the unions."""

    def __init__(self, items: Iterable[Hashable] = (), key: Callable[[Hashable], Any] = str) -> None:
        self._parent: dict[Hashable, Hashable] = {}
        self._key = key
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
            lo, hi = sorted((ra, rb), key=self._key)
            self._parent[hi] = lo

    def groups(self) -> dict[Hashable, Hashable]:
        """item -> its group's label."""
        return {x: self.find(x) for x in self._parent}


_Item = TypeVar("_Item", bound=Hashable)


def merge_groups(items: Iterable[_Item], links: Iterable[tuple[_Item, _Item]]) -> dict[_Item, _Item]:
    """item -> group label (one of its group's items), where linked items (transitively) share a group."""
    uf = UnionFind(items)
    for a, b in links:
        uf.union(a, b)
    return cast("dict[_Item, _Item]", uf.groups())


# --- near-duplicate detection ---------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


def word_set(text: str) -> frozenset[str]:
    """Lower-cased word set: insensitive to case, punctuation, spacing and word order."""
    return frozenset(_WORD.findall(text.lower()))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def near_duplicate_clusters(texts: Sequence[str], threshold: float = 0.9) -> list[int]:
    """A cluster label per text; texts whose word sets have Jaccard >= threshold share a cluster
    (transitively). Word sets catch copies that differ in case, punctuation, word order or a word of a
    long query; paraphrases need embeddings (generation's own dedup). The threshold is high because short
    queries that differ in one word (the entity) are different questions: 9 shared words of 11 is 0.82.

    Exact, not sampled: prefix filtering (Chaudhuri et al. 2006; Bayardo et al. 2007, "All-Pairs"). Words
    are ordered rarest first; two sets with Jaccard >= t must share a word among the first
    |x| - ceil(t|x|) + 1 of the smaller one, so only pairs sharing a *rare* word are ever compared.
    Templated queries that differ only in their entity thus cost about nothing, where MinHash-LSH would
    propose nearly every pair of them."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1] (got {threshold})")
    sets = [word_set(t) for t in texts]
    freq: Counter[str] = Counter(w for ws in sets for w in ws)
    ordered = [sorted(ws, key=lambda w: (freq[w], w)) for ws in sets]
    uf = UnionFind(range(len(texts)))
    index: dict[str, list[int]] = defaultdict(list)
    for x in sorted(range(len(sets)), key=lambda i: (len(sets[i]), i)):  # smaller sets first
        size = len(sets[x])
        if size == 0:
            continue
        prefix = size - math.ceil(threshold * size - 1e-9) + 1
        min_size = threshold * size - 1e-9  # |y| <= |x| here; Jaccard >= t needs |y| >= t|x|
        for w in ordered[x][:prefix]:
            for y in index[w]:
                if (
                    len(sets[y]) >= min_size
                    and uf.find(x) != uf.find(y)
                    and jaccard(sets[x], sets[y]) >= threshold
                ):
                    uf.union(x, y)
            index[w].append(x)
    labels = uf.groups()
    return [int(labels[i]) for i in range(len(texts))]  # type: ignore[call-overload]
