"""What the stages share: the run folder (its lock, its store, brought up to date from the mirror), the
budget's split over the LLM steps, the model an iteration starts from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.naming import default_run_name
from distiller.records import Chunk, read_parquet
from distiller.store import RunStore, StageCache

log = logging.getLogger("distiller")

Progress = Callable[[str], None]


def lock_run(cfg: DistillConfig) -> AbstractContextManager[None]:
    """The run folder's lock (`distiller.runlock`): a second process on the same run is refused."""
    from distiller.runlock import run_lock

    return run_lock(cfg.runs_path / default_run_name(cfg))


def open_store(cfg: DistillConfig) -> RunStore:
    """The run folder of `cfg`; with `storage_url`, first brought up to date from the mirror (every task,
    the CLI and the flows open their run here, so each stage starts from what other machines wrote)."""
    from distiller.remote import remote_for

    mirror = remote_for(cfg)
    if mirror is not None:
        mirror.pull_run()
    store = RunStore(cfg.runs_path / default_run_name(cfg), StageCache(cfg.cache_path, mirror), mirror)
    store.record_config(cfg.redacted())
    return store


def plan_llm_budget(store: RunStore, cfg: DistillConfig, *, announce: bool = True) -> Any:
    """Split the run's budget over its LLM steps by the estimate (llm/plan.py), before anything is sent;
    kept in the manifest for the steps to read. None: no LLM teacher, or no chunks yet. With
    `budget.policy: strict`, a budget that does not cover the estimate is refused here."""
    import contextlib

    from distiller.errors import BudgetExceeded
    from distiller.generation import bootstrap_mode
    from distiller.generation.estimate import budget_plan
    from distiller.llm import CallCache
    from distiller.llm.ledger import read_ledger

    if cfg.teacher.offline or cfg.input.qa_file:
        return None
    chunks: list[Chunk] = []
    if not bootstrap_mode(cfg):
        if not store.path("chunks.parquet").is_file():
            return None
        chunks = read_parquet(store.path("chunks.parquet"), Chunk)
    spent = sum(e.cost_usd for e in read_ledger(store.dir))
    with contextlib.closing(CallCache.in_dir(cfg.cache_path)) as cache:
        plan = budget_plan(cfg, chunks, cache, spent)
    before = store.manifest().get("budget_plan")
    # Said once: `distill run` prints it before the flow starts; the stage repeats only what changed.
    said = before is not None and type(plan).model_validate(before).coverage() == plan.coverage()

    def _set(m: dict[str, Any]) -> None:
        m["budget_plan"] = plan.model_dump(mode="json")
        cost = m.setdefault("llm_cost", {})
        cost.setdefault("estimate_before_run_usd", round(spent + plan.expected_usd, 6))
        cost["budget_usd"] = cfg.budget.run_usd

    store.update_manifest(_set)
    if not plan.covered:
        if cfg.budget.policy == "strict":
            raise BudgetExceeded(
                f"{plan.coverage()}. budget.policy is strict, so nothing was sent (--budget-policy partial "
                "runs what the budget buys)"
            )
        if announce and not said:
            log.warning("%s", plan.coverage())
    return plan


def budget_cause(store: RunStore) -> str:
    """The budget's part in a run that came out too small, for errors about too little data ('' if none)."""
    m = store.manifest()
    stopped = [k for k, v in m.get("stages", {}).items() if (v.get("details") or {}).get("stopped_by_budget")]
    if not stopped:
        return ""
    unsent = (m.get("llm_cost") or {}).get("not_sent_budget", 0)
    return (
        f". The LLM budget was the cause: it stopped {', '.join(stopped)} early ({unsent} requests not "
        f"sent); raise it (--budget, now ${(m.get('config') or {}).get('budget', {}).get('run_usd', '?')})"
    )


def model_ref(store: RunStore, cfg: DistillConfig, iteration: int) -> tuple[str, Path | str]:
    """(model to load, what identifies it in a cache key) for the model that starts iteration k."""
    from distiller.retrieval.models import resolve_student

    if iteration <= 1:
        ref = resolve_student(cfg.training.student)
        p = Path(ref)
        # A local folder is identified by its name (packaged or user model); contents are hashed only
        # for trained iterations, whose files this pipeline wrote.
        return ref, f"{cfg.training.student}|{p.name if p.exists() else ref}"
    prev = store.path(f"models/iter{iteration - 1}")
    if not prev.is_dir():
        raise StageError(f"iteration {iteration} needs models/iter{iteration - 1}: run train for it first")
    return str(prev), prev


def shards_note(counts: Mapping[str, Any], done_as: str) -> str:
    """The stage message's shard counts, from the counts every sharded stage keeps (`shards`,
    `shards_<done_as>`, `shards_reused`); '' when the stage ran without shards. A shard the stage found
    done may have been written by this run's own shard tasks (the flow fans them out before the stage
    merges), so the note does not say "earlier"."""
    if "shards" not in counts:
        return ""
    return (
        f"; {counts['shards']} shards ({counts[f'shards_{done_as}']} {done_as} by the stage itself, "
        f"{counts['shards_reused']} found done: by this run's shard tasks or an earlier run)"
    )
