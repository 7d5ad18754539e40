"""The one entry point stages call: `LLMClient(...).run_batch(requests)` -> one `LLMResult` per request.

Per request: cache lookup -> budget reservation (worst case) -> rate limits -> write-ahead journal row
-> the call -> settle the real cost -> parse into the schema; a malformed or truncated answer is re-asked
with the error shown, up to `max_parse_retries`, then recorded as failed. Transport faults (429, 5xx,
timeouts, dropped connections) are retried here, up to `max_retries`, each attempt with its own
reservation: a timed-out or dropped attempt may have been billed, so it stays charged at its reservation
(ledger status `unknown`), and so does one in flight when the process dies (the journal's pending row).
Every answer is written to the cache as it arrives and every call to the ledger.

Concurrency is a pool of `max_concurrency` workers taking requests in order, so at most that many
reservations are open and a budget stop is clean: a worker that cannot reserve waits while other calls
are in flight (their real cost is usually far below the worst case) and stops the stage only when the
call does not fit with nothing in flight. The rest of that stage's requests come back as `budget`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiolimiter import AsyncLimiter
from pydantic import BaseModel, SecretStr

from distiller.config import DistillConfig, LLMConfig
from distiller.errors import BudgetExceeded
from distiller.llm.budget import Budget, Reservation, stage_group
from distiller.llm.cache import CachedAnswer, CallCache, cache_key
from distiller.llm.ledger import Ledger, LedgerEntry, LedgerStatus
from distiller.llm.pricing import NANO, PriceUnknown, Pricing, nano_to_usd
from distiller.llm.providers import CallSpec, Completion, Provider, ProviderError, make_provider
from distiller.llm.secrets import install_log_redaction, redact_exception, register_secret, resolve_api_key
from distiller.llm.structured import ParseFailure, feedback, parse_answer
from distiller.llm.tokens import expected_prompt_tokens, max_prompt_tokens, schema_info
from distiller.llm.types import LLMRequest, LLMResult, Message, utc_now

log = logging.getLogger("distiller.llm")

RATE_PERIOD_S = 60.0
REVOKED = "this work was taken over by a newer grant of it (a rerun of the shard)"
"""The window of requests_per_minute / tokens_per_minute (a module constant so tests can shrink it)."""

MAX_RETRY_AFTER_S = 60.0
"""A longer Retry-After is not waited for in full (the SDKs cap it similarly)."""


def backoff_s(retry: int, retry_after_s: float | None = None) -> float:
    """The wait before transport retry `retry` (1, 2, ...): the server's Retry-After when it gave one,
    else the SDKs' schedule, 0.5 s doubling to 8 s minus up to 25% jitter."""
    if retry_after_s is not None:
        return min(retry_after_s, MAX_RETRY_AFTER_S)
    return min(8.0, 0.5 * 2 ** (retry - 1)) * (1 - 0.25 * random.random())


ProgressFn = Callable[[int, int, LLMResult], None]
"""on_progress(done, total, result): called as each request finishes (from the event loop)."""


class BatchSummary(BaseModel):
    total: int
    ok: int
    cached: int
    failed: int
    budget: int
    calls_sent: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    stopped_by_budget: bool
    notes: list[str]
    message: str


def _params(cfg: LLMConfig, req: LLMRequest) -> tuple[int, float]:
    max_tokens = req.max_tokens or cfg.max_tokens
    temperature = req.temperature if req.temperature is not None else cfg.temperature
    return max_tokens, temperature


def request_key(cfg: LLMConfig, req: LLMRequest) -> str:
    """The call-cache key of a request sent to this endpoint."""
    name, text, _ = schema_info(req.schema_model)
    max_tokens, temperature = _params(cfg, req)
    return cache_key(
        provider=cfg.provider,
        model=cfg.model,
        messages=req.messages,
        temperature=temperature,
        max_tokens=max_tokens,
        schema_name=name,
        schema_text=text,
    )


@dataclass
class _BatchState:
    total: int
    # stage group (or "*" for the whole endpoint) -> (result status for the rest, reason)
    stopped: dict[str, tuple[str, str]] = field(default_factory=dict)
    budget_stop: dict[str, tuple[str, bool]] = field(default_factory=dict)  # stage -> (caps, cap is $0)
    pending: dict[str, asyncio.Future[LLMResult]] = field(default_factory=dict)
    settled: asyncio.Condition = field(default_factory=asyncio.Condition)
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    calls_sent: int = 0
    # This batch's share of the budget (llm/plan.py), on top of the budget's own caps: None, no share.
    share_nano: int | None = None
    share_spent: int = 0
    share_reserved: int = 0

    def share_fits(self, nano: int) -> bool:
        if self.share_nano is None or self.share_spent + self.share_reserved == 0:
            return True  # a step's first call goes even when its share is below one worst case: no starving
        return self.share_spent + self.share_reserved + nano <= self.share_nano


class LLMClient:
    """Calls one endpoint (`LLMConfig`) for any number of stages.

    `budget` is required on purpose: pass `Budget.from_config(config.budget, ledger.spent_by_stage())`,
    or `Budget.unlimited()` to opt out. Share one Budget (and one Ledger) between the clients of a run
    (teacher and judge) so that the run cap sees all spend.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        budget: Budget,
        cache: CallCache | None = None,
        ledger: Ledger | None = None,
        api_key: str | SecretStr | None = None,
    ) -> None:
        self.config = config
        self.budget = budget
        self.cache = cache
        self.ledger = ledger if ledger is not None else Ledger(None)
        self.pricing = Pricing(config)
        install_log_redaction()
        if api_key is not None:
            register_secret(api_key)
            self._api_key: SecretStr | None = (
                api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
            )
        else:
            self._api_key = resolve_api_key(config)  # raises ConfigError for a hosted endpoint with no key
        self._owned: list[CallCache] = []
        self.fence: Callable[[], bool] | None = None
        """Checked after a call is journaled and before it is sent: False stops the batch, and the call
        goes unsent (a shard whose work a newer grant took over, `distiller.generation.shards`)."""
        self._limiters: tuple[asyncio.AbstractEventLoop, AsyncLimiter | None, AsyncLimiter | None] | None = (
            None
        )
        self.last_summary: BatchSummary | None = None

    @classmethod
    def for_run(
        cls,
        config: DistillConfig,
        run_dir: Path | str,
        llm: LLMConfig | None = None,
        *,
        budget: Budget | None = None,
        ledger: Ledger | None = None,
    ) -> LLMClient:
        """The usual wiring: ledger in the run folder, budget from the config minus what the ledger shows
        was already spent (resume), the shared call cache under `config.cache_path`."""
        ledger = ledger or Ledger.in_run(run_dir)
        budget = budget or Budget.from_config(config.budget, ledger.spent_by_stage())
        cache = CallCache.in_dir(config.cache_path)
        client = cls(llm or config.teacher, budget=budget, cache=cache, ledger=ledger)
        client._owned.append(cache)
        return client

    def close(self) -> None:
        self.ledger.flush()
        for c in self._owned:
            c.close()
        self._owned.clear()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- keys ----------------------------------------------------------------------------------------
    def _params(self, req: LLMRequest) -> tuple[int, float]:
        return _params(self.config, req)

    def key_for(self, req: LLMRequest) -> str:
        return request_key(self.config, req)

    # -- batch ---------------------------------------------------------------------------------------
    def run_batch_sync(
        self,
        requests: Sequence[LLMRequest],
        on_progress: ProgressFn | None = None,
        *,
        share_usd: float | None = None,
    ) -> list[LLMResult]:
        """`run_batch` from synchronous code (a Prefect task, the CLI). Inside a running event loop
        (an async flow, a notebook) the batch runs on a helper thread with its own loop."""
        batch = functools.partial(self.run_batch, requests, on_progress, share_usd=share_usd)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(batch())
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, batch()).result()

    async def run_batch(
        self,
        requests: Sequence[LLMRequest],
        on_progress: ProgressFn | None = None,
        *,
        share_usd: float | None = None,
    ) -> list[LLMResult]:
        """`share_usd`: the most this batch may spend (its step's share of the budget, llm/plan.py),
        reserved and settled like the budget's caps."""
        reqs = list(requests)
        self._check_prices(reqs)
        state = _BatchState(total=len(reqs))
        if share_usd is not None:
            state.share_nano = int(Decimal(str(share_usd)) * NANO)
        results: list[LLMResult | None] = [None] * len(reqs)
        provider = make_provider(self.config, self._api_key.get_secret_value() if self._api_key else None)
        todo = iter(enumerate(reqs))
        done = 0

        async def worker() -> None:
            nonlocal done
            for i, req in todo:  # a shared iterator: each worker takes the next request in order
                results[i] = await self._guarded(provider, req, state)
                done += 1
                if on_progress is not None:
                    on_progress(done, len(reqs), results[i])  # type: ignore[arg-type]

        try:
            if self.config.mode == "batch":  # the provider's batch API, half price (llm/batch.py)
                from distiller.llm.batch import run_via_batch_api

                results = list(await run_via_batch_api(self, provider, reqs, state, on_progress))
            else:
                async with asyncio.TaskGroup() as tg:
                    for _ in range(min(self.config.max_concurrency, len(reqs))):
                        tg.create_task(worker())
        finally:
            await provider.aclose()
            self.ledger.flush()
        out = [r for r in results if r is not None]
        self.last_summary = summarize(out, state.budget_stop, calls_sent=state.calls_sent)
        log.info("%s", self.last_summary.message)
        return out

    def _check_prices(self, reqs: Sequence[LLMRequest]) -> None:
        """Refuse to spend on a model with no price, unless that stage's budget is unlimited (nothing to
        protect) or zero (nothing will be sent)."""
        if self.pricing.known:
            return
        for stage in sorted({r.stage for r in reqs}):
            if not self.budget.is_unlimited(stage) and not self.budget.is_zero(stage):
                raise PriceUnknown(self.pricing.unknown_message())

    async def _guarded(self, provider: Provider, req: LLMRequest, state: _BatchState) -> LLMResult:
        try:
            return await self._one(provider, req, state)
        except Exception as e:  # a bug or a broken disk must not lose the other rows of the batch
            msg = redact_exception(e)
            log.error("internal error on item %s: %s", req.item_id, msg)
            return LLMResult(
                item_id=req.item_id, stage=req.stage, status="failed", error=f"internal error: {msg}"
            )

    def _limits(self) -> tuple[AsyncLimiter | None, AsyncLimiter | None]:
        loop = asyncio.get_running_loop()
        if self._limiters is None or self._limiters[0] is not loop:
            # aiolimiter's limiters belong to one event loop. Batches awaited on the same loop share a
            # rate window; each run_batch_sync call has its own loop and starts with a full bucket, so
            # a stage should send its calls as one batch (the client also honours 429 Retry-After).
            rpm_cfg, tpm_cfg = self.config.requests_per_minute, self.config.tokens_per_minute
            rpm = AsyncLimiter(rpm_cfg, RATE_PERIOD_S) if rpm_cfg else None
            tpm = AsyncLimiter(tpm_cfg, RATE_PERIOD_S) if tpm_cfg else None
            self._limiters = (loop, rpm, tpm)
        return self._limiters[1], self._limiters[2]

    def _entry(self, req: LLMRequest, key: str, status: LedgerStatus, **kw: Any) -> LedgerEntry:
        base: dict[str, Any] = {
            "ts": utc_now(),
            "stage": req.stage,
            "item_id": req.item_id,
            "provider": self.config.provider,
            "model": self.config.model,
            "cache_key": key,
            "attempt": 0,
            "status": status,
            "cached": False,
            "input_tokens": 0,
            "output_tokens": 0,
            "cost_usd": 0.0,
            "reserved_usd": 0.0,
            "latency_s": 0.0,
            "price_source": self.pricing.source,
        }
        base.update(kw)
        return LedgerEntry(**base)

    def _not_sent(self, req: LLMRequest, key: str, reason: str, status: str) -> LLMResult:
        self.ledger.add(self._entry(req, key, "budget" if status == "budget" else "failed", error=reason))
        return LLMResult(
            item_id=req.item_id,
            stage=req.stage,
            status=status,
            error=reason,
            cache_key=key,
        )

    def _from_cache(self, req: LLMRequest, key: str, hit: CachedAnswer) -> LLMResult:
        self.ledger.add(self._entry(req, key, "cached", cached=True, saved_usd=hit.cost_usd))
        return LLMResult(
            item_id=req.item_id, stage=req.stage, status="cached", parsed=hit.parsed, cache_key=key
        )

    async def _one(self, provider: Provider, req: LLMRequest, state: _BatchState) -> LLMResult:
        key = self.key_for(req)
        # The same request twice in one batch is sent once; the copies wait for its answer.
        first = state.pending.get(key)
        if first is not None:
            res = await asyncio.shield(first)
            if res.ok and res.parsed is not None:
                hit = CachedAnswer(
                    parsed=res.parsed, raw="", input_tokens=0, output_tokens=0, cost_usd=res.cost_usd
                )
                return self._from_cache(req, key, hit)
            reason = f"same request as item {res.item_id!r}: {res.error}"
            return self._not_sent(req, key, reason, res.status)
        fut: asyncio.Future[LLMResult] = asyncio.get_running_loop().create_future()
        state.pending[key] = fut
        try:
            res = await self._answer(provider, req, key, state)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # mark retrieved: copies may not exist
            raise
        fut.set_result(res)
        return res

    def _stopped(self, req: LLMRequest, state: _BatchState) -> tuple[str, str] | None:
        return state.stopped.get("*") or state.stopped.get(stage_group(req.stage))

    async def _reserve(self, req: LLMRequest, nano: int, state: _BatchState) -> Reservation | tuple[str, str]:
        """A reservation, or (status, reason) when the stage has stopped.

        One reserver at a time, in request order (the gate is a FIFO lock and workers reach it without
        yielding after taking a request): a big request waiting for in-flight calls to settle is not
        overtaken by smaller ones behind it, so a budget stop leaves a clean prefix of answered rows.
        """
        async with state.gate:
            while True:
                if (stop := self._stopped(req, state)) is not None:
                    return stop
                async with state.settled:  # held from the check to wait(): no settle slips between
                    if not state.share_fits(nano):
                        if state.share_reserved == 0:
                            assert state.share_nano is not None
                            share = nano_to_usd(state.share_nano)
                            where = (
                                f"this step's share of the budget, ${share:.4f} split from the run's by "
                                "the estimate, is spent"
                            )
                            state.budget_stop.setdefault(req.stage, (where, False))
                            return state.stopped.setdefault(
                                stage_group(req.stage), ("budget", f"not sent: {where}")
                            )
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(state.settled.wait(), timeout=0.25)
                        continue
                    try:
                        reservation = self.budget.reserve(req.stage, nano=nano)
                        state.share_reserved += nano
                        return reservation
                    except BudgetExceeded as e:
                        if self.budget.in_flight() == 0:
                            if req.stage not in state.budget_stop:
                                zero = self.budget.is_zero(req.stage)
                                state.budget_stop[req.stage] = (self.budget.describe(req.stage), zero)
                            return state.stopped.setdefault(
                                stage_group(req.stage), ("budget", f"not sent: budget reached ({e})")
                            )
                    # Woken by our own settles; the timeout covers other threads sharing the budget.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(state.settled.wait(), timeout=0.25)

    async def _settle(self, res: Reservation, nano: int, state: _BatchState) -> None:
        self.budget.settle(res, nano)
        state.share_reserved -= res.nano
        state.share_spent += max(0, nano)
        async with state.settled:
            state.settled.notify_all()

    async def _answer(
        self,
        provider: Provider,
        req: LLMRequest,
        key: str,
        state: _BatchState,
        *,
        messages: list[Message] | None = None,
    ) -> LLMResult:
        """`messages`: start from this conversation instead of the request's (a batch answer's re-ask)."""
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return self._from_cache(req, key, hit)
        if (stop := self._stopped(req, state)) is not None:
            return self._not_sent(req, key, stop[1], stop[0])

        name, schema_text, schema_dict = schema_info(req.schema_model)
        max_tokens, temperature = self._params(req)
        spec = CallSpec(req.schema_model, schema_dict, max_tokens, temperature)
        rpm, tpm = self._limits()
        messages = list(messages if messages is not None else req.messages)
        total_in = total_out = 0
        total_nano = 0
        latency = 0.0
        last_error = ""
        max_attempts = self.config.max_parse_retries + 1
        sends = 0  # calls sent for this request: parse retries and transport retries included
        for attempt in range(1, max_attempts + 1):
            retries = 0
            comp: Completion | None = None
            while True:  # transport retries of this attempt, each with its own reservation
                worst = (
                    self.pricing.cost_nano(max_prompt_tokens(messages, schema_text), max_tokens)
                    if self.pricing.known
                    else 0
                )
                reservation = await self._reserve(req, worst, state)
                if isinstance(reservation, tuple):
                    if sends == 0:
                        return self._not_sent(req, key, reservation[1], reservation[0])
                    error = f"{last_error}; no re-ask: {reservation[1]}"
                    return self._failed(req, key, error, sends, total_in, total_out, total_nano, latency)
                call_id = uuid.uuid4().hex[:16]
                sent_at, t0 = utc_now(), time.perf_counter()
                sent = False
                try:
                    if rpm is not None:
                        await rpm.acquire()
                    if tpm is not None:
                        need = expected_prompt_tokens(messages, schema_text) + max_tokens
                        await tpm.acquire(min(need, self.config.tokens_per_minute or need))
                    sent_at, t0 = utc_now(), time.perf_counter()
                    state.calls_sent += 1
                    sends += 1
                    # Write-ahead: journaled before it leaves, so a kill from here on leaves it charged.
                    self.ledger.pending(
                        self._entry(
                            req, key, "pending", ts=sent_at, attempt=sends, reserved_usd=reservation.usd,
                            cost_usd=reservation.usd, estimated=True, call_id=call_id,
                        )
                    )  # fmt: skip
                    if self.fence is not None and not self.fence():
                        # Checked after the journal write: whoever took the work over read the ledger
                        # after revoking this, so it counted this call's reservation; it is not sent.
                        await self._settle(reservation, 0, state)
                        self.ledger.add(
                            self._entry(
                                req, key, "budget", ts=sent_at, attempt=sends, reserved_usd=reservation.usd,
                                call_id=call_id, error=f"not sent: {REVOKED}",
                            )
                        )  # fmt: skip
                        state.calls_sent -= 1
                        state.budget_stop.setdefault(req.stage, (REVOKED, False))
                        state.stopped.setdefault(stage_group(req.stage), ("budget", f"not sent: {REVOKED}"))
                        return self._result(
                            req, key, "budget", None, f"not sent: {REVOKED}", sends - 1, total_in, total_out,
                            total_nano, latency,
                        )  # fmt: skip
                    sent = True
                    comp = await provider.complete(messages, spec)
                except ProviderError as e:
                    # An error answer is not billed; no answer at all (timeout, dropped connection) may
                    # have been: it stays charged at its reservation.
                    charged = reservation.nano if e.outcome_unknown else 0
                    await self._settle(reservation, charged, state)
                    total_nano += charged
                    latency += time.perf_counter() - t0
                    self.ledger.add(
                        self._entry(
                            req, key, "unknown" if e.outcome_unknown else "failed", ts=sent_at,
                            attempt=sends, reserved_usd=reservation.usd, cost_usd=nano_to_usd(charged),
                            estimated=e.outcome_unknown, call_id=call_id,
                            latency_s=round(time.perf_counter() - t0, 4), error=str(e),
                        )
                    )  # fmt: skip
                    if e.bad_format and attempt < max_attempts:
                        # An unreadable body (a proxy's error page) is a glitch, not an answer: ask again.
                        last_error = str(e)
                        break
                    if e.retryable and retries < self.config.max_retries:
                        retries += 1
                        await asyncio.sleep(backoff_s(retries, e.retry_after_s))
                        continue
                    if e.fatal:
                        state.stopped.setdefault(
                            "*", ("failed", f"not sent: an earlier call failed for good ({e})")
                        )
                    return self._result(
                        req, key, "failed", None, str(e), sends, total_in, total_out, total_nano, latency
                    )
                except BaseException:
                    # Cancelled, or a bug. A call already sent may be billed: it keeps its reservation
                    # (and an unknown row). Either way the reservation must not leak: it would hold the
                    # budget (and make the other workers wait) for ever.
                    if sent:
                        self.budget.settle(reservation, reservation.nano)
                        self.ledger.add(
                            self._entry(
                                req, key, "unknown", ts=sent_at, attempt=sends, reserved_usd=reservation.usd,
                                cost_usd=reservation.usd, estimated=True, call_id=call_id,
                                error="cancelled while in flight: charged at its reservation",
                            )
                        )  # fmt: skip
                    else:
                        self.budget.release(reservation)
                    raise
                break
            if comp is None:
                continue  # an unreadable body: asked again
            call_latency = time.perf_counter() - t0
            latency += call_latency
            cost_nano, usage_note = self._cost(comp, reservation)
            await self._settle(reservation, cost_nano, state)
            in_tok, out_tok = comp.input_tokens or 0, comp.output_tokens or 0
            total_in, total_out, total_nano = total_in + in_tok, total_out + out_tok, total_nano + cost_nano
            entry_kw: dict[str, Any] = {
                "ts": sent_at,
                "attempt": sends,
                "call_id": call_id,
                "input_tokens": in_tok,
                "output_tokens": out_tok,
                "cost_usd": nano_to_usd(cost_nano),
                "reserved_usd": reservation.usd,
                "latency_s": round(call_latency, 4),
                "finish_reason": comp.finish_reason,
            }
            try:
                parsed = parse_answer(comp.text, comp.data, req.schema_model, truncated=comp.truncated)
            except ParseFailure as pf:
                last_error = f"parse: {pf}"
                self.ledger.add(
                    self._entry(req, key, "parse_error", error=_join(last_error, usage_note), **entry_kw)
                )
                messages = [
                    *messages,
                    Message(role="assistant", content=comp.text or "(empty answer)"),
                    Message(role="user", content=feedback(str(pf), req.schema_model)),
                ]
                continue
            self.ledger.add(self._entry(req, key, "ok", error=usage_note, **entry_kw))
            if self.cache is not None:
                answer = CachedAnswer(
                    parsed=parsed,
                    raw=comp.text,
                    input_tokens=total_in,
                    output_tokens=total_out,
                    cost_usd=nano_to_usd(total_nano),
                )
                self.cache.put(
                    key, answer, provider=self.config.provider, model=self.config.model, schema_name=name
                )
            return self._result(req, key, "ok", parsed, None, sends, total_in, total_out, total_nano, latency)
        error = f"{last_error} (gave up after {max_attempts} attempts)"
        return self._failed(req, key, error, sends, total_in, total_out, total_nano, latency)

    def _cost(self, comp: Completion, reservation: Reservation) -> tuple[int, str | None]:
        if not self.pricing.known:
            return 0, None
        if comp.input_tokens is None or comp.output_tokens is None:
            # Some compatible servers omit usage: charge the worst case rather than nothing.
            return reservation.nano, "the endpoint reported no usage: charged the worst case"
        nano = self.pricing.cost_nano(comp.input_tokens, comp.output_tokens)
        if nano > reservation.nano:
            note = (
                f"billed ${nano_to_usd(nano):.6f} > reserved ${reservation.usd:.6f}: the provider counted "
                "more prompt tokens than the bytes-based bound"
            )
            log.warning("%s", note)
            return nano, note
        return nano, None

    def _result(
        self,
        req: LLMRequest,
        key: str,
        status: str,
        parsed: dict[str, Any] | None,
        error: str | None,
        attempts: int,
        in_tok: int,
        out_tok: int,
        nano: int,
        latency: float,
    ) -> LLMResult:
        return LLMResult(
            item_id=req.item_id,
            stage=req.stage,
            status=status,
            parsed=parsed,
            error=error,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost_usd=nano_to_usd(nano),
            latency_s=round(latency, 4),
            attempts=attempts,
            cache_key=key,
        )

    def _failed(
        self,
        req: LLMRequest,
        key: str,
        error: str,
        attempts: int,
        in_tok: int,
        out_tok: int,
        nano: int,
        lat: float,
    ) -> LLMResult:
        return self._result(req, key, "failed", None, error, attempts, in_tok, out_tok, nano, lat)


def _join(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return "; ".join(kept) if kept else None


def summarize(
    results: Sequence[LLMResult],
    budget_stop: dict[str, tuple[str, bool]] | None = None,
    *,
    calls_sent: int | None = None,
) -> BatchSummary:
    """Counts, tokens, cost and one line a human reads ("budget reached after N of M ...").
    `budget_stop`: stage -> (the caps as text, whether a cap is $0) for each stage stopped by its budget."""
    status = Counter(r.status for r in results)
    notes: list[str] = []
    for stage, (where, zero) in (budget_stop or {}).items():
        mine = [r for r in results if r.stage == stage]
        answered = sum(1 for r in mine if r.status != "budget")
        if zero:
            notes.append(
                f"stage {stage!r}: budget is $0, no LLM call sent ({answered} of {len(mine)} from the cache)"
            )
        else:
            notes.append(f"stage {stage!r}: budget reached after {answered} of {len(mine)} ({where})")
    cost = sum(r.cost_usd for r in results)
    head = (
        f"{status['ok'] + status['cached']} of {len(results)} answered ({status['ok']} by the LLM, "
        f"{status['cached']} from the cache), {status['failed']} failed, {status['budget']} not sent; "
        f"${cost:.4f}"
    )
    return BatchSummary(
        total=len(results),
        ok=status["ok"],
        cached=status["cached"],
        failed=status["failed"],
        budget=status["budget"],
        calls_sent=calls_sent if calls_sent is not None else sum(r.attempts for r in results),
        input_tokens=sum(r.input_tokens for r in results),
        output_tokens=sum(r.output_tokens for r in results),
        cost_usd=cost,
        stopped_by_budget=bool(budget_stop),
        notes=notes,
        message="; ".join([head, *notes]),
    )


__all__ = ["BatchSummary", "LLMClient", "ProgressFn", "request_key", "summarize"]
