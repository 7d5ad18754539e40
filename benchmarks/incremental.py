"""Incremental runs: add 10% new documents to a finished run and rerun it, against a cold run.

    .venv/bin/python benchmarks/incremental.py                 # 120 documents + 12
    .venv/bin/python benchmarks/incremental.py --docs 600 --shard-size 1024

Documents: MedQuAD answers grouped by topic (`focus`) into one text file per topic, from
../shared/data/medquad (or DISTILL_SHARED_DATA). The run is the product's default document mode
(offline teacher, packaged MiniLM), without Prefect (`run_pipeline`), with `encoding.shard_size`
`--shard-size`. Three runs in one temporary folder: a cold run on N documents; the same run folder again
after adding N/10 documents (the new files sort among the old ones, as a nightly corpus grows); and a
cold run on all N + N/10 documents in a fresh folder with a fresh cache. Per stage it prints seconds and,
for mine and evaluate, shards encoded vs reused; and whether the incremental and the cold run wrote the
same triplets.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def write_docs(folder: Path, n: int) -> list[Path]:
    """One .txt per MedQuAD topic (its answers), the first n topics in a seeded order."""
    import pyarrow.parquet as pq

    rows = pq.read_table(DATA / "medquad" / "qa.parquet", columns=["focus", "answer"]).to_pylist()
    by_topic: dict[str, list[str]] = {}
    for r in rows:
        if r["focus"] and r["answer"] not in by_topic.setdefault(r["focus"], []):
            by_topic[r["focus"]].append(r["answer"])
    topics = sorted(by_topic, key=lambda t: hashlib.sha256(t.encode()).hexdigest())[:n]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in topics:
        p = folder / (re.sub(r"[^a-z0-9]+", "-", t.lower()).strip("-")[:80] + ".txt")
        p.write_text(f"{t}\n\n" + "\n\n".join(by_topic[t]), encoding="utf-8")
        paths.append(p)
    return paths


def run(corpus: Path, root: Path, name: str, args: argparse.Namespace) -> tuple[float, dict]:
    from distiller.config import load_config
    from distiller.pipeline import run_pipeline

    cfg = load_config(
        None,
        {
            "runs_dir": str(root / "runs"),
            "cache_dir": str(root / "cache"),
            "run_name": name,
            "encoding": {"shard_size": args.shard_size},
            "input": {"paths": [str(corpus)], "files_per_shard": args.files_per_shard},
            "training": {"max_seq_length": args.max_seq_length},
            "export": {"formats": ["jsonl"]},
        },
    )
    t0 = time.perf_counter()
    store = run_pipeline(cfg)
    return time.perf_counter() - t0, {k: v for k, v in store.stage_results().items()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=120)
    p.add_argument("--shard-size", type=int, default=128)
    p.add_argument("--files-per-shard", type=int, default=16)
    p.add_argument("--max-seq-length", type=int, default=64)
    args = p.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="incremental-") as d:
        work = Path(d)
        extra = max(1, args.docs // 10)
        allp = write_docs(work / "all", args.docs + extra)
        corpus = work / "corpus"
        corpus.mkdir()
        for f in allp[: args.docs]:
            (corpus / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
        cold_s, cold = run(corpus, work / "inc", "run", args)
        shard_root = work / "inc" / "runs" / "run" / "shards"
        before = {p.relative_to(shard_root) for p in shard_root.rglob("*.npy")}
        for f in allp[args.docs :]:
            (corpus / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
        inc_s, inc = run(corpus, work / "inc", "run", args)
        after = {p.relative_to(shard_root) for p in shard_root.rglob("*.npy")}
        full_s, full = run(corpus, work / "cold", "run", args)

        def shards(r: dict, stage: str) -> str:
            det = r[stage].details if stage in r else {}
            return f"{det['shards_encoded']} / {det['shards']}" if "shards" in det else "–"

        print(
            f"\n{args.docs} documents, then +{extra}; shard size {args.shard_size}, "
            f"{args.files_per_shard} files per ingest shard\n"
        )
        print("| stage | cold, N docs (s) | rerun after +10% (s) | cold, N+10% docs (s) |")
        print("|---|---|---|---|")
        for stage in full:
            cells = [
                f"{r[stage].seconds:.1f} ({r[stage].status})" if stage in r else "–"
                for r in (cold, inc, full)
            ]
            print(f"| {stage} | " + " | ".join(cells) + " |")
        print(f"| **total** | {cold_s:.1f} | {inc_s:.1f} | {full_s:.1f} |")
        print("\nshards encoded / planned, in the stage or by the loop before it:")
        for stage in ("mine_iter1", "mine_iter2", "evaluate"):
            if stage in full:
                print(f"  {stage}: rerun {shards(inc, stage)}, cold {shards(full, stage)}")
        det = inc["ingest"].details
        if "shards" in det:
            read = f"{det['shards_read']} / {det['shards']}"
            print(f"  ingest (file groups of {args.files_per_shard}): rerun {read}")
        # Per model (a folder of shards): the base model's shards are reusable from run to run; a
        # retrained iteration is a new model, so all of its shards are new.
        print("\nshard files of the rerun, per model folder (new / all):")
        for folder in sorted({p.parent for p in after}):
            mine = {p for p in after if p.parent == folder}
            kept = mine & before
            what = "base model" if kept else "a retrained model"
            print(f"  {folder}: {len(mine - before)} / {len(mine)} ({what})")
        a = pd.read_parquet(work / "inc" / "runs" / "run" / "triplets_iter1.parquet")
        b = pd.read_parquet(work / "cold" / "runs" / "run" / "triplets_iter1.parquet")
        keys = ["query_id", "positive_id", "negative_id"]
        same = a[keys].equals(b[keys])
        print(
            f"\nincremental rerun {inc_s / full_s:.2f}x the cold run's time; "
            f"same triplets (iteration 1): {same}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
