"""Mine: (query, positive, hard negative) triplets with the current student, optionally judged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Passage, Query, Triplet, read_parquet, write_parquet
from distiller.stages.common import budget_cause, model_ref
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


def _judges_negatives(cfg: DistillConfig) -> bool:
    from distiller.generation.validation import judge_endpoint

    return cfg.mining.judge_negatives and not judge_endpoint(cfg).offline


def mine_stage(store: RunStore, cfg: DistillConfig, iteration: int) -> StageResult:
    from distiller.retrieval.mining import mine_triplets
    from distiller.retrieval.models import load_student

    passages_p, queries_p = store.path("passages.parquet"), store.path("queries.parquet")
    if not (passages_p.is_file() and queries_p.is_file()):
        raise StageError("mine needs passages.parquet and queries.parquet: run generate first")
    model_path, model_id = model_ref(store, cfg, iteration)
    prev_triplets = store.path(f"triplets_iter{iteration - 1}.parquet") if iteration > 1 else None
    inputs: list[Path | str] = [passages_p, queries_p, model_id]
    if prev_triplets is not None:
        inputs.append(prev_triplets)
    # The LLM teacher's contrastive triplets join the first iteration (later ones accumulate them); the
    # manifest says whether the last generate wrote them, so a stale file from another teacher is ignored.
    gen_result = store.stage_results().get("generate")
    generated = store.path("triplets_generated.parquet")
    use_generated = iteration == 1 and gen_result is not None and generated.name in gen_result.outputs
    if use_generated:
        inputs.append(generated)
    judged = _judges_negatives(cfg)
    if judged:
        from distiller.prompts import fingerprint
        from distiller.prompts.judge import JUDGE_NEGATIVE

        # The judge's endpoint, its prompt and the budget decide which negatives survive.
        inputs.append(config_hash(cfg, "teacher", "validation", "budget") + fingerprint(JUDGE_NEGATIVE))
    key = stage_key("mine", VERSION, config_hash(cfg, "mining") + cfg.training.kind + str(iteration), inputs)
    out_name = f"triplets_iter{iteration}.parquet"

    def run() -> dict[str, Any]:
        passages = read_parquet(passages_p, Passage)
        queries = read_parquet(queries_p, Query)
        previous = read_parquet(prev_triplets, Triplet) if prev_triplets is not None else []
        if use_generated:
            live = {q.query_id for q in queries if q.split == "train"}  # validation may have removed some
            previous += [t for t in read_parquet(generated, Triplet) if t.query_id in live]
        # Mine among training documents only: a held-out passage must never be seen in training,
        # not even as a negative.
        train_docs = {q.doc_id for q in queries if q.split == "train"}
        passages = [p for p in passages if p.doc_id in train_docs]
        model = load_student(model_path, kind=cfg.training.kind, max_seq_length=cfg.training.max_seq_length)
        result = mine_triplets(model, passages, queries, cfg.mining, iteration, cfg.seed, previous=previous)
        extra: dict[str, Any] = {}
        note, cost = "", 0.0
        if judged:
            from distiller.retrieval.mining_judge import judge_negatives

            verdict = judge_negatives(result.triplets, cfg, store.dir, f"mine_iter{iteration}")
            result.triplets = verdict.kept
            extra = {
                "judge_checked": verdict.checked,
                "judge_false_negatives": verdict.false_negatives,
                "judge_triplets_dropped": verdict.triplets_dropped,
                "judge_notes": verdict.notes,
                **verdict.llm,
            }
            cost = verdict.cost_usd
            note = (
                f"; judge: {verdict.false_negatives} of {verdict.checked} negatives checked answer their "
                f"query ({verdict.triplets_dropped} triplets dropped)"
                + "".join(f"; {n}" for n in verdict.notes)
            )
        allrows = previous + result.triplets
        if not allrows:
            raise StageError(
                f"mining found no triplets in iteration {iteration}: too few training queries "
                f"({sum(q.split == 'train' for q in queries)}) or passages ({len(passages)})"
                + budget_cause(store)
            )
        write_parquet(store.path(out_name), allrows, Triplet)
        return {
            "message": f"{len(result.triplets)} new triplets, {len(allrows)} accumulated" + note,
            "details": {"new": len(result.triplets), "accumulated": len(allrows), **result.stats, **extra},
            "cost_usd": cost,
        }

    return store.run_stage(f"mine_iter{iteration}", key, [out_name], run)
