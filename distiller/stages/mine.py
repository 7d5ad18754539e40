"""Mine: (query, positive, hard negative) triplets with the current student, optionally judged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distiller.config import DistillConfig
from distiller.errors import StageError
from distiller.records import Passage, Query, Triplet, read_parquet, write_parquet
from distiller.retrieval.index import build_ann
from distiller.retrieval.shards import EncodeShard, Mapper, SearchShard, gather_searches, search_shard
from distiller.stages.common import budget_cause, model_ref, shards_note
from distiller.stages.encoding import (
    backend_tag,
    encode_all,
    load_encoder_for,
    merge_details,
    model_identity,
    prune_model_files,
    searches_for,
    sharded,
    specs_for,
    train_passages,
)
from distiller.stages.keys import config_hash
from distiller.store import RunStore, StageResult, stage_key

# Bump when this stage's code changes what it writes: old cache entries stop matching.
VERSION = "2"


def _judges_negatives(cfg: DistillConfig) -> bool:
    from distiller.generation.validation import judge_endpoint

    return cfg.mining.judge_negatives and not judge_endpoint(cfg).offline


class _Plan:
    """What one mining iteration reads and its cache key: shared by the stage and its shard plan."""

    def __init__(self, store: RunStore, cfg: DistillConfig, iteration: int) -> None:
        self.passages_p, self.queries_p = store.path("passages.parquet"), store.path("queries.parquet")
        if not (self.passages_p.is_file() and self.queries_p.is_file()):
            raise StageError("mine needs passages.parquet and queries.parquet: run generate first")
        self.model_path, model_id = model_ref(store, cfg, iteration)
        # A trained model's folder is hashed once, here, for the key and for every shard's.
        self.model_id = model_identity(model_id)
        self.prev_triplets = store.path(f"triplets_iter{iteration - 1}.parquet") if iteration > 1 else None
        inputs: list[Path | str] = [self.passages_p, self.queries_p, self.model_id]
        if self.prev_triplets is not None:
            inputs.append(self.prev_triplets)
        # The LLM teacher's contrastive triplets join the first iteration (later ones accumulate them);
        # the manifest says whether the last generate wrote them, so a stale file from another teacher
        # is ignored.
        gen_result = store.stage_results().get("generate")
        self.generated = store.path("triplets_generated.parquet")
        self.use_generated = (
            iteration == 1 and gen_result is not None and self.generated.name in gen_result.outputs
        )
        if self.use_generated:
            inputs.append(self.generated)
        self.judged = _judges_negatives(cfg)
        if self.judged:
            from distiller.prompts import fingerprint
            from distiller.prompts.judge import JUDGE_NEGATIVE

            # The judge's endpoint, its prompt and the budget decide which negatives survive.
            inputs.append(config_hash(cfg, "teacher", "validation", "budget") + fingerprint(JUDGE_NEGATIVE))
        # Shard size and executor never change the triplets; the backend does (slightly): it is keyed.
        self.key = stage_key(
            "mine",
            VERSION,
            config_hash(cfg, "mining") + cfg.training.kind + str(iteration) + backend_tag(cfg),
            inputs,
        )
        self.out_name = f"triplets_iter{iteration}.parquet"
        self.stage = f"mine_iter{iteration}"

    def inputs(self) -> tuple[list[Passage], list[Passage], list[Query]]:
        """(every passage, the training passages mining searches, the queries)."""
        passages = read_parquet(self.passages_p, Passage)
        queries = read_parquet(self.queries_p, Query)
        return passages, train_passages(passages, queries), queries

    def shards(
        self, store: RunStore, cfg: DistillConfig, passages: list[Passage], queries: list[Query]
    ) -> tuple[list[EncodeShard], list[EncodeShard]]:
        """(corpus shards, query shards) of every passage and query, held-out ones included: evaluation
        of the same model reads these shards too, so the base model's corpus is encoded once per run,
        not once per stage."""
        return specs_for(
            store, cfg, self.model_path, self.model_id, [p.text for p in passages],
            [p.passage_id for p in passages], "document", self.stage,
        ), specs_for(
            store, cfg, self.model_path, self.model_id, [q.text for q in queries],
            [q.query_id for q in queries], "query", self.stage,
        )  # fmt: skip


def shard_plan(
    store: RunStore, cfg: DistillConfig, iteration: int
) -> tuple[list[EncodeShard], list[SearchShard]]:
    """The encoding shards mining iteration k still needs, then its searches (which read them), from
    one reading of its inputs; none when the stage is cached or not sharded. The flow runs them as
    mapped tasks, the searches once every encoding is done, before the stage runs."""
    if not sharded(cfg):
        return [], []
    plan = _Plan(store, cfg, iteration)
    if store.cache.lookup(plan.stage, plan.key, [plan.out_name]) is not None:
        return [], []
    every, _, queries = plan.inputs()
    docs, qs = plan.shards(store, cfg, every, queries)
    searches = searches_for("mine", cfg, docs, qs, every, queries, plan.stage)
    return [s for s in docs + qs if not s.done], [s for s in searches if not s.done]


def mine_stage(
    store: RunStore, cfg: DistillConfig, iteration: int, mapper: Mapper | None = None
) -> StageResult:
    from distiller.retrieval.mining import mine_triplets

    plan = _Plan(store, cfg, iteration)

    def run() -> dict[str, Any]:
        every, passages, queries = plan.inputs()
        previous = read_parquet(plan.prev_triplets, Triplet) if plan.prev_triplets is not None else []
        if plan.use_generated:
            live = {q.query_id for q in queries if q.split == "train"}  # validation may have removed some
            previous += [t for t in read_parquet(plan.generated, Triplet) if t.query_id in live]
        encoded: dict[str, Any] = {}
        corpus = qemb = None
        neighbours = None
        if sharded(cfg):
            docs, qs = plan.shards(store, cfg, every, queries)
            train_ids = [q.query_id for q in queries if q.split == "train"]
            corpus, encoded = encode_all(docs, [p.passage_id for p in passages], mapper)
            queries_enc, qdetails = encode_all(qs, train_ids, mapper)
            qemb, encoded = queries_enc.embeddings, merge_details(encoded, qdetails)
            searches = searches_for("mine", cfg, docs, qs, every, queries, plan.stage)
            if searches:  # searched per query shard (by the flow's tasks, or here for the missing ones)
                ran = [search_shard(s) for s in searches if not s.done]
                neighbours = gather_searches(searches, train_ids)
                encoded |= {"searches": len(searches), "searches_run": len(ran)}
            # What no plan names goes; evaluation's held-out searches with this model are live too.
            held_out = searches_for("evaluate", cfg, docs, qs, every, queries, write=False)
            encoded["shard_files_pruned"] = prune_model_files(store, cfg, docs + qs, searches + held_out)
            if (
                not corpus.sparse
                and cfg.mining.exact_index_max_corpus is not None
                and len(corpus) > cfg.mining.exact_index_max_corpus
            ):
                corpus.ann = build_ann(corpus.embeddings, cfg.seed)
        model = None  # the shards hold every embedding mining needs
        if corpus is None:
            model, how = load_encoder_for(cfg, plan.model_path)
            if how != "torch":
                encoded["encoder"] = how
        result = mine_triplets(
            model, passages, queries, cfg.mining, iteration, cfg.seed, previous=previous,
            corpus=corpus, query_embeddings=qemb, neighbours=neighbours,
        )  # fmt: skip
        extra: dict[str, Any] = {}
        note, cost = "", 0.0
        if plan.judged:
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
        write_parquet(store.path(plan.out_name), allrows, Triplet)
        return {
            "message": f"{len(result.triplets)} new triplets, {len(allrows)} accumulated"
            + shards_note(encoded, "encoded")
            + note,
            "details": {
                "new": len(result.triplets),
                "accumulated": len(allrows),
                **result.stats,
                **encoded,
                **extra,
            },
            "cost_usd": cost,
        }

    return store.run_stage(plan.stage, plan.key, [plan.out_name], run)
