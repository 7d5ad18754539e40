"""Batch mode (`teacher.mode: batch`) against the loopback server's OpenAI Batch API and Anthropic Message
Batches: answers at half price in the ledger and the cache, a crash between submit and collect resumed by
batch id with no second submission, unparsable answers re-asked online, the estimate at the batch rate,
and the generate stage end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from helpers import TESTS_DIR
from helpers.generation_responder import ScriptedTeacher, llm_run_config, write_corpus
from helpers.llm_fixtures import Answer, make_requests

from distiller.config import BudgetConfig
from distiller.llm import Budget, CallCache, Ledger, LLMClient
from distiller.llm import batch as batch_mod
from distiller.llm.estimate import estimate_cost
from distiller.llm.pricing import Pricing
from distiller.progress import WorkEvent, work_sink
from distiller.records import Query, read_parquet
from distiller.stages import generate_stage, ingest_stage, open_store
from distiller.testing.llm_server import LLMTestServer

IN_PRICE, OUT_PRICE = 2.0, 8.0  # USD per million tokens, online


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_mod, "POLL_INTERVAL_S", 0.01)


def _priced(server: LLMTestServer) -> None:
    server.input_price_per_mtok, server.output_price_per_mtok = IN_PRICE, OUT_PRICE


def _client(server: LLMTestServer, provider: str, run: Path, budget: Budget | None = None) -> LLMClient:
    cfg = server.llm_config(
        provider, mode="batch", input_price_per_mtok=IN_PRICE, output_price_per_mtok=OUT_PRICE
    )
    ledger = Ledger.in_run(run)
    budget = budget or Budget.from_config(BudgetConfig(run_usd=1.0), ledger.spent_by_stage())
    return LLMClient(
        cfg, budget=budget, cache=CallCache.in_dir(run / "cache"), ledger=ledger, api_key="sk-test-batch"
    )


def _online(server: LLMTestServer, provider: str) -> int:
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    return server.counts[path]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_answers_at_half_price_in_ledger_and_cache(
    llm_server: LLMTestServer, tmp_path: Path, provider: str
) -> None:
    _priced(llm_server)
    reqs = make_requests(5)
    events: list[WorkEvent] = []
    with _client(llm_server, provider, tmp_path) as client, work_sink(events.append):
        results = client.run_batch_sync(reqs)
        keys = [client.key_for(r) for r in reqs]
        pricing = client.pricing
    assert [r.status for r in results] == ["ok"] * 5
    # polled with progress: not done at the first look, all 5 at the last
    assert [(e.done, e.total) for e in events] == [(0, 5), (5, 5)]
    assert events[0].task == f"LLM batch {llm_server.batches_created[0]}"
    assert all(Answer.model_validate(r.parsed) for r in results)
    assert len(llm_server.batches_created) == 1 and _online(llm_server, provider) == 0
    assert len(llm_server.batch_requests) == 5

    rows = [e for e in Ledger.in_run(tmp_path).entries if e.status == "ok"]
    assert len(rows) == 5 and all("batch price" in e.price_source for e in rows)
    for e in rows:  # each row at half the online price of its tokens
        online = pricing.cost_usd(e.input_tokens, e.output_tokens)
        assert e.cost_usd == pytest.approx(float(online / 2), abs=1e-9) and e.cost_usd > 0
        assert e.reserved_usd >= e.cost_usd
    ledger_total = sum(e.cost_usd for e in rows)
    assert ledger_total == pytest.approx(llm_server.billed_usd, abs=1e-8)
    assert Ledger.in_run(tmp_path).unknown_usd() == 0  # every pending row settled

    with CallCache.in_dir(tmp_path / "cache") as cache:
        hits = [cache.get(k) for k in keys]
    assert all(h is not None for h in hits)
    assert sum(h.cost_usd for h in hits) == pytest.approx(ledger_total, abs=1e-8)  # type: ignore[union-attr]

    # Run again: all from the cache, nothing submitted.
    with _client(llm_server, provider, tmp_path) as client:
        again = client.run_batch_sync(reqs)
    assert [r.status for r in again] == ["cached"] * 5 and len(llm_server.batches_created) == 1


def test_a_big_step_goes_as_several_batches(
    llm_server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_mod, "MAX_BATCH_REQUESTS", 2)
    with _client(llm_server, "openai", tmp_path) as client:
        results = client.run_batch_sync(make_requests(5))
    assert [r.status for r in results] == ["ok"] * 5
    assert len(llm_server.batches_created) == 3 and len(llm_server.batch_requests) == 5


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_crash_between_submit_and_collect_resumes_by_batch_id(
    llm_server: LLMTestServer, tmp_path: Path, provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _priced(llm_server)
    reqs = make_requests(4)
    real_poll = batch_mod._poll

    async def crash(provider_: object, batch_id: str) -> None:
        raise SystemExit("killed after submit")  # what a dying process looks like: no cleanup

    monkeypatch.setattr(batch_mod, "_poll", crash)
    client = _client(llm_server, provider, tmp_path)
    with pytest.raises(SystemExit):
        client.run_batch_sync(reqs)
    assert len(llm_server.batches_created) == 1
    assert llm_server.billed_usd == 0  # not processed yet: nothing billed
    journal = (tmp_path / batch_mod.BATCHES_FILENAME).read_text().splitlines()
    assert any(json.loads(x).get("batch_id") == llm_server.batches_created[0] for x in journal)

    # The killed run's requests are charged at their reservations (batch price) for the next run's budget.
    after_kill = Ledger.in_run(tmp_path)
    unknown = [e for e in after_kill.entries if e.status == "unknown"]
    assert len(unknown) == 4 and after_kill.total_cost_usd() > 0
    assert after_kill.total_cost_usd() == pytest.approx(sum(e.reserved_usd for e in unknown))

    # A new process: the same requests find their batch in the journal and collect it.
    monkeypatch.setattr(batch_mod, "_poll", real_poll)
    with _client(llm_server, provider, tmp_path) as client2:
        results = client2.run_batch_sync(reqs)
    assert [r.status for r in results] == ["ok"] * 4
    assert len(llm_server.batches_created) == 1  # no second submission
    assert len(llm_server.batch_requests) == 4 and _online(llm_server, provider) == 0
    final = Ledger.in_run(tmp_path)
    assert [e.status for e in final.entries].count("ok") == 4 and final.unknown_usd() == 0
    assert final.total_cost_usd() == pytest.approx(llm_server.billed_usd, abs=1e-8)
    events = [
        json.loads(x)["event"] for x in (tmp_path / batch_mod.BATCHES_FILENAME).read_text().splitlines()
    ]
    assert events == ["submitting", "submitted", "collected"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_unparsable_batch_answer_is_reasked_online(
    llm_server: LLMTestServer, tmp_path: Path, provider: str
) -> None:
    _priced(llm_server)
    seen: list[str] = []

    def fault(req):  # the batch's answer for item 1 has the wrong fields; its online re-ask is fine
        if "number 1:" in req.first_user and not seen:
            seen.append("x")
            return "wrong_schema"
        return None

    llm_server.fault_fn = fault
    reqs = make_requests(3)
    with _client(llm_server, provider, tmp_path) as client:
        results = client.run_batch_sync(reqs)
    assert [r.status for r in results] == ["ok"] * 3
    assert _online(llm_server, provider) == 1 and len(llm_server.batches_created) == 1
    reask = next(r for r in llm_server.requests)
    assert "number 1:" in reask.first_user and len(reask.messages) > len(reqs[1].messages)
    rows = Ledger.in_run(tmp_path).entries
    item1 = [e for e in rows if e.item_id == "chunk-1"]
    assert [e.status for e in item1] == ["parse_error", "ok"]
    assert "batch price" in item1[0].price_source and "batch price" not in item1[1].price_source
    assert results[1].attempts == 2 and results[1].cost_usd == pytest.approx(sum(e.cost_usd for e in item1))
    assert sum(e.cost_usd for e in rows) == pytest.approx(llm_server.billed_usd, abs=1e-8)


def test_budget_holds_batch_reservations(llm_server: LLMTestServer, tmp_path: Path) -> None:
    """Every request of a batch is reserved at its worst case before it is submitted: those that do not
    fit are not sent, and the server never bills past the budget."""
    _priced(llm_server)
    reqs = make_requests(6)
    cfg = llm_server.llm_config(
        "openai", mode="batch", input_price_per_mtok=IN_PRICE, output_price_per_mtok=OUT_PRICE
    )
    worst = Pricing(cfg).cost_usd(200, cfg.max_tokens, batch=True)  # prompts here are < 200 tokens
    budget_usd = float(worst * Decimal("2.5"))

    budget = Budget.from_config(BudgetConfig(run_usd=budget_usd))
    with _client(llm_server, "openai", tmp_path, budget=budget) as client:
        results = client.run_batch_sync(reqs)
    statuses = [r.status for r in results]
    assert 1 <= statuses.count("ok") < 6 and statuses.count("budget") == 6 - statuses.count("ok")
    assert statuses == sorted(statuses, key=lambda s: s != "ok")  # a clean prefix was sent
    assert len(llm_server.batch_requests) == statuses.count("ok")
    assert llm_server.billed_usd <= budget_usd


def test_estimate_prices_batch_mode_at_half(llm_server: LLMTestServer) -> None:
    reqs = make_requests(10)
    online = llm_server.llm_config("openai", input_price_per_mtok=IN_PRICE, output_price_per_mtok=OUT_PRICE)
    batch = online.model_copy(update={"mode": "batch"})
    est_online = estimate_cost(reqs, online, expected_output_fraction=0.5)
    est_batch = estimate_cost(reqs, batch, expected_output_fraction=0.5)
    assert est_online.expected_cost_usd and est_online.worst_case_usd
    assert est_batch.expected_cost_usd == pytest.approx(est_online.expected_cost_usd / 2)
    assert est_batch.worst_case_usd == pytest.approx(est_online.worst_case_usd / 2)
    assert "batch price" in est_batch.stages[0].price_source


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_generate_stage_in_batch_mode(llm_server: LLMTestServer, tmp_path: Path, provider: str) -> None:
    _priced(llm_server)
    llm_server.responder = ScriptedTeacher()
    corpus = write_corpus(tmp_path / "docs")
    teacher = llm_server.llm_config(
        provider, mode="batch", input_price_per_mtok=IN_PRICE, output_price_per_mtok=OUT_PRICE
    ).model_dump()
    cfg = llm_run_config(
        llm_server,
        tmp_path / "runs",
        provider=provider,
        input={"paths": [str(corpus)]},
        teacher=teacher,
        generation={"queries_per_chunk": 1, "questions_per_chunk": 1, "contrastive": False},
    )
    store = open_store(cfg)
    ingest_stage(store, cfg)
    res = generate_stage(store, cfg)
    assert res.status == "completed"
    queries = read_parquet(store.path("queries.parquet"), Query)
    assert queries
    assert llm_server.batches_created and _online(llm_server, provider) == 0
    rows = [e for e in Ledger.in_run(store.dir).entries if e.status == "ok"]
    assert rows and all("batch price" in e.price_source for e in rows)
    assert sum(e.cost_usd for e in rows) == pytest.approx(llm_server.billed_usd, abs=1e-8)


CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[3])
    from helpers.llm_fixtures import make_requests
    from distiller.config import BudgetConfig, LLMConfig
    from distiller.llm import Budget, CallCache, Ledger, LLMClient

    cfg = LLMConfig(provider=sys.argv[4], model="test-model", base_url=sys.argv[1], mode="batch",
                    input_price_per_mtok=2.0, output_price_per_mtok=8.0, timeout_s=5)
    run = sys.argv[2]
    ledger = Ledger.in_run(run)
    client = LLMClient(cfg, budget=Budget.from_config(BudgetConfig(run_usd=1.0)),
                       cache=CallCache.in_dir(run + "/cache"), ledger=ledger, api_key="sk-child-key")
    client.run_batch_sync(make_requests(4))
    print("FINISHED")
    """
)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_sigkill_while_polling_then_resume_collects_without_resubmitting(
    llm_server: LLMTestServer, tmp_path: Path, provider: str
) -> None:
    _priced(llm_server)
    llm_server.batch_polls = 10**6  # the batch never ends while the child polls
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    base = llm_server.openai_base_url if provider == "openai" else llm_server.anthropic_base_url
    child = subprocess.Popen(
        [sys.executable, str(script), base, str(tmp_path), str(TESTS_DIR), provider],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    journal = tmp_path / batch_mod.BATCHES_FILENAME
    try:
        deadline = time.monotonic() + 120
        while not (journal.is_file() and '"submitted"' in journal.read_text()):
            assert child.poll() is None, child.stdout.read().decode() if child.stdout else ""
            assert time.monotonic() < deadline, "the child never submitted"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert len(llm_server.batches_created) == 1 and llm_server.billed_usd == 0

    llm_server.batch_polls = 1
    with _client(llm_server, provider, tmp_path) as client:
        # the next run's budget starts from the killed run's reservations (pending rows)
        assert client.budget.spent_usd() > 0
        results = client.run_batch_sync(make_requests(4))
    assert [r.status for r in results] == ["ok"] * 4
    assert len(llm_server.batches_created) == 1 and _online(llm_server, provider) == 0
    ledger = Ledger.in_run(tmp_path)
    assert ledger.unknown_usd() == 0
    assert (
        ledger.total_cost_usd() == pytest.approx(llm_server.billed_usd, abs=1e-8)
        and llm_server.billed_usd > 0
    )


def test_failed_batch_item_is_not_billed_and_asked_online(llm_server: LLMTestServer, tmp_path: Path) -> None:
    _priced(llm_server)
    failed: list[str] = []

    def fault(req):  # the batch fails item 2 (an error: not billed); its online call is answered
        if "number 2:" in req.first_user and not failed:
            failed.append("x")
            return "500"
        return None

    llm_server.fault_fn = fault
    with _client(llm_server, "anthropic", tmp_path) as client:
        results = client.run_batch_sync(make_requests(3))
    assert [r.status for r in results] == ["ok"] * 3
    assert llm_server.counts["/v1/messages"] == 1  # only the failed item, online
    item2 = [e for e in Ledger.in_run(tmp_path).entries if e.item_id == "chunk-2"]
    assert (item2[0].status, item2[0].cost_usd) == ("failed", 0.0)
    assert item2[1].status == "ok" and item2[1].cost_usd > 0
    assert sum(e.cost_usd for e in Ledger.in_run(tmp_path).entries) == pytest.approx(
        llm_server.billed_usd, abs=1e-8
    )


def test_kill_before_the_batch_id_is_noted_finds_the_batch_by_its_tag(
    llm_server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OpenAI: the provider accepted the batch but the process died before journaling its id; the next
    run finds it by the tag in its metadata and collects it, no second submission."""
    _priced(llm_server)
    real_add = batch_mod.BatchJournal.add

    def dies_before_noting(self, row):
        if row.get("event") == "submitted":
            raise SystemExit("killed before the id was noted")
        real_add(self, row)

    monkeypatch.setattr(batch_mod.BatchJournal, "add", dies_before_noting)
    with pytest.raises(SystemExit):
        _client(llm_server, "openai", tmp_path).run_batch_sync(make_requests(3))
    assert len(llm_server.batches_created) == 1
    monkeypatch.setattr(batch_mod.BatchJournal, "add", real_add)
    with _client(llm_server, "openai", tmp_path) as client:
        results = client.run_batch_sync(make_requests(3))
    assert [r.status for r in results] == ["ok"] * 3
    assert len(llm_server.batches_created) == 1 and _online(llm_server, "openai") == 0
    ledger = Ledger.in_run(tmp_path)
    assert ledger.unknown_usd() == 0
    assert ledger.total_cost_usd() == pytest.approx(llm_server.billed_usd, abs=1e-8)


def test_anthropic_batch_lost_before_its_id_is_sent_again_within_budget(
    llm_server: LLMTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anthropic batches carry no tag: the requests are sent again, and the lost batch stays charged at
    its reservations, so the provider's bill (both batches) stays within what the ledger charged."""
    _priced(llm_server)
    real_add = batch_mod.BatchJournal.add

    def dies_before_noting(self, row):
        if row.get("event") == "submitted":
            raise SystemExit("killed before the id was noted")
        real_add(self, row)

    monkeypatch.setattr(batch_mod.BatchJournal, "add", dies_before_noting)
    with pytest.raises(SystemExit):
        _client(llm_server, "anthropic", tmp_path).run_batch_sync(make_requests(3))
    monkeypatch.setattr(batch_mod.BatchJournal, "add", real_add)
    with _client(llm_server, "anthropic", tmp_path) as client:
        results = client.run_batch_sync(make_requests(3))
    assert [r.status for r in results] == ["ok"] * 3
    assert len(llm_server.batches_created) == 2
    lost = llm_server.batches_created[0]
    with httpx.Client() as http:  # the provider processes (and bills) the lost batch anyway
        http.get(f"{llm_server.url}/v1/messages/batches/{lost}")
        http.get(f"{llm_server.url}/v1/messages/batches/{lost}")
    ledger = Ledger.in_run(tmp_path)
    assert ledger.unknown_usd() > 0  # the lost batch, at its reservations
    assert llm_server.billed_usd <= ledger.total_cost_usd()
