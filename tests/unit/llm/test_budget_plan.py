"""A budget that plans: a budget short of the estimate is split over every LLM step (none starved), the
run says what it buys before sending anything, `strict` refuses, progress counts rows sent, and a later
failure for too little data names the budget."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus

from distiller.errors import BudgetExceeded
from distiller.generation.progress import ProgressEvent, progress_sink
from distiller.llm.ledger import Ledger
from distiller.llm.plan import BudgetPlan, PlannedStep, step_key
from distiller.records import QAPair, Query, read_parquet
from distiller.stages import budget_cause, generate_stage, ingest_stage, open_store
from distiller.testing.llm_server import LLMTestServer


def _plan(budget: float | None, spent: float = 0.0) -> BudgetPlan:
    return BudgetPlan(
        steps=[
            PlannedStep(stage="generate", step="queries", requests=137, to_send=137, expected_usd=0.06),
            PlannedStep(stage="generate", step="Q&A pairs", requests=274, to_send=274, expected_usd=0.09),
            PlannedStep(stage="validate", step="judge Q&A pairs", requests=17, to_send=17, expected_usd=0.01),
        ],
        budget_usd=budget,
        spent_usd=spent,
    )


def test_a_short_budget_is_split_so_every_step_gets_its_share() -> None:
    plan = _plan(0.02)
    assert not plan.covered
    left, shares = 0.02, []
    for step in plan.steps:  # each step spends its share, the next is cut from what is left
        share = plan.share_usd(step.stage, step.step, left)
        assert share is not None and share > 0
        shares.append(share)
        left -= share
    assert sum(shares) == pytest.approx(0.02)
    assert shares[0] == pytest.approx(0.02 * 0.06 / 0.16) and shares[1] == pytest.approx(0.02 * 0.09 / 0.16)
    # What a step leaves passes on: Q&A's share with $0.015 left of the budget is its part of the rest.
    assert plan.share_usd("generate", "Q&A pairs", 0.015) == pytest.approx(0.015 * 0.09 / 0.10)
    # A budget covering the rest caps nothing; names from the stages find the plan's steps.
    assert _plan(1.0).share_usd("generate", "queries", 1.0) is None
    assert step_key("generate", "contrastive negatives") == step_key("generate", "negatives")
    assert step_key("bootstrap", "concepts round 3") == step_key("bootstrap", "concepts (first round)")
    assert step_key("mine_iter2", "false-negative check") == "mine:false-negative check"


def test_coverage_says_what_the_budget_buys_and_what_buys_all() -> None:
    line = _plan(0.02).coverage()
    assert line.startswith("budget $0.0200 covers ~12% of the estimated $0.1600")
    assert (
        "~17 of 137 queries" in line and "~34 of 274 Q&A pairs" in line and "~2 of 17 judge Q&A pairs" in line
    )
    assert line.endswith("raise it to about $0.20 for all")  # the estimate plus 25%, rounded up to a cent
    assert "covers the estimated $0.1600 of all 428 calls" in _plan(1.0).coverage()
    assert "($0.0100 already spent)" in _plan(0.05, spent=0.01).coverage()


def _priced(llm_server: LLMTestServer, tmp_path: Path, budget: float, **budget_kw: object):
    corpus = write_corpus(tmp_path / "docs")
    llm_server.responder = ScriptedTeacher()
    llm_server.input_price_per_mtok, llm_server.output_price_per_mtok = 15.0, 60.0
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        input={"paths": [str(corpus)]},
        teacher={"input_price_per_mtok": 15.0, "output_price_per_mtok": 60.0, "max_tokens": 256},
        generation={"queries_per_chunk": 2, "questions_per_chunk": 2, "template": "legal"},
        budget={"run_usd": budget, **budget_kw},
        validation={"enabled": False},
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    return cfg, store


def test_tight_budget_gives_queries_and_qa_pairs_each_a_share(
    llm_server: LLMTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg, store = _priced(llm_server, tmp_path, budget=0.15)
    events: list[ProgressEvent] = []
    with progress_sink(events.append):
        res = generate_stage(store, cfg)
    plan = BudgetPlan.model_validate(store.manifest()["budget_plan"])
    assert not plan.covered, "the budget should be short of the estimate for this test to mean anything"
    assert any("covers ~" in r.message for r in caplog.records)  # said before sending
    queries = read_parquet(store.path("queries.parquet"), Query)
    qa = read_parquet(store.path("qa_pairs.parquet"), QAPair)
    assert queries and qa, "a step was starved"
    steps = res.details["llm_steps"]
    assert steps["queries"]["not_sent"] > 0 and steps["Q&A pairs"]["not_sent"] > 0
    assert "share_usd" in steps["queries"]  # the first step is held to its share; the last gets what is left
    # what the server billed stays within the budget; the manifest's cost is the ledger's
    assert llm_server.billed_usd <= 0.15
    assert res.cost_usd == pytest.approx(Ledger(store.path("ledger.parquet")).total_cost_usd())
    # progress counts rows sent: the last event of a budget-stopped step says how many were not sent
    last = [e for e in events if e.step == "queries"][-1]
    assert last.not_sent == steps["queries"]["not_sent"]
    assert (
        f"{last.done - last.not_sent}/{last.total} rows" in last.line() and "not sent (budget)" in last.line()
    )
    assert "The LLM budget was the cause" in budget_cause(store)
    # estimate vs billed: kept per step in the manifest, printed by `distill status` (and after `distill run`)
    assert steps["queries"]["estimated_usd"] > 0 and steps["queries"]["billed_usd"] > 0
    from rich.console import Console

    from distiller.summary import status_renderable

    console = Console(width=400, record=True)
    console.print(status_renderable(store.dir))
    text = console.export_text()
    # the ledger's total, to the 4 decimals shown (the stage's own total may round the other way)
    shown = re.search(r"LLM spend \(ledger\) \$(\d+\.\d{4}) of budget \$0\.1500", text)
    assert shown and float(shown.group(1)) == pytest.approx(res.cost_usd, abs=1e-4), text
    assert f"vs billed ${res.details['billed_usd']:.4f}" in text and "estimate of the calls sent $" in text


def test_strict_policy_refuses_before_sending_anything(llm_server: LLMTestServer, tmp_path: Path) -> None:
    cfg, store = _priced(llm_server, tmp_path, budget=0.01, policy="strict")
    with pytest.raises(BudgetExceeded, match=r"covers ~.*raise it to about \$.*policy is strict"):
        generate_stage(store, cfg)
    assert llm_server.count == 0


def test_cli_says_what_the_budget_buys_before_the_run_and_strict_refuses(
    llm_server: LLMTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import typer

    from distiller.cli import commands

    cfg, _ = _priced(llm_server, tmp_path, budget=0.05)
    commands.announce_budget(cfg)
    said = " ".join(capsys.readouterr().err.split())
    assert "budget: budget $0.0500 covers ~" in said and "raise it to about $" in said
    strict = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"policy": "strict"})})
    with pytest.raises(typer.Exit) as exit_info:
        commands.announce_budget(strict)
    assert exit_info.value.exit_code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and "policy is strict, so nothing was sent" in err
    assert llm_server.count == 0
