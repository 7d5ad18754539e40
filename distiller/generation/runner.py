"""One stage's LLM work: batches of requests through one `LLMClient` (async and bounded inside the
client), with progress events, and every failed or unsent row and budget note kept for the manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from distiller.config import DistillConfig, LLMConfig
from distiller.generation.progress import ProgressEvent, emit
from distiller.llm import LLMClient, LLMRequest, LLMResult
from distiller.llm.budget import Budget, stage_group
from distiller.llm.estimate import estimate_cost
from distiller.llm.ledger import Ledger, folder_entries
from distiller.llm.plan import BudgetPlan

M = TypeVar("M", bound=BaseModel)

MAX_FAILURES_SHOWN = 20
"""Failed rows listed in the manifest (all of them are in the ledger)."""


class Failure(BaseModel):
    step: str
    item_id: str
    status: str
    error: str


class Grant(BaseModel):
    """What one shard of a stage's LLM work may spend, and where it journals its calls
    (`distiller.generation.shards`)."""

    shard: str
    ledger_path: str
    usd: float | None = Field(description="What this shard may spend (None: no cap but the budget's).")
    hard: bool = Field(
        description="A hard cap, counted against the grant alone (shards running at the same time: the "
        "flow gave them together no more than the budget left); else a soft share on top of the run's "
        "own budget (shards one after another)."
    )
    plan: BudgetPlan | None = Field(
        default=None, description="The shard's steps, their expected cost scaled to the shard (step shares)."
    )
    granted_at: str = Field(default="", description="When the grant was made (UTC, ISO 8601).")

    def budget(self, cfg: DistillConfig, run_dir: Path, stage: str) -> Budget:
        if not self.hard:
            return Budget.from_config(cfg.budget, Ledger.in_run(run_dir).spent_by_stage())
        if self.usd is None:
            return Budget.unlimited()
        # What the shard's executions journaled under this grant already, in every journal of its folder
        # (Dask runs a task again when its worker died; a remote one that was killed left its hold): the
        # grant holds them too.
        since = datetime.fromisoformat(self.granted_at) if self.granted_at else None
        spent = sum(
            e.cost_usd
            for e in folder_entries(Path(self.ledger_path).parent)
            if since is not None and datetime.fromisoformat(e.ts) >= since
        )
        return Budget(None, {stage_group(stage): self.usd}, {stage: spent})


class StageLLM:
    """Use as a context manager; `run(step, requests)` per batch. Nothing here raises for a bad answer:
    a row whose answer never parsed comes back `failed`, one the budget stopped comes back `budget`."""

    def __init__(
        self,
        cfg: DistillConfig,
        run_dir: Path,
        stage: str,
        llm: LLMConfig | None = None,
        *,
        grant: Grant | None = None,
    ) -> None:
        """`grant`: this is one shard of the stage's work, spending only what the grant holds, into its
        own ledger (`distiller.generation.shards`); else the run's ledger, budget and plan."""
        self.stage = stage
        if grant is None:
            self.client = LLMClient.for_run(cfg, run_dir, llm)
            self.plan = load_plan(run_dir)
        else:
            ledger = Ledger(grant.ledger_path, shard=grant.shard)
            budget = grant.budget(cfg, run_dir, stage)
            self.client = LLMClient.for_run(cfg, run_dir, llm, budget=budget, ledger=ledger)
            self.plan = grant.plan
        self.share_cap = None if grant is None or grant.hard else grant.usd
        self.cost_usd = 0.0
        self.estimated_usd = 0.0
        self.failures: list[Failure] = []
        self.notes: list[str] = []
        self.steps: dict[str, dict[str, float]] = {}
        self.budget_stopped = False

    def __enter__(self) -> StageLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    @property
    def model(self) -> str:
        return self.client.config.model

    def _left(self) -> float | None:
        """The budget left, or less: what a soft grant still holds."""
        left = self.client.budget.remaining_usd(self.stage)
        if self.share_cap is None:
            return left
        held = max(0.0, self.share_cap - self.cost_usd)
        return held if left is None else min(left, held)

    def budget_left(self) -> float | None:
        """What this stage may still spend: the budget left, or this stage's share of it when the plan
        splits a budget too small for the whole run (llm/plan.py)."""
        left = self._left()
        share = self.plan.stage_share_usd(self.stage, left) if self.plan else None
        return left if share is None else min(share, left or 0.0)

    def _estimate(self, reqs: list[LLMRequest]) -> tuple[float, int]:
        """Expected cost and count of the requests not in the call cache, before any is sent (the
        calibration must not see this step's own answers)."""
        if not self.client.pricing.known:
            return 0.0, 0
        est = estimate_cost(reqs, self.client.config, cache=self.client.cache)
        return (est.expected_cost_usd or 0.0, est.calls)

    def run(self, step: str, requests: Sequence[LLMRequest]) -> list[LLMResult]:
        reqs = list(requests)
        if not reqs:
            return []
        spent_before = self.cost_usd
        cost, failed, not_sent = 0.0, 0, 0
        share = self.plan.share_usd(self.stage, step, self._left()) if self.plan else None
        expected, to_send = self._estimate(reqs)

        def on_progress(done: int, total: int, res: LLMResult) -> None:
            nonlocal cost, failed, not_sent
            cost += res.cost_usd
            failed += res.status == "failed"
            not_sent += res.status == "budget"
            emit(self._event(step, done, total, spent_before + cost, failed, not_sent))

        emit(self._event(step, 0, len(reqs), spent_before, 0, 0))
        results = self.client.run_batch_sync(reqs, on_progress, share_usd=share)
        summary = self.client.last_summary
        assert summary is not None
        self.cost_usd += summary.cost_usd
        sent = sum(1 for r in results if r.status in ("ok", "failed") and r.attempts > 0)
        # The estimate of what was sent (a budget stop sends fewer than planned), next to the bill.
        step_estimate = expected * sent / to_send if to_send else 0.0
        self.estimated_usd += step_estimate
        self.steps[step] = {  # counts and USD
            "requests": summary.total,
            "answered": summary.ok,
            "cached": summary.cached,
            "failed": summary.failed,
            "not_sent": summary.budget,
            "estimated_usd": round(step_estimate, 6),
            "billed_usd": round(summary.cost_usd, 6),
            **({"share_usd": round(share, 6)} if share is not None else {}),
        }
        self.budget_stopped |= summary.stopped_by_budget
        self.notes.extend(f"{step}: {n}" for n in summary.notes)
        self.failures.extend(
            Failure(step=step, item_id=r.item_id, status=r.status, error=r.error or "")
            for r in results
            if r.status == "failed"
        )
        return results

    def _event(
        self, step: str, done: int, total: int, cost: float, failed: int, not_sent: int
    ) -> ProgressEvent:
        return ProgressEvent(
            stage=self.stage,
            step=step,
            done=done,
            total=total,
            cost_usd=cost,
            budget_left_usd=self.client.budget.remaining_usd(self.stage),
            failed=failed,
            not_sent=not_sent,
        )

    def absorb(self, shards: dict[str, Any]) -> None:
        """Count the calls of the stage's shards (their `meta.json`, written this pass) as this stage's."""
        for meta in shards.get("metas", []):
            self.cost_usd += meta.get("cost_usd", 0.0)
            self.estimated_usd += meta.get("estimated_usd", 0.0)
            self.budget_stopped |= bool(meta.get("stopped_by_budget"))
            self.notes.extend(n for n in meta.get("budget_notes", []) if n not in self.notes)
            self.failures.extend(Failure.model_validate(f) for f in meta.get("failures_all", []))
            for step, counts in (meta.get("llm_steps") or {}).items():
                mine = self.steps.setdefault(step, {})
                for k, v in counts.items():
                    mine[k] = round(mine.get(k, 0) + v, 6)

    @staticmethod
    def answers(results: Sequence[LLMResult], schema: type[M]) -> dict[str, M]:
        """item_id -> the parsed answer, for the rows that have one."""
        return {r.item_id: schema.model_validate(r.parsed) for r in results if r.ok and r.parsed is not None}

    def details(self) -> dict[str, Any]:
        """What the manifest keeps of this stage's calls."""
        return {
            "llm_model": self.model,
            "llm_steps": self.steps,
            "failed_rows": len(self.failures),
            "failures": [f.model_dump() for f in self.failures[:MAX_FAILURES_SHOWN]],
            "budget_notes": self.notes,
            "stopped_by_budget": self.budget_stopped,
            "estimated_usd": round(self.estimated_usd, 6),
            "billed_usd": round(self.cost_usd, 6),
        }


def load_plan(run_dir: Path) -> BudgetPlan | None:
    """The run's budget plan (the manifest's `budget_plan`), if one was made."""
    manifest = Path(run_dir) / "manifest.json"
    if not manifest.is_file():
        return None
    raw = json.loads(manifest.read_text(encoding="utf-8")).get("budget_plan")
    return BudgetPlan.model_validate(raw) if raw else None


__all__ = ["Failure", "Grant", "StageLLM", "load_plan"]
