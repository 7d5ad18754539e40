"""One stage's LLM work: batches of requests through one `LLMClient` (async and bounded inside the
client), with progress events, and every failed or unsent row and budget note kept for the manifest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from distiller.config import DistillConfig, LLMConfig
from distiller.generation.progress import ProgressEvent, emit
from distiller.llm import LLMClient, LLMRequest, LLMResult

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
        self.cost_usd = 0.0
        self.failures: list[Failure] = []
        self.notes: list[str] = []
        self.steps: dict[str, dict[str, int]] = {}
        self.budget_stopped = False

    def __enter__(self) -> StageLLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    @property
    def model(self) -> str:
        return self.client.config.model

    def budget_left(self) -> float | None:
        return self.client.budget.remaining_usd(self.stage)

    def run(self, step: str, requests: Sequence[LLMRequest]) -> list[LLMResult]:
        reqs = list(requests)
        if not reqs:
            return []
        spent_before = self.cost_usd
        cost, failed = 0.0, 0

        def on_progress(done: int, total: int, res: LLMResult) -> None:
            nonlocal cost, failed
            cost += res.cost_usd
            failed += res.status == "failed"
            emit(self._event(step, done, total, spent_before + cost, failed))

        emit(self._event(step, 0, len(reqs), spent_before, 0))
        results = self.client.run_batch_sync(reqs, on_progress)
        summary = self.client.last_summary
        assert summary is not None
        self.cost_usd += summary.cost_usd
        self.steps[step] = {
            "requests": summary.total,
            "answered": summary.ok,
            "cached": summary.cached,
            "failed": summary.failed,
            "not_sent": summary.budget,
        }
        self.budget_stopped |= summary.stopped_by_budget
        self.notes.extend(f"{step}: {n}" for n in summary.notes)
        self.failures.extend(
            Failure(step=step, item_id=r.item_id, status=r.status, error=r.error or "")
            for r in results
            if r.status == "failed"
        )
        return results

    def _event(self, step: str, done: int, total: int, cost: float, failed: int) -> ProgressEvent:
        return ProgressEvent(
            stage=self.stage,
            step=step,
            done=done,
            total=total,
            cost_usd=cost,
            budget_left_usd=self.budget_left(),
            failed=failed,
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
        }


__all__ = ["Failure", "StageLLM"]
