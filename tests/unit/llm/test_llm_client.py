"""The LLM client against a real loopback server, through the real `openai` and `anthropic` clients:
every fault is either recovered or recorded as a failed row; nothing is dropped; the cache and the
rate limits work."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers.llm_fixtures import Answer, make_client, make_requests
from pydantic import BaseModel

from distiller.llm import CallCache, Ledger, LLMResult
from distiller.llm import client as client_mod
from distiller.testing.llm_server import Fault, LLMTestServer

PROVIDERS = ["openai", "anthropic"]


class OtherAnswer(BaseModel):
    query: str


def _ok(results: list[LLMResult]) -> None:
    for r in results:
        assert r.status in ("ok", "cached"), r
        assert Answer.model_validate(r.parsed)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_both_wire_formats_answer_in_schema(llm_server: LLMTestServer, provider: str) -> None:
    ledger = Ledger(None)
    reqs = make_requests(6)
    results = make_client(llm_server, provider, ledger=ledger).run_batch_sync(reqs)  # type: ignore[arg-type]
    assert [r.item_id for r in results] == [r.item_id for r in reqs]  # request order
    _ok(results)
    assert results[3].parsed is not None and "chunk number 3" in results[3].parsed["query"]
    path = "/v1/chat/completions" if provider == "openai" else "/v1/messages"
    assert llm_server.counts == {path: 6}
    seen = llm_server.requests[0]
    assert seen.schema is not None and seen.schema_name == "Answer"  # json_schema / forced tool use
    if provider == "anthropic":
        assert seen.body["tool_choice"] == {"type": "tool", "name": "Answer"}
    else:
        assert seen.body["response_format"]["type"] == "json_schema"
        assert seen.body["temperature"] == 0.7
    assert [e.status for e in ledger.entries] == ["ok"] * 6
    assert all(e.input_tokens > 0 and e.output_tokens > 0 for e in ledger.entries)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["429", "500", "drop", "timeout"])
def test_transport_fault_is_retried_by_the_client(
    llm_server: LLMTestServer, provider: str, fault: str
) -> None:
    # The client's timeout must cut the slow answer and never the good retry, however busy the machine:
    # 5 s against a 30 s stall (0.3 s cut a loopback retry on a loaded CI machine: 3 attempts).
    llm_server.inject(Fault(fault, sleep_s=30.0))  # type: ignore[arg-type]
    ledger = Ledger(None)
    client = make_client(
        llm_server,
        provider,  # type: ignore[arg-type]
        ledger=ledger,
        timeout_s=5.0,
        input_price_per_mtok=1.0,
        output_price_per_mtok=2.0,
    )
    [res] = client.run_batch_sync(make_requests(1))
    _ok([res])
    assert res.attempts == 2  # retried here, not inside the SDK: each attempt reserved and journaled
    assert llm_server.count == 2
    assert llm_server.faults_served[fault] == 1
    first, ok = ledger.entries
    assert ok.status == "ok" and not ok.estimated and 0 < ok.cost_usd < ok.reserved_usd
    if fault in ("drop", "timeout"):
        # No answer came: the server may have billed it, so it stays charged at its reservation.
        assert first.status == "unknown" and first.estimated and first.cost_usd == first.reserved_usd > 0
    else:
        assert first.status == "failed" and first.cost_usd == 0  # an error answer is not billed
    assert res.cost_usd == pytest.approx(first.cost_usd + ok.cost_usd)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    ("fault", "shown"),
    [
        ("malformed", "not valid JSON"),
        ("truncated", "cut off at the output token limit"),
        ("wrong_schema", "does not match the schema Answer"),
        ("bad_body", None),
    ],
)
def test_bad_answer_is_asked_again_with_the_error(
    llm_server: LLMTestServer, provider: str, fault: str, shown: str | None
) -> None:
    llm_server.inject(fault)
    ledger = Ledger(None)
    [res] = make_client(llm_server, provider, ledger=ledger).run_batch_sync(make_requests(1))  # type: ignore[arg-type]
    _ok([res])
    assert res.attempts == 2 and llm_server.count == 2
    # An unreadable 200 came from the server: whether it was billed is unknown.
    assert [e.status for e in ledger.entries] == ["unknown" if fault == "bad_body" else "parse_error", "ok"]
    if shown:
        retry = llm_server.requests[1]
        assert retry.messages[-2]["role"] == "assistant"  # the bad answer, then what was wrong with it
        assert "could not be used" in retry.last_user and shown in retry.last_user
        assert shown in (ledger.entries[0].error or "")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_persistent_bad_answers_become_failed_rows_not_a_crash(
    llm_server: LLMTestServer, provider: str
) -> None:
    llm_server.fault_fn = lambda req: "malformed" if "number 1:" in req.first_user else None
    ledger = Ledger(None)
    client = make_client(llm_server, provider, ledger=ledger, max_parse_retries=2)  # type: ignore[arg-type]
    results = client.run_batch_sync(make_requests(3))
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    bad = results[1]
    assert bad.attempts == 3 and bad.parsed is None
    assert bad.error and "not valid JSON" in bad.error and "gave up after 3 attempts" in bad.error
    assert sum(1 for e in ledger.entries if e.status == "parse_error") == 3
    assert client.last_summary is not None and client.last_summary.failed == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_persistent_server_errors_are_recorded_after_the_client_retries(
    llm_server: LLMTestServer, provider: str
) -> None:
    llm_server.fault_fn = lambda req: "500" if "number 0:" in req.first_user else None
    ledger = Ledger(None)
    client = make_client(llm_server, provider, ledger=ledger, max_retries=1)  # type: ignore[arg-type]
    results = client.run_batch_sync(make_requests(2))
    assert [r.status for r in results] == ["failed", "ok"]
    assert results[0].error and "500" in results[0].error
    assert llm_server.count == 3  # 2 tries of the failing one + 1
    assert [e.status for e in ledger.entries].count("failed") == 2  # one row per attempt


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_is_honoured(llm_server: LLMTestServer, provider: str) -> None:
    llm_server.inject(Fault("429", retry_after=1.0))
    [res] = make_client(llm_server, provider).run_batch_sync(make_requests(1))  # type: ignore[arg-type]
    _ok([res])
    first, second = llm_server.requests
    # The clients' own backoff would be 0.375-0.5 s; the header asked for 1 s.
    assert 0.95 <= second.received_at - first.received_at < 3.0


def test_bad_key_stops_the_batch_instead_of_failing_every_call(llm_server: LLMTestServer) -> None:
    llm_server.fault_fn = lambda req: "401"
    client = make_client(llm_server, max_concurrency=1)
    results = client.run_batch_sync(make_requests(5))
    assert [r.status for r in results] == ["failed"] * 5
    assert llm_server.count == 1
    assert all("not sent: an earlier call failed for good" in (r.error or "") for r in results[1:])


def test_rerun_is_served_from_the_cache_with_zero_requests(llm_server: LLMTestServer, tmp_path: Path) -> None:
    reqs = make_requests(8)
    with CallCache.in_dir(tmp_path) as cache:
        first = make_client(llm_server, cache=cache).run_batch_sync(reqs)
    assert llm_server.count == 8 and (tmp_path / "llm_cache.sqlite").is_file()
    llm_server.reset()
    ledger = Ledger(None)
    with CallCache.in_dir(tmp_path) as cache:  # a new process would open it the same way
        again = make_client(llm_server, cache=cache, ledger=ledger).run_batch_sync(reqs)
    assert llm_server.count == 0
    assert [r.status for r in again] == ["cached"] * 8
    assert [r.parsed for r in again] == [r.parsed for r in first]
    assert all(e.cached and e.cost_usd == 0 for e in ledger.entries)


def test_cache_key_covers_model_params_and_schema(llm_server: LLMTestServer, tmp_path: Path) -> None:
    req = make_requests(1)[0]
    with CallCache.in_dir(tmp_path) as cache:
        base = make_client(llm_server, cache=cache)
        keys = {
            base.key_for(req),
            make_client(llm_server, cache=cache, model="other-model").key_for(req),
            make_client(llm_server, cache=cache, temperature=0.0).key_for(req),
            make_client(llm_server, cache=cache, max_tokens=99).key_for(req),
            make_client(llm_server, "anthropic", cache=cache).key_for(req),
            base.key_for(req.model_copy(update={"schema_model": OtherAnswer})),
        }
        assert len(keys) == 6
        # Not the base URL or the key: the same model elsewhere answers the same way.
        other = make_client(llm_server, cache=cache, base_url="http://127.0.0.2:1/v1", api_key="sk-other-key")
        assert other.key_for(req) == base.key_for(req)


def test_duplicate_requests_in_one_batch_are_sent_once(llm_server: LLMTestServer) -> None:
    req = make_requests(1)[0]
    twin = req.model_copy(update={"item_id": "twin"})
    results = make_client(llm_server).run_batch_sync([req, twin])
    assert llm_server.count == 1
    assert [r.status for r in results] == ["ok", "cached"]
    assert results[1].item_id == "twin" and results[1].parsed == results[0].parsed


def test_requests_per_minute_limit_throttles(
    llm_server: LLMTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_mod, "RATE_PERIOD_S", 1.0)  # "per minute" shrunk to a second
    client = make_client(llm_server, requests_per_minute=4)
    t0 = time.perf_counter()
    _ok(client.run_batch_sync(make_requests(8)))
    # A burst of 4, then 4 per period: the other 4 take ~1 s.
    assert time.perf_counter() - t0 >= 0.85


def test_tokens_per_minute_limit_throttles(
    llm_server: LLMTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_mod, "RATE_PERIOD_S", 1.0)
    client = make_client(llm_server, tokens_per_minute=2000, max_tokens=400)  # ~600 tokens a call
    t0 = time.perf_counter()
    _ok(client.run_batch_sync(make_requests(6)))
    assert time.perf_counter() - t0 >= 0.6


def test_concurrency_is_bounded(llm_server: LLMTestServer) -> None:
    llm_server.latency_s = 0.05
    seen: list[int] = []
    active = 0

    def responder(req):  # type: ignore[no-untyped-def]
        nonlocal active
        active += 1
        seen.append(active)
        time.sleep(0.05)
        active -= 1
        return {"query": "a query", "score": 2}

    llm_server.responder = responder
    _ok(make_client(llm_server, max_concurrency=3).run_batch_sync(make_requests(12)))
    assert max(seen) <= 3 and max(seen) >= 2


def test_progress_and_sync_wrapper_inside_a_running_loop(llm_server: LLMTestServer) -> None:
    client = make_client(llm_server)
    progress: list[tuple[int, int]] = []

    async def inside_an_async_flow() -> list[LLMResult]:
        return client.run_batch_sync(make_requests(4), on_progress=lambda d, t, r: progress.append((d, t)))

    results = asyncio.run(inside_an_async_flow())
    _ok(results)
    assert sorted(progress) == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_schema_mode_steps_down_for_servers_without_json_schema(llm_server: LLMTestServer) -> None:
    original = llm_server._handle

    def handle(h, raw):  # type: ignore[no-untyped-def]
        if b'"json_schema"' in raw:
            h._send(400, {"error": {"message": "response_format json_schema is not supported", "type": "x"}})
            return
        original(h, raw)

    llm_server._handle = handle  # type: ignore[method-assign]
    # In JSON mode the server is not told the schema: answer as a model that read it in the prompt would.
    llm_server.responder = lambda req: {"query": "a query from the prompt", "score": 3}
    results = make_client(llm_server).run_batch_sync(make_requests(2))
    _ok(results)
    fallback = llm_server.requests[-1]
    assert fallback.body["response_format"] == {"type": "json_object"}
    assert "JSON schema" in fallback.messages[0]["content"]  # the schema is in the prompt instead


def test_for_run_wires_ledger_cache_and_resumed_budget(llm_server: LLMTestServer, tmp_path: Path) -> None:
    from distiller.config import DistillConfig
    from distiller.llm import LedgerEntry, LLMClient
    from distiller.records import read_parquet

    teacher = llm_server.llm_config("openai", input_price_per_mtok=100.0, output_price_per_mtok=100.0)
    cfg = DistillConfig(
        runs_dir=str(tmp_path / "runs"), teacher=teacher.model_dump(), budget={"run_usd": 1.0}
    )
    run_dir = cfg.runs_path / "r1"
    with LLMClient.for_run(cfg, run_dir) as client:
        first = client.run_batch_sync(make_requests(3))
    spent = sum(r.cost_usd for r in first)
    assert spent > 0 and (cfg.cache_path / "llm_cache.sqlite").is_file()
    rows = read_parquet(run_dir / "ledger.parquet", LedgerEntry)
    assert [(r.stage, r.status) for r in rows] == [("generate", "ok")] * 3
    # Resuming the run: the budget starts from what the ledger says was spent; cached calls are free.
    with LLMClient.for_run(cfg, run_dir) as again:
        assert again.budget.spent_usd() == pytest.approx(spent)
        assert [r.status for r in again.run_batch_sync(make_requests(3))] == ["cached"] * 3
    assert len(read_parquet(run_dir / "ledger.parquet", LedgerEntry)) == 6
    assert llm_server.count == 3
