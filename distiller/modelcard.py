"""The Hub-ready model card of a run's best model (`models/best/README.md`).

Front matter follows the Hub's model card metadata (validated by `huggingface_hub.ModelCardData`): the
base model's hub id, license, language, datasets, tags, and a `model-index` with the student's held-out
metrics. The card's body compares the student with its base model and BM25 on the same queries, says how
it was trained (data counts, iterations, loss, hyper-parameters) and gives a usage snippet that loads
the model from where it is (a folder, or the Hub repo once pushed).

Why the baselines are in the body's table and not in `model-index`: the Hub attributes every
`model-index` metric to this model (huggingface_hub merges all entries under one model name), so listing
the base model's or BM25's figures there would publish them as the student's.

Metrics are read column-agnostically from `metrics.parquet`: any column beyond model, iteration, metric,
value and n_queries (e.g. a `query_set` label saying which queries were measured) becomes a grouping, shown
in the table and as one `model-index` result per group.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from distiller.config import DEFAULT_SPLADE_STUDENT, DEFAULT_STUDENT
from distiller.records import OFFLINE_WARNING, query_set_label
from distiller.runview import RunView

HUB_IDS = {DEFAULT_STUDENT: "sentence-transformers/all-MiniLM-L6-v2"}
"""Packaged students -> the Hub id of the model they ship."""

LICENSES = {
    "sentence-transformers/all-MiniLM-L6-v2": "apache-2.0",
    DEFAULT_SPLADE_STUDENT: "cc-by-nc-sa-4.0",
}
"""Known base models' licences; a fine-tuned model is bound by its base model's."""

METRIC_ORDER = ("MRR", "Recall", "nDCG", "MAP", "P")
"""Metric families in the order tables show them; within a family, by cut-off (MRR@1, @5, @10...)."""

_METRIC_KEYS = {"model", "iteration", "metric", "value", "n_queries"}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def metric_sort_key(name: str) -> tuple[int, int, str]:
    """MRR@1 < MRR@5 < MRR@10 < Recall@1 < ... < nDCG@10: families in METRIC_ORDER, cut-offs numeric."""
    family, _, cut = name.partition("@")
    rank = METRIC_ORDER.index(family) if family in METRIC_ORDER else len(METRIC_ORDER)
    return (rank, int(cut) if cut.isdigit() else 0, name)


def ordered_metrics(names: Any) -> list[str]:
    return sorted(dict.fromkeys(str(n) for n in names), key=metric_sort_key)


def base_hub_id(student: str) -> str | None:
    """The Hub id of the student's base model, or None when it is a local folder."""
    if student in HUB_IDS:
        return HUB_IDS[student]
    if Path(student).exists() or not _HUB_ID.match(student):
        return None
    return student


def metrics_frame(view: RunView) -> pd.DataFrame | None:
    """metrics.parquet as it is (every column kept), or None."""
    frame = view.frame("metrics.parquet")
    return None if frame is None or frame.empty else frame


def group_columns(frame: pd.DataFrame) -> list[str]:
    """Columns of metrics.parquet that label what was measured (beyond the known ones), e.g. query_set."""
    return [c for c in frame.columns if c not in _METRIC_KEYS]


def metric_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per (group, model) with the metrics as keys in METRIC_ORDER: the evaluate stage's table
    (Prefect artifact), base and BM25 first."""
    groups = group_columns(frame)
    metrics = ordered_metrics(frame["metric"])
    order = {"base": 0, "bm25": 1}
    rows = []
    for key, part in frame.groupby([*groups, "model"], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        values = dict(zip(part["metric"], part["value"], strict=True))
        row: dict[str, Any] = dict(zip([*groups, "model"], (str(k) for k in key), strict=True))
        row.update({m: round(float(values[m]), 4) for m in metrics if m in values})
        row["queries"] = int(part["n_queries"].max())
        rows.append(row)
    rows.sort(key=lambda r: ([str(r[g]) for g in groups], order.get(r["model"], 2)))
    return rows


def _model_label(model: str, best: str | None, base_name: str) -> str:
    if model == "bm25":
        return "BM25"
    if model == "base":
        return f"base ({base_name})"
    return f"{model} (this model)" if model == best else model


def _group_cell(column: str, value: Any) -> str:
    """A grouping cell in words: a query set says what its queries are (QUERY_SET_LABELS)."""
    return query_set_label(str(value)) if column == "query_set" else str(value)


def _evaluation_intro(frame: pd.DataFrame, best: str | None, metric: str) -> list[str]:
    """What the metrics were measured on, which set chose this model, and whether it beat its base."""
    sets = list(dict.fromkeys(str(v) for v in frame["query_set"])) if "query_set" in frame else []
    chosen = "eval-file" if "eval-file" in sets else (sets[0] if sets else None)
    on = query_set_label(chosen) if chosen else "the held-out test queries"
    lines = [
        "Held-out test queries (their source documents were never trained on), and your eval file when "
        "the run had one; base model and BM25 on the same queries and corpus.",
        "",
        f"This model is the base model: no trained iteration beat it on {on} ({metric})."
        if best == "base"
        else f"Chosen as the best model ({best}) by {metric} on {on}.",
        "",
    ]
    if "inverse-cloze" in sets:
        lines += [f"> {OFFLINE_WARNING}", ""]
    return lines


def comparison_table(frame: pd.DataFrame, best: str | None, base_name: str) -> list[str]:
    """Markdown rows: one per (group, model), base and BM25 first, a column per metric in METRIC_ORDER."""
    groups = group_columns(frame)
    metrics = ordered_metrics(frame["metric"])
    order = {"base": 0, "bm25": 1}
    rows: list[tuple[tuple[str, ...], int, str]] = []
    for key, part in frame.groupby([*groups, "model"], sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        model = str(key[-1])
        values = dict(zip(part["metric"], part["value"], strict=True))
        cells = [_group_cell(g, k) for g, k in zip(groups, key[:-1], strict=True)]
        cells.append(_model_label(model, best, base_name))
        cells += [f"{values[m]:.4f}" if m in values else "" for m in metrics]
        cells.append(str(int(part["n_queries"].max())))
        rows.append((tuple(str(k) for k in key[:-1]), order.get(model, 2), "| " + " | ".join(cells) + " |"))
    rows.sort(key=lambda r: (r[0], r[1]))
    return [
        "| " + " | ".join([*groups, "model", *metrics, "queries"]) + " |",
        "| " + " | ".join(["---"] * (len(groups) + 1) + ["---:"] * (len(metrics) + 1)) + " |",
        *[r[2] for r in rows],
    ]


def model_index(
    frame: pd.DataFrame, best: str, model_name: str, dataset: dict[str, Any]
) -> list[dict[str, Any]]:
    """The `model-index` of the best model: one result per group of the metrics (e.g. per query set)."""
    groups = group_columns(frame)
    mine = frame[frame["model"] == best]
    results: list[dict[str, Any]] = []
    parts = mine.groupby(groups, sort=False, dropna=False) if groups else [((), mine)]
    for key, part in parts:
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{g} {k}" for g, k in zip(groups, key, strict=True))
        results.append(
            {
                "task": {"type": "sentence-similarity", "name": "Retrieval"},
                "dataset": {
                    **dataset,
                    "name": dataset["name"] + (f" ({label})" if label else ""),
                    "split": "test",
                },
                "metrics": [
                    {
                        "type": name.lower().replace("@", "_at_"),
                        "name": name,
                        "value": round(float(value), 4),
                    }
                    for name, value in sorted(
                        zip(part["metric"], part["value"], strict=True), key=lambda mv: metric_sort_key(mv[0])
                    )
                ],
            }
        )
    return [{"name": model_name, "results": results}]


def _training_lines(view: RunView) -> list[str]:
    cfg = view.config_get
    iterations = int(cfg("mining.iterations", 1))
    trains = {f"train_iter{k}": view.stages.get(f"train_iter{k}") for k in range(1, iterations + 1)}
    loss = cfg("training.loss", "mnrl")
    loss_name = (
        "MultipleNegativesRankingLoss (mined hard negative + in-batch negatives)"
        if loss == "mnrl"
        else f"TripletLoss (cosine, margin {cfg('training.margin', 0.1)})"
    )
    if cfg("training.kind", "dense") == "splade":
        loss_name = f"SpladeLoss around {loss_name}"
    kinds: dict[str, int] = {}
    for t in view.triplets:
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    splits = {s: sum(q.split == s for q in view.queries) for s in ("train", "val", "test")}
    lines = [
        f"- Corpus: {len(view.passages)} passages from {len({p.doc_id for p in view.passages})} documents",
        f"- Queries: {splits['train']} train, {splits['val']} validation, {splits['test']} test "
        "(split by source document; test queries never reach training)",
        f"- Query teacher: {view.teacher}",
        f"- Training data: {len(view.triplets)} mined triplets"
        + (" (" + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")" if kinds else ""),
        f"- Mining iterations: {cfg('mining.iterations', 1)} (encode, FAISS top-{cfg('mining.top_k', 100)}, "
        f"hard negatives from ranks 1-{cfg('mining.negative_rank_max', 15)})",
        f"- Loss: {loss_name}",
        f"- Hyper-parameters: learning rate {cfg('training.learning_rate', 2e-5)}, epochs "
        f"{cfg('training.epochs', 1.0)}, batch size {cfg('training.batch_size', 16)}, warm-up ratio "
        f"{cfg('training.warmup_ratio', 0.1)}, max sequence length {cfg('training.max_seq_length', 128)}, "
        f"seed {cfg('seed', 13)}",
    ]
    for name, stage in trains.items():
        if not stage:
            continue
        d = stage.get("details") or {}
        loss_v = d.get("train_loss")
        lines.append(
            f"- {name}: {d.get('steps', '?')} steps on {d.get('device', '?')}"
            + (f", mean training loss {loss_v:.4f}" if isinstance(loss_v, float) else "")
            + f", {d.get('triplets', '?')} triplets"
        )
    return lines


def render_model_card(
    run_dir: Path | str,
    model_ref: str | None = None,
    repo_id: str | None = None,
    dataset_repo_id: str | None = None,
    license: str | None = None,
    best: str | None = None,
) -> str:
    """The card of `run_dir`'s best model. `model_ref` is what the usage snippet loads (default: the
    model folder's path, or `repo_id` when given); `best` the evaluated model it is (default: the run's
    record of it)."""
    from huggingface_hub import ModelCardData

    view = RunView(run_dir, require_manifest=True)
    student = str(view.config_get("training.student", DEFAULT_STUDENT))
    kind = str(view.config_get("training.kind", "dense"))
    base_id = base_hub_id(student)
    base_name = base_id or Path(student).name
    license = license or (LICENSES.get(base_id) if base_id else None)
    best = best or view.best_model()
    model_ref = model_ref or repo_id or str(Path(run_dir) / "models" / "best")
    model_name = repo_id.split("/")[-1] if repo_id else f"{view.name}-{kind}"
    language = str(view.config_get("generation.language", "en"))
    dataset = {"type": dataset_repo_id or view.name, "name": f"{view.name} held-out queries"}
    frame = metrics_frame(view)

    tags = ["sentence-transformers", "domain-distiller", "retrieval", "generated_from_trainer"]
    tags.append("sparse-encoder" if kind == "splade" else "sentence-similarity")
    data = ModelCardData(
        base_model=base_id,
        library_name="sentence-transformers",
        license=license,
        language=[language],
        datasets=[dataset_repo_id] if dataset_repo_id else None,
        tags=tags,
        pipeline_tag="feature-extraction" if kind == "splade" else "sentence-similarity",
        model_name=model_name,
    )
    meta = data.to_dict()
    if frame is not None and best and best in set(frame["model"]):
        meta["model-index"] = model_index(frame, best, model_name, dataset)

    cls = "SparseEncoder" if kind == "splade" else "SentenceTransformer"
    metric = view.config_get("evaluation.metric", "MRR@5")
    body = [
        f"# {model_name}",
        "",
        f"A {'SPLADE sparse' if kind == 'splade' else 'dense'} retrieval model for the domain of run "
        f"`{view.name}`, fine-tuned from "
        + (f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{base_name}`")
        + " by domain-distiller on queries generated from the domain's documents.",
        "",
        "## Usage",
        "",
        "```python",
        f"from sentence_transformers import {cls}",
        "",
        f"model = {cls}({model_ref!r})",
        'queries = model.encode_query(["What are the symptoms?"])',
        'documents = model.encode_document(["Symptoms include fever and a cough.", "Treatment is rest."])',
        "print(model.similarity(queries, documents))",
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if frame is not None:
        body += [*_evaluation_intro(frame, best, str(metric)), *comparison_table(frame, best, base_name)]
    else:
        body.append("This run has no metrics.parquet: the model was not evaluated.")
    body += ["", "## Training", "", *_training_lines(view), ""]
    if dataset_repo_id:
        body += [
            f"Training data: [{dataset_repo_id}](https://huggingface.co/datasets/{dataset_repo_id}).",
            "",
        ]
    body += [
        "## Licence",
        "",
        (f"{license}, as the base model's. " if license else "Bound by the base model's licence. ")
        + "The training queries were derived from the run's documents (and written by "
        f"{view.teacher}): check their licences and the teacher's terms before redistributing.",
        "",
    ]
    import yaml

    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(body)


def write_model_card(run_dir: Path | str, **kwargs: Any) -> Path:
    """Write the card into the run's `models/best/README.md` (replacing sentence-transformers' own)."""
    path = Path(run_dir) / "models" / "best" / "README.md"
    path.write_text(render_model_card(run_dir, **kwargs), encoding="utf-8")
    return path


__all__ = [
    "base_hub_id",
    "metric_rows",
    "metric_sort_key",
    "model_index",
    "ordered_metrics",
    "render_model_card",
    "write_model_card",
]
