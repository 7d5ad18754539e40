"""`estimate_cost`: calls, tokens and cost per stage before anything is spent, and its rich table."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.llm_fixtures import Answer, make_client, make_requests
from rich.console import Console

from distiller.config import BudgetConfig, LLMConfig
from distiller.llm import CallCache
from distiller.llm.estimate import DEFAULT_OUTPUT_FRACTION, StagePlan, estimate_cost, render_estimate
from distiller.llm.tokens import expected_prompt_tokens, max_prompt_tokens, schema_json
from distiller.testing.llm_server import LLMTestServer

PRICED = LLMConfig(
    provider="openai", model="x", base_url="http://h/v1", input_price_per_mtok=2.0, output_price_per_mtok=8.0
)


def _text(table: object) -> str:
    console = Console(record=True, width=200)
    console.print(table)
    return console.export_text()


def test_counts_per_stage() -> None:
    est = estimate_cost(
        [
            StagePlan(stage="generate", calls=1000, prompt_chars=2000),
            StagePlan(stage="validate", calls=200, max_output_tokens=100),
        ],
        PRICED,
        BudgetConfig(run_usd=10.0, validation_usd=0.01),
        expected_output_fraction=0.5,
    )
    gen, val = est.stages
    assert (gen.calls, val.calls) == (1000, 200)
    assert gen.input_tokens == 1000 * (500 + 2 * 8 + 128)
    assert gen.max_output_tokens == 1000 * 1024 and gen.expected_output_tokens == 512_000
    assert gen.expected_cost_usd == pytest.approx(gen.input_tokens * 2e-6 + 512_000 * 8e-6)
    assert gen.worst_case_usd is not None and gen.worst_case_usd > gen.expected_cost_usd
    assert val.budget_usd == 0.01 and val.within_budget is False and gen.within_budget is True
    assert "approx" in est.token_method and "no provider tokenizer" in est.token_method
    assert est.expected_cost_usd == pytest.approx(gen.expected_cost_usd + val.expected_cost_usd)
    text = _text(render_estimate(est))
    for word in ("generate", "validate", "total", "Worst case", "(over)", "approx", "50% of max_tokens"):
        assert word in text


def test_planned_requests_use_their_prompts_and_skip_cached_ones(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    reqs = make_requests(6)
    with CallCache.in_dir(tmp_path) as cache:
        prices = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0, "max_tokens": 100}
        make_client(llm_server, cache=cache, **prices).run_batch_sync(reqs[:2])
        cfg = llm_server.llm_config("openai", **prices)
        est = estimate_cost(reqs, {"generate": cfg}, cache=cache)
    [s] = est.stages
    assert (s.calls, s.cached) == (4, 2)
    text = schema_json(Answer)
    # the messages' tokens plus what an OpenAI request adds (not the template allowance of the bound)
    base = expected_prompt_tokens([], "")
    assert s.input_tokens == sum(expected_prompt_tokens(r.messages, text) - base + 8 for r in reqs[2:])
    worst_in = sum(max_prompt_tokens(r.messages, text) for r in reqs[2:])
    assert s.worst_case_usd == pytest.approx((worst_in + 400) / 1e6)


def test_unknown_price_and_offline() -> None:
    est = estimate_cost(
        {"generate": 10}, LLMConfig(provider="openai", base_url="http://127.0.0.1:1/v1", model="m")
    )
    assert est.stages[0].expected_cost_usd is None and est.expected_cost_usd is None
    assert any("input_price_per_mtok" in n for n in est.notes)
    assert "unknown" in _text(render_estimate(est))
    off = estimate_cost({"generate": 10}, LLMConfig())
    assert off.stages[0].calls == 0 and off.expected_cost_usd == 0.0
    with pytest.raises(KeyError, match="no LLM endpoint given for stage 'validate'"):
        estimate_cost({"validate": 1}, {"generate": PRICED})


def test_known_model_from_the_price_table() -> None:
    est = estimate_cost(
        {"generate": 100},
        LLMConfig(provider="openai", model="gpt-4o-mini"),
        BudgetConfig(),
        expected_output_fraction=0.5,
    )
    s = est.stages[0]
    assert "genai-prices" in s.price_source
    assert s.expected_cost_usd == pytest.approx(100 * (644 * 0.15e-6 + 512 * 0.6e-6), rel=1e-6)


def test_output_is_calibrated_from_cached_answers_per_prompt_type(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    prices = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0, "max_tokens": 400}
    reqs = make_requests(10)
    with CallCache.in_dir(tmp_path) as cache:
        before = estimate_cost(reqs, {"generate": llm_server.llm_config("openai", **prices)}, cache=cache)
        assert before.stages[0].expected_output_tokens == round(10 * 400 * DEFAULT_OUTPUT_FRACTION)
        assert "typical share of max_tokens" in before.output_assumption
        client = make_client(llm_server, cache=cache, **prices)
        results = client.run_batch_sync(reqs[:4])
        after = estimate_cost(reqs, {"generate": llm_server.llm_config("openai", **prices)}, cache=cache)
    billed_out = sum(r.output_tokens for r in results) / len(results)
    [s] = after.stages
    assert (s.calls, s.cached) == (6, 4)
    # The answers already seen set the expectation for the rest of their type, not a share of max_tokens.
    assert s.expected_output_tokens == pytest.approx(6 * billed_out, abs=6)
    assert "calibrated from cached answers: Answer (4 answers)" in after.output_assumption
