"""The pure pieces of generation and validation: quota plans, strategy rotation, prompt versioning,
near-duplicate removal, stratified sampling and its budget cap, the judge's decision rule, progress."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from distiller.generation.dedup import dedup_queries, duplicate_of
from distiller.generation.plan import deal, rotation, row_start
from distiller.generation.progress import ProgressEvent, Throttled, emit, progress_sink
from distiller.generation.validation import JudgeItem, decide, sample_sizes, stable_sample
from distiller.prompts import fingerprint
from distiller.prompts.documents import STRATEGIES
from distiller.prompts.judge import JUDGE_QA, JUDGE_QUERY, Verdict
from distiller.records import Query


@pytest.mark.parametrize("k", [1, 2, 3, 5, 12])
def test_deal_follows_the_mix_within_one_per_row_and_over_many_rows(k: int) -> None:
    mix = {"simple": 0.3, "intermediate": 0.45, "complex": 0.25}
    rows = [f"chunk-{i}" for i in range(2000)]
    dealt = {r: deal(mix, k, seed=13, salt="x", row=r) for r in rows}
    for labels in dealt.values():
        assert len(labels) == k
        counts = Counter(labels)
        assert all(abs(counts[m] - k * share) < 1 for m, share in mix.items())
    total = Counter(label for labels in dealt.values() for label in labels)
    for m, share in mix.items():  # 2,000 rows: each share within 3 points of its weight
        assert abs(total[m] / (k * len(rows)) - share) < 0.03, (m, total)
    assert deal(mix, k, seed=13, salt="x", row="chunk-1") == dealt["chunk-1"]  # deterministic
    assert [deal(mix, k, 14, "x", r) for r in rows[:50]] != [dealt[r] for r in rows[:50]]  # the seed counts


def test_a_rows_labels_depend_on_its_own_id_only() -> None:
    """So adding documents keeps every old row's prompt, and its answer comes from the call cache."""
    mix = {"a": 0.5, "b": 0.25, "c": 0.25}
    names = list(STRATEGIES)
    before = {r: (deal(mix, 3, 13, "t", r), row_start(6, 13, "s", r)) for r in ("x1", "x2", "x3")}
    for r in ("x0", "x1a", "x9"):  # others come, in any order
        deal(mix, 3, 13, "t", r)
    assert before == {r: (deal(mix, 3, 13, "t", r), row_start(6, 13, "s", r)) for r in before}
    starts = Counter(row_start(len(names), 13, "s", f"q{i}") for i in range(3000))
    assert set(starts) == set(range(6)) and max(starts.values()) < 1.2 * 3000 / 6


def test_rotation_uses_every_strategy_equally() -> None:
    names = list(STRATEGIES)
    assert len(names) == 6
    used = Counter(s for i in range(30) for s in rotation(names, i * 2, 2))
    assert set(used) == set(names) and len(set(used.values())) == 1  # 10 each
    assert rotation(names, 0, 2) != rotation(names, 2, 2)


def test_prompt_versions_change_fingerprints_and_cache_keys() -> None:
    from distiller.config import LLMConfig
    from distiller.llm.client import request_key

    edited = dataclasses.replace(JUDGE_QA, version=2, system=JUDGE_QA.system + "\nBe strict.")
    assert fingerprint(edited) != fingerprint(JUDGE_QA)
    assert fingerprint(JUDGE_QUERY) == fingerprint(JUDGE_QUERY)
    values = {"domain": "legal", "language_name": "German", "question": "q", "answer": "a", "source": "s"}
    endpoint = LLMConfig(provider="openai", model="m")
    before = request_key(endpoint, JUDGE_QA.request("x", "validate", values))
    after = request_key(endpoint, edited.request("x", "validate", values))
    untouched = request_key(endpoint, JUDGE_QUERY.request("x", "validate", values))
    assert before != after and untouched == request_key(
        endpoint, JUDGE_QUERY.request("x", "validate", values)
    )
    assert JUDGE_QA.request("x", "validate", values).temperature == 0.0  # the judge does not roll dice


def test_a_prompt_never_goes_out_half_filled() -> None:
    with pytest.raises(KeyError):
        JUDGE_QA.request("x", "validate", {"domain": "legal"})


# -- near-duplicates --------------------------------------------------------------------------------------
def _fake_encoder(vectors: dict[str, list[float]]):
    def encode(texts: list[str]) -> np.ndarray:
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    return encode


def test_duplicate_of_is_greedy_over_kept_queries() -> None:
    vec = {
        "a": [1.0, 0.0, 0.0],
        "b": [0.97, 0.243, 0.0],  # cos(a, b) = 0.97
        "c": [0.88, 0.475, 0.0],  # cos(b, c) ~ 0.97, cos(a, c) ~ 0.88
        "d": [0.0, 0.0, 1.0],
    }
    out = duplicate_of(["a", "b", "c", "d", "A "], _fake_encoder(vec), threshold=0.95)
    assert out[0] is None and out[3] is None
    assert out[1] is not None and out[1][0] == 0  # b duplicates a
    assert out[2] is None  # c is close only to b, which was dropped: kept
    assert out[4] == (0, 1.0)  # an exact copy (case, spacing) needs no encoder


@pytest.fixture(scope="module")
def student_encode():
    from distiller.config import DistillConfig
    from distiller.generation.dedup import student_encoder

    return student_encoder(DistillConfig(training={"max_seq_length": 64}))


def _q(i: int, text: str) -> Query:
    return Query(query_id=f"q{i}", text=text, positive_ids=["p"], doc_id="d", teacher="t")


def test_dedup_with_the_student_removes_paraphrases_and_keeps_different_questions(student_encode) -> None:
    queries = [
        _q(0, "How long is the notice period for a residential lease?"),
        _q(1, "How long is the notice period for a residential lease ?"),
        _q(2, "What is the notice period for a residential lease?"),  # cosine 0.96 with q0
        _q(3, "How long is the notice period for a commercial lease?"),  # 0.91: another question
        _q(4, "Can my landlord keep the security deposit for repairs?"),
    ]
    kept, removed = dedup_queries(queries, student_encode, threshold=0.95)
    assert [q.query_id for q in kept] == ["q0", "q3", "q4"]
    assert {r.query_id: r.duplicate_of for r in removed} == {"q1": "q0", "q2": "q0"}
    assert all(r.similarity >= 0.95 for r in removed)


# -- sampling and the judge's rule ------------------------------------------------------------------------
def _items(n_groups: int, per_group: int) -> list[JudgeItem]:
    levels = ["simple", "intermediate", "complex"]
    return [
        JudgeItem(
            item_id=f"g{g}-{k}",
            kind="qa",
            question="q",
            answer="a",
            source_id=f"g{g}",
            source="s",
            group=f"g{g}",
            level=levels[(g + k) % 3],
        )
        for g in range(n_groups)
        for k in range(per_group)
    ]


def test_stable_sample_spreads_over_levels_and_sources() -> None:
    items = _items(20, 3)  # 60 rows, 20 per level
    sample = stable_sample(items, 12, seed=13)
    assert len(sample) == 12 == len({s.item_id for s in sample})
    assert all(abs(n - 4) <= 1 for n in Counter(s.level for s in sample).values())
    assert len({s.group for s in sample}) >= 9  # spread over sources, not 4 rows of 3 sources
    # within a level, a source's second row only after every source of the level has one
    one_source = [it for it in _items(3, 6) if it.level == "simple"]  # 3 sources x 2 rows
    assert len({s.group for s in stable_sample(one_source, 3, seed=13)}) == 3
    assert stable_sample(items, 12, seed=13) == sample
    assert stable_sample(items, 100, seed=1) == items and stable_sample(items, 0, seed=1) == []


def test_stable_sample_gives_every_row_the_same_chance() -> None:
    items = _items(10, 3)
    hits = Counter(s.item_id for seed in range(600) for s in stable_sample(items, 6, seed))
    # 6 of 30: each row in 20% of the draws (600 draws: 120 +- sampling noise)
    assert set(hits) == {i.item_id for i in items}
    assert all(80 <= h <= 160 for h in hits.values()), hits


def test_the_sample_of_a_grown_set_keeps_the_old_sample() -> None:
    """A rerun after new documents judges the new rows it samples; the old sample's verdicts are in the
    call cache, and a reshuffled sample would pay the judge again for old rows."""
    old = _items(200, 3)
    added = [
        it.model_copy(update={"item_id": f"new-{it.item_id}", "group": f"new-{it.group}"})
        for it in _items(20, 3)
    ]  # 20 new sources (chunks of new documents)
    before = {s.item_id for s in stable_sample(old, 60, seed=13)}
    after = {s.item_id for s in stable_sample(old + added, 66, seed=13)}  # the same rate, 10% more rows
    old_rows_added = {i for i in after if not i.startswith("new-")} - before
    # (drawn afresh, about 54 of the 60 would change)
    assert len(before - after) <= 6 and len(old_rows_added) <= 6, (before - after, old_rows_added)


def test_sample_sizes_follow_the_rate_and_share_a_budget_cap() -> None:
    assert sample_sizes({"qa": 10, "query": 5}, 0.2, None) == {"qa": 2, "query": 1}
    assert sample_sizes({"qa": 10, "query": 5}, 0.0, None) == {"qa": 0, "query": 0}
    capped = sample_sizes({"qa": 100, "query": 50}, 0.5, 30)
    assert sum(capped.values()) == 30 and capped["qa"] == 20
    assert sample_sizes({"qa": 10}, 1.0, 0) == {"qa": 0}


def test_a_row_is_approved_only_when_verdict_and_every_check_agree() -> None:
    good = Verdict(
        analysis="ok",
        grounded=True,
        no_hallucination=True,
        complete=True,
        factually_correct=True,
        verdict="approve",
    )
    assert decide(good) == "approved"
    assert decide(good.model_copy(update={"verdict": "reject"})) == "rejected"
    for check in ("grounded", "no_hallucination", "complete", "factually_correct"):
        assert decide(good.model_copy(update={check: False})) == "rejected"


# -- progress ---------------------------------------------------------------------------------------------
def test_progress_sinks_are_throttled_and_never_break_a_batch() -> None:
    seen: list[ProgressEvent] = []

    def broken(_: ProgressEvent) -> None:
        raise RuntimeError("display is gone")

    with progress_sink(broken), progress_sink(Throttled(seen.append, every_s=60)):
        for done in range(5):
            emit(ProgressEvent(stage="generate", step="queries", done=done, total=4, cost_usd=0.01 * done))
    assert [e.done for e in seen] == [0, 4]  # the first, then the finished one
    assert seen[-1].line() == "generate · queries: 4/4 rows · $0.0400 spent · no cap"
    emit(ProgressEvent(stage="x", step="y", done=1, total=1))  # no sink: nothing happens
