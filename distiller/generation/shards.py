"""Generation in shards: the chunks in groups (`generation.chunks_per_shard`, the run's kept `ShardGroups`),
each group's queries and Q&A pairs written by one task into its own folder of the run,
`shards/generate/<key>/`, then merged in chunk order by the generate stage, which removes near-duplicates
and asks for the contrastive negatives over all of them. Given the same answers, the merge is what one
pass over every chunk writes.

Money first: each shard journals its calls in its own folder and spends under a grant of the budget
(`distiller.generation.grants`).

A shard's key is what decides its rows (its chunks, the teacher, the generation settings that shape the
prompts, the prompts, the seed): an added document makes new shards and leaves the others done.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from distiller.config import DistillConfig
from distiller.generation.grants import GrantedDone, GrantedShard, Written, run_granted
from distiller.records import Chunk, QAPair, Query, read_parquet
from distiller.store import Mirror

STAGE = "generate"
PARTS_DIR = "shards/generate"
STEPS = ("queries", "Q&A pairs")
"""The steps a shard runs; near-duplicates and negatives need every query, so the stage runs them."""
VERSION = "1"


class GenerateShard(GrantedShard):
    """One group of chunks to write queries and Q&A pairs for: all a worker needs."""

    chunks: list[Chunk]
    STAGE: ClassVar[str] = STAGE
    STEPS: ClassVar[tuple[str, ...]] = STEPS
    ROWS: ClassVar[str] = "chunks"
    VERSION: ClassVar[str] = VERSION

    @classmethod
    def row_text(cls, row: Chunk) -> str:
        return f"\x00{row.chunk_id}\x00{row.source_path}\x00{row.chunk_index}\x00{row.text}"

    @property
    def weight(self) -> int:
        return sum(len(c.text) for c in self.chunks)


def settings(cfg: DistillConfig) -> str:
    """What in the config decides a shard's rows (not its size, the budget, dedup or negatives)."""
    from distiller.generation import stage_fingerprint
    from distiller.stages.keys import config_hash

    later = {"chunks_per_shard", "dedup_threshold", "negatives_per_query", "document_negatives"}
    return config_hash(cfg, "teacher", "generation", exclude={"generation": later}) + stage_fingerprint(
        cfg, "generate"
    )


def plan_shards(
    cfg: DistillConfig, chunks: Sequence[Chunk], groups: list[list[int]], parts: Path, stage_key: str = ""
) -> list[GenerateShard]:
    """Every shard of the run's chunks (in their kept groups), done or not, without grants."""
    return GenerateShard.for_groups(cfg, chunks, groups, parts, settings(cfg), stage_key)


# -- one shard ------------------------------------------------------------------------------------------
def generate_shard(spec: GenerateShard, *, remote: Mirror | None = None) -> GrantedDone:
    """Write one shard's queries and Q&A pairs into its folder (nothing if it is done already); `remote`:
    the mirror this machine's copy of the run reports to (`grants.run_granted`)."""
    from distiller.generation.context import GenContext
    from distiller.generation.qa import qa_requests, to_qa_pairs
    from distiller.generation.queries import chunk_requests, to_queries
    from distiller.prompts.qa import QABatch
    from distiller.prompts.queries import QueryBatch

    ctx = GenContext.from_config(spec.config)

    def work(llm: Any) -> tuple[Written, dict[str, int]]:
        q_reqs, sources, slots = chunk_requests(spec.chunks, ctx)
        # The split is the stage's (it depends on every document): set when the shards are merged.
        queries = to_queries(sources, llm.answers(llm.run("queries", q_reqs), QueryBatch), slots, {}, ctx)
        qa_reqs, difficulty = qa_requests(spec.chunks, ctx)
        answers = llm.answers(llm.run("Q&A pairs", qa_reqs), QABatch)
        qa_pairs = to_qa_pairs(spec.chunks, answers, difficulty, {}, ctx)
        files: Written = {"queries.parquet": (queries, Query), "qa_pairs.parquet": (qa_pairs, QAPair)}
        return files, {"chunks": len(spec.chunks), "queries": len(queries), "qa_pairs": len(qa_pairs)}

    return run_granted(spec, work, remote=remote)


def read_shard(spec: GenerateShard) -> tuple[list[Query], list[QAPair]]:
    out = Path(spec.out)
    return read_parquet(out / "queries.parquet", Query), read_parquet(out / "qa_pairs.parquet", QAPair)


__all__ = [
    "PARTS_DIR",
    "GenerateShard",
    "generate_shard",
    "plan_shards",
    "read_shard",
]
