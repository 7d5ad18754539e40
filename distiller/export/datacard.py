"""The README (data card) written beside every export: what is in it, where it came from, what it cost,
how it was split and filtered, and the exact command that made it."""

from __future__ import annotations

from datetime import UTC, datetime

from distiller.export.rows import SPLIT_NAMES, ExportRows
from distiller.runview import RunView
from distiller.splits import SPLITS

HOW_TO_LOAD = {
    "jsonl": 'load_dataset("json", data_files={"train": "train.jsonl", "validation": "validation.jsonl"})',
    "json": 'load_dataset("json", data_files={"train": "train.json"})',
    "csv": 'load_dataset("csv", data_files={"train": "train.csv"})  # or pandas.read_csv',
    "tsv": 'pandas.read_csv("train.tsv", sep="\\t", keep_default_na=False)  # quoted tabs/newlines',
    "alpaca": "LLaMA-Factory: dataset_dir=this folder, dataset=RUN_train (see dataset_info.json)",
    "sharegpt": "LLaMA-Factory: dataset_dir=this folder, dataset=RUN_train (see dataset_info.json)",
    "triplets": 'load_dataset("json", data_files="train.jsonl")["train"]  # anchor, positive, negative: '
    "SentenceTransformerTrainer with MultipleNegativesRankingLoss / TripletLoss as is",
    "ntuple": 'load_dataset("json", data_files="train.jsonl")["train"]  # anchor, positive, negative_1..n '
    '(mine_hard_negatives output_format="n-tuple"): MultipleNegativesRankingLoss as is',
    "triplets-full": 'load_dataset("json", data_files="train.jsonl")  # with query/positive/negative ids, '
    "kind, iteration and teacher scores (select anchor/positive/negative to train)",
    "splade": "train.jsonl: {query, positive, negatives[]} (sentence-transformers SparseEncoder; "
    "teacher scores included for distillation); train.raw.tsv: query<TAB>positive<TAB>negative "
    "(naver/splade raw triplets)",
    "hf": 'datasets.load_from_disk(".")  # triplets (anchor, positive, negative) by split;  '
    'load_from_disk("qa") / ("queries") / ("triplets-full") for the other tables',
}

LICENCE_NOTE = (
    "This data is derived from the run's input documents and inherits their licence and any restrictions on "
    "them; check those before sharing. Text written by a teacher LLM is also subject to its provider's terms "
    "of use (some forbid training competing models). Offline-teacher queries are sentences copied from the "
    "documents themselves."
)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_datacard(
    view: RunView, rows: ExportRows, fmt: str, kind: str, files: dict[str, int], command: str
) -> str:
    counts = rows.counts()
    appr = view.approval()
    plan = rows.plan
    if plan.train_ratio is not None:
        test = round(1 - plan.train_ratio - (plan.val_ratio or 0), 6)
        ratios = f"train {plan.train_ratio}, validation {plan.val_ratio}, test {test}"
    else:
        ratios = "the run's own (ratios not recorded in its manifest)"
    lines = [
        f"# {view.name} — `{fmt}` export",
        "",
        f"Made {datetime.now(UTC).isoformat(timespec='seconds')} by domain-distiller from run `{view.name}`.",
        "",
        "```",
        command,
        "```",
        "",
        "## Files",
        "",
        "| file | rows |",
        "| --- | ---: |",
        *[f"| `{name}` | {n} |" for name, n in files.items()],
        "",
        f"How to load: `{HOW_TO_LOAD.get(fmt, '')}`",
        "",
        "## Rows per split",
        "",
        "| kind | " + " | ".join(SPLIT_NAMES[s] for s in SPLITS) + " |",
        "| --- | " + " | ".join("---:" for _ in SPLITS) + " |",
        *[
            f"| {k} | " + " | ".join(str(counts[k][SPLIT_NAMES[s]]) for s in SPLITS) + " |"
            for k in counts
            if k in kind.split("+")
        ],
        "",
        f"Split by source document, near-duplicate queries kept in one split; ratios: {ratios}; "
        f"seed {plan.seed}; "
        + ("re-split for this export." if plan.resplit else "the run's own assignment."),
        "",
        "## Provenance and quality",
        "",
        f"- Teacher: {view.teacher}",
        f"- Judge: {view.judge}",
        f"- Q&A validation: {appr['approved']} approved, {appr['rejected']} rejected, {appr['unvalidated']} "
        f"unvalidated; approval rate {_pct(appr['rate'])}"
        + (
            f" (95% CI {_pct(appr['low'])}–{_pct(appr['high'])}, n={appr['judged']})"
            if appr["judged"]
            else ""
        ),
        f"- Unvalidated pairs: {rows.policy} (policy); rejected pairs are never exported.",
        f"- LLM cost of the run: ${view.total_cost:.4f}"
        + ("" if view.ledger is not None else " (no ledger: no LLM calls were recorded)"),
    ]
    if rows.dropped:
        lines.append("- Left out: " + "; ".join(f"{n} {why}" for why, n in sorted(rows.dropped.items())))
    for note in rows.notes:
        lines.append(f"- Note: {note}")
    lines += ["", "## Licence", "", LICENCE_NOTE, ""]
    return "\n".join(lines)
