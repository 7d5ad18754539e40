"""Grants: how the LLM stages split their work into shards (each a task that may run in another process
or on another machine) without ever spending past the run's budget together.

A shard journals its calls in its own folder (`distiller.llm.ledger`: the run's ledger is the union of
the run's journal and every shard's), and spends under a grant:
- fanned out at once (the flow on Dask), each shard's grant is a hard cap, and the grants together are no
  more than the budget left for the steps the shards run (`phase_usd`), split by the shards' size:
  shards in other processes cannot overspend together;
- one after another (in the stage, or the flow on threads), the run's own budget is the cap, read afresh
  from the ledger before each shard, and the grant is a soft share passed on: what one shard leaves goes
  to the rest, and a step's first call is never starved.
A shard a hard grant stopped is not done: the stage runs it again one after another, with what the others
left; its answered calls come from the call cache.

A grant has an id, written to the shard's `grant.json` before the ledger is read for it (`revoke`). An
older execution of the same shard still running (a worker of a killed flow) checks the id after it
journals each call and before it sends it (`LLMClient.fence`), and stops: so every call it sends was in
the journal when the newer grant was sized. A task Dask runs again after its worker died keeps its grant
and counts what its first execution journaled under it (`runner.Grant.budget`: every journal of the
shard's folder).

With `storage_url` (no shared file system: `run_granted` gets the mirror) an execution journals in its
own file of the shard's folder, and before its first call journals a hold on what it may still spend
(`hold_usd`) and pushes it to the mirror: if the push fails it sends nothing. When it ends, failed or
not, it settles the hold and pushes its own files, never the folder, so no execution removes or
overwrites another's journal (`distiller.llm.ledger`). A worker killed with `kill -9` leaves
its hold on the mirror: the flow's machine charges it as `unknown`, and a rerun of the task under the
same grant counts it, so the grant is not spent twice. A planner pushes a new grant to the mirror, then
pulls the shards' journals, before it reads the ledger (`with_grants`), and an execution fetches its
grant again after its hold is on the mirror: so an older execution either had its hold counted in the
new grant or sends nothing. The fence reads the worker's own copy of `grant.json`: a remote execution
revoked after it started runs on to the end of its grant (its hold, counted, keeps that in the budget),
fetches the grant again before it writes its rows, and writes none once revoked.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from distiller.config import DistillConfig, LLMConfig
from distiller.llm.budget import Budget
from distiller.llm.ledger import HOLD, Ledger, LedgerEntry, hold_entry, ledger_files, released
from distiller.llm.plan import BudgetPlan, PlannedStep, step_key
from distiller.llm.types import utc_now
from distiller.records import Record, write_parquet
from distiller.store import Mirror, atomic_write_text

META = "meta.json"
"""Written last, when a shard finished: its counts, calls and cost."""
GRANT = "grant.json"

S = TypeVar("S", bound="GrantedShard")


class GrantedShard(BaseModel):
    """What every LLM shard carries besides its own rows: where it writes, and its grant."""

    model_config = ConfigDict(frozen=True)

    index: int
    key: str
    out: str
    """The shard's folder: its rows, its ledger journal, `grant.json`, and `meta.json` when it finished."""
    grant_usd: float | None = Field(default=None, description="What the shard may spend; None: no cap.")
    grant_id: str = Field(
        default="", description="This grant's id: valid while the shard's grant.json holds it."
    )
    granted_at: str = Field(default="", description="When the grant was made (UTC, ISO 8601).")
    hard: bool = Field(default=False, description="The grant is a hard cap (shards run at the same time).")
    plan: BudgetPlan | None = Field(
        default=None, description="The shard's steps, expected cost scaled to it."
    )
    stage_key: str = Field(
        default="",
        description="The key of the stage result it was planned for: its rows, calls and cost are that "
        "result's (an earlier pass's shard, reused, is not).",
    )
    config: DistillConfig

    STAGE: ClassVar[str]
    """The stage whose budget it spends."""
    STEPS: ClassVar[tuple[str, ...]]
    """The budget plan's steps it runs (its grant is their share)."""
    ROWS: ClassVar[str]
    """The field that holds the shard's rows."""
    VERSION: ClassVar[str]
    """Part of every key: a change in what a shard writes for the same rows bumps it."""

    @classmethod
    def row_text(cls, row: Any) -> str:
        """What of a row decides the shard's result (hashed into the key)."""
        raise NotImplementedError

    @classmethod
    def for_groups(
        cls,
        cfg: DistillConfig,
        rows: Sequence[Any],
        groups: list[list[int]],
        parts: Path,
        settings: str,
        stage_key: str = "",
    ) -> list[Self]:
        """Every shard of `rows` (in the run's kept `groups`), done or not, without grants; each keyed by
        `settings` (what in the config decides its result) and its own rows, so that new rows make new
        shards and leave the others done."""
        specs = []
        for n, idx in enumerate(groups):
            mine = [rows[i] for i in idx]
            h = hashlib.sha256(f"{cls.VERSION}|{settings}".encode())
            for row in mine:
                h.update(cls.row_text(row).encode())
            key = h.hexdigest()[:24]
            specs.append(
                cls(
                    index=n,
                    key=key,
                    out=str(parts / key),
                    stage_key=stage_key,
                    config=cfg,
                    **{cls.ROWS: mine},
                )
            )
        return specs

    @property
    def weight(self) -> int:
        """The shard's size, which its grant is in proportion to."""
        raise NotImplementedError

    @property
    def meta(self) -> dict[str, Any] | None:
        p = Path(self.out) / META
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    @property
    def done(self) -> bool:
        """Finished, and not stopped by its grant (a rerun gets the grant's next share)."""
        m = self.meta
        return m is not None and not m.get("stopped_by_budget")


def phase_usd(
    plan: BudgetPlan | None, left_usd: float | None, stage: str, steps: Sequence[str], *, hard: bool
) -> float | None:
    """What the shards' steps may spend of `left_usd` together: the plan's share of them when the budget
    does not cover the plan; else everything left (hard) or no cap but the budget's (soft: None)."""
    if left_usd is None:
        return None
    wanted = {step_key(stage, t) for t in steps}
    idx = [i for i, s in enumerate(plan.steps) if step_key(s.stage, s.step) in wanted] if plan else []
    rest = sum(s.expected_usd for s in plan.steps[idx[0] :]) if plan and idx else 0.0
    if plan is None or not idx or rest <= left_usd or rest <= 0:
        return left_usd if hard else None
    return left_usd * sum(plan.steps[i].expected_usd for i in idx) / rest


def scaled_plan(
    plan: BudgetPlan | None, stage: str, steps: Sequence[str], fraction: float
) -> BudgetPlan | None:
    """The run's plan for a shard's steps, each step's expected cost scaled to the shard's fraction of
    the work: the split of a grant between its steps."""
    if plan is None:
        return None
    wanted = {step_key(stage, t) for t in steps}
    return BudgetPlan(
        steps=[
            PlannedStep(
                stage=s.stage,
                step=s.step,
                requests=round(s.requests * fraction),
                to_send=round(s.to_send * fraction),
                expected_usd=s.expected_usd * fraction,
            )
            for s in plan.steps
            if step_key(s.stage, s.step) in wanted
        ],
        budget_usd=None,
        policy=plan.policy,
    )


def revoke(specs: Sequence[S]) -> list[S]:
    """Give each shard a new grant id, written to its `grant.json` before the ledger is read for its
    grant: an older execution of the shard still running stops before its next call."""
    out = []
    for s in specs:
        grant_id = uuid.uuid4().hex
        atomic_write_text(Path(s.out) / GRANT, json.dumps({"id": grant_id}))
        out.append(s.model_copy(update={"grant_id": grant_id, "granted_at": utc_now()}))
    return out


def holds_grant(spec: GrantedShard) -> bool:
    """Whether the shard's `grant.json` still names this spec's grant (no id: not fenced)."""
    if not spec.grant_id:
        return True
    try:
        return json.loads((Path(spec.out) / GRANT).read_text(encoding="utf-8")).get("id") == spec.grant_id
    except (OSError, ValueError):
        return False


def with_grants(
    specs: Sequence[S],
    cfg: DistillConfig,
    run_dir: Path,
    *,
    hard: bool,
    all_weight: int | None = None,
    remote: Mirror | None = None,
) -> list[S]:
    """`specs` with their grants from the budget left now (the run's ledger, shards included): split by
    size over them all (`hard`, for shards run at the same time), or the first one's share of what is
    left for them all (soft, one after another: call again for the next, after `revoke`-ing them all
    once). Each shard granted is `revoke`d before the ledger is read; with `remote` (the mirror the
    workers of other machines fetch their shards from), its grant is pushed there, and what the shards'
    executions pushed is pulled, before the ledger is read too: a remote execution's hold either is on
    the mirror by then, and counted, or was pushed later, and the grant it then fetches is the new one
    (`run_granted`): it sends nothing."""
    from distiller.generation.runner import load_plan

    if not specs:
        return []
    stage, steps = specs[0].STAGE, specs[0].STEPS
    granted = revoke(specs if hard else specs[:1])
    if remote is not None:
        remote.push([Path(s.out) / GRANT for s in granted])
        remote.pull_run(only=Path(specs[0].out).parent.relative_to(run_dir).as_posix() + "/")
    left = Budget.from_config(cfg.budget, Ledger.in_run(run_dir).spent_by_stage()).remaining_usd(stage)
    plan = load_plan(run_dir)
    phase = phase_usd(plan, left, stage, steps, hard=hard)
    weights = [max(1, s.weight) for s in specs]
    total = sum(weights)
    scale_to = all_weight or total
    out = []
    for s, w in zip(granted, weights, strict=False):
        # Truncated to the nano-dollar: the grants never add up to more than the phase.
        grant = None if phase is None else int(phase * 1e9 * w / total) / 1e9
        shard_plan = scaled_plan(plan, stage, steps, w / max(1, scale_to))
        out.append(s.model_copy(update={"grant_usd": grant, "hard": hard, "plan": shard_plan}))
    return out


def grant_of(spec: GrantedShard, execution: str = "") -> Any:
    """The `runner.Grant` a shard's `StageLLM` spends under (`execution`: a remote one's id, its files)."""
    from distiller.generation.runner import Grant

    return Grant(
        shard=spec.key,
        ledger_path=str(Path(spec.out) / ledger_files(execution)[0]),
        usd=spec.grant_usd,
        hard=spec.hard,
        plan=spec.plan,
        granted_at=spec.granted_at,
    )


def hold_usd(spec: GrantedShard, stage_llm: Any) -> float:
    """What a remote execution's hold reserves: what is left of its hard grant (the grant less what the
    shard's executions journaled under it already, as its budget counted them), all it can spend. A soft
    grant, or no cap at all, holds the shard's expected cost (its plan's; $0 without one): not a bound,
    but a soft grant only runs in the process that planned it, one shard after another, whose journal
    stays where the next grant is read, and Dask never runs it again under the same grant; and with no
    cap there is no budget to pass. It keeps a killed execution from showing as $0 elsewhere."""
    if spec.hard and spec.grant_usd is not None:
        return float(stage_llm.client.budget.remaining_usd(spec.STAGE) or 0.0)
    return sum(s.expected_usd for s in spec.plan.steps) if spec.plan else 0.0


def _hold(spec: GrantedShard, stage_llm: Any, execution: str) -> LedgerEntry:
    """Journal the execution's hold (after its budget was read: it must not count its own hold)."""
    now = utc_now()
    # Not before the grant, whatever this machine's clock says: the grant's budget counts rows since.
    ts = max(now, spec.granted_at, key=datetime.fromisoformat) if spec.granted_at else now
    call_id = f"{HOLD}{spec.grant_id}:{execution}"
    row = hold_entry(spec.STAGE, spec.key, call_id, hold_usd(spec, stage_llm), ts)
    stage_llm.client.ledger.pending(row)
    return row


def _fetch_grant(remote: Mirror, out: Path) -> None:
    """This machine's copy of the shard's `grant.json`, fetched from the mirror (the fence reads it)."""
    remote.pull_run(only=(out / GRANT).relative_to(out.parents[2]).as_posix())


def _push_own(remote: Mirror, files: Sequence[Path]) -> None:
    """Push the execution's own files that exist, `meta.json` after the rest: a machine that finds it on
    the mirror finds the rows too."""
    there = [f for f in files if f.is_file()]
    remote.push([f for f in there if f.name != META])
    remote.push([f for f in there if f.name == META])


class GrantedDone(BaseModel):
    """What one LLM shard did (a task's result: small)."""

    index: int
    counts: dict[str, int] = Field(description="Rows in and out: chunks, queries, Q&A pairs, judged, ...")
    cost_usd: float
    stopped_by_budget: bool
    cached: bool
    seconds: float

    def line(self) -> str:
        rows = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in self.counts.items())
        stop = ", stopped by its grant" if self.stopped_by_budget else ""
        return f"{rows}: ${self.cost_usd:.4f} in {self.seconds:.1f}s{stop}"


Written = dict[str, tuple[list[Any], type[Record]]]
"""The shard's files: name -> (rows, record type)."""


def run_granted(
    spec: GrantedShard,
    work: Callable[[Any], tuple[Written, dict[str, int]]],
    llm: LLMConfig | None = None,
    *,
    remote: Mirror | None = None,
) -> GrantedDone:
    """Do one shard's LLM work (`work(stage_llm) -> (files, counts)`) under its grant, fenced, and write
    its files and then `meta.json` into its folder; nothing if it is done already, and nothing written if
    a newer grant took it over meanwhile (the newer execution writes the shard). `remote`: the mirror of
    a run folder this machine has a copy of (the module's doc: its own journal, a hold, its own files)."""
    from distiller.generation.runner import StageLLM

    if spec.done:
        meta = spec.meta or {}
        return GrantedDone(
            index=spec.index, counts=meta.get("counts", {}), cost_usd=0.0, stopped_by_budget=False,
            cached=True, seconds=0.0,
        )  # fmt: skip
    t0 = time.monotonic()
    out = Path(spec.out)
    out.mkdir(parents=True, exist_ok=True)
    execution = uuid.uuid4().hex[:12] if remote is not None else ""
    own = [out / name for name in ledger_files(execution)]
    stage_llm = StageLLM(spec.config, out.parents[2], spec.STAGE, llm, grant=grant_of(spec, execution))
    hold: LedgerEntry | None = None
    try:
        with stage_llm:
            stage_llm.client.fence = lambda: holds_grant(spec)
            if remote is not None:
                hold = _hold(spec, stage_llm, execution)
                _push_own(remote, own)  # before the first call: if it fails, nothing is sent
                # After the hold is on the mirror: a planner that revoked this grant without seeing the
                # hold had pushed its new grant before (with_grants), and the fence stops the first call.
                _fetch_grant(remote, out)
            files, counts = work(stage_llm)
        if remote is not None:  # the fence read this machine's copy since: is the grant still this one?
            _fetch_grant(remote, out)
        if not holds_grant(spec):
            return GrantedDone(
                index=spec.index, counts={}, cost_usd=stage_llm.cost_usd, stopped_by_budget=True,
                cached=False, seconds=time.monotonic() - t0,
            )  # fmt: skip
        own += _write(spec, stage_llm, files, counts)
        return GrantedDone(
            index=spec.index,
            counts=counts,
            cost_usd=stage_llm.cost_usd,
            stopped_by_budget=stage_llm.budget_stopped,
            cached=False,
            seconds=time.monotonic() - t0,
        )
    finally:
        if remote is not None and hold is not None:
            # Its calls are in its journal now: the hold is settled, and the journal goes to the mirror
            # even when the shard failed (its calls are spend).
            stage_llm.client.ledger.add(released(hold, utc_now()))
            stage_llm.client.ledger.flush()
            _push_own(remote, own)


def _write(spec: GrantedShard, stage_llm: Any, files: Written, counts: dict[str, int]) -> list[Path]:
    """Write a finished shard's files, then its `meta.json` (last: the shard is finished); their paths."""
    out = Path(spec.out)
    for name, (rows, model) in files.items():
        write_parquet(out / name, rows, model)
    meta = {
        "index": spec.index,
        "counts": counts,
        **counts,
        "grant_usd": spec.grant_usd,
        "hard": spec.hard,
        **stage_llm.details(),
        "cost_usd": round(stage_llm.cost_usd, 9),
        "failures_all": [f.model_dump() for f in stage_llm.failures],
        "stage_key": spec.stage_key,
    }
    atomic_write_text(out / META, json.dumps(meta, indent=1))
    return [*(out / name for name in files), out / META]


def this_pass(specs: Sequence[GrantedShard], done_as: str) -> dict[str, Any]:
    """What a stage keeps of its shards: the `meta.json` of those written for this stage result (by the
    flow's tasks or the stage itself; a shard reused from an earlier pass is not), for `StageLLM.absorb`,
    and the counts (`shards`, `shards_<done_as>`, `shards_reused`)."""
    metas = [m for s in specs if (m := s.meta or {}).get("stage_key") == s.stage_key]
    counts = {"shards": len(specs), f"shards_{done_as}": len(metas), "shards_reused": len(specs) - len(metas)}
    return {"metas": metas, "shards": counts}


def run_one_by_one(shards: Sequence[S], cfg: DistillConfig, run_dir: Path, work: Any) -> int:
    """Do the shards not done here, one after another, each with its share of what the ones before it
    left (`work(spec)`); how many ran."""
    # Fenced first: an older execution of any of them still running stops before its next call.
    pending = revoke([s for s in shards if not s.done])
    total = sum(max(1, s.weight) for s in pending)
    for i in range(len(pending)):
        (spec,) = with_grants(pending[i:], cfg, run_dir, hard=False, all_weight=total)
        work(spec)
    return len(pending)


__all__ = [
    "GRANT",
    "META",
    "GrantedDone",
    "GrantedShard",
    "Written",
    "grant_of",
    "hold_usd",
    "holds_grant",
    "phase_usd",
    "revoke",
    "run_granted",
    "run_one_by_one",
    "scaled_plan",
    "this_pass",
    "with_grants",
]
