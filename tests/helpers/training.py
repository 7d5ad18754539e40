"""A tiny training set and config for the tests that really train (and those that watch training)."""

from __future__ import annotations

from distiller.config import TrainingConfig
from distiller.records import Triplet

TOPICS = ["gout", "asthma", "migraine", "anemia", "psoriasis", "glaucoma", "tinnitus", "rosacea"]


def triplets(n: int) -> list[Triplet]:
    out = []
    for i in range(n):
        t, u = TOPICS[i % len(TOPICS)], TOPICS[(i + 3) % len(TOPICS)]
        out.append(
            Triplet(
                query_id=f"q{i}",
                query=f"How is {t} treated? ({i})",
                positive_id=f"p{i}",
                # a positive without the topic's name and a negative with it: the loss is not zero
                positive=f"Rest and medicine help (case {i}).",
                negative_id=f"n{i}",
                negative=f"{t.capitalize()} and {u} are common conditions.",
                kind="hard" if i % 3 == 0 else "easy",
                iteration=1,
            )
        )
    return out


def tiny_cfg(**kw: object) -> TrainingConfig:
    return TrainingConfig(
        **{"max_seq_length": 32, "batch_size": 4, "epochs": 1, "save_steps": 2, "device": "cpu", **kw}
    )
