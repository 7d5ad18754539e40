"""The pipeline's stages as plain Python: each reads the artifacts of the stages before it from the run
folder, writes its own, and is served from the stage cache when its key (config section + input
contents + code version) was seen before. Prefect tasks in `tasks/` are thin wrappers around these.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from distiller.config import DistillConfig, TrainingConfig
from distiller.errors import StageError
from distiller.records import (
    OFFLINE_WARNING,
    Chunk,
    Concept,
    Document,
    Judgment,
    MetricRow,
    Passage,
    QAPair,
    Query,
    Triplet,
    query_set_label,
    query_set_of,
    read_parquet,
    rows_by_set,
    write_parquet,
)
from distiller.store import RunStore, StageCache, StageResult, stage_key

log = logging.getLogger("distiller")

# Bump a stage's version when its code changes what it writes: old cache entries stop matching.
VERSIONS = {
    "ingest": "1",
    "generate": "2",
    "bootstrap": "1",
    "validate": "1",
    "labeled": "1",
    "mine": "2",
    "train": "1",
    "evaluate": "2",
    "export": "2",
    "report": "2",
}

STAGES = ("ingest", "generate", "mine", "train", "evaluate", "export", "report")

Progress = Callable[[str], None]


def default_run_name(cfg: DistillConfig) -> str:
    """A stable name, so the same command twice lands in the same folder and resumes."""
    if cfg.run_name:
        return cfg.run_name
    if cfg.input.qa_file:
        base = Path(cfg.input.qa_file).stem
    elif cfg.input.paths:
        first = cfg.input.paths[0].rstrip("/")
        base = Path(first.split("*")[0].rstrip("/") or "corpus").name or "corpus"
    elif cfg.generation.domain:
        base = f"{cfg.generation.domain}-{cfg.generation.language}"
    else:
        base = "run"
    # At most 100 characters: the folder's name and the temporary names made from it must fit the file
    # system's 255-byte limit.
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", base)[:100].strip("-.") or "run"


def lock_run(cfg: DistillConfig) -> AbstractContextManager[None]:
    """The run folder's lock (`distiller.runlock`): a second process on the same run is refused."""
    from distiller.runlock import run_lock

    return run_lock(cfg.runs_path / default_run_name(cfg))


def open_store(cfg: DistillConfig) -> RunStore:
    """The run folder of `cfg`; with `storage_url`, first brought up to date from the mirror (every task,
    the CLI and the flows open their run here, so each stage starts from what other machines wrote)."""
    from distiller.remote import remote_for

    mirror = remote_for(cfg)
    if mirror is not None:
        mirror.pull_run()
    store = RunStore(cfg.runs_path / default_run_name(cfg), StageCache(cfg.cache_path, mirror), mirror)
    store.record_config(cfg.redacted())
    return store


def _input_file_hashes(cfg: DistillConfig) -> list[str]:
    from distiller.ingest.readers import expand_inputs
    from distiller.store import sha256_file

    files, _ = expand_inputs(cfg.input.paths)
    # Contents only, sorted: moving or renaming the corpus keeps the key.
    return sorted(sha256_file(f) for f in files)


def _config_hash(cfg: DistillConfig, *sections: str, exclude: dict[str, set[str]] | None = None) -> str:
    import hashlib
    import json

    dumped = cfg.model_dump(mode="json")
    payload: dict[str, Any] = {"seed": cfg.seed}
    for s in sections:
        value = dumped[s]
        if exclude and s in exclude and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in exclude[s]}
        payload[s] = value
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_llm_budget(store: RunStore, cfg: DistillConfig, *, announce: bool = True) -> Any:
    """Split the run's budget over its LLM steps by the estimate (llm/plan.py), before anything is sent;
    kept in the manifest for the steps to read. None: no LLM teacher, or no chunks yet. With
    `budget.policy: strict`, a budget that does not cover the estimate is refused here."""
    import contextlib

    from distiller.errors import BudgetExceeded
    from distiller.generation import bootstrap_mode
    from distiller.generation.estimate import budget_plan
    from distiller.llm import CallCache
    from distiller.llm.ledger import read_ledger

    if cfg.teacher.offline or cfg.input.qa_file:
        return None
    chunks: list[Chunk] = []
    if not bootstrap_mode(cfg):
        if not store.path("chunks.parquet").is_file():
            return None
        chunks = read_parquet(store.path("chunks.parquet"), Chunk)
    spent = sum(e.cost_usd for e in read_ledger(store.dir))
    with contextlib.closing(CallCache.in_dir(cfg.cache_path)) as cache:
        plan = budget_plan(cfg, chunks, cache, spent)
    before = store.manifest().get("budget_plan")
    # Said once: `distill run` prints it before the flow starts; the stage repeats only what changed.
    said = before is not None and type(plan).model_validate(before).coverage() == plan.coverage()

    def _set(m: dict[str, Any]) -> None:
        m["budget_plan"] = plan.model_dump(mode="json")
        cost = m.setdefault("llm_cost", {})
        cost.setdefault("estimate_before_run_usd", round(spent + plan.expected_usd, 6))
        cost["budget_usd"] = cfg.budget.run_usd

    store.update_manifest(_set)
    if not plan.covered:
        if cfg.budget.policy == "strict":
            raise BudgetExceeded(
                f"{plan.coverage()}. budget.policy is strict, so nothing was sent (--budget-policy partial "
                "runs what the budget buys)"
            )
        if announce and not said:
            log.warning("%s", plan.coverage())
    return plan


def budget_cause(store: RunStore) -> str:
    """The budget's part in a run that came out too small, for errors about too little data ('' if none)."""
    m = store.manifest()
    stopped = [k for k, v in m.get("stages", {}).items() if (v.get("details") or {}).get("stopped_by_budget")]
    if not stopped:
        return ""
    unsent = (m.get("llm_cost") or {}).get("not_sent_budget", 0)
    return (
        f". The LLM budget was the cause: it stopped {', '.join(stopped)} early ({unsent} requests not "
        f"sent); raise it (--budget, now ${(m.get('config') or {}).get('budget', {}).get('run_usd', '?')})"
    )


# ---------------------------------------------------------------------------------------------------
def ingest_stage(store: RunStore, cfg: DistillConfig, progress: Progress | None = None) -> StageResult:
    from distiller.ingest import ingest

    tokenizer = cfg.chunking.tokenizer or cfg.training.student
    key = stage_key(
        "ingest",
        VERSIONS["ingest"],
        _config_hash(cfg, "input", "chunking", exclude={"input": {"paths"}}) + tokenizer,
        _input_file_hashes(cfg),
    )

    def run() -> dict[str, Any]:
        result = ingest(cfg, on_file=progress)
        write_parquet(store.path("sources.parquet"), result.documents, Document)
        write_parquet(store.path("chunks.parquet"), result.chunks, Chunk)
        skipped = [s.model_dump() for s in result.skipped]
        for s in result.skipped:
            log.warning("skipped %s%s: %s", s.path, f":{s.line}" if s.line else "", s.reason)
        return {
            "message": f"{len(result.documents)} documents, {len(result.chunks)} chunks, "
            f"{len(result.skipped)} skipped",
            "details": {
                "documents": len(result.documents),
                "skipped_inputs": skipped,
                "short_chunks_dropped": result.short_chunks_dropped,
                "duplicate_documents": result.duplicates,
                "tokens": sum(c.n_tokens for c in result.chunks),
            },
        }

    res = store.run_stage("ingest", key, ["sources.parquet", "chunks.parquet"], run)
    store.update_manifest(lambda m: m.__setitem__("skipped_inputs", res.details.get("skipped_inputs", [])))
    return res


def _titles(store: RunStore) -> dict[str, str]:
    """{doc_id: title} of the ingested documents that have one (the offline teacher's title queries)."""
    p = store.path("sources.parquet")
    return {d.doc_id: d.title for d in read_parquet(p, Document) if d.title} if p.is_file() else {}


def _titles_input(store: RunStore, cfg: DistillConfig) -> list[Path]:
    p = store.path("sources.parquet")
    use = cfg.teacher.offline and cfg.generation.offline_title_queries and p.is_file()
    return [p] if use else []


def generate_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    from distiller.generation import bootstrap_mode, stage_fingerprint

    # Bootstrap mode generates from the domain's knowledge base instead of from chunks.
    bootstrap = bootstrap_mode(cfg)
    source = "concepts.parquet" if bootstrap else "chunks.parquet"
    chunks_path = store.path(source)
    if not chunks_path.is_file():
        first = "distill bootstrap" if bootstrap else "distill ingest"
        raise StageError(f"generate needs {source}: run the stage before it first ({first})")
    outputs = ["passages.parquet", "queries.parquet", "qa_pairs.parquet"]
    llm_key = ""
    if not cfg.teacher.offline:
        from distiller.teachers.llm import LLM_OUTPUTS

        outputs += LLM_OUTPUTS
        # Prompts and templates it renders, and the student that finds near-duplicate queries.
        llm_key = stage_fingerprint(cfg, "generate") + cfg.training.student
    key = stage_key(
        "generate",
        VERSIONS["generate"],
        _config_hash(cfg, "teacher", "generation", "split", "budget") + llm_key,
        [chunks_path, *_titles_input(store, cfg)],
    )

    def run() -> dict[str, Any]:
        plan_llm_budget(store, cfg)  # before anything is sent: the budget's split over the steps
        chunks = [] if bootstrap else read_parquet(chunks_path, Chunk)
        if bootstrap:
            from distiller.teachers.llm import generate_from_concepts

            out = generate_from_concepts(read_parquet(chunks_path, Concept), cfg, store)
        elif cfg.teacher.offline:
            from distiller.teachers.offline import inverse_cloze

            out = inverse_cloze(
                chunks,
                cfg.generation.queries_per_chunk,
                cfg.generation.min_query_words,
                cfg.split.train_ratio,
                cfg.split.val_ratio,
                cfg.seed,
                cfg.generation.language,
                document_positives=cfg.generation.offline_document_positives,
                titles=_titles(store) if cfg.generation.offline_title_queries else None,
            )
        else:
            from distiller.teachers.llm import generate_with_llm  # the LLM teacher (issue: generation)

            out = generate_with_llm(chunks, cfg, store)
        for note in out.notes:
            log.warning(note)
        write_parquet(store.path("passages.parquet"), out.passages, Passage)
        write_parquet(store.path("queries.parquet"), out.queries, Query)
        write_parquet(store.path("qa_pairs.parquet"), out.qa_pairs, QAPair)
        by_split: dict[str, int] = {}
        for q in out.queries:
            by_split[q.split] = by_split.get(q.split, 0) + 1
        splits = ", ".join(f"{k} {v}" for k, v in sorted(by_split.items()))
        teacher = "offline-ict" if cfg.teacher.offline else cfg.teacher.model
        return {
            "message": f"{len(out.queries)} queries ({splits}), {len(out.qa_pairs)} Q&A pairs, "
            f"teacher {teacher}" + ("" if cfg.teacher.offline else "".join(f"; {n}" for n in out.notes)),
            "details": {"notes": out.notes, "queries_by_split": by_split, **out.stats},
            "cost_usd": float(out.stats.get("cost_usd", 0.0)),
        }

    return store.run_stage("generate", key, outputs, run)


def bootstrap_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """Bootstrap mode: the domain's knowledge base (`concepts.parquet`) from its name alone."""
    from distiller.generation import stage_fingerprint

    gen = cfg.generation
    if not gen.domain:
        raise StageError("bootstrap needs a domain: set generation.domain (--domain)")
    if cfg.teacher.offline:
        raise StageError(
            "bootstrap needs an LLM teacher (the offline teacher cannot write a domain's knowledge): "
            "--teacher openai|anthropic --model NAME, or --base-url for an OpenAI-compatible server"
        )
    reads = [gen.domain, gen.language, gen.template, gen.concepts, gen.concepts_per_call]
    reads.append(gen.relationships_per_call)
    key = stage_key(
        "bootstrap",
        VERSIONS["bootstrap"],
        _config_hash(cfg, "teacher", "budget") + repr(reads) + stage_fingerprint(cfg, "bootstrap"),
        [],
    )

    def run() -> dict[str, Any]:
        from distiller.generation.bootstrap import bootstrap

        plan_llm_budget(store, cfg)
        res = bootstrap(cfg, store.dir)
        write_parquet(store.path("concepts.parquet"), res.rows, Concept)
        return {"message": res.message, "details": res.details, "cost_usd": res.cost_usd}

    return store.run_stage("bootstrap", key, ["concepts.parquet"], run)


def _generated_files(store: RunStore, names: tuple[str, ...]) -> dict[str, Path]:
    """The generate stage's files as it wrote them: validate rewrites qa_pairs and queries in the run
    folder, so it reads (and keys on) the copies in generate's stage-cache entry, which never change;
    the run folder's where there is no entry."""
    gen = store.stage_results().get("generate")
    entry: Path | None = None
    # lookup, not entry alone: it fetches the entry from the mirror when another machine ran generate.
    if gen and gen.key and store.cache.lookup("generate", gen.key):
        entry = store.cache.entry("generate", gen.key) / "files"
    return {n: entry / n if entry and (entry / n).is_file() else store.path(n) for n in names}


def validate_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """A judge checks a sample of the generated rows (see `distiller.generation.validation`)."""
    from distiller.generation import bootstrap_mode, stage_fingerprint

    if cfg.teacher.offline:
        # Not recorded in the manifest: an offline run keeps exactly the stages it always had.
        return StageResult(
            stage="validate",
            status="skipped",
            message="offline teacher: no LLM-written rows to judge (inverse-cloze rows are cut from "
            "their chunks)",
        )
    if not cfg.validation.enabled:
        skipped = StageResult(
            stage="validate",
            status="skipped",
            message="validation disabled (validation.enabled: false): Q&A pairs stay unvalidated",
        )
        store.record_stage(skipped)
        return skipped
    names = ("qa_pairs.parquet", "queries.parquet", "passages.parquet")
    files = _generated_files(store, names)
    if missing := [n for n in names if not files[n].is_file()]:
        raise StageError(f"validate needs {', '.join(missing)}: run generate first")
    key = stage_key(
        "validate",
        VERSIONS["validate"],
        _config_hash(cfg, "teacher", "validation", "budget") + stage_fingerprint(cfg, "validate"),
        [files[n] for n in names],
    )
    # Read now: run_stage clears the outputs (qa_pairs, queries) before `run`, and they may be the inputs.
    qa_pairs = read_parquet(files["qa_pairs.parquet"], QAPair)
    queries = read_parquet(files["queries.parquet"], Query)

    def run() -> dict[str, Any]:
        from distiller.generation.validation import validate

        try:
            passages = read_parquet(files["passages.parquet"], Passage)
            res = validate(cfg, store.dir, qa_pairs, queries, passages, bootstrap_mode(cfg))
        except BaseException:
            # Leave the run folder whole: the generated rows go back where the stage found them.
            write_parquet(store.path("qa_pairs.parquet"), qa_pairs, QAPair)
            write_parquet(store.path("queries.parquet"), queries, Query)
            raise
        write_parquet(store.path("judgments.parquet"), res.judgments, Judgment)
        write_parquet(store.path("qa_pairs.parquet"), res.qa_pairs, QAPair)
        write_parquet(store.path("queries.parquet"), res.queries, Query)
        return {"message": res.message, "details": res.details, "cost_usd": res.cost_usd}

    return store.run_stage("validate", key, ["judgments.parquet", "qa_pairs.parquet", "queries.parquet"], run)


def labeled_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """Labeled mode: the user's own Q&A pairs are the queries and (chunked) answers the corpus; they
    stand in for ingest + generate."""
    from distiller.labeled import load_labeled
    from distiller.store import sha256_file

    if not cfg.input.qa_file:
        raise StageError("labeled mode needs input.qa_file (--qa-file)")
    qa_path = Path(cfg.input.qa_file)
    if not qa_path.is_file():
        raise StageError(f"{qa_path}: no such file (--qa-file)")
    tokenizer = cfg.chunking.tokenizer or cfg.training.student
    key = stage_key(
        "labeled",
        VERSIONS["labeled"],
        _config_hash(cfg, "input", "chunking", "split", exclude={"input": {"paths", "qa_file"}}) + tokenizer,
        [sha256_file(qa_path)],
    )

    def run() -> dict[str, Any]:
        passages, queries = load_labeled(cfg)
        text = {p.passage_id: p.text for p in passages}
        qa_pairs = [
            QAPair(
                qa_id=q.query_id,
                question=q.text,
                answer="\n".join(text[pid] for pid in q.positive_ids),
                source_chunk=q.positive_ids[0],
                doc_id=q.doc_id,
                split=q.split,
                teacher="labeled",
                validation="approved",  # the user's own ground truth
            )
            for q in queries
        ]
        write_parquet(store.path("passages.parquet"), passages, Passage)
        write_parquet(store.path("queries.parquet"), queries, Query)
        write_parquet(store.path("qa_pairs.parquet"), qa_pairs, QAPair)
        by_split: dict[str, int] = {}
        for q in queries:
            by_split[q.split] = by_split.get(q.split, 0) + 1
        groups = len({q.doc_id for q in queries})
        splits = ", ".join(f"{k} {v}" for k, v in sorted(by_split.items()))
        return {
            "message": f"{len(queries)} questions ({splits}) in {groups} groups, {len(passages)} passages",
            "details": {"queries_by_split": by_split, "groups": groups},
        }

    return store.run_stage("labeled", key, ["passages.parquet", "queries.parquet", "qa_pairs.parquet"], run)


def _model_ref(store: RunStore, cfg: DistillConfig, iteration: int) -> tuple[str, Path | str]:
    """(model to load, what identifies it in a cache key) for the model that starts iteration k."""
    from distiller.models import resolve_student

    if iteration <= 1:
        ref = resolve_student(cfg.training.student)
        p = Path(ref)
        # A local folder is identified by its name (packaged or user model); contents are hashed only
        # for trained iterations, whose files this pipeline wrote.
        return ref, f"{cfg.training.student}|{p.name if p.exists() else ref}"
    prev = store.path(f"models/iter{iteration - 1}")
    if not prev.is_dir():
        raise StageError(f"iteration {iteration} needs models/iter{iteration - 1}: run train for it first")
    return str(prev), prev


def _judges_negatives(cfg: DistillConfig) -> bool:
    from distiller.generation.validation import judge_endpoint

    return cfg.mining.judge_negatives and not judge_endpoint(cfg).offline


def mine_stage(store: RunStore, cfg: DistillConfig, iteration: int) -> StageResult:
    from distiller.mining import mine_triplets
    from distiller.models import load_student

    passages_p, queries_p = store.path("passages.parquet"), store.path("queries.parquet")
    if not (passages_p.is_file() and queries_p.is_file()):
        raise StageError("mine needs passages.parquet and queries.parquet: run generate first")
    model_path, model_id = _model_ref(store, cfg, iteration)
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
        inputs.append(_config_hash(cfg, "teacher", "validation", "budget") + fingerprint(JUDGE_NEGATIVE))
    key = stage_key(
        "mine", VERSIONS["mine"], _config_hash(cfg, "mining") + cfg.training.kind + str(iteration), inputs
    )
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
            from distiller.mining_judge import judge_negatives

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


def training_settings(cfg: DistillConfig) -> TrainingConfig:
    """The training section as used: offline pseudo-queries train at training.offline_learning_rate;
    labeled and LLM-taught runs at training.learning_rate."""
    lr = cfg.training.offline_learning_rate
    if cfg.teacher.offline and not cfg.input.qa_file and lr is not None:
        return cfg.training.model_copy(update={"learning_rate": lr})
    return cfg.training


def train_stage(store: RunStore, cfg: DistillConfig, iteration: int) -> StageResult:
    from distiller.training import train_student

    triplets_p = store.path(f"triplets_iter{iteration}.parquet")
    if not triplets_p.is_file():
        raise StageError(f"train needs triplets_iter{iteration}.parquet: run mine first")
    model_path, model_id = _model_ref(store, cfg, iteration)
    key = stage_key(
        "train",
        VERSIONS["train"],
        # Where training runs (a deployment or in-process) and how often it checkpoints by time do not
        # change what it makes.
        _config_hash(
            cfg, "training", exclude={"training": {"deployment", "deployment_timeout_s", "save_minutes"}}
        )
        + str(iteration),
        [triplets_p, model_id],
    )
    out_rel = f"models/iter{iteration}"

    def run() -> dict[str, Any]:
        triplets = read_parquet(triplets_p, Triplet)
        # Checkpoints are keyed like the stage, so a changed config never resumes a stale training.
        ckpt = store.path(f"checkpoints/{key[:16]}")
        result = train_student(
            model_path, triplets, training_settings(cfg), store.path(out_rel), cfg.seed, ckpt
        )
        shutil.rmtree(ckpt, ignore_errors=True)
        return {
            "message": f"{result.steps} steps on {result.device} in {result.seconds:.0f}s"
            + (f" (resumed from {Path(result.resumed_from).name})" if result.resumed_from else ""),
            "details": {
                "steps": result.steps,
                "train_loss": result.train_loss,
                "device": result.device,
                "resumed_from": result.resumed_from,
                "triplets": len(triplets),
            },
        }

    return store.run_stage(f"train_iter{iteration}", key, [out_rel], run)


def evaluate_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    """Base model, BM25 and every iteration's model on the held-out queries (and on the user's eval file,
    which then selects); the best goes to models/best, the base when no iteration beats it."""
    from distiller.evaluation import evaluate_bm25, evaluate_model, select_best
    from distiller.modelcard import write_model_card
    from distiller.models import load_student

    passages_p, queries_p = store.path("passages.parquet"), store.path("queries.parquet")
    iters = cfg.mining.iterations
    model_dirs = [store.path(f"models/iter{k}") for k in range(1, iters + 1)]
    missing = [str(p) for p in model_dirs if not p.is_dir()]
    if missing:
        raise StageError(f"evaluate needs the trained models: missing {', '.join(missing)}")
    base_path, base_id = _model_ref(store, cfg, 1)
    eval_file = Path(cfg.evaluation.eval_file).expanduser() if cfg.evaluation.eval_file else None
    key = stage_key(
        "evaluate",
        VERSIONS["evaluate"],
        _config_hash(cfg, "evaluation") + cfg.training.kind + str(cfg.training.max_seq_length),
        [
            passages_p,
            queries_p,
            base_id,
            *model_dirs,
            *_eval_inputs(store, eval_file),
        ],
    )

    def run() -> dict[str, Any]:
        passages = read_parquet(passages_p, Passage)
        queries = [q for q in read_parquet(queries_p, Query) if q.split == "test"]
        if not queries:
            raise StageError(
                "no held-out (test) queries to evaluate on: the corpus needs more documents"
                + budget_cause(store)
            )
        own_set = query_set_of(queries)
        real = _load_eval_set(store, cfg, passages)
        ks = cfg.evaluation.ks
        kind, msl = cfg.training.kind, cfg.training.max_seq_length
        rows: list[MetricRow] = []
        rows += evaluate_bm25(passages, queries, ks, query_set=own_set)
        if real:
            rows += evaluate_bm25(real.corpus, real.queries, ks, query_set="eval-file", unit_of=real.unit_of)
        for name, k, path in [
            ("base", 0, base_path),
            *((f"iter{k}", k, str(d)) for k, d in enumerate(model_dirs, 1)),
        ]:
            model = load_student(path, kind=kind, max_seq_length=msl)
            rows += evaluate_model(model, passages, queries, ks, name, k, query_set=own_set)
            if real:
                rows += evaluate_model(
                    model, real.corpus, real.queries, ks, name, k, query_set="eval-file", unit_of=real.unit_of
                )
        write_parquet(store.path("metrics.parquet"), rows, MetricRow)
        metric = cfg.evaluation.metric
        best, chosen = select_best(rows, metric)
        best_dir = store.path("models/best")
        if best_dir.exists():
            shutil.rmtree(best_dir)
        src = base_path if best == "base" else str(store.path(f"models/{best}"))
        shutil.copytree(src, best_dir)
        (best_dir / "distiller_best.txt").write_text(f"{best}\n", encoding="utf-8")
        write_model_card(store.dir, best=best)  # Hub-ready: base model id, labelled metrics, training
        table = {r.model: r.value for r in rows if r.metric == metric and r.query_set == chosen}
        n_sel = next(r.n_queries for r in rows if r.query_set == chosen)
        label = query_set_label(chosen)
        verdict = (
            f"models/best is the base model: no trained iteration beat it on {label}"
            if best == "base"
            else f"best: {best} on {label}"
        )
        warning = OFFLINE_WARNING if chosen == "inverse-cloze" else None
        return {
            "message": f"{verdict} ({metric} "
            + ", ".join(f"{m} {v:.3f}" for m, v in table.items())
            + f"; {n_sel} queries)"
            + (f". {warning}" if warning else ""),
            "details": {
                "best": best,
                "metric": metric,
                "values": table,
                "selected_on": chosen,
                "selected_on_label": label,
                "held_out_queries": len(queries),
                "eval_file": real.path if real else None,
                "eval_queries": len(real.queries) if real else None,
                "eval_notes": real.notes if real else [],
                "warning": warning,
            },
        }

    return store.run_stage("evaluate", key, ["metrics.parquet", "models/best"], run)


def _eval_inputs(store: RunStore, eval_file: Path | None) -> list[Path]:
    """What the eval set is read from: the file (a BEIR queries.jsonl: its folder, qrels included) and
    the documents and chunks its ids are matched against."""
    if eval_file is None or not eval_file.exists():
        return []
    src = eval_file.parent if eval_file.name == "queries.jsonl" else eval_file
    return [src, store.path("sources.parquet"), store.path("chunks.parquet")]


def _load_eval_set(store: RunStore, cfg: DistillConfig, passages: list[Passage]) -> Any:
    """The user's eval file read against this run's corpus (documents and chunks in document mode)."""
    if not cfg.evaluation.eval_file:
        return None
    from distiller.evalset import load_eval_file

    docs_p, chunks_p = store.path("sources.parquet"), store.path("chunks.parquet")
    documents = read_parquet(docs_p, Document) if docs_p.is_file() else []
    chunks = read_parquet(chunks_p, Chunk) if chunks_p.is_file() and documents else []
    return load_eval_file(cfg.evaluation.eval_file, documents, chunks, passages)


def export_stage(store: RunStore, cfg: DistillConfig, command: str | None = None) -> StageResult:
    from distiller.export import export_run

    inputs = [p for p in sorted(store.dir.glob("*.parquet")) if p.name != "ledger.parquet"]
    key = stage_key("export", VERSIONS["export"], _config_hash(cfg, "export", "split", "validation"), inputs)

    def run() -> dict[str, Any]:
        res = export_run(store.dir, cfg.export.formats, cfg.split, cfg.seed, command=command)
        return {
            "message": f"{len(res.files)} files in {Path(res.out_dir).name}/",
            "details": {"files": res.files},
        }

    return store.run_stage("export", key, ["exports"], run)


def report_stage(store: RunStore, cfg: DistillConfig) -> StageResult:
    from distiller.report import render_report

    inputs = [p for p in sorted(store.dir.glob("*.parquet"))]
    # The report shows the run's name and folder: another run with equal artifacts must not lend its own.
    key = stage_key("report", VERSIONS["report"], store.name, inputs)

    def run() -> dict[str, Any]:
        path = render_report(store.dir)
        return {"message": f"report at {path}"}

    return store.run_stage("report", key, ["report.html"], run)


def run_pipeline(
    cfg: DistillConfig, progress: Progress | None = None, command: str | None = None
) -> RunStore:
    """The whole pipeline without Prefect (used by tests and `distill run --no-prefect`)."""
    with lock_run(cfg):
        return _run_pipeline(cfg, progress, command)


def _run_pipeline(cfg: DistillConfig, progress: Progress | None, command: str | None) -> RunStore:
    store = open_store(cfg)
    from distiller.generation import bootstrap_mode

    if cfg.input.qa_file:
        labeled_stage(store, cfg)
    else:
        if bootstrap_mode(cfg):
            bootstrap_stage(store, cfg)
        else:
            ingest_stage(store, cfg, progress)
        generate_stage(store, cfg)
        validate_stage(store, cfg)
    for k in range(1, cfg.mining.iterations + 1):
        mine_stage(store, cfg, k)
        train_stage(store, cfg, k)
    evaluate_stage(store, cfg)
    export_stage(store, cfg, command)
    report_stage(store, cfg)
    return store


def summary_markdown(store: RunStore) -> str:
    """The run at a glance, as Markdown (the flow's final Prefect artifact)."""
    lines = [
        f"# Run `{store.name}`",
        "",
        "| stage | status | outputs | seconds | note |",
        "|---|---|---|---|---|",
    ]
    for name, r in store.stage_results().items():
        outs = ", ".join(f"{k} ({v})" if v >= 0 else k for k, v in r.outputs.items())
        lines.append(
            f"| {name} | {r.status} | {outs} | {r.seconds:.1f} | {(r.message or '').replace('|', '/')} |"
        )
    cost = store.manifest().get("llm_cost")
    if cost:  # the ledger's figures (store.record_stage), the same as `distill status` and the report
        by = ", ".join(f"{k} ${v:.4f}" for k, v in cost["by_stage"].items())
        lines += ["", f"LLM cost (ledger): ${cost['total_usd']:.4f} ({by})"]
    metrics = store.path("metrics.parquet")
    if metrics.is_file():
        from distiller.modelcard import ordered_metrics

        for qs, rows in rows_by_set(read_parquet(metrics, MetricRow)).items():
            names = ordered_metrics(r.metric for r in rows)  # MRR@1, @5, @10, Recall@..., nDCG@10
            value = {(r.model, r.metric): r.value for r in rows}
            lines += ["", f"## Retrieval metrics on {query_set_label(qs)} ({rows[0].n_queries} queries)", ""]
            if qs == "inverse-cloze":
                lines += [f"> {OFFLINE_WARNING}", ""]
            lines.append("| model | " + " | ".join(names) + " |")
            lines.append("|---" * (len(names) + 1) + "|")
            for m in dict.fromkeys(r.model for r in rows):
                lines.append(
                    f"| {m} | " + " | ".join(f"{value.get((m, k), float('nan')):.4f}" for k in names) + " |"
                )
    skipped = store.manifest().get("skipped_inputs", [])
    if skipped:
        lines += ["", f"## Skipped inputs ({len(skipped)})", ""]
        lines += [
            f"- `{s['path']}{':' + str(s['line']) if s.get('line') else ''}`: {s['reason']}" for s in skipped
        ]
    return "\n".join(lines)
