"""Validate: a judge checks a sample of the generated rows (`distiller.generation.validation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Judgment, Passage, QAPair, Query, read_parquet, write_parquet
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

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


def validate_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """A judge checks a sample of the generated rows (see `distiller.generation.validation`)."""
    from distiller.generation import bootstrap_mode, stage_fingerprint

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
    names = ("qa_pairs.parquet", "queries.parquet", "passages.parquet")
    files = _generated_files(store, names)
    if missing := [n for n in names if not files[n].is_file()]:
        raise StageError(f"validate needs {', '.join(missing)}: run generate first")
    key = stage_key(
        "validate",
        VERSION,
        config_hash(cfg, "teacher", "validation", "budget") + stage_fingerprint(cfg, "validate"),
        [files[n] for n in names],
    )
    # Read now: run_stage clears the outputs (qa_pairs, queries) before `run`, and they may be the inputs.
    qa_pairs = read_parquet(files["qa_pairs.parquet"], QAPair)
    queries = read_parquet(files["queries.parquet"], Query)

    def run() -> dict[str, Any]:
        from distiller.generation.validation import validate

        try:
            passages = read_parquet(files["passages.parquet"], Passage)
            res = validate(cfg, store.dir, qa_pairs, queries, passages, bootstrap_mode(cfg))
        except BaseException:
            # Leave the run folder whole: the generated rows go back where the stage found them.
            write_parquet(store.path("qa_pairs.parquet"), qa_pairs, QAPair)
            write_parquet(store.path("queries.parquet"), queries, Query)
            raise
        write_parquet(store.path("judgments.parquet"), res.judgments, Judgment)
        write_parquet(store.path("qa_pairs.parquet"), res.qa_pairs, QAPair)
        write_parquet(store.path("queries.parquet"), res.queries, Query)
        return {"message": res.message, "details": res.details, "cost_usd": res.cost_usd}

    return store.run_stage("validate", key, ["judgments.parquet", "qa_pairs.parquet", "queries.parquet"], run)
