"""Generate: queries, passages and Q&A pairs from the chunks (or, in bootstrap mode, from the knowledge
base), by the LLM teacher or offline (inverse-cloze)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Chunk, Concept, Document, Passage, QAPair, Query, read_parquet, write_parquet
from distiller.stages.common import plan_llm_budget
from distiller.stages.encoding import backend_tag, dedup_encoder
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

if TYPE_CHECKING:
    from distiller.generation.shards import GenerateShard

log = logging.getLogger("distiller")

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


def _titles(store: RunStore) -> dict[str, str]:
    """{doc_id: title} of the ingested documents that have one (the offline teacher's title queries)."""
    p = store.path("sources.parquet")
    return {d.doc_id: d.title for d in read_parquet(p, Document) if d.title} if p.is_file() else {}


def _titles_input(store: RunStore, cfg: DistillConfig) -> list[Path]:
    p = store.path("sources.parquet")
    use = cfg.teacher.offline and cfg.generation.offline_title_queries and p.is_file()
    return [p] if use else []


def _key(store: RunStore, cfg: DistillConfig) -> tuple[str, list[str], Path]:
    """The stage's key, its outputs, and the file it generates from."""
    from distiller.generation import bootstrap_mode, stage_fingerprint

    # Bootstrap mode generates from the domain's knowledge base instead of from chunks.
    bootstrap = bootstrap_mode(cfg)
    source = "concepts.parquet" if bootstrap else "chunks.parquet"
    chunks_path = store.path(source)
    if not chunks_path.is_file():
        first = "distill bootstrap" if bootstrap else "distill ingest"
        raise StageError(f"generate needs {source}: run the stage before it first ({first})")
    outputs = ["passages.parquet", "queries.parquet", "qa_pairs.parquet"]
    llm_key = ""
    if not cfg.teacher.offline:
        from distiller.generation.teachers.llm import LLM_OUTPUTS

        outputs += LLM_OUTPUTS
        # Prompts and templates it renders, and the student that finds near-duplicate queries.
        llm_key = stage_fingerprint(cfg, "generate") + cfg.training.student
        llm_key += backend_tag(cfg)  # dedup's encoder
    # Not chunks_per_shard: how chunks are grouped never changes what the stage writes.
    settings = config_hash(
        cfg, "teacher", "generation", "split", "budget", exclude={"generation": {"chunks_per_shard"}}
    )
    key = stage_key("generate", VERSION, settings + llm_key, [chunks_path, *_titles_input(store, cfg)])
    return key, outputs, chunks_path


def sharded(cfg: DistillConfig) -> bool:
    """Whether generation runs in chunk shards: the LLM teacher in document mode, with a shard size."""
    from distiller.generation import bootstrap_mode

    return not cfg.teacher.offline and not bootstrap_mode(cfg) and cfg.generation.chunks_per_shard > 0


def _shards(store: RunStore, cfg: DistillConfig, chunks: list[Chunk], key: str) -> list[GenerateShard]:
    from distiller.generation.shards import PARTS_DIR, plan_shards
    from distiller.stages.encoding import assign_groups

    groups = assign_groups(store, "chunk", [c.chunk_id for c in chunks], cfg.generation.chunks_per_shard)
    return plan_shards(cfg, chunks, groups, store.path(PARTS_DIR), key)


def shard_plan(store: RunStore, cfg: DistillConfig) -> list[GenerateShard]:
    """The chunk shards generation still needs, each with its hard grant of the budget left (they run at
    the same time): what the flow fans out before the stage runs. None when the stage is cached or not
    sharded."""
    from distiller.generation.grants import with_grants

    if not sharded(cfg):
        return []
    key, outputs, chunks_path = _key(store, cfg)
    if store.cache.lookup("generate", key, outputs) is not None:
        return []
    plan_llm_budget(store, cfg)  # before anything is sent: the grants split its shares
    pending = [s for s in _shards(store, cfg, read_parquet(chunks_path, Chunk), key) if not s.done]
    # With storage_url the grants go to the mirror before the ledger is read for them (with_grants).
    return with_grants(pending, cfg, store.dir, hard=True, remote=store.mirror)


def generate_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    from distiller.generation import bootstrap_mode

    bootstrap = bootstrap_mode(cfg)
    key, outputs, chunks_path = _key(store, cfg)

    def run() -> dict[str, Any]:
        plan_llm_budget(store, cfg)  # before anything is sent: the budget's split over the steps
        chunks = [] if bootstrap else read_parquet(chunks_path, Chunk)
        if bootstrap:
            from distiller.generation.teachers.llm import generate_from_concepts

            concepts = read_parquet(chunks_path, Concept)
            out = generate_from_concepts(concepts, cfg, store, encoder=dedup_encoder(store, cfg))
        elif cfg.teacher.offline:
            from distiller.generation.teachers.offline import inverse_cloze

            out = inverse_cloze(
                chunks,
                cfg.generation.queries_per_chunk,
                cfg.generation.min_query_words,
                cfg.split.train_ratio,
                cfg.split.val_ratio,
                cfg.seed,
                cfg.generation.language,
                document_positives=cfg.generation.offline_document_positives,
                titles=_titles(store) if cfg.generation.offline_title_queries else None,
            )
        else:
            from distiller.generation.teachers.llm import generate_with_llm

            # the near-duplicate check encodes in the run's shards: a rerun encodes the new queries only
            shards = _shards(store, cfg, chunks, key) if sharded(cfg) else None
            out = generate_with_llm(chunks, cfg, store, encoder=dedup_encoder(store, cfg), shards=shards)
        for note in out.notes:
            log.warning(note)
        write_parquet(store.path("passages.parquet"), out.passages, Passage)
        write_parquet(store.path("queries.parquet"), out.queries, Query)
        write_parquet(store.path("qa_pairs.parquet"), out.qa_pairs, QAPair)
        by_split: dict[str, int] = {}
        for q in out.queries:
            by_split[q.split] = by_split.get(q.split, 0) + 1
        splits = ", ".join(f"{k} {v}" for k, v in sorted(by_split.items()))
        teacher = "offline-ict" if cfg.teacher.offline else cfg.teacher.model
        return {
            "message": f"{len(out.queries)} queries ({splits}), {len(out.qa_pairs)} Q&A pairs, "
            f"teacher {teacher}" + ("" if cfg.teacher.offline else "".join(f"; {n}" for n in out.notes)),
            "details": {"notes": out.notes, "queries_by_split": by_split, **out.stats},
            "cost_usd": float(out.stats.get("cost_usd", 0.0)),
        }

    return store.run_stage("generate", key, outputs, run)
