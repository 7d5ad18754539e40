"""A read-only view of one run folder, shared by exports, the HTML report and the status tables.

Every artifact except the manifest is optional here: an offline-teacher run has no ledger and no judgments,
a run stopped early has no triplets or metrics. Readers get `None` (or an empty list) and a note, never an
exception, so each consumer can say what is missing instead of crashing.
"""

from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from distiller.errors import DistillError
from distiller.records import (
    Chunk,
    MetricRow,
    Passage,
    QAPair,
    Query,
    R,
    Triplet,
    read_parquet,
    selection_set,
)

_ITER_FILE = re.compile(r"^triplets_iter(\d+)\.parquet$")


class NotARunError(DistillError, FileNotFoundError):
    """The path given as a run is not a run folder."""


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest at small n and at 0% / 100%, unlike p ± z·se."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


class RunView:
    """Lazy, cached access to a run folder's manifest and artifacts."""

    def __init__(self, run_dir: Path | str, require_manifest: bool = False) -> None:
        self.dir = Path(run_dir)
        if not self.dir.is_dir() or (require_manifest and not (self.dir / "manifest.json").is_file()):
            raise NotARunError(f"{self.dir}: not a run folder (no manifest.json)")

    @property
    def name(self) -> str:
        return str(self.manifest.get("run_name") or self.dir.name)

    # -- manifest -----------------------------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict[str, Any]:
        p = self.dir / "manifest.json"
        if not p.is_file():
            return {"run_name": self.dir.name, "stages": {}, "skipped_inputs": []}
        return json.loads(p.read_text(encoding="utf-8"))

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config") or {}

    def config_get(self, dotted: str, default: Any = None) -> Any:
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return default if node is None else node

    @property
    def stages(self) -> dict[str, dict[str, Any]]:
        """stage -> its StageResult as JSON, in the order the run first recorded them (run order; per-
        iteration stages are named like `mine_iter1`)."""
        return dict(self.manifest.get("stages") or {})

    @property
    def total_seconds(self) -> float:
        return float(sum(s.get("seconds") or 0.0 for s in self.stages.values()))

    @staticmethod
    def compute_seconds_of(stage: dict[str, Any]) -> float:
        """What a stage's work took: a cached stage's first (real) run, not the restore's fraction of a
        second."""
        first = (
            (stage.get("details") or {}).get("first_run_seconds") if stage.get("status") == "cached" else None
        )
        return float(first if first is not None else stage.get("seconds") or 0.0)

    @staticmethod
    def compute_cost_of(stage: dict[str, Any]) -> float:
        """What a stage's LLM calls cost when they were made (a cached stage spends nothing now)."""
        first = (
            (stage.get("details") or {}).get("first_run_cost_usd")
            if stage.get("status") == "cached"
            else None
        )
        return float(first if first is not None else stage.get("cost_usd") or 0.0)

    @property
    def compute_seconds(self) -> float:
        """Time the run's results took to compute, cached stages counted at their first run's time."""
        return float(sum(self.compute_seconds_of(s) for s in self.stages.values()))

    @property
    def cached_cost(self) -> float:
        """Spend of the cached stages' first runs (paid then, not in this run's ledger)."""
        return float(
            sum(self.compute_cost_of(s) for s in self.stages.values() if s.get("status") == "cached")
        )

    @property
    def total_cost(self) -> float:
        """Spend of the run: the ledger's sum when there is a ledger (it is per call), else the manifest's."""
        ledger = self.ledger
        if ledger is not None and "cost_usd" in ledger:
            return float(ledger["cost_usd"].fillna(0).sum())
        return float(sum(s.get("cost_usd") or 0.0 for s in self.stages.values()))

    @property
    def teacher(self) -> str:
        provider = self.config_get("teacher.provider", "offline")
        if provider == "offline":
            return "offline inverse-cloze (no LLM)"
        return f"{provider}:{self.config_get('teacher.model', '?')}"

    @property
    def judge(self) -> str:
        if not self.config_get("validation.enabled", True):
            return "none (validation disabled)"
        judge = self.config_get("validation.judge")
        if judge:
            if judge.get("provider") == "offline":
                return "none (offline)"
            return f"{judge.get('provider')}:{judge.get('model')}"
        return (
            "none (offline)" if self.config_get("teacher.provider", "offline") == "offline" else self.teacher
        )

    @property
    def unvalidated_policy(self) -> str:
        return str(self.config_get("validation.unvalidated_policy", "keep"))

    # -- artifacts ----------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        return self.dir / rel

    def has(self, rel: str) -> bool:
        return self.path(rel).is_file()

    def frame(self, rel: str) -> pd.DataFrame | None:
        """Any Parquet artifact as a DataFrame (None when absent): for artifacts whose schema is not mine
        to know (ledger, judgments, concepts), read column-agnostically."""
        p = self.path(rel)
        return pq.read_table(p).to_pandas() if p.is_file() else None

    def _records(self, rel: str, model: type[R]) -> list[R]:
        return read_parquet(self.path(rel), model) if self.has(rel) else []

    @cached_property
    def ledger(self) -> pd.DataFrame | None:
        """The LLM ledger, from its journal when there is one (the Parquet file lags a killed run)."""
        from distiller.llm.ledger import has_journal, read_ledger

        if not has_journal(self.dir):
            return self.frame("ledger.parquet")
        rows = read_ledger(self.dir)
        return pd.DataFrame([e.model_dump() for e in rows]) if rows else None

    @property
    def stage_costs(self) -> dict[str, float]:
        """Cost per stage (manifest names), from the ledger: they add up to `total_cost`."""
        from distiller.llm.ledger import manifest_stage_costs

        ledger = self.ledger
        if ledger is None or "cost_usd" not in ledger:
            return {k: float(s.get("cost_usd") or 0.0) for k, s in self.stages.items()}
        by = ledger.groupby(ledger["stage"].astype(str))["cost_usd"].sum()
        return manifest_stage_costs({str(k): float(v) for k, v in by.items()}, list(self.stages))

    @cached_property
    def judgments(self) -> pd.DataFrame | None:
        return self.frame("judgments.parquet")

    @cached_property
    def chunks(self) -> list[Chunk]:
        return self._records("chunks.parquet", Chunk)

    @cached_property
    def passages(self) -> list[Passage]:
        return self._records("passages.parquet", Passage)

    @cached_property
    def queries(self) -> list[Query]:
        return self._records("queries.parquet", Query)

    @cached_property
    def qa_pairs(self) -> list[QAPair]:
        return self._records("qa_pairs.parquet", QAPair)

    @cached_property
    def metrics(self) -> list[MetricRow]:
        return self._records("metrics.parquet", MetricRow)

    @cached_property
    def triplet_files(self) -> dict[int, Path]:
        """iteration -> triplets_iter<k>.parquet, ascending."""
        found = {
            int(m.group(1)): p
            for p in self.dir.glob("triplets_iter*.parquet")
            if (m := _ITER_FILE.match(p.name))
        }
        return dict(sorted(found.items()))

    @cached_property
    def triplets(self) -> list[Triplet]:
        """All triplets: triplets accumulate across iterations, so the last iteration's file has them all."""
        if not self.triplet_files:
            return []
        return read_parquet(list(self.triplet_files.values())[-1], Triplet)

    # -- derived figures ----------------------------------------------------------------------------
    def approval(self) -> dict[str, Any]:
        """Counts by validation status, and the approval rate among judged pairs with its Wilson interval."""
        counts = {"approved": 0, "rejected": 0, "unvalidated": 0}
        for qa in self.qa_pairs:
            counts[qa.validation] += 1
        judged = counts["approved"] + counts["rejected"]
        rate = counts["approved"] / judged if judged else None
        low, high = wilson_interval(counts["approved"], judged)
        return {
            **counts,
            "judged": judged,
            "rate": rate,
            "low": low if judged else None,
            "high": high if judged else None,
        }

    def best_model(self) -> str | None:
        """The iteration kept as best: the evaluate stage's word, else models/best's marker, else the
        metrics' argmax of the configured metric."""
        for stage in self.stages.values():
            best = (stage.get("details") or {}).get("best")
            if best:
                return str(best)
        marker = self.path("models/best/distiller_best.txt")
        if marker.is_file():
            return marker.read_text(encoding="utf-8").strip() or None
        metric = self.config_get("evaluation.metric", "MRR@5")
        chosen = selection_set(self.metrics)
        scored = [
            m for m in self.metrics if m.metric == metric and m.model != "bm25" and m.query_set == chosen
        ]
        return max(scored, key=lambda m: m.value).model if scored else None

    def missing_optional(self) -> list[str]:
        """Optional artifacts this run does not have, each with the reason a reader should assume."""
        offline = self.config_get("teacher.provider", "offline") == "offline"
        why = " (offline teacher: no LLM calls)" if offline else ""
        out = []
        if self.ledger is None:
            out.append(f"ledger.parquet{why}")
        if self.judgments is None:
            out.append(f"judgments.parquet{why}")
        # A fusion run evaluates in retention.parquet (per domain and strategy), not metrics.parquet.
        evaluation = "retention.parquet" if self.has("retention.parquet") else "metrics.parquet"
        for rel in ("qa_pairs.parquet", evaluation):
            if not self.has(rel):
                out.append(rel)
        if not self.triplet_files:
            out.append("triplets_iter<k>.parquet")
        return out
