"""The LLM teacher's stages: bootstrap a domain's knowledge base, write queries, Q&A pairs and documents,
remove near-duplicate queries, and judge a sample. Small modules, plain Python, no Prefect:

- `context`: what every prompt of a run shares (domain and language templates, teacher, seed).
- `plan`: stable ids and label plans (complexity, type, length, strategy of every row before it is asked,
  each a function of the row's own id).
- `progress`: progress events (rows, cost so far, budget left) for the CLI and Prefect.
- `runner`: one stage's batches through `LLMClient`, with progress, failures and budget notes collected.
- `bootstrap`, `queries`, `qa`, `documents`, `dedup`, `validation`: the tasks themselves.
"""

from __future__ import annotations

from typing import Literal

from distiller.config import DistillConfig

StageName = Literal["bootstrap", "generate", "validate"]


def bootstrap_mode(cfg: DistillConfig) -> bool:
    """A domain and no documents: the corpus itself is generated."""
    return bool(cfg.generation.domain) and not cfg.input.paths and not cfg.input.qa_file


def stage_fingerprint(cfg: DistillConfig, stage: StageName) -> str:
    """Prompts and templates a stage renders: part of its stage key, so editing a prompt or a template
    re-runs the stage (and only the calls whose text changed are paid for again)."""
    from distiller import prompts
    from distiller.prompts import concepts, documents, judge, qa, queries
    from distiller.templates import domain_for, language_for

    used: dict[StageName, tuple[prompts.Prompt, ...]] = {
        "bootstrap": (concepts.CONCEPTS, concepts.RELATIONSHIPS),
        "generate": (
            queries.FROM_CONCEPT,
            queries.FROM_CHUNK,
            qa.QA,
            documents.DOCUMENTS,
            documents.NEGATIVES,
        ),
        "validate": (judge.JUDGE_QA, judge.JUDGE_QUERY),
    }
    templates = domain_for(cfg.generation).fingerprint() + language_for(cfg.generation).fingerprint()
    return prompts.fingerprint(*used[stage]) + templates


__all__ = ["StageName", "bootstrap_mode", "stage_fingerprint"]
