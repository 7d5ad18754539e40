"""The fused student's loss: MultipleNegativesRankingLoss with in-batch false negatives masked, plus an
anchor term that keeps the student's embeddings near a reference model's (the base).

Why (measured in benchmarks/README.md, "Multi-domain fusion"): fusing MedQuAD and SciFact, the fused
student gained on medicine and fell below the base model on science, where all-MiniLM-L6-v2 is already
strong (its own training data holds scientific title/abstract pairs) and our data is small. Two causes:

- in-batch false negatives: SciFact claims often cite the same abstract, and each chunk of the abstract
  is a positive of each of them; the NO_DUPLICATES sampler only keeps *identical* texts apart, so claim A's
  positive chunk 0 served as an in-batch negative of claim B whose positive is chunk 2 of the same
  abstract, and training pushed claims away from their own abstracts;
- drift: the many medical steps move every embedding, also those of science texts the base already
  ranked right, and the few science rows cannot hold them.

The loss (`make_loss`), per row (query, positive, negative) with a label row from `label_rows`:

    loss = CE(scale * cos(query_i, every positive and negative of the batch), positive_i)
           + anchor_weight * mean over the row's texts of ||e(text) - e_ref(text)||^2

where a candidate of another row that is in the same answer unit as query i (a passage that answers i or
a query sharing an answer with i, `answer_units`) is left out of i's softmax. The reference embeddings are
computed once before training (`reference_embeddings`), so the anchor costs no extra forward pass.
With anchor_weight 0 and no shared answers in a batch the loss equals sentence-transformers'
MultipleNegativesRankingLoss (scale 20, cosine).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distiller.records import Triplet

SCALE = 20.0
UNIT_COLUMNS = 3  # label row: unit of the query, of the positive, of the negative; then the embeddings


def answer_units(positives: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """passage id -> answer unit: passages are in one unit when one query has both as positives (its
    answer's chunks), and units joined by a query are one (a claim citing two abstracts)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pids in positives.values():
        ids = list(dict.fromkeys(pids))
        for p in ids:
            find(p)
        for p in ids[1:]:
            a, b = find(ids[0]), find(p)
            if a != b:
                parent[b] = a
    roots: dict[str, int] = {}
    return {p: roots.setdefault(find(p), len(roots)) for p in sorted(parent)}


def reference_embeddings(model: Any, texts: Iterable[str], batch_size: int = 64) -> dict[str, np.ndarray]:
    """text -> the model's (normalised, as the student's) embedding, before any training."""
    uniq = list(dict.fromkeys(texts))
    if not uniq:
        return {}
    emb = model.encode(uniq, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return {t: np.asarray(e, dtype=np.float32) for t, e in zip(uniq, emb, strict=True)}


def label_rows(
    rows: Sequence[Triplet],
    units: Mapping[str, int],
    reference: Mapping[str, np.ndarray] | None,
) -> list[list[float]]:
    """One label row per triplet: the answer units of (query, positive, negative), then, with
    `reference`, the reference embeddings of the three texts. A query's unit is its positive's; a
    passage in no unit gets one of its own (negative ids, never equal to a query's)."""
    own: dict[str, int] = {}

    def unit(pid: str) -> int:
        if pid in units:
            return units[pid]
        return own.setdefault(pid, -1 - len(own))

    out = []
    for t in rows:
        u = unit(t.positive_id)
        row = [float(u), float(u), float(unit(t.negative_id))]
        if reference is not None:
            for text in (t.query, t.positive, t.negative):
                row += reference[text].tolist()
        out.append(row)
    return out


@dataclass
class Anchor:
    """What the fused student's loss needs besides the triplets: answer units (`answer_units`), the
    reference embeddings (`reference_embeddings`, None: no anchor term) and the anchor term's weight."""

    units: dict[str, int]
    reference: dict[str, np.ndarray] | None = None
    weight: float = 0.0

    def labels(self, rows: Sequence[Triplet]) -> list[list[float]]:
        return label_rows(rows, self.units, self.reference if self.weight > 0 else None)

    def fingerprint(self) -> str:
        return f"anchor:{self.weight}:{len(self.units)}:{len(self.reference or {})}"


def make_loss(model: Any, anchor_weight: float, scale: float = SCALE) -> Any:
    """The loss module for sentence-transformers' trainer (labels from `label_rows`)."""
    import torch
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from sentence_transformers.util import cos_sim
    from torch import nn

    class _Loss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.anchor_weight = anchor_weight
            self.scale = scale

        def forward(self, sentence_features: Iterable[dict[str, Any]], labels: Any) -> Any:
            emb = embed_columns(self.model, sentence_features)
            return ranking_loss(emb, labels, self.anchor_weight, self.scale)

        @property
        def citation(self) -> str:
            return ""

    def ranking_loss(emb: list[Any], labels: Any, weight: float, s: float) -> Any:
        q, docs = emb[0], torch.cat(emb[1:], dim=0)
        b = q.size(0)
        scores = cos_sim(q, docs) * s  # (b, b * (columns - 1))
        units = labels[:, :UNIT_COLUMNS]
        q_unit = units[:, 0:1]
        doc_units = torch.cat([units[:, 1 + c] for c in range(len(emb) - 1)])
        rows = torch.arange(b, device=q.device)
        mask = q_unit == doc_units.unsqueeze(0)
        for c in range(len(emb) - 1):  # a row's own positive and negative stay
            mask[rows, c * b + rows] = False
        scores = scores.masked_fill(mask, float("-inf"))
        loss = nn.functional.cross_entropy(scores, rows)
        if weight > 0 and labels.size(1) > UNIT_COLUMNS:
            ref = labels[:, UNIT_COLUMNS:].reshape(b, len(emb), -1)
            cur = torch.stack(emb, dim=1)
            loss = loss + weight * ((cur - ref) ** 2).sum(-1).mean()
        return loss

    return _Loss()


__all__ = ["SCALE", "Anchor", "answer_units", "label_rows", "make_loss", "reference_embeddings"]
