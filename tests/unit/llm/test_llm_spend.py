"""Spend you can trust: what a provider could have billed never passes the budget, through timeouts,
dropped connections, and processes killed with calls in flight (write-ahead accounting, llm/ledger.py).

The property test drives the real LLMClient with a scripted provider that bills like a real one; the kill
test runs a real subprocess against the loopback server, which counts what it bills, and SIGKILLs it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import TESTS_DIR
from helpers.llm_fixtures import make_requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distiller.config import BudgetConfig, LLMConfig
from distiller.llm import Budget, Ledger, LLMClient
from distiller.llm import client as client_mod
from distiller.llm.ledger import JOURNAL_FILENAME
from distiller.llm.providers import Completion, ProviderError
from distiller.testing.llm_server import Fault, LLMTestServer

IN_PRICE, OUT_PRICE = 150.0, 600.0  # USD per million tokens: stub answers cost visible amounts
OUTCOMES = ("ok", "ok_no_usage", "timeout_billed", "timeout_unbilled", "drop_billed", "429", "500")


def _cfg(**kw: object) -> LLMConfig:
    base: dict[str, object] = {
        "provider": "openai",
        "model": "test-model",
        "base_url": "http://127.0.0.1:9/v1",
        "input_price_per_mtok": IN_PRICE,
        "output_price_per_mtok": OUT_PRICE,
        "max_tokens": 64,
        "max_retries": 2,
        "max_concurrency": 4,
    }
    return LLMConfig(**{**base, **kw})  # type: ignore[arg-type]


class ScriptedProvider:
    """Answers by a script of outcomes and bills like a provider: a call it answers (or starts answering
    before the client gives up) is billed at its real usage, an error answer is not."""

    def __init__(self, script: list[str], usage: list[tuple[int, int]]) -> None:
        self.script, self.usage = script, usage
        self.n = 0
        self.billed = Decimal(0)

    def _bill(self, i: int, o: int) -> None:
        self.billed += (Decimal(str(IN_PRICE)) * i + Decimal(str(OUT_PRICE)) * o) / 1_000_000

    async def complete(self, messages: object, spec: object) -> Completion:
        k = self.n
        self.n += 1
        outcome = self.script[k % len(self.script)]
        i, o = self.usage[k % len(self.usage)]
        await asyncio.sleep(0)
        if outcome in ("429", "500"):
            raise ProviderError(f"{outcome} error", status=int(outcome), retry_after_s=0.0)
        if outcome in ("timeout_billed", "drop_billed", "ok", "ok_no_usage"):
            self._bill(i, o)
        if outcome.startswith(("timeout", "drop")):
            raise ProviderError("timed out", outcome_unknown=True)
        usage = (None, None) if outcome == "ok_no_usage" else (i, o)
        return Completion('{"query": "a query", "score": 3}', None, *usage, "stop", False)

    async def aclose(self) -> None:
        return None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    script=st.lists(st.sampled_from(OUTCOMES), min_size=1, max_size=12),
    # Real usage never exceeds the bound the client reserves (bytes of the prompt, max_tokens).
    usage=st.lists(st.tuples(st.integers(1, 60), st.integers(1, 64)), min_size=1, max_size=6),
    budget_usd=st.sampled_from([0.0005, 0.002, 0.01, 0.05]),
    n=st.integers(1, 30),
    killed=st.sets(st.integers(0, 40), max_size=8),
)
def test_billed_never_passes_the_budget_through_faults_kills_and_resumes(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    script: list[str],
    usage: list[tuple[int, int]],
    budget_usd: float,
    n: int,
    killed: set[int],
) -> None:
    run = tmp_path_factory.mktemp("run")
    provider = ScriptedProvider(script, usage)
    monkeypatch.setattr(client_mod, "make_provider", lambda cfg, key: provider)
    monkeypatch.setattr(client_mod, "backoff_s", lambda retry, after=None: 0.0)
    cfg, caps = _cfg(), BudgetConfig(run_usd=budget_usd)
    reqs = make_requests(n)

    ledger = Ledger(run / "ledger.parquet")
    LLMClient(cfg, budget=Budget.from_config(caps), ledger=ledger, api_key="k").run_batch_sync(reqs)
    ledger.flush()
    # A kill with calls in flight: some calls' final rows never reached the journal.
    journal = run / JOURNAL_FILENAME
    rows = journal.read_text().splitlines()
    finals = [k for k, r in enumerate(rows) if json.loads(r)["status"] not in ("pending", "budget")]
    drop = {finals[k % len(finals)] for k in killed} if finals else set()
    journal.write_text("".join(r + "\n" for k, r in enumerate(rows) if k not in drop))
    (run / "ledger.parquet").unlink(missing_ok=True)

    # Resume: the budget starts from what the journal says could have been billed.
    resumed = Ledger(run / "ledger.parquet")
    budget = Budget.from_config(caps, resumed.spent_by_stage())
    LLMClient(cfg, budget=budget, ledger=resumed, api_key="k").run_batch_sync(reqs)

    total = Decimal(str(resumed.total_cost_usd()))
    assert provider.billed <= Decimal(str(budget_usd)), (provider.billed, budget_usd)
    # The ledger never says less than the provider billed (unknown outcomes at their reservation).
    assert provider.billed <= total + Decimal("1e-9")
    assert total <= Decimal(str(budget_usd)) + Decimal("1e-9")
    assert all(e.cost_usd > 0 for e in resumed.entries if e.status == "unknown")


def test_timeouts_and_drops_are_charged_at_reservation_never_zero(llm_server: LLMTestServer) -> None:
    llm_server.input_price_per_mtok, llm_server.output_price_per_mtok = IN_PRICE, OUT_PRICE
    # One answer too slow for the client's timeout, one connection cut without an answer.
    slow, cut = Fault("timeout", sleep_s=1.0), Fault("drop")
    llm_server.fault_fn = lambda req: slow if "number 0:" in req.first_user else cut
    cfg = llm_server.llm_config(
        timeout_s=0.3, max_retries=0, input_price_per_mtok=IN_PRICE, output_price_per_mtok=OUT_PRICE
    )
    ledger = Ledger(None)
    results = LLMClient(cfg, budget=Budget.unlimited(), ledger=ledger, api_key="k").run_batch_sync(
        make_requests(2)
    )
    assert [r.status for r in results] == ["failed", "failed"], (results, llm_server.count)
    unknown = [e for e in ledger.entries if e.status == "unknown"]
    assert len(unknown) == 2 and all(e.estimated and e.cost_usd == e.reserved_usd > 0 for e in unknown)
    # The server billed both (it made the answers); the ledger holds at least as much.
    assert llm_server.billing()["billed_calls"] == 2
    assert 0 < llm_server.billed_usd <= ledger.total_cost_usd()
    assert sum(r.cost_usd for r in results) == pytest.approx(ledger.total_cost_usd())


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from helpers.llm_fixtures import make_requests
    from distiller.config import BudgetConfig, LLMConfig
    from distiller.llm import Budget, Ledger, LLMClient

    cfg = LLMConfig(provider="openai", model="test-model", base_url=sys.argv[1], max_concurrency=6,
                    input_price_per_mtok=150.0, output_price_per_mtok=600.0, max_tokens=64, timeout_s=30)
    ledger = Ledger(sys.argv[2])
    budget = Budget.from_config(BudgetConfig(run_usd=float(sys.argv[5])), ledger.spent_by_stage())
    client = LLMClient(cfg, budget=budget, ledger=ledger, api_key="sk-child")
    client.run_batch_sync(make_requests(int(sys.argv[4])))
    print("FINISHED")
    """
)


@pytest.mark.slow
def test_sigkill_with_calls_in_flight_then_resume_stays_within_budget(
    llm_server: LLMTestServer, tmp_path: Path
) -> None:
    """Three kills with six calls in flight each, then a resume to the end: the server's bill stays
    within the budget and the ledger shows the calls it never heard back from as `unknown`."""
    llm_server.input_price_per_mtok, llm_server.output_price_per_mtok = IN_PRICE, OUT_PRICE
    llm_server.latency_s = 0.4  # billed on arrival, answered 0.4 s later: kills land mid-flight
    n, budget = 150, 5.0  # worst case ~$0.17 a call, billed ~$0.02: unknown calls weigh
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ledger_path = tmp_path / "run" / "ledger.parquet"
    args = [llm_server.openai_base_url, str(ledger_path), str(TESTS_DIR), str(n), str(budget)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill in range(4):
        child = subprocess.Popen([sys.executable, str(script), *args], stdout=subprocess.PIPE, env=env)
        try:
            if kill < 3:
                target = llm_server.count + 9
                deadline = time.monotonic() + 60
                while llm_server.count < target and child.poll() is None:
                    assert time.monotonic() < deadline, "the child never got going"
                    time.sleep(0.01)
                child.send_signal(signal.SIGKILL)
            child.wait(120)
        finally:
            if child.poll() is None:
                child.kill()
        assert child.stdout is not None
        with child.stdout:
            out = child.stdout.read().decode()
        if kill < 3:
            assert child.returncode == -signal.SIGKILL
        else:
            assert child.returncode == 0 and "FINISHED" in out
    ledger = Ledger(ledger_path)
    unknown = [e for e in ledger.entries if e.status == "unknown"]
    assert unknown, "no call was in flight at a kill: the test did not test anything"
    assert all(e.estimated and e.cost_usd == e.reserved_usd > 0 for e in unknown)
    billed = llm_server.billed_usd
    assert billed <= budget, (billed, budget)
    assert billed <= ledger.total_cost_usd() <= budget
    # The budget was the limit: the last run stopped because of it, not because the work ran out.
    assert any(e.status == "budget" for e in ledger.entries)
