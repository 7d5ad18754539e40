"""Budget and prices: reserve the worst case, settle the real cost, never pass a cap; a $0 budget sends
nothing; an unpriced model is refused. Property tests over random prices, budgets and call sizes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers.llm_fixtures import Answer, make_client, make_requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distiller.config import BudgetConfig, LLMConfig
from distiller.errors import BudgetExceeded
from distiller.llm import Budget, Ledger, LLMRequest, PriceUnknown, Pricing
from distiller.llm.pricing import NANO, usd_to_nano
from distiller.llm.tokens import max_prompt_tokens, schema_json
from distiller.testing.llm_server import ChatRequest, LLMTestServer, Reply, stub_instance


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LLMTestServer]:
    with LLMTestServer() as server:
        yield server


# -- prices -------------------------------------------------------------------------------------------------
def test_prices_come_from_genai_prices_and_overrides_win() -> None:
    table = Pricing(LLMConfig(provider="openai", model="gpt-4o-mini"))
    assert table.known and "genai-prices openai/gpt-4o-mini" in table.source
    assert float(table.cost_usd(1_000_000, 1_000_000)) == pytest.approx(0.75)  # $0.15 in + $0.60 out
    both = Pricing(
        LLMConfig(provider="openai", model="gpt-4o-mini", input_price_per_mtok=1.0, output_price_per_mtok=2.0)
    )
    assert float(both.cost_usd(500_000, 250_000)) == pytest.approx(1.0)
    # One side overridden: the other still comes from the table.
    half = Pricing(LLMConfig(provider="openai", model="gpt-4o-mini", input_price_per_mtok=0.0))
    assert float(half.cost_usd(1_000_000, 1_000_000)) == pytest.approx(0.6)
    hosted = Pricing(
        LLMConfig(
            provider="openai",
            base_url="http://gpu-box:8000/v1",
            model="llama",
            input_price_per_mtok=0,
            output_price_per_mtok=0,
        )
    )
    assert hosted.known and hosted.cost_nano(10**6, 10**6) == 0


def test_unknown_model_is_refused_with_a_fix(llm_server: LLMTestServer) -> None:
    client = make_client(
        llm_server,
        budget=Budget(5.0),
        input_price_per_mtok=None,
        output_price_per_mtok=None,
        model="my-llama",
    )
    with pytest.raises(PriceUnknown, match="input_price_per_mtok and output_price_per_mtok"):
        client.run_batch_sync(make_requests(3))
    assert llm_server.count == 0
    # Under an unlimited budget there is nothing to protect: it runs, at an unknown (recorded 0) cost.
    free = make_client(
        llm_server,
        input_price_per_mtok=None,
        output_price_per_mtok=None,
        model="my-llama",
        budget=Budget.unlimited(),
    )
    assert [r.status for r in free.run_batch_sync(make_requests(3))] == ["ok"] * 3


# -- the budget object --------------------------------------------------------------------------------------
def test_zero_cap_is_a_kill_switch_and_none_is_no_cap() -> None:
    with pytest.raises(BudgetExceeded):
        Budget(0.0).reserve("generate", 0.0)
    with pytest.raises(BudgetExceeded):
        Budget(5.0, {"generation": 0.0}).reserve("generate", 0.0)
    Budget(5.0, {"generation": 0.0}).reserve("validate", 1.0)  # another group is not affected
    r = Budget(None).reserve("anything", 10**6)
    assert r.nano == 10**6 * NANO


def test_stage_groups_map_to_config_caps_and_resume_counts_past_spend() -> None:
    b = Budget.from_config(
        BudgetConfig(run_usd=1.0, generation_usd=0.3, validation_usd=0.5), spent_usd={"generate": 0.25}
    )
    assert b.remaining_usd("generate") == pytest.approx(0.05)
    assert b.remaining_usd("validate") == pytest.approx(0.5)
    with pytest.raises(BudgetExceeded, match="generation budget"):
        b.reserve("generate", 0.06)
    r = b.reserve("validate", 0.5)
    with pytest.raises(BudgetExceeded, match="run budget"):
        b.reserve("other-stage", 0.26)
    b.settle(r, usd_to_nano(0.1))  # the real cost: the rest comes back
    b.reserve("other-stage", 0.26)


@settings(max_examples=300, deadline=None)
@given(
    run_cap=st.integers(0, 5_000),
    group_cap=st.one_of(st.none(), st.integers(0, 5_000)),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["generate", "validate"]), st.integers(0, 800), st.floats(0, 1), st.booleans()
        ),
        max_size=60,
    ),
)
def test_property_spend_never_passes_a_cap(run_cap: int, group_cap: int | None, ops: list) -> None:
    """Random interleavings of reservations (some held open, as calls in flight) and settlements at a
    real cost up to the reservation: spent + reserved stays within every cap, and a reservation is
    refused only when it does not fit."""
    b = Budget(run_cap / 1000, {"generation": None if group_cap is None else group_cap / 1000})
    open_: list = []
    spent = 0
    for stage, milli, frac, settle_now in ops:
        nano = milli * NANO // 1000
        headroom = [run_cap * NANO // 1000 - spent - sum(r.nano for r in open_)]
        if stage == "generate" and group_cap is not None:
            gen_spent = b.spent_usd("generate") * NANO
            gen_open = sum(r.nano for r in open_ if r.stage == "generate")
            headroom.append(group_cap * NANO // 1000 - round(gen_spent) - gen_open)
        zero = run_cap == 0 or (stage == "generate" and group_cap == 0)
        try:
            r = b.reserve(stage, nano=nano)
        except BudgetExceeded:
            assert zero or nano > min(headroom)
            continue
        assert not zero and nano <= min(headroom)
        open_.append(r)
        if settle_now and open_:
            done = open_.pop(0)
            actual = int(done.nano * frac)
            b.settle(done, actual)
            spent += actual
        assert b.spent_usd() * NANO <= run_cap * NANO // 1000 + 1e-6
    for r in open_:
        b.settle(r, r.nano)  # worst case for everything still open
        spent += r.nano
    assert spent <= run_cap * NANO // 1000
    assert b.in_flight() == 0


# -- through the real clients and server ----------------------------------------------------------------
def test_zero_budget_sends_nothing_and_says_so(llm_server: LLMTestServer) -> None:
    for prices in ({}, {"input_price_per_mtok": 0.0, "output_price_per_mtok": 0.0}):
        ledger = Ledger(None)
        client = make_client(llm_server, budget=Budget(0.0), ledger=ledger, **prices)
        results = client.run_batch_sync(make_requests(5))
        assert [r.status for r in results] == ["budget"] * 5
        assert llm_server.count == 0
        assert client.last_summary is not None
        assert "budget is $0, no LLM call sent (0 of 5 from the cache)" in client.last_summary.message
        assert [e.status for e in ledger.entries] == ["budget"] * 5


def worst_biller(req: ChatRequest) -> Reply:
    """Bill adversarially: every prompt byte a token, every answer max_tokens long."""
    billed_in = sum(len(m["content"].encode()) for m in req.messages) + len(str(req.schema).encode())
    return Reply(
        content=stub_instance(req.schema or {}), input_tokens=billed_in, output_tokens=req.max_tokens
    )


def test_budget_stops_cleanly_and_keeps_its_rows(llm_server: LLMTestServer) -> None:
    llm_server.responder = worst_biller
    # $1000/Mtok both ways: the worst case of one call is ~(bound + 200 max tokens) x $0.001.
    prices = {"input_price_per_mtok": 1000.0, "output_price_per_mtok": 1000.0, "max_tokens": 200}
    reqs = make_requests(20)
    worst = max_prompt_tokens(reqs[0].messages, schema_json(Answer)) + 200
    cap = 5.5 * worst / 1000  # room for 5 worst cases, whatever the real costs
    budget = Budget(10.0, {"generation": cap})
    ledger = Ledger(None)
    client = make_client(llm_server, budget=budget, ledger=ledger, max_concurrency=4, **prices)
    results = client.run_batch_sync(reqs)
    statuses = [r.status for r in results]
    n_ok = statuses.count("ok")
    assert n_ok >= 5 and statuses == ["ok"] * n_ok + ["budget"] * (20 - n_ok)  # in order, nothing lost
    assert llm_server.count == n_ok
    assert budget.spent_usd("generate") <= cap
    assert ledger.total_cost_usd() == pytest.approx(budget.spent_usd("generate"))
    assert client.last_summary is not None
    assert f"budget reached after {n_ok} of 20" in client.last_summary.message
    # A later batch on the same budget sends nothing either.
    again = client.run_batch_sync(make_requests(3, prefix="more"))
    assert [r.status for r in again] == ["budget"] * 3 and llm_server.count == n_ok


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    price_in=st.floats(0.01, 200.0),
    price_out=st.floats(0.01, 200.0),
    cap_milli=st.integers(0, 400),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=12),
    max_tokens=st.integers(1, 1500),
    provider=st.sampled_from(["openai", "anthropic"]),
)
def test_property_budget_never_exceeded_end_to_end(
    shared_server: LLMTestServer,
    price_in: float,
    price_out: float,
    cap_milli: int,
    sizes: list[int],
    max_tokens: int,
    provider: str,
) -> None:
    """The server bills adversarially (worst_biller)."""
    shared_server.reset()
    shared_server.responder = worst_biller
    cap = cap_milli / 1000
    budget = Budget(cap)
    ledger = Ledger(None)
    reqs = [
        LLMRequest.build(f"r{i}", "generate", Answer, user=f"{i}:" + "é" * (n // 2) + "x" * n)
        for i, n in enumerate(sizes)
    ]
    client = make_client(
        shared_server,
        provider,  # type: ignore[arg-type]
        budget=budget,
        ledger=ledger,
        input_price_per_mtok=price_in,
        output_price_per_mtok=price_out,
        max_tokens=max_tokens,
        max_concurrency=3,
    )
    results = client.run_batch_sync(reqs)
    assert budget.spent_usd() <= cap
    assert sum(e.cost_usd for e in ledger.entries) <= cap + 1e-9
    assert budget.in_flight() == 0
    assert all(e.cost_usd <= e.reserved_usd + 1e-12 for e in ledger.entries)
    statuses = [r.status for r in results]
    assert set(statuses) <= {"ok", "budget"}
    sent = [r for r in results if r.status == "ok"]
    assert shared_server.count == len(sent)
    if "budget" in statuses:
        # Stopped only because the next call's worst case did not fit what was left.
        first = statuses.index("budget")
        bound = max_prompt_tokens(reqs[first].messages, schema_json(Answer))
        worst = client.pricing.cost_usd(bound, max_tokens)
        assert cap == 0 or float(worst) > cap - budget.spent_usd() - 1e-9
