"""Builds a small, realistic run folder with the record models, for export/report/summary tests.

`make_run(root)` writes what a finished run leaves behind: manifest, chunks, passages, queries (split by
document), Q&A pairs (approved / rejected / unvalidated), triplets over two iterations with scores, metrics,
ledger (and judgments on request). `offline=True` makes what the offline teacher leaves: no Q&A pairs, no
ledger, no judgments.

Traps on purpose: text with tabs, newlines, quotes, commas, HTML and non-ASCII; a near-duplicate query pair
placed in different splits by the run (the export must reunite them); training triplets whose negative comes
from a held-out document.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from distiller.config import DistillConfig
from distiller.records import Chunk, MetricRow, Passage, QAPair, Query, Triplet, write_parquet
from distiller.splits import assign_groups
from distiller.store import StageResult

TRAIN_RATIO, VAL_RATIO, SEED = 0.6, 0.2, 13
REJECTED_MARK = "REJECTED-ANSWER"
NEAR_DUP = ("What is the adult dosage of aspirin?", "what is the ADULT dosage of aspirin")

TRAPS = [
    'plain text, with a comma and "quotes"',
    "a tab\there and a newline\nthere",
    "<script>alert('xss')</script> & <b>bold</b>",
    "naïve café — 東京 ✓",
]


def _chunk_text(d: int, c: int) -> str:
    trap = TRAPS[(d + c) % len(TRAPS)]
    return (
        f"Document {d} section {c} explains topic {d * 10 + c} in detail. {trap}. More words about {d}-{c}."
    )


def make_run(
    root: Path,
    name: str = "demo",
    *,
    n_docs: int = 10,
    chunks_per_doc: int = 2,
    offline: bool = False,
    with_judgments: bool = False,
) -> Path:
    run = root / name
    run.mkdir(parents=True, exist_ok=True)
    docs = [f"doc{d:02d}" for d in range(n_docs)]
    doc_split = assign_groups(docs, TRAIN_RATIO, VAL_RATIO, SEED)

    chunks, passages, queries, qa_pairs = [], [], [], []
    for d, doc in enumerate(docs):
        for c in range(chunks_per_doc):
            cid = f"{doc}-c{c}"
            text = _chunk_text(d, c)
            chunks.append(
                Chunk(
                    chunk_id=cid,
                    doc_id=doc,
                    source_path=f"docs/{doc}.md",
                    chunk_index=c,
                    char_start=c * 100,
                    char_end=c * 100 + len(text),
                    text=text,
                    n_tokens=24,
                )
            )
            passages.append(Passage(passage_id=f"p-{cid}", doc_id=doc, chunk_id=cid, text=text))
            queries.append(
                Query(
                    query_id=f"q-{cid}",
                    text=f"Which section explains topic {d * 10 + c}?",
                    positive_ids=[f"p-{cid}"],
                    doc_id=doc,
                    chunk_id=cid,
                    split=doc_split[doc],
                    teacher="offline-ict" if offline else "gpt-4o-mini",
                    query_type=["factoid", "how-to", "comparison"][(d + c) % 3],
                    complexity="simple",
                )
            )
            if not offline:
                status = ["approved", "approved", "rejected", "unvalidated"][(d * chunks_per_doc + c) % 4]
                answer = (
                    REJECTED_MARK if status == "rejected" else f"Section {c} of document {d}. {TRAPS[c % 4]}"
                )
                qa_pairs.append(
                    QAPair(
                        qa_id=f"qa-{cid}",
                        question=f"What does part {c} of document {d} say on topic {d * 10 + c}?\tBriefly.",
                        answer=answer,
                        reasoning="Step 1: read.\nStep 2: answer.",
                        difficulty=["easy", "medium", "hard"][d % 3],
                        source_chunk=cid,
                        doc_id=doc,
                        split=doc_split[doc],
                        teacher="gpt-4o-mini",
                        validation=status,
                    )
                )

    # A near-duplicate pair the run split apart: one in a train document, one in a held-out document.
    train_doc = next(d for d in docs if doc_split[d] == "train")
    held_doc = next(d for d in docs if doc_split[d] != "train")
    for text, doc in zip(NEAR_DUP, (train_doc, held_doc), strict=True):
        cid = f"{doc}-c0"
        queries.append(
            Query(
                query_id=f"dup-{doc}",
                text=text,
                positive_ids=[f"p-{cid}"],
                doc_id=doc,
                chunk_id=cid,
                split=doc_split[doc],
                teacher="gpt-4o-mini",
                query_type="factoid",
            )
        )

    write_parquet(run / "chunks.parquet", chunks, Chunk)
    write_parquet(run / "passages.parquet", passages, Passage)
    write_parquet(run / "queries.parquet", queries, Query)
    if qa_pairs:
        write_parquet(run / "qa_pairs.parquet", qa_pairs, QAPair)

    # Triplets accumulate: iteration 2's file holds iteration 1's rows too.
    triplets: list[Triplet] = []
    n_iter1 = 0
    by_id = {p.passage_id: p for p in passages}
    for it in (1, 2):
        for i, q in enumerate(queries):
            neg = passages[(i * 7 + it * 3) % len(passages)]
            if neg.doc_id == q.doc_id:
                neg = passages[(i * 7 + it * 3 + chunks_per_doc) % len(passages)]
            pos = by_id[q.positive_ids[0]]
            triplets.append(
                Triplet(
                    query_id=q.query_id,
                    query=q.text,
                    positive_id=pos.passage_id,
                    positive=pos.text,
                    negative_id=neg.passage_id,
                    negative=neg.text,
                    kind="hard" if i % 3 == 0 else "easy",
                    iteration=it,
                    positive_rank=1 + i % 7,
                    negative_rank=1 + i % 5,
                    positive_score=0.55 + 0.1 * it + 0.01 * (i % 10),
                    negative_score=0.45 + 0.01 * (i % 12) - 0.05 * it,
                )
            )
        write_parquet(run / f"triplets_iter{it}.parquet", triplets, Triplet)
        n_iter1 = n_iter1 if it == 2 else len(triplets)

    metrics = []
    for model, it, base in (("bm25", 0, 0.40), ("base", 0, 0.50), ("iter1", 1, 0.58), ("iter2", 2, 0.62)):
        for metric, shift in (("MRR@5", 0.0), ("Recall@10", 0.15), ("nDCG@10", 0.05)):
            metrics.append(
                MetricRow(
                    model=model,
                    iteration=it,
                    metric=metric,
                    value=round(base + shift, 4),
                    n_queries=len([q for q in queries if q.split == "test"]),
                )
            )
    write_parquet(run / "metrics.parquet", metrics, MetricRow)

    ledger_rows: list[dict[str, Any]] = []
    if not offline:
        for i in range(12):
            stage = ["generate", "generate", "validate"][i % 3]
            ledger_rows.append(
                {
                    "stage": stage,
                    "model": "gpt-4o-mini",
                    "input_tokens": 500 + i,
                    "output_tokens": 120,
                    "cost_usd": 0.0004 if i % 4 else 0.0,
                    "cached": i % 4 == 0,
                    "status": "ok",
                }
            )
        pq.write_table(pa.Table.from_pylist(ledger_rows), run / "ledger.parquet")
    if with_judgments:
        judged = [
            {"item_id": qa.qa_id, "verdict": qa.validation, "reason": "<i>fine</i>"} for qa in qa_pairs[:6]
        ]
        pq.write_table(pa.Table.from_pylist(judged), run / "judgments.parquet")

    cfg = DistillConfig(
        run_name=name,
        seed=SEED,
        split={"train_ratio": TRAIN_RATIO, "val_ratio": VAL_RATIO},
        teacher={"provider": "offline" if offline else "openai", "model": "gpt-4o-mini"},
        budget={"run_usd": 0.02, "generation_usd": 0.01, "validation_usd": 0.004},
    )
    cost = {s: sum(r["cost_usd"] for r in ledger_rows if r["stage"] == s) for s in ("generate", "validate")}
    stages = [
        StageResult(
            stage="ingest",
            status="completed",
            outputs={"chunks.parquet": len(chunks), "passages.parquet": len(passages)},
            seconds=1.2,
        ),
        StageResult(
            stage="generate",
            status="completed",
            outputs={"queries.parquet": len(queries), "qa_pairs.parquet": len(qa_pairs)},
            seconds=8.5,
            cost_usd=cost["generate"],
        ),
        StageResult(
            stage="validate",
            status="completed" if not offline else "skipped",
            outputs={"qa_pairs.parquet": len(qa_pairs)},
            seconds=3.1,
            cost_usd=cost["validate"],
        ),
        *(
            StageResult(stage=f"{kind}_iter{it}", status="completed", outputs=outputs, seconds=seconds)
            for it, n in ((1, n_iter1), (2, len(triplets)))
            for kind, outputs, seconds in (
                ("mine", {f"triplets_iter{it}.parquet": n}, 2.0),
                ("train", {f"models/iter{it}": -1}, 15.0),
            )
        ),
        StageResult(
            stage="evaluate",
            status="cached",
            outputs={"metrics.parquet": len(metrics), "models/best": -1},
            seconds=0.1,
            details={"best": "iter2", "metric": "MRR@5"},
        ),
    ]
    manifest = {
        "run_name": name,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:01:00+00:00",
        "config": cfg.redacted(),
        "versions": {"python": "3.11", "domain-distiller": "0.1.0"},
        "stages": {s.stage: s.model_dump(mode="json") for s in stages},
        "skipped_inputs": [{"path": "docs/broken.pdf", "reason": "encrypted PDF", "line": None}],
        "notes": [],
    }
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return run
