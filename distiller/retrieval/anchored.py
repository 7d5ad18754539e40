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

The batch's own texts only hold the domain the batch comes from: a batch of medical rows moves the
science texts' embeddings freely. With a `Pool` (learning-without-forgetting style), each step also
encodes `Pool.sample` reference texts drawn evenly from every domain's training texts (one extra forward
over that handful) and adds them to the anchor term, counted as the batch's own texts are:

    + anchor_weight * (sum over the sampled texts of ||e(text) - e_ref(text)||^2) / batch size
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
class Pool:
    """Reference texts sampled into every step's anchor term: `texts` per domain (with their reference
    embeddings in `reference`), `sample` texts a step, drawn evenly from the domains (seeded)."""

    texts: dict[str, list[str]]
    reference: Mapping[str, np.ndarray]
    sample: int
    seed: int = 0

    def draws(self) -> Iterator[list[str]]:
        """The texts of each step, one list per step: `sample` split evenly over the non-empty domains
        (the first domains get one more when it does not divide), each domain's texts without
        replacement until they run out, then reshuffled."""
        rng = random.Random(self.seed)
        names = [n for n in self.texts if self.texts[n]]
        orders: dict[str, list[str]] = {n: [] for n in names}
        while names:
            out: list[str] = []
            for i, n in enumerate(names):
                want = self.sample // len(names) + (i < self.sample % len(names))
                for _ in range(want):
                    if not orders[n]:
                        orders[n] = list(self.texts[n])
                        rng.shuffle(orders[n])
                    out.append(orders[n].pop())
            yield out

    def fingerprint(self) -> str:
        return f"pool:{self.sample}:{self.seed}:" + ",".join(f"{k}={len(v)}" for k, v in self.texts.items())


@dataclass
class Anchor:
    """What the fused student's loss needs besides the triplets: answer units (`answer_units`), the
    reference embeddings (`reference_embeddings`, None: no anchor term), the anchor term's weight and an
    optional `Pool` of other texts anchored at every step."""

    units: dict[str, int]
    reference: dict[str, np.ndarray] | None = None
    weight: float = 0.0
    pool: Pool | None = None

    def labels(self, rows: Sequence[Triplet]) -> list[list[float]]:
        return label_rows(rows, self.units, self.reference if self.weight > 0 else None)

    def fingerprint(self) -> str:
        out = f"anchor:{self.weight}:{len(self.units)}:{len(self.reference or {})}"
        return out + (f":{self.pool.fingerprint()}" if self.pool is not None else "")

    def loss(self, model: Any) -> Any:
        return make_loss(model, self.weight, pool=self.pool if self.weight > 0 else None)


def make_loss(model: Any, anchor_weight: float, scale: float = SCALE, pool: Pool | None = None) -> Any:
    """The loss module for sentence-transformers' trainer (labels from `label_rows`); with `pool` (and a
    weight), each forward also anchors that step's `Pool.draws` texts."""
    import torch
    from sentence_transformers.util import cos_sim

    try:  # sentence-transformers 6: one merged forward over like-width columns
        from sentence_transformers.base.losses.merged_forward import embed_columns
    except ImportError:  # 5.x (what the [onnx] / [openvino] extras resolve to): a forward per column

        def embed_columns(  # type: ignore[misc]
            model: Any, features_list: Iterable[dict[str, Any]], separate_first: bool = True
        ) -> list[Any]:
            return [model(f)["sentence_embedding"] for f in features_list]

    from torch import nn

    class _Loss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.anchor_weight = anchor_weight
            self.scale = scale
            self.draws = pool.draws() if pool is not None and pool.sample > 0 else None

        def forward(self, sentence_features: Iterable[dict[str, Any]], labels: Any) -> Any:
            emb = embed_columns(self.model, sentence_features)
            loss = ranking_loss(emb, labels, self.anchor_weight, self.scale)
            if self.draws is not None and self.anchor_weight > 0 and pool is not None:
                texts = next(self.draws, [])
                if texts:
                    loss = loss + self.anchor_weight * self.pool_term(texts, labels.size(0))
            return loss

        def pool_term(self, texts: list[str], b: int) -> Any:
            assert pool is not None
            features = self.model.preprocess(texts)
            device = emb_device(self.model)
            features = {k: v.to(device) if hasattr(v, "to") else v for k, v in features.items()}
            cur = self.model(features)["sentence_embedding"]
            ref = torch.as_tensor(np.stack([pool.reference[t] for t in texts]), device=cur.device)
            return ((cur - ref) ** 2).sum(-1).sum() / b

        @property
        def citation(self) -> str:
            return ""

    def emb_device(m: Any) -> Any:
        return getattr(m, "device", None) or next(m.parameters()).device

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


__all__ = ["SCALE", "Anchor", "Pool", "answer_units", "label_rows", "make_loss", "reference_embeddings"]
