"""Generation in shards: the chunks in groups (`generation.chunks_per_shard`, the run's kept `ShardGroups`),
each group's queries and Q&A pairs written by one task into its own folder of the run,
`shards/generate/<key>/`, then merged in chunk order by the generate stage, which removes near-duplicates
and asks for the contrastive negatives over all of them. Given the same answers, the merge is what one
pass over every chunk writes.

Money first. A shard journals its calls in its own folder (`distiller.llm.ledger`: the run's ledger is the
union), and spends under a grant:
- fanned out at once (the flow on Dask), each shard's grant is a hard cap, and the grants together are no
  more than the budget left for the steps the shards run (`phase_usd`), split by the shards' text length:
  shards in other processes cannot overspend together;
- one after another (in the stage), the run's own budget is the cap, read afresh from the ledger before
  each shard, and the grant is a soft share passed on: what one shard leaves goes to the rest, and a
  shard's first call is never starved.
A shard a hard grant stopped is not done: the stage runs it again one after another, with what the others
left; its answered calls come from the call cache.

A shard's key is what decides its rows (its chunks, the teacher, the generation settings that shape the
prompts, the prompts, the seed): an added document makes new shards and leaves the others done.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from distiller.config import DistillConfig
from distiller.llm.budget import Budget
from distiller.llm.ledger import Ledger
from distiller.llm.plan import BudgetPlan, PlannedStep, step_key
from distiller.llm.types import utc_now
from distiller.records import Chunk, QAPair, Query, read_parquet, write_parquet
from distiller.store import atomic_write_text

STAGE = "generate"
PARTS_DIR = "shards/generate"
STEPS = ("queries", "Q&A pairs")
"""The steps a shard runs; near-duplicates and negatives need every query, so the stage runs them."""
META = "meta.json"
GRANT = "grant.json"
VERSION = "1"

GenerateMapper = Callable[
    [Callable[["GenerateShard"], "GenerateDone"], list["GenerateShard"]], list["GenerateDone"]
]


class GenerateShard(BaseModel):
    """One group of chunks to write queries and Q&A pairs for: all a worker needs."""

    model_config = ConfigDict(frozen=True)

    index: int
    key: str
    out: str
    """The shard's folder: its rows, its ledger journal, and `meta.json` when it finished."""
    chunks: list[Chunk]
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
        description="The generate stage's key it was planned for: its rows, calls and cost are "
        "that stage result's (an earlier pass's shard, reused, is not).",
    )
    config: DistillConfig

    @property
    def meta(self) -> dict[str, Any] | None:
        p = Path(self.out) / META
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    @property
    def done(self) -> bool:
        """Finished, and not stopped by its grant (a rerun gets the grant's next share)."""
        m = self.meta
        return m is not None and not m.get("stopped_by_budget")


class GenerateDone(BaseModel):
    """What one shard did (a task's result: small)."""

    index: int
    chunks: int
    queries: int
    qa_pairs: int
    cost_usd: float
    stopped_by_budget: bool
    cached: bool
    seconds: float


def settings(cfg: DistillConfig) -> str:
    """What in the config decides a shard's rows (not its size, the budget, dedup or negatives)."""
    from distiller.generation import stage_fingerprint
    from distiller.stages.keys import config_hash

    later = {"chunks_per_shard", "dedup_threshold", "negatives_per_query", "document_negatives"}
    return config_hash(cfg, "teacher", "generation", exclude={"generation": later}) + stage_fingerprint(
        cfg, "generate"
    )


def shard_key(chunks: Sequence[Chunk], settings_hash: str) -> str:
    h = hashlib.sha256(f"{VERSION}|{settings_hash}".encode())
    for c in chunks:
        h.update(f"\x00{c.chunk_id}\x00{c.source_path}\x00{c.chunk_index}\x00{c.text}".encode())
    return h.hexdigest()[:24]


def plan_shards(
    cfg: DistillConfig, chunks: Sequence[Chunk], groups: list[list[int]], parts: Path, stage_key: str = ""
) -> list[GenerateShard]:
    """Every shard of the run's chunks (in their kept groups), done or not, without grants."""
    s = settings(cfg)
    specs = []
    for n, rows in enumerate(groups):
        mine = [chunks[i] for i in rows]
        key = shard_key(mine, s)
        specs.append(
            GenerateShard(
                index=n, key=key, out=str(parts / key), chunks=mine, stage_key=stage_key, config=cfg
            )
        )
    return specs


# -- grants ---------------------------------------------------------------------------------------------
def _weight(spec: GenerateShard) -> int:
    return sum(len(c.text) for c in spec.chunks) or 1


def phase_usd(plan: BudgetPlan | None, left_usd: float | None, *, hard: bool) -> float | None:
    """What the shards' steps may spend of `left_usd` together: the plan's share of them when the budget
    does not cover the plan; else everything left (hard) or no cap but the budget's (soft: None)."""
    if left_usd is None:
        return None
    if plan is None:
        return left_usd if hard else None
    idx = [
        i
        for i, s in enumerate(plan.steps)
        if step_key(s.stage, s.step) in {step_key(STAGE, t) for t in STEPS}
    ]
    if not idx:
        return left_usd if hard else None
    rest = sum(s.expected_usd for s in plan.steps[idx[0] :])
    if rest <= left_usd or rest <= 0:
        return left_usd if hard else None
    return left_usd * sum(plan.steps[i].expected_usd for i in idx) / rest


def shard_plan_for(plan: BudgetPlan | None, spec: GenerateShard, total_weight: int) -> BudgetPlan | None:
    """The run's plan for the shard's steps, each step's expected cost scaled to the shard's share of the
    text: the split of a grant between its queries and its Q&A pairs."""
    if plan is None:
        return None
    f = _weight(spec) / max(1, total_weight)
    wanted = {step_key(STAGE, t) for t in STEPS}
    steps = [
        PlannedStep(
            stage=s.stage,
            step=s.step,
            requests=round(s.requests * f),
            to_send=round(s.to_send * f),
            expected_usd=s.expected_usd * f,
        )
        for s in plan.steps
        if step_key(s.stage, s.step) in wanted
    ]
    return BudgetPlan(steps=steps, budget_usd=None, policy=plan.policy)


def revoke(specs: Sequence[GenerateShard]) -> list[GenerateShard]:
    """Give each shard a new grant id, written to its `grant.json` before the ledger is read for its
    grant: an older execution of the shard still running (a worker of a killed flow, a task Dask started
    again) checks the id after journaling each call and stops, so every call it sends was journaled
    before this, and is counted in the budget left."""
    out = []
    for s in specs:
        grant_id = uuid.uuid4().hex
        atomic_write_text(Path(s.out) / GRANT, json.dumps({"id": grant_id}))
        out.append(s.model_copy(update={"grant_id": grant_id, "granted_at": utc_now()}))
    return out


def with_grants(
    specs: Sequence[GenerateShard],
    cfg: DistillConfig,
    run_dir: Path,
    *,
    hard: bool,
    all_weight: int | None = None,
) -> list[GenerateShard]:
    """`specs` with their grants from the budget left now (the run's ledger, shards included): split by
    text length over them all (`hard`, for shards run at the same time), or the first one's share of
    what is left for them all (soft, one after another: call again for the next; `revoke` them all
    first). Each shard granted is `revoke`d before the ledger is read."""
    from distiller.generation.runner import load_plan

    if not specs:
        return []
    granted = revoke(specs if hard else specs[:1])
    left = Budget.from_config(cfg.budget, Ledger.in_run(run_dir).spent_by_stage()).remaining_usd(STAGE)
    plan = load_plan(run_dir)
    phase = phase_usd(plan, left, hard=hard)
    weights = [_weight(s) for s in specs]
    total = sum(weights)
    scale_to = all_weight or total
    out = []
    for s, w in zip(granted, weights, strict=False):
        # Truncated to the nano-dollar: the grants never add up to more than the phase.
        grant = None if phase is None else int(phase * 1e9 * w / total) / 1e9
        update = {"grant_usd": grant, "hard": hard, "plan": shard_plan_for(plan, s, scale_to)}
        out.append(s.model_copy(update=update))
    return out


def holds_grant(spec: GenerateShard) -> bool:
    """Whether the shard's `grant.json` still names this spec's grant (no id: not fenced)."""
    if not spec.grant_id:
        return True
    try:
        return json.loads((Path(spec.out) / GRANT).read_text(encoding="utf-8")).get("id") == spec.grant_id
    except (OSError, ValueError):
        return False


# -- one shard ------------------------------------------------------------------------------------------
def generate_shard(spec: GenerateShard) -> GenerateDone:
    """Write one shard's queries and Q&A pairs into its folder (nothing if it is done already)."""
    from distiller.generation.context import GenContext
    from distiller.generation.qa import qa_requests, to_qa_pairs
    from distiller.generation.queries import chunk_requests, to_queries
    from distiller.generation.runner import Grant, StageLLM
    from distiller.prompts.qa import QABatch
    from distiller.prompts.queries import QueryBatch

    out = Path(spec.out)
    if spec.done:
        m = spec.meta or {}
        return GenerateDone(
            index=spec.index,
            chunks=len(spec.chunks),
            queries=m.get("queries", 0),
            qa_pairs=m.get("qa_pairs", 0),
            cost_usd=0.0,
            stopped_by_budget=False,
            cached=True,
            seconds=0.0,
        )
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    cfg = spec.config
    run_dir = out.parents[2]
    grant = Grant(
        shard=spec.key,
        ledger_path=str(out / "ledger.parquet"),
        usd=spec.grant_usd,
        hard=spec.hard,
        plan=spec.plan,
        granted_at=spec.granted_at,
    )
    ctx = GenContext.from_config(cfg)
    with StageLLM(cfg, run_dir, STAGE, grant=grant) as llm:
        llm.client.fence = lambda: holds_grant(spec)
        q_reqs, sources, slots = chunk_requests(spec.chunks, ctx)
        # The split is the stage's (it depends on every document): set when the shards are merged.
        queries = to_queries(sources, llm.answers(llm.run("queries", q_reqs), QueryBatch), slots, {}, ctx)
        qa_reqs, difficulty = qa_requests(spec.chunks, ctx)
        qa_pairs = to_qa_pairs(
            spec.chunks, llm.answers(llm.run("Q&A pairs", qa_reqs), QABatch), difficulty, {}, ctx
        )
    seconds = time.monotonic() - t0
    if not holds_grant(spec):
        # Taken over while it ran: the newer execution writes the shard's rows, not this one.
        return GenerateDone(
            index=spec.index,
            chunks=len(spec.chunks),
            queries=0,
            qa_pairs=0,
            cost_usd=llm.cost_usd,
            stopped_by_budget=True,
            cached=False,
            seconds=seconds,
        )
    write_parquet(out / "queries.parquet", queries, Query)
    write_parquet(out / "qa_pairs.parquet", qa_pairs, QAPair)
    meta = {
        "index": spec.index,
        "chunks": len(spec.chunks),
        "queries": len(queries),
        "qa_pairs": len(qa_pairs),
        "grant_usd": spec.grant_usd,
        "hard": spec.hard,
        **llm.details(),
        "cost_usd": round(llm.cost_usd, 9),
        "failures_all": [f.model_dump() for f in llm.failures],
        "stage_key": spec.stage_key,
    }
    atomic_write_text(out / META, json.dumps(meta, indent=1))  # written last: the shard is finished
    return GenerateDone(
        index=spec.index,
        chunks=len(spec.chunks),
        queries=len(queries),
        qa_pairs=len(qa_pairs),
        cost_usd=llm.cost_usd,
        stopped_by_budget=llm.budget_stopped,
        cached=False,
        seconds=seconds,
    )


def read_shard(spec: GenerateShard) -> tuple[list[Query], list[QAPair], dict[str, Any]]:
    out = Path(spec.out)
    return (
        read_parquet(out / "queries.parquet", Query),
        read_parquet(out / "qa_pairs.parquet", QAPair),
        spec.meta or {},
    )


__all__ = [
    "PARTS_DIR",
    "GenerateDone",
    "GenerateMapper",
    "GenerateShard",
    "generate_shard",
    "holds_grant",
    "phase_usd",
    "plan_shards",
    "read_shard",
    "revoke",
    "with_grants",
]
