"""What an incremental run pays the LLM: add documents to a finished LLM-taught run and rerun generate and
validate; count the requests sent, against the new rows.

    .venv/bin/python benchmarks/incremental_llm.py            # 13 of examples/medquad-mini, then +2

The teacher and the judge are the loopback server (distiller/testing/llm_server.py) answering with the
tests' scripted teacher (tests/helpers/generation_responder.py), which shapes its JSON from each prompt as
a model would. One run folder and call cache: ingest, generate (queries, Q&A pairs, contrastive negatives)
and validate (judge sample 30%) on the first documents; then the last documents are added (their names
sort among the others) and the stages run again. A request the call cache answers is not sent; the
server counts what it receives. Printed per kind: requests of the first run, of the rerun, and the rows
that are new in the rerun (its chunks, its kept queries, its newly sampled judge rows).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OPENAI_API_KEY", "sk-loopback")

from helpers.generation_responder import ScriptedTeacher, llm_run_config  # noqa: E402

from distiller.records import Chunk, Judgment, Query, read_parquet  # noqa: E402
from distiller.stages import generate_stage, ingest_stage, open_store, validate_stage  # noqa: E402
from distiller.testing.llm_server import LLMTestServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--first", type=int, default=13, help="documents of the first run")
    p.add_argument("--added", type=int, default=2, help="documents added for the rerun")
    p.add_argument("--chunks-per-shard", type=int, default=25, help="generation.chunks_per_shard")
    p.add_argument("--items-per-shard", type=int, default=25, help="validation.items_per_shard")
    args = p.parse_args()
    files = sorted(
        f for f in (ROOT / "examples" / "medquad-mini").iterdir() if f.suffix in (".md", ".txt", ".html")
    )
    first, added = files[: args.first], files[args.first : args.first + args.added]
    with tempfile.TemporaryDirectory(prefix="incremental-llm-") as d, LLMTestServer() as server:
        work = Path(d)
        docs = work / "docs"
        docs.mkdir()
        for f in first:
            shutil.copy(f, docs / f.name)
        server.responder = ScriptedTeacher()
        cfg = llm_run_config(
            server,
            work / "runs",
            input={"paths": [str(docs)]},
            cache_dir=str(work / "cache"),
            generation={
                "queries_per_chunk": 2,
                "questions_per_chunk": 1,
                "document_negatives": True,
                "chunks_per_shard": args.chunks_per_shard,
            },
            validation={"sample_rate": 0.3, "items_per_shard": args.items_per_shard},
        )
        store = open_store(cfg)

        shards: list[tuple[dict, dict]] = []

        def run() -> Counter[str]:
            sent = len(server.requests)
            for stage in (ingest_stage, generate_stage, validate_stage):
                stage(store, cfg)
            results = store.stage_results()
            shards.append((results["generate"].details, results["validate"].details))
            return Counter(r.schema_name for r in server.requests[sent:])

        def judged() -> set[str]:
            return {j.item_id for j in read_parquet(store.path("judgments.parquet"), Judgment)}

        one = run()
        chunks0 = {c.chunk_id for c in read_parquet(store.path("chunks.parquet"), Chunk)}
        judged0 = judged()
        for f in added:
            shutil.copy(f, docs / ("0-" + f.name))  # sorts first: every old chunk moves in the order
        two = run()
        chunks = {c.chunk_id for c in read_parquet(store.path("chunks.parquet"), Chunk)}
        queries = read_parquet(store.path("queries.parquet"), Query)
        new_chunks = chunks - chunks0
        new_queries = [q for q in queries if q.chunk_id in new_chunks]
        newly_judged = judged() - judged0
        n_old, n_new = len(chunks0), len(new_chunks)
        print(f"\n{len(first)} documents ({n_old} chunks), then +{len(added)} ({n_new} chunks)\n")
        print("| requests | first run | rerun | new rows in the rerun |")
        print("|---|---|---|---|")
        rows = {
            "QueryBatch": len(new_chunks),
            "QABatch": len(new_chunks),
            "NegativeSet": len(new_queries),
        }
        for kind in sorted(set(one) | set(two)):
            new = rows.get(kind, len(newly_judged) if kind.startswith("Verdict") else "–")
            print(f"| {kind} | {one[kind]} | {two[kind]} | {new} |")
        print(f"| **all** | {sum(one.values())} | {sum(two.values())} | |")
        for name, (g, v) in zip(("first run", "rerun"), shards, strict=True):
            print(
                f"{name}: generation shards {g.get('shards', 0)} (generated {g.get('shards_generated', 0)}, "
                f"reused {g.get('shards_reused', 0)}); judge shards {v.get('shards', 0)} (judged "
                f"{v.get('shards_judged', 0)}, reused {v.get('shards_reused', 0)})"
            )
        old_judged_again = {i for i in newly_judged if not any(i.startswith(c) for c in new_chunks)}
        print(
            f"\njudge: {len(newly_judged)} rows newly in the sample, {len(old_judged_again)} of them old rows"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
