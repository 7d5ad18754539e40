"""`distill estimate`: the plan is the requests the stages really send (same prompts, so a finished run's
requests are found in the call cache), counts follow the config, costs follow the prices, and nothing is
sent to the LLM while estimating."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus
from typer.testing import CliRunner

from distiller.cli import app
from distiller.generation.estimate import plan_run
from distiller.llm import CallCache
from distiller.llm.estimate import estimate_cost
from distiller.records import Chunk, read_parquet
from distiller.stages import generate_stage, ingest_stage, open_store
from distiller.testing.llm_server import LLMTestServer

GEN = {"queries_per_chunk": 2, "questions_per_chunk": 2, "document_negatives": True, "negatives_per_query": 2}


def test_document_plan_is_what_the_generate_stage_sends(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.responder = ScriptedTeacher()
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        input={"paths": [str(write_corpus(tmp_path / "docs"))]},
        generation=GEN,
        validation={"sample_rate": 0.5},
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    chunks = read_parquet(store.path("chunks.parquet"), Chunk)
    plan = plan_run(cfg, chunks)
    steps = {(stage, step): n for stage, step, n in plan.steps}
    n = len(chunks)
    assert steps == {
        ("generate", "queries"): n,
        ("generate", "Q&A pairs"): n,
        ("generate", "contrastive negatives"): 2 * n,  # one per query, before near-duplicates go
        ("validate", "judge Q&A pairs"): math.ceil(0.5 * 2 * n),
        ("validate", "judge queries"): math.ceil(0.5 * 2 * n),
    }
    assert llm_server.count == 0, "planning sends nothing"

    generate_stage(store, cfg)
    sent = Counter(r.schema_name for r in llm_server.requests)
    assert sent["QueryBatch"] == n and sent["QABatch"] == n
    assert 0 < sent["NegativeSet"] <= 2 * n  # the plan is an upper bound: near-duplicates were removed

    # The planned query and Q&A requests are byte for byte the ones sent: all of them are in the cache.
    with CallCache.in_dir(cfg.cache_path) as cache:
        est = estimate_cost(plan.requests, plan.endpoints, cfg.budget, cache=cache)
    by_stage = {s.stage: s for s in est.stages}
    assert by_stage["generate"].cached >= 2 * n
    assert by_stage["generate"].calls == 2 * n - (by_stage["generate"].cached - 2 * n)
    assert by_stage["validate"].cached == 0 and by_stage["validate"].calls == 2 * math.ceil(0.5 * 2 * n)


def test_costs_follow_the_prices_and_the_budget(llm_server: LLMTestServer, tmp_path: Path) -> None:
    priced = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 4.0}
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        input={"paths": [str(write_corpus(tmp_path / "docs"))]},
        generation=GEN,
        teacher=priced,
        budget={"run_usd": 0.0001, "validation_usd": 0.00001},
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    plan = plan_run(cfg, read_parquet(store.path("chunks.parquet"), Chunk))
    est = estimate_cost(plan.requests, plan.endpoints, cfg.budget)
    gen = next(s for s in est.stages if s.stage == "generate")
    expected = (gen.input_tokens * 1.0 + gen.expected_output_tokens * 4.0) / 1e6
    assert gen.expected_cost_usd == pytest.approx(expected, rel=0.02)
    assert gen.worst_case_usd is not None and gen.worst_case_usd > gen.expected_cost_usd
    validate = next(s for s in est.stages if s.stage == "validate")
    assert validate.budget_usd == 0.00001 and validate.within_budget is False
    assert any("exceeds the run budget" in n for n in est.notes)


def test_bootstrap_plan_counts(llm_server: LLMTestServer, tmp_path: Path) -> None:
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        generation={
            "domain": "legal",
            "language": "de",
            "concepts": 10,
            "concepts_per_call": 4,
            "relationships_per_call": 2,
            "queries_per_concept": 3,
        },
        validation={"sample_rate": 1.0},
    )
    plan = plan_run(cfg)
    steps = {step: n for _, step, n in plan.steps}
    concepts, rel_calls = 10, 3  # ceil(10 / 4) batches of terms, each asked for 2 relationships
    rows = concepts + rel_calls * 2
    assert steps["concepts (first round; more only if answers repeat)"] == math.ceil(10 / 4)
    assert steps["relationships"] == rel_calls
    assert steps["queries"] == rows
    assert steps["documents (positives and negatives)"] == rows * 3
    assert steps["judge Q&A pairs"] == rows * 3
    # the teacher's prompts are the run's language's (the judge's need not be)
    written = [r for r in plan.requests if r.stage != "validate"]
    assert written and all("Deutsch" in r.messages[0].content for r in written)
    assert llm_server.count == 0


def test_cli_estimate_prints_the_table_and_sends_nothing(
    llm_server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unused")
    docs = write_corpus(tmp_path / "docs")
    result = CliRunner().invoke(
        app,
        [
            "estimate",
            "-i",
            str(docs),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--teacher",
            "openai",
            "--model",
            "gpt-4o-mini",
            "--base-url",
            llm_server.openai_base_url,
            "--budget",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Estimated LLM cost" in result.output and "openai/gpt-4o-mini" in result.output
    assert "$2.00" in result.output and "total" in result.output
    assert "budget: budget $2.0000 covers the estimated $" in " ".join(result.output.split())
    assert llm_server.count == 0


def test_cli_estimate_needs_something_to_estimate(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["estimate", "--runs-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "nothing to estimate" in result.output


def test_cli_run_refuses_an_unpriced_model_before_anything_runs(
    llm_server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unused")
    docs = write_corpus(tmp_path / "docs")
    args = ["run", "-i", str(docs), "--runs-dir", str(tmp_path / "runs"), "--teacher", "openai"]
    args += ["--model", "my-local-llama", "--base-url", llm_server.openai_base_url]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert "no price is known for model 'my-local-llama'" in result.output
    assert "--input-price and --output-price" in result.output
    assert llm_server.count == 0 and not (tmp_path / "runs").exists()


def test_distill_flow_makes_the_cli_checks_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment run skips `distill run`: the flow makes the same preflight checks before any stage,
    with the command line's message, and nothing is written."""
    from distiller.config import DistillConfig
    from distiller.errors import DistillError
    from distiller.preflight import preflight
    from flows.distill import distill

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unused")
    cfg = DistillConfig(
        input={"paths": [str(write_corpus(tmp_path / "docs"))]},
        runs_dir=str(tmp_path / "runs"),
        teacher={"provider": "openai", "model": "my-local-llama", "base_url": "http://127.0.0.1:9/v1"},
    )
    with pytest.raises(DistillError) as cli_check:
        preflight(cfg)
    with pytest.raises(DistillError) as flow_check:
        distill.fn(config=cfg)
    assert str(flow_check.value) == str(cli_check.value)
    assert "no price is known for model 'my-local-llama'" in str(flow_check.value)
    assert not (tmp_path / "runs" / "docs" / "chunks.parquet").exists()
