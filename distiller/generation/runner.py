"""One stage's LLM work: batches of requests through one `LLMClient` (async and bounded inside the
client), with progress events, and every failed or unsent row and budget note kept for the manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from distiller.config import DistillConfig, LLMConfig
from distiller.generation.progress import ProgressEvent, emit
from distiller.llm import LLMClient, LLMRequest, LLMResult
from distiller.llm.estimate import estimate_cost
from distiller.llm.plan import BudgetPlan

M = TypeVar("M", bound=BaseModel)

MAX_FAILURES_SHOWN = 20
"""Failed rows listed in the manifest (all of them are in the ledger)."""


class Failure(BaseModel):
    step: str
    item_id: str
    status: str
    error: str


class StageLLM:
    """Use as a context manager; `run(step, requests)` per batch. Nothing here raises for a bad answer:
    a row whose answer never parsed comes back `failed`, one the budget stopped comes back `budget`."""

    def __init__(self, cfg: DistillConfig, run_dir: Path, stage: str, llm: LLMConfig | None = None) -> None:
        self.stage = stage
        self.client = LLMClient.for_run(cfg, run_dir, llm)
        self.plan = load_plan(run_dir)
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

    def budget_left(self) -> float | None:
        """What this stage may still spend: the budget left, or this stage's share of it when the plan
        splits a budget too small for the whole run (llm/plan.py)."""
        left = self.client.budget.remaining_usd(self.stage)
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
        share = (
            self.plan.share_usd(self.stage, step, self.client.budget.remaining_usd(self.stage))
            if self.plan
            else None
        )
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


__all__ = ["Failure", "StageLLM", "load_plan"]
