"""What an export contains: the rows that may leave the run, each with its split.

Rules, in order:
1. Rejected Q&A pairs never leave; unvalidated ones only when the policy is `keep`.
2. Splits are by source document, widened to near-duplicate clusters: documents whose queries (or
   questions) are near-duplicates of each other are one group, so a paraphrase never sits on both sides.
3. When the requested ratios (or seed) are those the run used, the run's own split is kept (it is the one
   its metrics were measured on) and only near-duplicate clusters that straddle splits are made whole.
   Otherwise documents are re-split with `assign_groups`.
4. A triplet takes the split of its query. A *training* triplet whose negative comes from a val/test
   document is dropped (counted), so no held-out text reaches training.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from distiller.config import SplitConfig
from distiller.records import Split
from distiller.runview import RunView
from distiller.splits import SPLITS, assign_groups, merge_groups, near_duplicate_clusters

Policy = Literal["keep", "drop"]

SPLIT_NAMES: dict[Split, str] = {"train": "train", "val": "validation", "test": "test"}
"""The run's split -> its name in every export (file names, DatasetDict keys, dataset_info entries,
counts): the names `datasets` and the Hub use, so `load_dataset` and `load_from_disk` agree."""


@dataclass
class SplitPlan:
    doc_split: dict[str, Split]
    resplit: bool
    train_ratio: float | None
    val_ratio: float | None
    seed: int
    moved_docs: int = 0
    """Documents moved to keep a near-duplicate cluster in one split (run's split kept)."""
    groups: int = 0


@dataclass
class ExportRows:
    qa: dict[Split, list[dict[str, Any]]]
    triplets: dict[Split, list[dict[str, Any]]]
    queries: dict[Split, list[dict[str, Any]]]
    plan: SplitPlan
    policy: Policy
    dropped: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            kind: {SPLIT_NAMES[s]: len(rows[s]) for s in SPLITS}
            for kind, rows in (("qa", self.qa), ("triplets", self.triplets), ("queries", self.queries))
        }


def run_ratios(view: RunView) -> tuple[float | None, float | None, int | None]:
    return (view.config_get("split.train_ratio"), view.config_get("split.val_ratio"), view.config_get("seed"))


def plan_splits(view: RunView, split: SplitConfig | None, seed: int) -> SplitPlan:
    """Decide each document's split (see the module docstring)."""
    # Rows that carry a split, as (text, doc_id, split-the-run-gave-it, weight towards the ratios).
    rows = [(q.text, q.doc_id, q.split) for q in view.queries] + [
        (qa.question, qa.doc_id, qa.split) for qa in view.qa_pairs
    ]
    labels = near_duplicate_clusters([t for t, _, _ in rows])
    # Two documents are linked when one near-duplicate cluster holds rows of both.
    first_doc_of_cluster: dict[int, str] = {}
    links = []
    for label, (_, doc, _) in zip(labels, rows, strict=True):
        links.append((first_doc_of_cluster.setdefault(label, doc), doc))
    all_docs = {d for _, d, _ in rows} | {c.doc_id for c in view.chunks} | {p.doc_id for p in view.passages}
    group_of = merge_groups(sorted(all_docs), links)
    weight: Counter[str] = Counter(str(group_of[d]) for _, d, _ in rows)
    groups = sorted({str(g) for g in group_of.values()})

    run_train, run_val, run_seed = run_ratios(view)
    same = split is None or (
        run_train is not None
        and abs(split.train_ratio - run_train) < 1e-9
        and abs(split.val_ratio - (run_val or 0.0)) < 1e-9
        and (run_seed is None or run_seed == seed)
    )
    if not same:
        assert split is not None
        by_group = assign_groups(groups, split.train_ratio, split.val_ratio, seed, weights=weight)
        resplit = {d: by_group[str(g)] for d, g in group_of.items()}
        return SplitPlan(resplit, True, split.train_ratio, split.val_ratio, seed, 0, len(groups))

    # Keep the run's split; a group whose rows disagree goes whole to the split most of its rows have
    # (ties: the more held-out split, so nothing that was evaluated on becomes training data).
    votes: dict[str, Counter[Split]] = defaultdict(Counter)
    for _, doc, s in rows:
        votes[str(group_of[doc])][s] += 1
    order = {"test": 0, "val": 1, "train": 2}
    group_split: dict[str, Split] = {
        g: min(v.items(), key=lambda kv: (-kv[1], order[kv[0]]))[0] for g, v in votes.items()
    }
    doc_run_split: dict[str, Split] = {}
    for _, doc, s in rows:
        doc_run_split.setdefault(doc, s)
    doc_split: dict[str, Split] = {}
    moved = 0
    for doc, g in group_of.items():
        s = group_split.get(str(g), "train")  # a document with no queries holds no held-out row
        doc_split[doc] = s
        moved += doc in doc_run_split and doc_run_split[doc] != s
    return SplitPlan(
        doc_split, False, run_train, run_val, run_seed if run_seed is not None else seed, moved, len(groups)
    )


def _source_label(view: RunView) -> dict[str, str]:
    """chunk_id -> 'path#chunk<k>': where a row came from, readable and traceable."""
    return {c.chunk_id: f"{c.source_path}#chunk{c.chunk_index}" for c in view.chunks}


def collect_rows(
    view: RunView, split: SplitConfig | None, seed: int, policy: Policy | None = None
) -> ExportRows:
    policy = policy or ("drop" if view.unvalidated_policy == "drop" else "keep")
    plan = plan_splits(view, split, seed)
    out = ExportRows(
        qa={s: [] for s in SPLITS},
        triplets={s: [] for s in SPLITS},
        queries={s: [] for s in SPLITS},
        plan=plan,
        policy=policy,
    )
    where = _source_label(view)
    doc_path: dict[str, str] = {c.doc_id: c.source_path for c in view.chunks}

    for qa in view.qa_pairs:
        if qa.validation == "rejected" or (qa.validation == "unvalidated" and policy == "drop"):
            out.dropped[f"qa {qa.validation}"] += 1
            continue
        source = where.get(qa.source_chunk or "") or doc_path.get(qa.doc_id) or qa.doc_id
        out.qa[plan.doc_split.get(qa.doc_id, "train")].append(
            {
                "id": qa.qa_id,
                "instruction": qa.question,
                "input": "",
                "output": qa.answer,
                "reasoning": qa.reasoning or "",
                "difficulty": qa.difficulty or "",
                "source": source,
                "doc_id": qa.doc_id,
                "source_chunk": qa.source_chunk or "",
                "validation": qa.validation,
            }
        )

    passages = {p.passage_id: p for p in view.passages}
    for q in view.queries:
        out.queries[plan.doc_split.get(q.doc_id, "train")].append(
            {
                "id": q.query_id,
                "query": q.text,
                "positive_ids": list(q.positive_ids),
                "positives": [passages[p].text for p in q.positive_ids if p in passages],
                "doc_id": q.doc_id,
                "source_chunk": q.chunk_id or "",
                "query_type": q.query_type or "",
                "teacher": q.teacher,
            }
        )

    # A triplet's split is its query's; queries may be Query rows or Q&A questions.
    query_doc = {q.query_id: q.doc_id for q in view.queries}
    qa_status = {qa.qa_id: (qa.doc_id, qa.validation) for qa in view.qa_pairs}
    for t in view.triplets:
        doc = query_doc.get(t.query_id)
        if doc is None and t.query_id in qa_status:
            doc, status = qa_status[t.query_id]
            if status == "rejected" or (status == "unvalidated" and policy == "drop"):
                out.dropped[f"triplet of a {status} question"] += 1
                continue
        if doc is None and t.positive_id in passages:
            doc = passages[t.positive_id].doc_id
        if doc is None:
            out.dropped["triplet with an unknown query"] += 1
            continue
        s = plan.doc_split.get(doc, "train")
        neg = passages.get(t.negative_id)
        if s == "train" and neg is not None and plan.doc_split.get(neg.doc_id, "train") != "train":
            out.dropped["train triplet with a held-out negative"] += 1
            continue
        pos = passages.get(t.positive_id)
        out.triplets[s].append(
            {
                "anchor": t.query,
                "positive": t.positive,
                "negative": t.negative,
                "query_id": t.query_id,
                "positive_id": t.positive_id,
                "negative_id": t.negative_id,
                "kind": t.kind,
                "iteration": t.iteration,
                "positive_score": t.positive_score,
                "negative_score": t.negative_score,
                "doc_id": doc,
                "source_chunk": (pos.chunk_id if pos else None) or "",
            }
        )

    if not view.qa_pairs:
        out.notes.append(
            "no qa_pairs.parquet in this run (offline teacher makes retrieval queries only): "
            "Q&A formats have no rows"
        )
    if not view.triplet_files:
        out.notes.append("no triplets_iter<k>.parquet in this run: triplet formats have no rows")
    if plan.resplit:
        out.notes.append(
            f"re-split by document (near-duplicate clusters kept whole) with train={plan.train_ratio}, "
            f"val={plan.val_ratio}, seed={plan.seed}; the run's metrics were measured on its own split"
        )
    elif plan.moved_docs:
        out.notes.append(f"{plan.moved_docs} document(s) moved so near-duplicate queries share a split")
    return out
