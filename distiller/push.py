"""Publish a run to the Hugging Face Hub: its best model with the Hub-ready card, and its exports with a
dataset card whose `configs` let `load_dataset("ORG/NAME", "<format>")` read each format.

Everything goes through `huggingface_hub.HfApi` (the token comes from HF_TOKEN; HF_ENDPOINT points it at
another Hub), one commit per repository, built from the files in place (no copy of the model).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller.errors import ConfigError, DistillError
from distiller.export.datacard import LICENCE_NOTE
from distiller.modelcard import render_model_card
from distiller.runview import RunView

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")

DATASET_FORMATS = {
    "triplets": "jsonl",
    "ntuple": "jsonl",
    "triplets-full": "jsonl",
    "jsonl": "jsonl",
    "json": "json",
    "csv": "csv",
    "alpaca": "json",
    "sharegpt": "json",
    "splade": "jsonl",
}
"""Export formats the Hub's `load_dataset` reads as they are -> file extension (hf/'s Arrow folders and
tsv are left out: the same rows are in the formats above)."""
SPLIT_FILES = ("train", "validation", "test")


@dataclass
class PushResult:
    model_url: str
    dataset_url: str | None = None
    files: dict[str, list[str]] = field(default_factory=dict)
    """repo id -> paths committed"""


def _check_repo_id(repo_id: str, flag: str) -> None:
    if not _REPO_ID.match(repo_id):
        raise ConfigError(f"{flag} {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")


def _files(root: Path, skip: tuple[str, ...] = ()) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and p.relative_to(root).parts[0] not in skip
    )


def dataset_configs(exports: Path) -> list[dict[str, Any]]:
    """The dataset card's `configs`: one per exported format the Hub reads, its split files named."""
    configs: list[dict[str, Any]] = []
    for fmt, ext in DATASET_FORMATS.items():
        files = [
            {"split": s, "path": f"{fmt}/{s}.{ext}"}
            for s in SPLIT_FILES
            if (exports / fmt / f"{s}.{ext}").is_file()
        ]
        if files:
            configs.append({"config_name": fmt, "data_files": files})
    if configs:
        configs[0]["default"] = True
    return configs


def render_dataset_card(view: RunView, exports: Path, model_repo_id: str | None) -> str:
    import yaml
    from huggingface_hub import DatasetCardData

    configs = dataset_configs(exports)
    meta = DatasetCardData(
        language=[str(view.config_get("generation.language", "en"))],
        task_categories=["sentence-similarity", "text-retrieval"],
        tags=["domain-distiller", "synthetic", "retrieval"],
        pretty_name=f"{view.name} (domain-distiller)",
        configs=configs,
    ).to_dict()
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# {view.name}",
        "",
        f"Retrieval training data made by domain-distiller from run `{view.name}` (teacher: {view.teacher}), "
        "split by source document so that no document is on two sides.",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        *[
            f'ds = load_dataset("REPO", "{c["config_name"]}")  # '
            + ", ".join(f["split"] for f in c["data_files"])
            for c in configs[:3]
        ],
        "```",
        "",
        "Each format's folder has its own README.md: rows per split, provenance, approval rate and cost.",
    ]
    if model_repo_id:
        lines += ["", f"Model trained on it: [{model_repo_id}](https://huggingface.co/{model_repo_id})."]
    lines += ["", "## Licence", "", LICENCE_NOTE, ""]
    return "\n".join(lines)


def push_run(
    run_dir: Path | str,
    repo_id: str,
    *,
    private: bool = False,
    dataset_repo_id: str | None = None,
    license: str | None = None,
    token: str | None = None,
    api: Any = None,
) -> PushResult:
    """Create (or reuse) the model repo and commit models/best with its card; with `dataset_repo_id`,
    do the same for exports/ with a dataset card. Raises DistillError with one line on anything missing."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    run_dir = Path(run_dir)
    view = RunView(run_dir, require_manifest=True)
    _check_repo_id(repo_id, "--repo-id")
    if dataset_repo_id:
        _check_repo_id(dataset_repo_id, "--dataset-repo-id")
    model_dir = run_dir / "models" / "best"
    if not (model_dir / "config_sentence_transformers.json").is_file():
        raise DistillError(f"{model_dir}: no trained model to push (run the pipeline through evaluate first)")
    exports = run_dir / "exports"
    if dataset_repo_id and not dataset_configs(exports):
        raise DistillError(f"{exports}: no exported files to push (distill export {run_dir} -f triplets)")
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise ConfigError(
            "HF_TOKEN is not set: create a write token at https://huggingface.co/settings/tokens"
        )
    api = api or HfApi(token=token)

    card = render_model_card(run_dir, repo_id=repo_id, dataset_repo_id=dataset_repo_id, license=license)
    model_ops = [
        CommitOperationAdd(path_in_repo=p.relative_to(model_dir).as_posix(), path_or_fileobj=str(p))
        for p in _files(model_dir)
        if p.name not in ("README.md", "distiller_best.txt")
    ]
    model_ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    result = PushResult(model_url="")
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.create_commit(
            repo_id,
            model_ops,
            repo_type="model",
            commit_message=f"domain-distiller: {view.name} best model ({view.best_model()})",
        )
        result.model_url = str(url)
        result.files[repo_id] = [op.path_in_repo for op in model_ops]
        if dataset_repo_id:
            ops = [
                CommitOperationAdd(path_in_repo=p.relative_to(exports).as_posix(), path_or_fileobj=str(p))
                for p in _files(exports, skip=("hf",))
                if p.parent != exports  # split.json and the like stay local
            ]
            dcard = render_dataset_card(view, exports, repo_id).replace("REPO", dataset_repo_id)
            ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=dcard.encode("utf-8")))
            durl = api.create_repo(dataset_repo_id, repo_type="dataset", private=private, exist_ok=True)
            api.create_commit(
                dataset_repo_id,
                ops,
                repo_type="dataset",
                commit_message=f"domain-distiller: {view.name} exports",
            )
            result.dataset_url = str(durl)
            result.files[dataset_repo_id] = [op.path_in_repo for op in ops]
    except HfHubHTTPError as e:
        raise DistillError(f"Hub refused the push: {str(e).splitlines()[0]}") from None
    return result


__all__ = ["PushResult", "dataset_configs", "push_run", "render_dataset_card"]
