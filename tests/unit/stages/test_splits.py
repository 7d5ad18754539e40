"""Group splits: deterministic, ratio-respecting, validated; near-duplicate clusters."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distiller.splits import assign_groups, merge_groups, near_duplicate_clusters, validate_ratios


@given(
    n=st.integers(min_value=3, max_value=60),
    train=st.floats(min_value=0.1, max_value=0.8),
    val=st.floats(min_value=0.05, max_value=0.15),
    seed=st.integers(min_value=0, max_value=10_000),
)
@settings(max_examples=60, deadline=None)
def test_assign_groups_is_deterministic_complete_and_fills_every_split(
    n: int, train: float, val: float, seed: int
) -> None:
    groups = [f"doc{i}" for i in range(n)]
    a = assign_groups(groups, train, val, seed)
    assert a == assign_groups(list(reversed(groups)), train, val, seed)  # input order does not matter
    assert set(a) == set(groups)
    assert set(a.values()) == {"train", "val", "test"}  # >= 3 groups and non-zero ratios


def test_assign_groups_follows_the_ratios_and_the_seed() -> None:
    groups = [f"doc{i}" for i in range(1000)]
    a = assign_groups(groups, 0.7, 0.1, seed=1)
    share = {s: sum(v == s for v in a.values()) / 1000 for s in ("train", "val", "test")}
    assert share == pytest.approx({"train": 0.7, "val": 0.1, "test": 0.2}, abs=0.01)
    assert a != assign_groups(groups, 0.7, 0.1, seed=2)
    # adding a group moves no other group out of train/held-out wholesale: most keep their split
    b = assign_groups([*groups, "doc-new"], 0.7, 0.1, seed=1)
    assert sum(a[g] == b[g] for g in groups) >= 990


def test_assign_groups_weights_count_rows() -> None:
    groups = [f"doc{i}" for i in range(200)]
    weights = {g: (50 if i % 10 == 0 else 1) for i, g in enumerate(groups)}
    a = assign_groups(groups, 0.6, 0.2, seed=3, weights=weights)
    total = sum(weights.values())
    test_rows = sum(weights[g] for g in groups if a[g] == "test")
    assert abs(test_rows / total - 0.2) < 0.08


@pytest.mark.parametrize(
    ("train", "val"), [(0.8, 0.3), (-0.1, 0.2), (0.5, -0.1), (float("nan"), 0.1), (1.2, 0.0)]
)
def test_bad_ratios_are_refused(train: float, val: float) -> None:
    with pytest.raises(ValueError, match="ratio"):
        validate_ratios(train, val)
    with pytest.raises(ValueError):
        assign_groups(["a", "b", "c"], train, val, seed=0)


def test_edge_ratios() -> None:
    assert validate_ratios(1.0, 0.0) == 0.0
    assert set(assign_groups(["a", "b", "c"], 1.0, 0.0, seed=0).values()) == {"train"}
    assert assign_groups([], 0.7, 0.1, seed=0) == {}


def test_near_duplicates_cluster_and_different_questions_do_not() -> None:
    texts = [
        "What is the adult dosage of aspirin?",
        "what is the ADULT dosage of aspirin",  # case and punctuation
        "Of aspirin, what is the adult dosage?",  # order
        "What is the adult dosage of ibuprofen?",  # another drug: a different question
        "How is hendra virus disease transmitted to humans from horses in Australia?",
        "How is Hendra virus disease transmitted to humans from horses in Australia today?",  # one word more
        "",
        "",
    ]
    labels = near_duplicate_clusters(texts)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] != labels[0]
    assert labels[4] == labels[5]
    assert len(set(labels)) == 5  # the empty texts stay apart: nothing to compare


def test_near_duplicate_clusters_are_deterministic_across_processes() -> None:
    code = (
        "from distiller.splits import near_duplicate_clusters as f;"
        "print(f([f'question {i % 50} about topic {i % 7} and item {i % 13}' for i in range(400)]))"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": str(s)},
        ).stdout
        for s in (1, 2)
    }
    assert len(outs) == 1


def test_near_duplicate_clusters_scale() -> None:
    import time

    texts = [f"what are the symptoms of condition number {i} in patient group g{i % 97}" for i in range(5000)]
    t0 = time.perf_counter()
    labels = near_duplicate_clusters(texts)
    assert time.perf_counter() - t0 < 20
    assert len(set(labels)) == 5000  # similar template, different entities: no false links


def test_merge_groups_is_transitive_and_stable() -> None:
    g = merge_groups(["a", "b", "c", "d"], [("b", "c"), ("c", "d")])
    assert g["b"] == g["c"] == g["d"] == "b" and g["a"] == "a"
