"""Batch mode (`mode: batch` on an endpoint): a stage's requests go to the provider's batch API — OpenAI's
Batch API (a JSONL file of /v1/chat/completions requests) or Anthropic's Message Batches — at half price.

Order of writes, so that a kill anywhere never sends twice and never lets spend pass the budget:
1. each request not in the call cache is reserved at its worst case at the batch price (a request that
   does not fit is not sent: `budget`), and journaled in the ledger as `pending` (write-ahead: from here a
   kill leaves it charged at its reservation, as an online call in flight);
2. the batch is submitted and its id appended to `llm_batches.jsonl` next to the ledger, with each item's
   custom id, request key and reservation;
3. it is polled every `POLL_INTERVAL_S` seconds (progress logged), then its results are written to the
   ledger at the batch price (each row settles its pending row by call id) and to the call cache.
A run that dies after 2 resumes by batch id: the same requests find their open batch in the journal and
collect it, nothing is sent again. A kill between the provider accepting the batch and its id reaching
the journal (one HTTP round trip) leaves a `submitting` row with no id: on OpenAI the batch is found by
the tag in its metadata and collected; Anthropic's batches carry no metadata, so there those requests are
sent again, and the lost batch stays charged at its reservations (the ledger's pending rows): the budget
still holds.

An answer that does not parse, and an item the batch API failed, goes to the normal online path (the
re-ask with the parse error shown, retries, its own reservation at the online price).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distiller.errors import BudgetExceeded
from distiller.llm.budget import Reservation, stage_group
from distiller.llm.cache import CachedAnswer
from distiller.llm.providers import (
    CallSpec,
    Completion,
    Provider,
    ProviderError,
    _anthropic_completion,
    _openai_completion,
)
from distiller.llm.structured import ParseFailure, feedback, parse_answer
from distiller.llm.tokens import max_prompt_tokens, schema_info
from distiller.llm.types import LLMRequest, LLMResult, Message, utc_now

if TYPE_CHECKING:
    from distiller.llm.client import LLMClient, ProgressFn, _BatchState

log = logging.getLogger("distiller.llm")

POLL_INTERVAL_S = 30.0
"""Seconds between two status checks of a submitted batch (a module constant so tests can shrink it)."""
MAX_BATCH_REQUESTS = 10_000
"""Requests per batch: well within both providers' limits (OpenAI 50,000 and 200 MB; Anthropic 100,000 and
256 MB) for prompts of a few thousand tokens; a bigger step is sent as several batches."""
BATCHES_FILENAME = "llm_batches.jsonl"
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled", "ended"})


@dataclass
class _Item:
    index: int
    req: LLMRequest
    key: str
    custom_id: str  # also the call id of its ledger rows
    reserved_nano: int
    reservation: Reservation | None  # None: reserved by the process that submitted it (resume)


class BatchJournal:
    """`llm_batches.jsonl`: one line per event (submitting, submitted, collected), appended as it happens."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def add(self, row: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue  # torn by a kill
        return rows

    def unconfirmed(self, provider: str, model: str) -> list[dict[str, Any]]:
        """Batches being submitted when the process died: no id came back (or it was not journaled)."""
        rows = self.rows()
        settled = {r.get("tag") for r in rows if r.get("event") in ("submitted", "abandoned")}
        return [
            r
            for r in rows
            if r.get("event") == "submitting"
            and r.get("tag") not in settled
            and r.get("provider") == provider
            and r.get("model") == model
        ]

    def open_batches(self, provider: str, model: str) -> list[dict[str, Any]]:
        """Submitted batches of this endpoint whose results were not collected yet."""
        rows = self.rows()
        collected = {r["batch_id"] for r in rows if r.get("event") == "collected"}
        return [
            r
            for r in rows
            if r.get("event") == "submitted"
            and r["batch_id"] not in collected
            and r.get("provider") == provider
            and r.get("model") == model
        ]


def journal_for(client: LLMClient) -> BatchJournal:
    path = client.ledger.path
    return BatchJournal(path.with_name(BATCHES_FILENAME) if path is not None else None)


async def run_via_batch_api(
    client: LLMClient,
    provider: Provider,
    reqs: list[LLMRequest],
    state: _BatchState,
    on_progress: ProgressFn | None,
) -> list[LLMResult]:
    results: list[LLMResult | None] = [None] * len(reqs)
    done = 0

    def finish(i: int, res: LLMResult) -> None:
        nonlocal done
        results[i] = res
        done += 1
        if on_progress is not None:
            on_progress(done, len(reqs), res)

    first: dict[str, int] = {}
    copies: list[tuple[int, str]] = []
    for i, req in enumerate(reqs):
        key = client.key_for(req)
        if client.cache is not None and (hit := client.cache.get(key)) is not None:
            finish(i, client._from_cache(req, key, hit))
        elif key in first:
            copies.append((i, key))
        else:
            first[key] = i

    journal = journal_for(client)
    for rec in journal.unconfirmed(client.config.provider, client.config.model):
        found = await _find_by_tag(provider, rec["tag"])
        if found is None:  # never accepted, or not findable: its requests are sent again (module doc)
            journal.add({"event": "abandoned", "tag": rec["tag"]})
        else:
            log.info("found batch %s, submitted by a run that stopped before it could note its id", found)
            journal.add({**rec, "event": "submitted", "batch_id": found})
    # Resume: requests whose batch was submitted by an earlier (killed) run are collected, not sent.
    for rec in journal.open_batches(client.config.provider, client.config.model):
        items = [
            _Item(first[k], reqs[first[k]], k, cid, v["reserved_nano"], None)
            for cid, v in rec["items"].items()
            if (k := v["key"]) in first and results[first[k]] is None
        ]
        if items:
            log.info(
                "resuming batch %s: collecting %d answers, nothing sent again", rec["batch_id"], len(items)
            )
            await _collect(client, provider, rec["batch_id"], items, state, finish, journal)

    items = _reserve_all(
        client, reqs, [i for i in first.values() if results[i] is None], first, state, finish
    )
    submitted = []
    for start in range(0, len(items), MAX_BATCH_REQUESTS):  # all submitted first: the provider works on all
        part = items[start : start + MAX_BATCH_REQUESTS]
        batch_id = await _submit(client, provider, part, state, finish, journal)
        if batch_id is not None:
            submitted.append((batch_id, part))
    for batch_id, part in submitted:
        await _collect(client, provider, batch_id, part, state, finish, journal)

    for i, key in copies:  # the same request twice: answered once
        res = results[first[key]]
        assert res is not None
        if res.ok and res.parsed is not None:
            hit = CachedAnswer(
                parsed=res.parsed, raw="", input_tokens=0, output_tokens=0, cost_usd=res.cost_usd
            )
            finish(i, client._from_cache(reqs[i], key, hit))
        else:
            reason = f"same request as item {res.item_id!r}: {res.error}"
            finish(i, client._not_sent(reqs[i], key, reason, res.status))
    return [r for r in results if r is not None]


def _spec(client: LLMClient, req: LLMRequest) -> tuple[CallSpec, str]:
    _, schema_text, schema_dict = schema_info(req.schema_model)
    max_tokens, temperature = client._params(req)
    return CallSpec(req.schema_model, schema_dict, max_tokens, temperature), schema_text


def _reserve_all(
    client: LLMClient,
    reqs: list[LLMRequest],
    todo: list[int],
    keys: dict[str, int],
    state: _BatchState,
    finish: Any,
) -> list[_Item]:
    """Reserve each request's worst case at the batch price, in order; the rest of a stage that does not
    fit is not sent. Nothing settles before the batch ends, so there is no waiting for room here."""
    key_of = {i: k for k, i in keys.items()}
    items: list[_Item] = []
    for i in todo:
        req, key = reqs[i], key_of[i]
        if (stop := client._stopped(req, state)) is not None:
            finish(i, client._not_sent(req, key, stop[1], stop[0]))
            continue
        spec, schema_text = _spec(client, req)
        nano = (
            client.pricing.cost_nano(
                max_prompt_tokens(list(req.messages), schema_text), spec.max_tokens, batch=True
            )
            if client.pricing.known
            else 0
        )
        reason = None
        if not state.share_fits(nano):
            reason = "this step's share of the budget, split from the run's by the estimate, is spent"
            where = reason
        else:
            try:
                reservation = client.budget.reserve(req.stage, nano=nano)
            except BudgetExceeded as e:
                reason, where = f"budget reached ({e})", client.budget.describe(req.stage)
        if reason is not None:
            state.budget_stop.setdefault(req.stage, (where, client.budget.is_zero(req.stage)))
            stop = state.stopped.setdefault(stage_group(req.stage), ("budget", f"not sent: {reason}"))
            finish(i, client._not_sent(req, key, stop[1], stop[0]))
            continue
        state.share_reserved += nano
        items.append(_Item(i, req, key, uuid.uuid4().hex[:16], nano, reservation))
    return items


async def _submit(
    client: LLMClient,
    provider: Provider,
    items: list[_Item],
    state: _BatchState,
    finish: Any,
    journal: BatchJournal,
) -> str | None:
    tag = uuid.uuid4().hex
    sent_at = utc_now()
    for it in items:  # write-ahead: charged at its reservation from here on, whatever happens next
        client.ledger.pending(
            client._entry(
                it.req, it.key, "pending", ts=sent_at, attempt=1, reserved_usd=it.reserved_nano / 1e9,
                cost_usd=it.reserved_nano / 1e9, estimated=True, call_id=it.custom_id,
                price_source=_source(client),
            )
        )  # fmt: skip
    client.ledger.flush()
    lines = [(it.custom_id, provider.body(list(it.req.messages), _spec(client, it.req)[0])) for it in items]
    row = {
        "tag": tag,
        "provider": client.config.provider,
        "model": client.config.model,
        "ts": sent_at,
        "items": {it.custom_id: {"key": it.key, "reserved_nano": it.reserved_nano} for it in items},
    }
    journal.add({"event": "submitting", **row})
    try:
        if provider.name == "openai":
            jsonl = "".join(
                json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})
                + "\n"
                for cid, body in lines
            )
            f = await provider.client.files.create(
                file=("distiller-batch.jsonl", jsonl.encode(), "application/jsonl"), purpose="batch"
            )
            batch = await provider.client.batches.create(
                input_file_id=f.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"distiller_tag": tag},
            )
        else:
            batch = await provider.client.messages.batches.create(
                requests=[{"custom_id": cid, "params": body} for cid, body in lines]
            )
    except provider.sdk.APIError as e:
        # An error answer: no batch, nothing billed. No answer (timeout): a batch may exist; its items stay
        # charged at their reservation (unknown) so the budget holds, and it is not resumed.
        answered = isinstance(e, provider.sdk.APIStatusError)
        for it in items:
            await _done(client, it, state, 0 if answered else it.reserved_nano)
            client.ledger.add(
                client._entry(
                    it.req, it.key, "failed" if answered else "unknown", ts=sent_at, attempt=1,
                    reserved_usd=it.reserved_nano / 1e9, cost_usd=0.0 if answered else it.reserved_nano / 1e9,
                    estimated=not answered, call_id=it.custom_id, error=f"batch not submitted: {e}",
                    price_source=_source(client),
                )
            )  # fmt: skip
            finish(it.index, client._failed(it.req, it.key, f"batch not submitted: {e}", 1, 0, 0, 0, 0.0))
        return None
    state.calls_sent += len(items)
    journal.add({"event": "submitted", "batch_id": batch.id, **row})
    log.info("submitted batch %s: %d requests (%s)", batch.id, len(items), provider.name)
    return str(batch.id)


async def _find_by_tag(provider: Provider, tag: str) -> str | None:
    """The id of the OpenAI batch whose metadata carries `tag` (among the most recent 100), else None."""
    if provider.name != "openai":
        return None
    try:
        page = await provider.client.batches.list(limit=100)
    except provider.sdk.APIError as e:
        log.warning("could not list batches to find one whose id was not noted (%s)", e)
        return None
    for b in page.data:
        if (b.metadata or {}).get("distiller_tag") == tag:
            return str(b.id)
    return None


def _source(client: LLMClient) -> str:
    return f"{client.pricing.source} (batch price)"


async def _done(client: LLMClient, it: _Item, state: _BatchState, nano: int) -> None:
    if it.reservation is not None:
        await client._settle(it.reservation, nano, state)


async def _poll(provider: Provider, batch_id: str) -> Any:
    """Wait for the batch to end; its progress goes to the log and to the work-progress sinks (the CLI's
    progress bar or periodic line). Transient errors are retried."""
    from distiller.progress import Counter

    counter: Counter | None = None
    last = None
    errors = 0
    while True:
        try:
            if provider.name == "openai":
                b = await provider.client.batches.retrieve(batch_id)
                status, c = b.status, b.request_counts
                done, total = (c.completed + c.failed, c.total) if c else (0, 0)
            else:
                b = await provider.client.messages.batches.retrieve(batch_id)
                status, c = b.processing_status, b.request_counts
                done = c.succeeded + c.errored + c.canceled + c.expired
                total = done + c.processing
            errors = 0
            line = f"{done} of {total} answered"
            if total:
                counter = counter or Counter(f"LLM batch {batch_id}", total, unit="answers")
                counter.update(done)
        except provider.sdk.APIError as e:
            errors += 1
            if errors > 5:
                raise ProviderError(f"batch {batch_id}: status unavailable ({e})") from None
            status, line = "unknown", f"status check failed ({e}), retrying"
        if (status, line) != last:
            log.info("batch %s: %s, %s", batch_id, status, line)
            last = (status, line)
        if status in TERMINAL:
            return b
        await asyncio.sleep(POLL_INTERVAL_S)


async def _fetch(provider: Provider, batch: Any) -> dict[str, Completion | str]:
    """custom id -> its answer, or the error text of an item that failed."""
    out: dict[str, Completion | str] = {}
    if provider.name == "openai":
        from openai.types.chat import ChatCompletion

        for fid in (batch.output_file_id, batch.error_file_id):
            if not fid:
                continue
            text = (await provider.client.files.content(fid)).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                row = json.loads(line)
                resp = row.get("response") or {}
                if resp.get("status_code") == 200:
                    try:
                        out[row["custom_id"]] = _openai_completion(
                            ChatCompletion.model_validate(resp["body"])
                        )
                    except (ProviderError, ValueError) as e:
                        out[row["custom_id"]] = f"unreadable batch answer: {e}"
                else:
                    out[row["custom_id"]] = f"batch item failed: {row.get('error') or resp.get('body')}"
        return out
    async for r in await provider.client.messages.batches.results(batch.id):
        if r.result.type == "succeeded":
            out[r.custom_id] = r.result.message  # turned into a Completion with its tool name below
        else:
            out[r.custom_id] = f"batch item {r.result.type}"
    return out


async def _collect(
    client: LLMClient,
    provider: Provider,
    batch_id: str,
    items: list[_Item],
    state: _BatchState,
    finish: Any,
    journal: BatchJournal,
) -> None:
    try:
        batch = await _poll(provider, batch_id)
        answers = await _fetch(provider, batch)
    except ProviderError as e:
        # The batch is still at the provider: its rows stay pending (charged at reservation) and a later
        # run collects it.
        for it in items:
            finish(
                it.index,
                client._failed(it.req, it.key, f"batch {batch_id} not collected: {e}", 1, 0, 0, 0, 0.0),
            )
        return
    fallback: list[tuple[_Item, list[Message], LLMResult]] = []
    for it in items:
        ans = answers.get(
            it.custom_id, f"no result in batch {batch_id} (status {getattr(batch, 'status', '')})"
        )
        base: dict[str, Any] = {
            "ts": utc_now(),
            "attempt": 1,
            "call_id": it.custom_id,
            "price_source": _source(client),
        }
        base["reserved_usd"] = it.reserved_nano / 1e9
        if isinstance(ans, str):  # the batch API failed this item: not billed; asked online instead
            await _done(client, it, state, 0)
            client.ledger.add(client._entry(it.req, it.key, "failed", error=ans, **base))
            fallback.append((it, list(it.req.messages), client._failed(it.req, it.key, ans, 1, 0, 0, 0, 0.0)))
            continue
        comp = (
            ans
            if isinstance(ans, Completion)
            else _anthropic_completion(ans, it.req.schema_model.__name__[:64])
        )
        if comp.input_tokens is None or comp.output_tokens is None or not client.pricing.known:
            nano = it.reserved_nano if client.pricing.known else 0
        else:
            nano = client.pricing.cost_nano(comp.input_tokens, comp.output_tokens, batch=True)
        await _done(client, it, state, nano)
        in_tok, out_tok = comp.input_tokens or 0, comp.output_tokens or 0
        base.update(
            input_tokens=in_tok, output_tokens=out_tok, cost_usd=nano / 1e9, finish_reason=comp.finish_reason
        )
        try:
            parsed = parse_answer(comp.text, comp.data, it.req.schema_model, truncated=comp.truncated)
        except ParseFailure as pf:
            client.ledger.add(client._entry(it.req, it.key, "parse_error", error=f"parse: {pf}", **base))
            messages = [
                *it.req.messages,
                Message(role="assistant", content=comp.text or "(empty answer)"),
                Message(role="user", content=feedback(str(pf), it.req.schema_model)),
            ]
            fallback.append(
                (it, messages, client._failed(it.req, it.key, f"parse: {pf}", 1, in_tok, out_tok, nano, 0.0))
            )
            continue
        client.ledger.add(client._entry(it.req, it.key, "ok", **base))
        if client.cache is not None:
            answer = CachedAnswer(
                parsed=parsed, raw=comp.text, input_tokens=in_tok, output_tokens=out_tok, cost_usd=nano / 1e9
            )
            name = schema_info(it.req.schema_model)[0]
            client.cache.put(
                it.key, answer, provider=client.config.provider, model=client.config.model, schema_name=name
            )
        finish(it.index, client._result(it.req, it.key, "ok", parsed, None, 1, in_tok, out_tok, nano, 0.0))
    journal.add({"event": "collected", "batch_id": batch_id, "ts": utc_now()})
    client.ledger.flush()
    if fallback:
        log.info(
            "batch %s: %d answers asked again online (unparsable or failed in the batch)",
            batch_id,
            len(fallback),
        )

    async def online(it: _Item, messages: list[Message], first: LLMResult) -> None:
        res = await client._answer(provider, it.req, it.key, state, messages=messages)
        finish(
            it.index,
            res.model_copy(
                update={
                    "attempts": res.attempts + 1,
                    "input_tokens": res.input_tokens + first.input_tokens,
                    "output_tokens": res.output_tokens + first.output_tokens,
                    "cost_usd": res.cost_usd + first.cost_usd,
                }
            ),
        )

    slots = asyncio.Semaphore(client.config.max_concurrency)

    async def bounded(it: _Item, messages: list[Message], first: LLMResult) -> None:
        async with slots:
            await online(it, messages, first)

    async with asyncio.TaskGroup() as tg:
        for it, messages, first in fallback:
            tg.create_task(bounded(it, messages, first))


__all__ = ["BATCHES_FILENAME", "POLL_INTERVAL_S", "BatchJournal", "run_via_batch_api"]
