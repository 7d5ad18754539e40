"""Validation in judge shards (`distiller.generation.judge_shards`), against the loopback server: the
merged verdicts are what one pass writes; the sample is chosen once and kept, so the shards the flow
planned and the stage judge the same rows; shards run at the same time under hard grants stay within the
validation budget; a stopped stage resumes at its unfinished shards."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

from distiller.generation.judge_shards import PARTS_DIR, JudgeShard, judge_shard
from distiller.llm.ledger import read_ledger
from distiller.records import Judgment, QAPair, Query, read_parquet
from distiller.stages import generate_stage, ingest_stage, open_store, validate_stage
from distiller.stages.validate import shard_plan
from distiller.testing.llm_server import LLMTestServer


def _generated(server: LLMTestServer, root: Path, per_shard: int, **sections):
    docs = root.parent / "docs"
    if not docs.is_dir():
        write_corpus(docs)
    validation = {"sample_rate": 0.6, "items_per_shard": per_shard, **sections.pop("validation", {})}
    cfg = llm_run_config(
        server, root / "runs", input={"paths": [str(docs)]}, validation=validation, **sections
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    generate_stage(store, cfg)
    return cfg, store


def _rows(store, name: str, model) -> list[dict]:
    return [r.model_dump() for r in read_parquet(store.path(name), model)]


def _shard_dirs(store) -> list[Path]:
    return sorted(p for p in store.path(PARTS_DIR).iterdir() if p.is_dir())


def test_judge_shards_write_what_one_pass_writes(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher(reject_every=3)  # verdicts from the prompt's hash: any order
    cfg_one, one = _generated(llm_server, tmp_path / "one", per_shard=0)
    validate_stage(one, cfg_one)
    assert not one.path(PARTS_DIR).exists()
    cfg, sharded = _generated(llm_server, tmp_path / "sharded", per_shard=4)
    before = llm_server.count
    res = validate_stage(sharded, cfg)
    for name, model in [
        ("judgments.parquet", Judgment),
        ("qa_pairs.parquet", QAPair),
        ("queries.parquet", Query),
    ]:
        assert _rows(one, name, model) == _rows(sharded, name, model), name
    judgments = read_parquet(sharded.path("judgments.parquet"), Judgment)
    assert {j.verdict for j in judgments} == {"approved", "rejected"}
    dirs = _shard_dirs(sharded)
    assert res.details["shards"] == len(dirs) == -(-len(judgments) // 4) > 1
    assert res.details["shards_judged"] == len(dirs) and res.details["shards_reused"] == 0
    assert all((d / "ledger.journal.jsonl").is_file() for d in dirs)
    verdict_rows = [
        e for e in read_ledger(sharded.dir) if e.stage == "validate" and e.status in ("ok", "cached")
    ]
    assert len(verdict_rows) == len(judgments)
    assert {e.shard for e in verdict_rows} == {d.name for d in dirs}
    assert llm_server.count - before == len(judgments)  # its own call cache: one call per verdict
    assert res.details["llm_steps"]["judge Q&A pairs"]["requests"] == sum(
        j.item_kind == "qa" for j in judgments
    )


def test_the_flows_plan_and_the_stage_judge_the_same_kept_sample(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg, store = _generated(llm_server, tmp_path / "run", per_shard=3)
    specs = shard_plan(store, cfg)
    assert len(specs) > 1 and all(isinstance(s, JudgeShard) and s.hard for s in specs)
    kept = list(store.path(PARTS_DIR).glob("sample-*.json"))
    assert len(kept) == 1
    planned = {(it.kind, it.item_id) for s in specs for it in s.items}
    assert sum(len(v) for v in json.loads(kept[0].read_text())["ids"].values()) == len(planned)
    for s in specs[:-1]:  # the flow's tasks did all but one; the stage does the last, one after another
        judge_shard(s)
    res = validate_stage(store, cfg)
    judged = {(j.item_kind, j.item_id) for j in read_parquet(store.path("judgments.parquet"), Judgment)}
    assert judged == planned
    assert res.details["shards_judged"] == len(specs)
    assert shard_plan(store, cfg) == []  # cached now


def test_judge_shards_at_the_same_time_stay_within_the_validation_budget(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = ScriptedTeacher()
    cap = 0.3
    cfg, store = _generated(llm_server, tmp_path / "run", per_shard=1)
    llm_server.input_price_per_mtok, llm_server.output_price_per_mtok = 15.0, 60.0
    prices = {"input_price_per_mtok": 15.0, "output_price_per_mtok": 60.0, "max_tokens": 256}
    cfg = cfg.model_copy(
        update={
            "teacher": cfg.teacher.model_copy(update=prices),
            "budget": cfg.budget.model_copy(update={"validation_usd": cap}),
            "validation": cfg.validation.model_copy(update={"sample_rate": 1.0}),
        }
    )
    billed_before = llm_server.billed_usd
    specs = shard_plan(store, cfg)
    assert len(specs) > 1 and sum(s.grant_usd or 0 for s in specs) <= cap
    with ThreadPoolExecutor(len(specs)) as pool:
        list(pool.map(judge_shard, specs))
    res = validate_stage(store, cfg)
    billed = llm_server.billed_usd - billed_before
    assert 0 < billed <= cap
    spent = sum(e.cost_usd for e in read_ledger(store.dir) if e.stage == "validate")
    assert spent == pytest.approx(billed) == pytest.approx(res.cost_usd)
    judgments = read_parquet(store.path("judgments.parquet"), Judgment)
    # the budget, not the sample rate, sized the sample
    cap_calls = res.details["budget_cap_calls"]
    assert cap_calls is not None and 0 < len(judgments) <= cap_calls
