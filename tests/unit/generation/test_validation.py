"""The validate stage against the loopback server: a stratified sample judged, Q&A pairs marked approved /
rejected / unvalidated, rejected queries removed, the approval rate with its Wilson interval, the policy
for unjudged rows, a judge on another provider, the validation budget capping the sample, a changed judge
prompt re-asking only its own calls, garbage verdicts as failed rows, and skipping for the offline
teacher."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

from distiller.records import Judgment, QAPair, Query, read_parquet
from distiller.runview import wilson_interval
from distiller.stages import export_stage, generate_stage, ingest_stage, open_store, validate_stage
from distiller.testing.llm_server import LLMTestServer


def _generated(server: LLMTestServer, tmp_path: Path, **sections):
    cfg = llm_run_config(
        server,
        tmp_path / "runs",
        input={"paths": [str(write_corpus(tmp_path / "docs"))]},
        **sections,
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    generate_stage(store, cfg)
    return cfg, store


def _judge_requests(server: LLMTestServer):
    return [r for r in server.requests if r.schema_name == "Verdict"]


def test_validation_judges_a_stratified_sample_and_marks_the_rows(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    teacher = ScriptedTeacher(reject_every=3)
    llm_server.responder = teacher
    cfg, store = _generated(llm_server, tmp_path, validation={"sample_rate": 0.5})
    qa_before = read_parquet(store.path("qa_pairs.parquet"), QAPair)
    queries_before = read_parquet(store.path("queries.parquet"), Query)
    llm_server.reset()
    res = validate_stage(store, cfg)
    assert res.status == "completed"

    judgments = read_parquet(store.path("judgments.parquet"), Judgment)
    by_kind = {k: [j for j in judgments if j.item_kind == k] for k in ("qa", "query")}
    assert len(by_kind["qa"]) == math.ceil(0.5 * len(qa_before))
    assert len(by_kind["query"]) == math.ceil(0.5 * len(queries_before))
    assert {j.prompt for j in judgments} == {"judge_qa/v1", "judge_query/v1"}
    assert all(
        j.verdict in ("approved", "rejected") and j.reasons and j.judge == "openai:test-model"
        for j in judgments
    )
    assert all(j.stratum and j.source_id for j in judgments)
    rejected = {j.item_id for j in judgments if j.verdict == "rejected"}
    assert rejected and all(j.problems and j.grounded is False for j in judgments if j.verdict == "rejected")
    # the sample spreads over difficulty levels in proportion
    levels = {qa.qa_id: qa.difficulty for qa in qa_before}
    sampled_levels = {levels[j.item_id] for j in by_kind["qa"]}
    assert sampled_levels == set(levels.values())

    qa_after = {qa.qa_id: qa for qa in read_parquet(store.path("qa_pairs.parquet"), QAPair)}
    assert set(qa_after) == {qa.qa_id for qa in qa_before}  # every pair stays, with its status
    for j in by_kind["qa"]:
        assert qa_after[j.item_id].validation == j.verdict
    judged_qa = {j.item_id for j in by_kind["qa"]}
    assert all(qa.validation == "unvalidated" for qid, qa in qa_after.items() if qid not in judged_qa)

    queries_after = {q.query_id for q in read_parquet(store.path("queries.parquet"), Query)}
    rejected_queries = {j.item_id for j in by_kind["query"] if j.verdict == "rejected"}
    assert queries_after == {q.query_id for q in queries_before} - rejected_queries

    approved = sum(j.verdict == "approved" for j in by_kind["qa"])
    lo, hi = wilson_interval(approved, len(by_kind["qa"]))
    n, rate = len(by_kind["qa"]), 100 * approved / len(by_kind["qa"])
    line = f"Q&A pairs approval {rate:.1f}% (95% CI {100 * lo:.1f}-{100 * hi:.1f}%) of {n} judged"
    assert line in (res.message or "")
    assert res.details["approval"]["qa"]["ci95"] == [lo, hi]

    # what the judge saw: question, answer and the chunk, at temperature 0
    req = next(r for r in _judge_requests(llm_server) if "Answer:" in r.first_user)
    assert req.body["temperature"] == 0.0 and "Source:" in req.first_user and '"""' in req.first_user

    # validating again judges nothing new: it keys on the rows generate wrote, not on its own output
    llm_server.reset()
    again = validate_stage(store, cfg)
    assert again.status == "cached" and llm_server.count == 0

    export_stage(store, cfg)
    exported = [
        json.loads(line)
        for f in store.path("exports").rglob("*.jsonl")
        for line in f.read_text().splitlines()
        if '"validation"' in line
    ]
    assert exported and not {r["id"] for r in exported} & rejected
    assert {r["validation"] for r in exported} == {"approved", "unvalidated"}


def test_drop_policy_removes_unjudged_queries(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher(reject_every=0)
    cfg, store = _generated(
        llm_server, tmp_path, validation={"sample_rate": 0.5, "unvalidated_policy": "drop"}
    )
    res = validate_stage(store, cfg)
    judged = {j.item_id for j in read_parquet(store.path("judgments.parquet"), Judgment)}
    queries = read_parquet(store.path("queries.parquet"), Query)
    assert queries and {q.query_id for q in queries} <= judged
    assert "unvalidated (dropped)" in (res.message or "")


def test_drop_policy_leaves_queries_alone_when_queries_are_not_judged(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = ScriptedTeacher(reject_every=0)
    cfg, store = _generated(
        llm_server,
        tmp_path,
        validation={"sample_rate": 0.5, "unvalidated_policy": "drop", "judge_queries": False},
    )
    before = read_parquet(store.path("queries.parquet"), Query)
    validate_stage(store, cfg)
    assert read_parquet(store.path("queries.parquet"), Query) == before


def test_the_judge_may_be_another_provider(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    judge = llm_server.llm_config("anthropic", model="judge-model").model_dump()
    cfg, store = _generated(llm_server, tmp_path, validation={"judge": judge})
    llm_server.reset()
    validate_stage(store, cfg)
    assert set(llm_server.counts) == {"/v1/messages"}
    assert {r.model for r in llm_server.requests} == {"judge-model"}
    judgments = read_parquet(store.path("judgments.parquet"), Judgment)
    assert {j.judge for j in judgments} == {"anthropic:judge-model"}


def test_the_validation_budget_caps_the_sample(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    priced = llm_server.llm_config(input_price_per_mtok=1.0, output_price_per_mtok=1.0).model_dump()
    cfg, store = _generated(
        llm_server,
        tmp_path,
        validation={"sample_rate": 1.0, "judge": priced},
        budget={"validation_usd": 0.01},
    )
    llm_server.reset()
    res = validate_stage(store, cfg)
    wanted = (
        len(read_parquet(store.path("qa_pairs.parquet"), QAPair)) + res.details["approval"]["query"]["rows"]
    )
    sent = len(_judge_requests(llm_server))
    assert 0 < sent < wanted and res.details["budget_cap_calls"] == sent
    assert f"pays for {sent} of the {wanted} judge calls" in (res.message or "")
    assert res.cost_usd <= 0.01


def test_a_zero_validation_budget_sends_nothing_and_says_so(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg, store = _generated(llm_server, tmp_path, budget={"validation_usd": 0.0})
    llm_server.reset()
    res = validate_stage(store, cfg)
    assert llm_server.count == 0
    # (a $0 cap still lets verdicts already in the call cache through: the client is asked, sends nothing)
    assert "budget is $0, no LLM call sent (0 of" in (res.message or "")
    assert all(qa.validation == "unvalidated" for qa in read_parquet(store.path("qa_pairs.parquet"), QAPair))


def test_a_changed_judge_prompt_reasks_only_its_own_calls(
    llm_server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distiller.generation import validation
    from distiller.prompts import judge

    llm_server.responder = ScriptedTeacher()
    cfg, store = _generated(llm_server, tmp_path, validation={"sample_rate": 0.5})
    validate_stage(store, cfg)
    n_qa = sum(j.item_kind == "qa" for j in read_parquet(store.path("judgments.parquet"), Judgment))

    edited = dataclasses.replace(
        judge.JUDGE_QA, version=2, system=judge.JUDGE_QA.system + "\nBe strict about numbers."
    )
    monkeypatch.setattr(judge, "JUDGE_QA", edited)
    monkeypatch.setitem(validation.PROMPTS, "qa", edited)
    llm_server.reset()
    assert generate_stage(store, cfg).status == "cached"  # the generation prompts did not change
    res = validate_stage(store, cfg)
    assert res.status == "completed"  # the stage key knows its prompts
    sent = _judge_requests(llm_server)
    assert len(sent) == n_qa and all("Be strict about numbers." in r.prompt for r in sent)
    # the query judge's calls, unchanged, came from the call cache
    assert res.details["llm_steps"]["judge queries"]["cached"] == res.details["approval"]["query"]["sampled"]
    assert {j.prompt for j in read_parquet(store.path("judgments.parquet"), Judgment)} == {
        "judge_qa/v2",
        "judge_query/v1",
    }


def test_garbage_verdicts_are_failed_rows_and_leave_the_row_unvalidated(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    teacher = ScriptedTeacher()
    llm_server.responder = teacher
    cfg, store = _generated(llm_server, tmp_path, validation={"sample_rate": 1.0, "judge_queries": False})
    teacher.bad = lambda req: (
        "malformed" if req.schema_name == "Verdict" and "#0?" in req.first_user else None
    )
    res = validate_stage(store, cfg)
    judgments = read_parquet(store.path("judgments.parquet"), Judgment)
    failed = [j for j in judgments if j.verdict == "failed"]
    assert failed and all("not valid JSON" in j.reasons and j.status == "failed" for j in failed)
    qa = {x.qa_id: x for x in read_parquet(store.path("qa_pairs.parquet"), QAPair)}
    assert all(qa[j.item_id].validation == "unvalidated" for j in failed)
    assert res.details["failed_rows"] == len(failed)


def test_offline_teacher_skips_validation_and_a_disabled_one_says_so(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    from distiller.config import DistillConfig

    offline = DistillConfig(runs_dir=str(tmp_path / "runs"), run_name="off")
    store = open_store(offline)
    res = validate_stage(store, offline)
    assert res.status == "skipped" and "offline teacher" in (res.message or "")
    assert "validate" not in store.stage_results()  # offline runs keep the stages they always had

    disabled = llm_run_config(llm_server, tmp_path / "runs", validation={"enabled": False})
    store = open_store(disabled)
    res = validate_stage(store, disabled)
    assert res.status == "skipped" and store.stage_results()["validate"].status == "skipped"
    assert llm_server.count == 0
