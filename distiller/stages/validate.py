"""Validate: a judge checks a sample of the generated rows (`distiller.generation.validation`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Judgment, Passage, QAPair, Query, read_parquet, write_parquet
from distiller.stages.common import plan_llm_budget
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

if TYPE_CHECKING:
    from distiller.generation.judge_shards import JudgeShard
    from distiller.generation.validation import JudgeItem

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "1"


def _generated_files(store: RunStore, names: tuple[str, ...]) -> dict[str, Path]:
    """The generate stage's files as it wrote them: validate rewrites qa_pairs and queries in the run
    folder, so it reads (and keys on) the copies in generate's stage-cache entry, which never change;
    the run folder's where there is no entry."""
    gen = store.stage_results().get("generate")
    entry: Path | None = None
    # lookup, not entry alone: it fetches the entry from the mirror when another machine ran generate.
    if gen and gen.key and store.cache.lookup("generate", gen.key):
        entry = store.cache.entry("generate", gen.key) / "files"
    return {n: entry / n if entry and (entry / n).is_file() else store.path(n) for n in names}


def _skipped(store: RunStore, cfg: DistillConfig) -> StageResult | None:
    if cfg.teacher.offline:
        # Not recorded in the manifest: an offline run keeps exactly the stages it always had.
        return StageResult(
            stage="validate",
            status="skipped",
            message="offline teacher: no LLM-written rows to judge (inverse-cloze rows are cut from "
            "their chunks)",
        )
    if not cfg.validation.enabled:
        skipped = StageResult(
            stage="validate",
            status="skipped",
            message="validation disabled (validation.enabled: false): Q&A pairs stay unvalidated",
        )
        store.record_stage(skipped)
        return skipped
    return None


NAMES = ("qa_pairs.parquet", "queries.parquet", "passages.parquet")
OUTPUTS = ["judgments.parquet", "qa_pairs.parquet", "queries.parquet"]


def _key(store: RunStore, cfg: DistillConfig) -> tuple[str, dict[str, Path]]:
    from distiller.generation import stage_fingerprint

    files = _generated_files(store, NAMES)
    if missing := [n for n in NAMES if not files[n].is_file()]:
        raise StageError(f"validate needs {', '.join(missing)}: run generate first")
    # Not items_per_shard: how the sample is grouped never changes what the stage writes.
    settings = config_hash(
        cfg, "teacher", "validation", "budget", exclude={"validation": {"items_per_shard"}}
    )
    key = stage_key(
        "validate", VERSION, settings + stage_fingerprint(cfg, "validate"), [files[n] for n in NAMES]
    )
    return key, files


def sharded(cfg: DistillConfig) -> bool:
    return cfg.validation.items_per_shard > 0


def _kept_sample(store: RunStore, key: str) -> Path:
    from distiller.generation.judge_shards import PARTS_DIR

    return store.path(PARTS_DIR) / f"sample-{key[:24]}.json"


def _shards(store: RunStore, cfg: DistillConfig, key: str, items: list[JudgeItem]) -> list[JudgeShard]:
    from distiller.generation.judge_shards import PARTS_DIR, plan_shards
    from distiller.stages.encoding import assign_groups

    ids = [f"{it.kind}:{it.item_id}" for it in items]
    groups = assign_groups(store, "judge", ids, cfg.validation.items_per_shard)
    return plan_shards(cfg, items, groups, store.path(PARTS_DIR), key)


def _sampled(store: RunStore, cfg: DistillConfig, key: str, files: dict[str, Path]) -> list[JudgeItem]:
    """The sample's items, chosen now or read from where an earlier planner kept it."""
    from distiller.generation import bootstrap_mode
    from distiller.generation.runner import StageLLM
    from distiller.generation.validation import STAGE, Sample, choose_sample, judge_endpoint, pools_for

    pools = pools_for(
        cfg,
        read_parquet(files["qa_pairs.parquet"], QAPair),
        read_parquet(files["queries.parquet"], Query),
        read_parquet(files["passages.parquet"], Passage),
        bootstrap_mode(cfg),
    )
    kept = _kept_sample(store, key)
    if (sample := Sample.kept(kept)) is None:
        # Chosen now: sized by what the budget pays for, which needs the judge's client and prices.
        with StageLLM(cfg, store.dir, STAGE, judge_endpoint(cfg)) as llm:
            sample = choose_sample(cfg, llm, pools, kept)
    return [it for items in sample.chosen(pools).values() for it in items]


def shard_plan(store: RunStore, cfg: DistillConfig) -> list[JudgeShard]:
    """The judge shards validation still needs, each with its hard grant of the budget left (they run at
    the same time): what the flow fans out before the stage runs. None when the stage is cached, skipped
    or not sharded."""
    from distiller.generation.grants import with_grants

    if cfg.teacher.offline or not cfg.validation.enabled or not sharded(cfg):
        return []
    key, files = _key(store, cfg)
    if store.cache.lookup("validate", key, OUTPUTS) is not None:
        return []
    plan_llm_budget(store, cfg)  # the judge's share of the budget, for the grants
    pending = [s for s in _shards(store, cfg, key, _sampled(store, cfg, key, files)) if not s.done]
    # With storage_url the grants go to the mirror before the ledger is read for them (with_grants).
    return with_grants(pending, cfg, store.dir, hard=True, remote=store.mirror)


def validate_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """A judge checks a sample of the generated rows (see `distiller.generation.validation`)."""
    from distiller.generation import bootstrap_mode

    if (skipped := _skipped(store, cfg)) is not None:
        return skipped
    key, files = _key(store, cfg)
    # Read now: run_stage clears the outputs (qa_pairs, queries) before `run`, and they may be the inputs.
    qa_pairs = read_parquet(files["qa_pairs.parquet"], QAPair)
    queries = read_parquet(files["queries.parquet"], Query)

    def judge_in_shards(items: list[JudgeItem]) -> tuple[dict[tuple[str, str], Judgment], dict[str, Any]]:
        from distiller.generation.grants import run_one_by_one
        from distiller.generation.judge_shards import judge_shard, merged

        specs = _shards(store, cfg, key, items)
        run_one_by_one(specs, cfg, store.dir, judge_shard)
        return merged(specs)

    def run() -> dict[str, Any]:
        from distiller.generation.validation import validate

        try:
            passages = read_parquet(files["passages.parquet"], Passage)
            res = validate(
                cfg,
                store.dir,
                qa_pairs,
                queries,
                passages,
                bootstrap_mode(cfg),
                kept_sample=_kept_sample(store, key) if sharded(cfg) else None,
                shards=judge_in_shards if sharded(cfg) else None,
            )
        except BaseException:
            # Leave the run folder whole: the generated rows go back where the stage found them.
            write_parquet(store.path("qa_pairs.parquet"), qa_pairs, QAPair)
            write_parquet(store.path("queries.parquet"), queries, Query)
            raise
        write_parquet(store.path("judgments.parquet"), res.judgments, Judgment)
        write_parquet(store.path("qa_pairs.parquet"), res.qa_pairs, QAPair)
        write_parquet(store.path("queries.parquet"), res.queries, Query)
        return {"message": res.message, "details": res.details, "cost_usd": res.cost_usd}

    return store.run_stage("validate", key, OUTPUTS, run)
