"""Generation in chunk shards (`distiller.generation.shards`), against the loopback LLM server: the merged
rows are what one pass writes; each shard journals its calls in its own folder and the run's ledger is
the union (so a call in flight when a worker died still counts); added documents generate new shards
only; shards run at the same time under hard grants never spend past the budget together."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

from distiller.generation.grants import revoke
from distiller.generation.shards import PARTS_DIR, GenerateShard, generate_shard
from distiller.llm.budget import Budget
from distiller.llm.ledger import JOURNAL_FILENAME, Ledger, LedgerEntry, read_ledger
from distiller.records import Chunk, Passage, QAPair, Query, Triplet, read_parquet
from distiller.stages import generate_stage, ingest_stage, open_store
from distiller.stages.generate import _shards, shard_plan
from distiller.testing.llm_server import LLMTestServer

GEN = {
    "queries_per_chunk": 2,
    "questions_per_chunk": 2,
    "document_negatives": True,
    "negatives_per_query": 1,
    "template": "legal",
}


def _run(server: LLMTestServer, root: Path, per_shard: int, **sections):
    corpus = root / "docs"
    if not corpus.is_dir():
        write_corpus(corpus)
    cfg = llm_run_config(
        server,
        root / "runs",
        input={"paths": [str(corpus)]},
        generation={**GEN, "chunks_per_shard": per_shard},
        validation={"enabled": False},
        **sections,
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    return cfg, store


def _rows(store, name: str, model) -> list[dict]:
    return [r.model_dump() for r in read_parquet(store.path(name), model)]


def _shard_dirs(store) -> list[Path]:
    return sorted(p for p in store.path(PARTS_DIR).iterdir() if p.is_dir())


def test_sharded_generation_writes_what_one_pass_writes(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg_one, one = _run(llm_server, tmp_path / "one", per_shard=0)
    generate_stage(one, cfg_one)
    assert not one.path(PARTS_DIR).exists()
    sent_unsharded = llm_server.count

    cfg, sharded = _run(llm_server, tmp_path / "sharded", per_shard=2)
    res = generate_stage(sharded, cfg)
    assert res.status == "completed"
    for name, model in [
        ("queries.parquet", Query),
        ("qa_pairs.parquet", QAPair),
        ("passages.parquet", Passage),
        ("triplets_generated.parquet", Triplet),
    ]:
        assert _rows(sharded, name, model) == _rows(one, name, model), name
    assert _rows(sharded, "queries.parquet", Query), "no queries: the comparison would be empty"

    n_chunks = len(read_parquet(sharded.path("chunks.parquet"), Chunk))
    dirs = _shard_dirs(sharded)
    assert res.details["shards"] == len(dirs) == -(-n_chunks // 2) > 1
    assert res.details["shards_generated"] == len(dirs) and res.details["shards_reused"] == 0
    # each shard journals its own calls; the run's ledger is their union with the stage's (negatives)
    assert all((d / JOURNAL_FILENAME).is_file() and (d / "meta.json").is_file() for d in dirs)
    rows = read_ledger(sharded.dir)
    sent = [e for e in rows if e.status == "ok"]
    assert len(sent) == llm_server.count - sent_unsharded == sent_unsharded
    assert {e.shard for e in sent} == {d.name for d in dirs} | {""}  # "": the stage's negatives
    by_step = res.details["llm_steps"]
    assert by_step["queries"]["requests"] == by_step["Q&A pairs"]["requests"] == n_chunks
    assert by_step["negatives"]["requests"] > 0  # asked by the stage, over every shard's queries


def test_added_documents_generate_new_shards_only(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg, store = _run(llm_server, tmp_path, per_shard=3)
    first = generate_stage(store, cfg)
    old = {p.name: (p / "meta.json").stat().st_mtime_ns for p in _shard_dirs(store)}
    (tmp_path / "docs" / "heating.md").write_text(
        "# Heating costs\n\n"
        + "Heating costs are split by consumption. The landlord must bill them once a year and the tenant "
        "may inspect the receipts within a reasonable time after the bill arrives. " * 3,
        encoding="utf-8",
    )
    before = llm_server.count
    ingest_stage(store, cfg)
    second = generate_stage(store, cfg)
    new = [p for p in _shard_dirs(store) if p.name not in old]
    assert new, "the new document made no new shard"
    # the old shards were not rewritten: their rows are reused as they are
    assert all((store.path(PARTS_DIR) / n / "meta.json").stat().st_mtime_ns == t for n, t in old.items())
    assert second.details["shards_generated"] == len(new)
    assert second.details["shards_reused"] == first.details["shards"]
    new_chunks = sum(json.loads((p / "meta.json").read_text())["chunks"] for p in new)
    steps = second.details["llm_steps"]
    assert steps["queries"]["requests"] == steps["Q&A pairs"]["requests"] == new_chunks
    # sent: a queries and a Q&A request per new chunk, and the new queries' negatives
    assert llm_server.count - before == 2 * new_chunks + steps["negatives"]["answered"]


def _in_flight(ts: str, reserved_usd: float) -> LedgerEntry:
    """A call's write-ahead row: journaled, sent, and no answer written (its worker was killed)."""
    return LedgerEntry(
        ts=ts,
        stage="generate",
        item_id="c1",
        provider="openai",
        model="test-model",
        cache_key="k",
        attempt=1,
        status="pending",
        cached=False,
        input_tokens=0,
        output_tokens=0,
        cost_usd=reserved_usd,
        reserved_usd=reserved_usd,
        latency_s=0.0,
        call_id="died-with-its-worker",
    )


def test_a_call_in_flight_when_a_shard_died_counts_against_the_budget(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shard = run / PARTS_DIR / "a"
    shard.mkdir(parents=True)
    row = _in_flight("2026-12-03T00:00:00+00:00", 0.25)
    # the shard's worker journals the call, then is killed before any answer (no final row)
    Ledger(shard / "ledger.parquet", shard="a").pending(row)
    rows = read_ledger(run)
    assert [(e.status, e.cost_usd, e.shard, e.estimated) for e in rows] == [("unknown", 0.25, "a", True)]
    assert Ledger.in_run(run).spent_by_stage() == {"generate": 0.25}
    budget = Budget(1.0, {}, Ledger.in_run(run).spent_by_stage())
    assert budget.remaining_usd("generate") == pytest.approx(0.75)
    # the run's Parquet ledger is the union; copying it back into a journal never doubles a shard's row
    Ledger.in_run(run).flush()
    assert len(read_parquet(run / "ledger.parquet", LedgerEntry)) == 1
    Ledger.in_run(run).flush()
    assert [e.cost_usd for e in read_ledger(run)] == [0.25]


def _priced(server: LLMTestServer, root: Path, budget: float, per_shard: int):
    server.responder = ScriptedTeacher()
    server.input_price_per_mtok, server.output_price_per_mtok = 15.0, 60.0
    return _run(
        server,
        root,
        per_shard=per_shard,
        teacher={"input_price_per_mtok": 15.0, "output_price_per_mtok": 60.0, "max_tokens": 256},
        budget={"run_usd": budget},
    )


def test_shards_at_the_same_time_under_hard_grants_never_pass_the_budget(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    budget = 0.15
    cfg, store = _priced(llm_server, tmp_path, budget, per_shard=2)
    specs = shard_plan(store, cfg)
    assert len(specs) > 2 and all(s.hard and s.grant_usd is not None for s in specs)
    assert sum(s.grant_usd or 0 for s in specs) <= budget
    with ThreadPoolExecutor(len(specs)) as pool:  # every shard at once, each its own client and budget
        done = list(pool.map(generate_shard, specs))
    assert any(d.stopped_by_budget for d in done), "the budget should be short for this test to mean much"
    assert llm_server.billed_usd <= budget
    spent = sum(e.cost_usd for e in read_ledger(store.dir))
    assert spent == pytest.approx(llm_server.billed_usd)
    # the stage runs the stopped shards again with what the others left, then the negatives
    res = generate_stage(store, cfg)
    assert res.status == "completed"
    assert llm_server.billed_usd <= budget
    assert (
        res.cost_usd
        == pytest.approx(llm_server.billed_usd)
        == pytest.approx(sum(e.cost_usd for e in read_ledger(store.dir)))
    )
    assert read_parquet(store.path("queries.parquet"), Query)


def test_shard_plan_is_empty_once_generated_and_for_offline(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg, store = _run(llm_server, tmp_path, per_shard=2)
    specs = shard_plan(store, cfg)
    # the run's $5 split over the shards by their text (a hard cap each: they may run at the same time)
    assert specs and all(isinstance(s, GenerateShard) and s.hard and (s.grant_usd or 0) > 0 for s in specs)
    assert (
        sum(s.grant_usd or 0 for s in specs) == pytest.approx(5.0)
        and sum(s.grant_usd or 0 for s in specs) <= 5
    )
    generate_stage(store, cfg)
    assert shard_plan(store, cfg) == []
    offline = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"offline": True})})
    assert shard_plan(store, offline) == []
    # a shard killed before it finished (no meta.json) is planned again, the others are not
    victim = _shard_dirs(store)[0]
    (victim / "meta.json").unlink()
    specs = _shards(store, cfg, read_parquet(store.path("chunks.parquet"), Chunk), "")
    assert [Path(s.out).name for s in specs if not s.done] == [victim.name]
    # and a shard its grant stopped is not done either (a rerun gives it the next share)
    meta = json.loads((_shard_dirs(store)[1] / "meta.json").read_text())
    (_shard_dirs(store)[1] / "meta.json").write_text(json.dumps({**meta, "stopped_by_budget": True}))
    specs = _shard_dirs(store)
    assert (
        sum(not s.done for s in _shards(store, cfg, read_parquet(store.path("chunks.parquet"), Chunk), ""))
        == 2
    )


def test_a_shard_taken_over_stops_before_its_next_call_and_writes_nothing(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    """A newer grant of a shard (a flow run again while a worker of the old one still runs) fences the
    old execution: the call it journaled after the takeover is not sent, and it leaves the rows to the
    newer one."""
    budget = 5.0
    cfg, store = _priced(llm_server, tmp_path, budget, per_shard=100)
    cfg = cfg.model_copy(update={"teacher": cfg.teacher.model_copy(update={"max_concurrency": 1})})
    (spec,) = shard_plan(store, cfg)
    teacher = ScriptedTeacher()

    def taken_over_at_the_third(req):
        if llm_server.count == 3:
            revoke([spec])  # what a newer planner does before it reads the ledger
        return teacher(req)

    llm_server.responder = taken_over_at_the_third
    done = generate_shard(spec)
    assert done.stopped_by_budget and not (Path(spec.out) / "meta.json").exists()
    assert not (Path(spec.out) / "queries.parquet").exists()
    assert llm_server.count == 3  # the fourth call was journaled, saw the fence and was never sent
    rows = read_ledger(store.dir)
    # one journaled call per step (queries, then Q&A pairs) met the fence: not sent, $0
    assert [e.status for e in rows if e.attempt > 0] == ["ok", "ok", "ok", "budget", "budget"]
    assert "taken over" in (rows[-1].error or "") and not [e for e in rows if e.status == "unknown"]
    assert sum(e.cost_usd for e in rows) == pytest.approx(llm_server.billed_usd)


def test_a_shard_run_again_under_its_grant_spends_only_what_the_grant_has_left(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    """Dask runs a task again when its worker died: the second execution counts what the first one
    journaled under the same grant."""
    cfg, store = _priced(llm_server, tmp_path, 0.5, per_shard=100)
    (spec,) = shard_plan(store, cfg)
    grant = spec.grant_usd or 0.0
    assert grant > 0.05
    first = _in_flight(spec.granted_at, round(grant * 0.4, 6))
    Ledger(Path(spec.out) / "ledger.parquet", shard=spec.key).pending(first)
    generate_shard(spec)
    assert 0 < llm_server.billed_usd <= grant * 0.6
    assert sum(e.cost_usd for e in read_ledger(store.dir)) <= grant
