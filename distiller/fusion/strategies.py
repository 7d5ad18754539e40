"""Training strategies of the fused student, on triplets mined over the union corpus.

- `multitask`: every domain at once; each batch comes from one domain (sentence-transformers'
  multi-dataset batch samplers over a DatasetDict, proportional or round-robin), so the in-batch
  negatives of MultipleNegativesRankingLoss are same-domain passages, i.e. hard. Cross-domain and
  adversarial rows are one more dataset ('fusion').
- `sequential`: one domain after another (`fusion.order`, general first), each phase with a replay of
  `replay_share` x its rows of easy triplets of earlier phases, so earlier domains are not forgotten;
  the fusion rows join the last phase.
- `integration`: two phases, per-domain data (multitask), then the cross-domain/adversarial rows with a
  replay of per-domain easy triplets.

Every phase uses the run's TrainingConfig (learning rate, epochs, batch size, ...). With `positives` or
an `anchor_weight` (what `distill fuse` passes by default: fusion.mask_shared_answers, fusion.anchor_weight)
the loss is `distiller.retrieval.anchored`'s: MultipleNegativesRankingLoss without the in-batch negatives
that answer the query, plus a pull toward the base model's embeddings of the training texts.
"""

from __future__ import annotations

import random
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distiller.config import TrainingConfig
from distiller.records import Triplet
from distiller.retrieval.anchored import Anchor, Pool, answer_units, reference_embeddings
from distiller.retrieval.training import _args, _loss, train_student, triplet_columns

FUSION_SET = "fusion"


@dataclass
class StrategyResult:
    model_dir: Path
    steps: int
    seconds: float
    phases: list[dict[str, Any]] = field(default_factory=list)


def train_multitask(
    base: str,
    datasets: dict[str, list[Triplet]],
    cfg: TrainingConfig,
    output_dir: Path,
    seed: int,
    work_dir: Path,
    sampler: str = "proportional",
    anchor: Anchor | None = None,
) -> int:
    """One training over several datasets, each batch drawn from one of them; returns the step count."""
    from datasets import Dataset, DatasetDict
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.base.sampler import MultiDatasetBatchSamplers
    from transformers import set_seed

    from distiller.retrieval.models import load_student, resolve_device

    sets = {k: v for k, v in datasets.items() if v}
    if not sets:
        raise ValueError("no triplets to train on in any domain")
    if cfg.kind != "dense":
        raise ValueError("fusion strategies train dense students (training.kind: dense)")
    set_seed(seed)
    device = resolve_device(cfg.device)
    model = load_student(base, kind=cfg.kind, device=device, max_seq_length=cfg.max_seq_length)
    assert isinstance(model, SentenceTransformer)  # a dense student (checked above)
    data = DatasetDict(
        {name: Dataset.from_dict(triplet_columns(rows, anchor)) for name, rows in sets.items()}
    )
    args = _args(cfg, work_dir, seed, device, sum(len(v) for v in sets.values()))
    args.multi_dataset_batch_sampler = MultiDatasetBatchSamplers(sampler)
    if anchor is not None and cfg.loss != "mnrl":
        raise ValueError("the anchored loss trains with loss mnrl")
    loss = _loss(model, cfg) if anchor is None else anchor.loss(model)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data, loss=loss)
    trainer.train()
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    return int(trainer.state.global_step)


def make_anchor(
    base: str,
    by_domain: dict[str, list[Triplet]],
    fusion_rows: list[Triplet],
    cfg: TrainingConfig,
    positives: Mapping[str, Sequence[str]] | None,
    anchor_weight: float,
    anchor_sample: int = 0,
    seed: int = 0,
) -> Anchor | None:
    """The anchored loss's inputs, or None (plain MultipleNegativesRankingLoss) when neither is asked for.
    Reference embeddings are the base model's, once for every phase (a later phase of `sequential` is
    anchored to the base, not to the phase before it). `anchor_sample` > 0: every step also anchors that
    many of the domains' training texts (`distiller.retrieval.anchored.Pool`, drawn evenly from the
    domains, seeded), so a step on one domain holds the other domains' embeddings too."""
    if positives is None and anchor_weight <= 0:
        return None
    from distiller.retrieval.models import load_student

    reference = None
    if anchor_weight > 0:
        rows = [t for v in by_domain.values() for t in v] + fusion_rows
        texts = list(dict.fromkeys(x for t in rows for x in (t.query, t.positive, t.negative)))
        # the base's embeddings do not change: each strategy of a run (and each seed) encodes only texts
        # the ones before it did not
        known = _REFERENCE.setdefault((base, cfg.max_seq_length), {})
        if missing := [x for x in texts if x not in known]:
            model = load_student(base, kind=cfg.kind, device=cfg.device, max_seq_length=cfg.max_seq_length)
            known.update(reference_embeddings(model, missing))
        reference = {x: known[x] for x in texts}
    pool = None
    if reference is not None and anchor_sample > 0:
        texts_of = {
            name: list(dict.fromkeys(x for t in rows for x in (t.query, t.positive, t.negative)))
            for name, rows in by_domain.items()
            if rows
        }
        pool = Pool(texts_of, reference, anchor_sample, seed)
    return Anchor(answer_units(positives or {}), reference, anchor_weight, pool)


_REFERENCE: dict[tuple[str, int], dict[str, Any]] = {}


def replay(earlier: list[Triplet], n: int, seed: int) -> list[Triplet]:
    """n triplets of earlier phases, easy ones first (what the student already knew), seeded."""
    easy = [t for t in earlier if t.kind == "easy"]
    rest = [t for t in earlier if t.kind != "easy"]
    rng = random.Random(seed)
    rng.shuffle(easy)
    rng.shuffle(rest)
    return (easy + rest)[: max(0, n)]


def train_strategy(
    strategy: str,
    base: str,
    by_domain: dict[str, list[Triplet]],
    fusion_rows: list[Triplet],
    cfg: TrainingConfig,
    output_dir: Path,
    seed: int,
    work_dir: Path,
    *,
    order: list[str] | None = None,
    replay_share: float = 0.2,
    sampler: str = "proportional",
    positives: Mapping[str, Sequence[str]] | None = None,
    anchor_weight: float = 0.0,
    anchor_sample: int = 0,
) -> StrategyResult:
    """Train the fused student with `strategy` from `base`; the model lands in `output_dir`.

    `positives` (query id -> its positive passage ids, every domain): in-batch negatives that answer the
    anchor query (`distiller.retrieval.anchored.answer_units`) are masked. `anchor_weight` > 0: every
    phase also pulls the embeddings of its texts toward the base model's (`reference_embeddings`), and with
    `anchor_sample` > 0 those of that many texts drawn from every domain at each step (`make_anchor`)."""
    t0 = time.perf_counter()
    output_dir = Path(output_dir)
    work_dir = Path(work_dir)
    phases: list[dict[str, Any]] = []
    anchor = make_anchor(base, by_domain, fusion_rows, cfg, positives, anchor_weight, anchor_sample, seed)
    if strategy == "multitask":
        sets = dict(by_domain)
        if fusion_rows:
            sets[FUSION_SET] = fusion_rows
        steps = train_multitask(base, sets, cfg, output_dir, seed, work_dir / "mt", sampler, anchor)
        phases.append({"phase": "multitask", "rows": {k: len(v) for k, v in sets.items()}, "steps": steps})
    elif strategy == "sequential":
        names = order or list(by_domain)
        current, steps = base, 0
        seen: list[Triplet] = []
        for i, name in enumerate(names):
            rows = list(by_domain.get(name, []))
            if i == len(names) - 1:
                rows += fusion_rows
            replayed = replay(seen, round(replay_share * len(rows)), seed + i)
            if not rows:
                continue
            out = output_dir if i == len(names) - 1 else work_dir / f"seq-{i}"
            res = train_student(
                current, rows + replayed, cfg, out, seed, work_dir / f"ckpt-seq-{i}", anchor=anchor
            )
            phases.append({"phase": name, "rows": len(rows), "replayed": len(replayed), "steps": res.steps})
            steps += res.steps
            seen += by_domain.get(name, [])
            current = str(out)
        if current == base:
            raise ValueError("no triplets to train on in any domain")
    elif strategy == "integration":
        if not fusion_rows:
            steps = train_multitask(base, by_domain, cfg, output_dir, seed, work_dir / "mt", sampler, anchor)
            phases.append(
                {"phase": "per-domain", "rows": {k: len(v) for k, v in by_domain.items()}, "steps": steps}
            )
            phases.append({"phase": "cross-domain", "skipped": "no cross-domain or adversarial rows"})
        else:
            first = work_dir / "phase1"
            s1 = train_multitask(base, by_domain, cfg, first, seed, work_dir / "mt", sampler, anchor)
            replayed = replay(
                [t for v in by_domain.values() for t in v], round(replay_share * len(fusion_rows)), seed
            )
            res = train_student(
                str(first), fusion_rows + replayed, cfg, output_dir, seed, work_dir / "ckpt-p2", anchor=anchor
            )
            phases += [
                {"phase": "per-domain", "rows": {k: len(v) for k, v in by_domain.items()}, "steps": s1},
                {
                    "phase": "cross-domain",
                    "rows": len(fusion_rows),
                    "replayed": len(replayed),
                    "steps": res.steps,
                },
            ]
            steps = s1 + res.steps
    else:
        raise ValueError(f"unknown strategy {strategy!r} (multitask, sequential, integration)")
    shutil.rmtree(work_dir, ignore_errors=True)
    return StrategyResult(output_dir, steps, time.perf_counter() - t0, phases)


__all__ = ["FUSION_SET", "StrategyResult", "make_anchor", "replay", "train_multitask", "train_strategy"]
