"""The `distill` commands (`fuse` lives in `distiller.cli.fuse`): each one reads its flags into config
overrides through the option table (`distiller.cli.options`), then calls `distiller` or the flows."""

from __future__ import annotations

import contextlib
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.table import Table

from distiller.cli.base import app, fail, hold_run, load_or_fail, prefect_env, run_flow_with_retry
from distiller.cli.options import (
    BaseUrlOpt,
    BudgetOpt,
    BudgetPolicyOpt,
    ChunkSizeOpt,
    ConceptsOpt,
    ConfigOpt,
    DomainOpt,
    InputPriceOpt,
    JsonOpt,
    LanguageOpt,
    ModelOpt,
    OutputPriceOpt,
    RunNameOpt,
    RunsDirOpt,
    TeacherOpt,
    TemplateOpt,
    config_overrides,
)
from distiller.cli.render import (
    console,
    live_stages,
    llm_progress_lines,
    mix_text,
    out,
    print_skipped,
    print_status,
    print_table,
    said_once,
    work_progress,
)
from distiller.config import DistillConfig
from distiller.errors import DistillError
from distiller.preflight import preflight


def run_with_prefect(cfg: DistillConfig, command: str) -> Path:
    from flows.distill import distill
    from flows.stages import with_runner

    def call() -> dict[str, Any]:
        return cast(dict[str, Any], with_runner(distill, cfg)(config=cfg, command=command))

    return run_flow_with_retry(call)


@app.command()
def run(
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="A file, folder or glob of .txt/.md/.pdf/.html/.jsonl. Repeatable."
        ),
    ] = None,
    config: ConfigOpt = None,
    run_name: RunNameOpt = None,
    runs_dir: RunsDirOpt = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for sampling, splits and training \\[default: 13].")
    ] = None,
    qa_file: Annotated[
        str | None, typer.Option(help="Labeled mode: your own Q&A pairs (JSON, JSONL, CSV, Parquet).")
    ] = None,
    question_column: Annotated[
        str | None, typer.Option(help="Labeled mode: question column \\[default: question].")
    ] = None,
    answer_column: Annotated[
        str | None, typer.Option(help="Labeled mode: answer column \\[default: answer].")
    ] = None,
    group_column: Annotated[
        str | None, typer.Option(help="Labeled mode: split train/test by this column (topic, document).")
    ] = None,
    domain: DomainOpt = None,
    language: LanguageOpt = None,
    template: TemplateOpt = None,
    concepts: ConceptsOpt = None,
    teacher: TeacherOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    contrastive: Annotated[
        bool | None,
        typer.Option(
            "--contrastive/--no-contrastive",
            help="Negatives by the six contrastive strategies (default), or plainly related passages.",
        ),
    ] = None,
    budget: BudgetOpt = None,
    budget_policy: BudgetPolicyOpt = None,
    input_price: InputPriceOpt = None,
    output_price: OutputPriceOpt = None,
    student: Annotated[
        str | None,
        typer.Option(
            help="sentence-transformers name or path \\[default: packaged all-MiniLM-L6-v2]; 'splade' or "
            "'splade:<name or path>' for a sparse SPLADE student."
        ),
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Mine-and-train iterations \\[default: 1].")] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Training epochs per iteration \\[default: 1].")
    ] = None,
    chunk_size: ChunkSizeOpt = None,
    eval_file: Annotated[
        str | None,
        typer.Option(
            help="Your real queries (BEIR folder, or .jsonl/.csv question/answer pairs): every model is "
            "measured on them and the best on them is kept."
        ),
    ] = None,
    export_format: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="Export format(s) \\[default: jsonl]. Repeatable."),
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(help="thread (default) or dask: stage and shard tasks on a Dask cluster."),
    ] = None,
    dask_workers: Annotated[
        int | None, typer.Option(help="Worker processes of the local Dask cluster \\[default: one per core].")
    ] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(
            help="Passages per encoding shard, each cached on its own \\[default: 4096]; 0: no shards."
        ),
    ] = None,
    files_per_shard: Annotated[
        int | None,
        typer.Option(
            help="Input files per ingest shard, each cached on its own \\[default: 256]; 0: no shards."
        ),
    ] = None,
    quantize: Annotated[
        bool | None,
        typer.Option(
            "--quantize/--no-quantize", help="Int8 encoding for mining and evaluation (faster on CPU)."
        ),
    ] = None,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="Run the stages in-process without Prefect.")
    ] = False,
) -> None:
    """Run the whole pipeline: ingest → generate → mine → train → evaluate → export → report.

    Every stage writes its Parquet artifact into runs/<run-name>/ and is cached by content: run the
    same command again and nothing is redone; stop it (even with kill -9) and run it again to resume.

    Examples:

      distill run --input examples/medquad-mini

      distill run -i 'manuals/**/*.pdf' --run-name manuals --iterations 2

      distill run -c my-config.yaml --teacher openai --model gpt-4o-mini

      distill run --qa-file faq.csv --group-column topic   (labeled mode: your own Q&A pairs)

      distill run --domain legal --language de --teacher openai --model gpt-4o-mini   (bootstrap mode)
    """
    cfg = load_or_fail(config, config_overrides(locals()))
    if not cfg.input.paths and not cfg.input.qa_file and not cfg.generation.domain:
        fail(DistillError("nothing to distill: give --input (documents), --qa-file, or --domain"))
    _preflight(cfg)
    hold_run(cfg)
    prefect_env(cfg.runs_dir)
    announce_budget(cfg)
    if cfg.teacher.offline and not cfg.input.qa_file:
        console.print(
            "[yellow]No LLM configured[/]: using the offline teacher (inverse-cloze pseudo-queries: a "
            "sentence of each chunk as the query). For real questions, Q&A pairs and contrastive negatives: "
            "[bold]--teacher openai --model gpt-4o-mini[/] (OPENAI_API_KEY), [bold]--teacher anthropic "
            "--model claude-...[/] (ANTHROPIC_API_KEY), or [bold]--teacher openai --base-url "
            "http://localhost:8000/v1[/] for vLLM/Ollama/llama.cpp."
        )
        said_once("No LLM configured")
    command = "distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    live_stages()
    t0 = time.perf_counter()
    try:
        with llm_progress_lines(), work_progress():
            if no_prefect:
                from distiller.pipeline import run_pipeline

                store = run_pipeline(cfg, command=command)
                run_dir = store.dir
            else:
                run_dir = run_with_prefect(cfg, command)
    except DistillError as e:
        fail(e)
    print_status(run_dir, title=f"Run finished in {time.perf_counter() - t0:.1f}s")


@app.command()
def ingest(
    input: Annotated[list[str], typer.Option("--input", "-i", help="Files, folders or globs. Repeatable.")],
    config: ConfigOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run folder name.")] = None,
    runs_dir: RunsDirOpt = None,
    chunk_size: ChunkSizeOpt = None,
    overlap: Annotated[float | None, typer.Option(help="Chunk overlap, a fraction \\[default: 0.1].")] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Text encoding of .txt/.md/.html \\[default: utf-8].")
    ] = None,
) -> None:
    """Read and chunk documents into runs/<run-name>/chunks.parquet (no model training).

    Bad files (empty, binary, undecodable, unreadable PDF) are listed with the reason; the rest go on.

    Example:  distill ingest -i docs/ -i 'notes/*.md' --chunk-size 256
    """
    cfg = load_or_fail(config, config_overrides(locals()))
    hold_run(cfg)
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from distiller.stages import ingest_stage, open_store

    try:
        store = open_store(cfg)
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
        ) as p:
            task = p.add_task("reading", total=None)
            res = ingest_stage(store, cfg, progress=lambda f: p.update(task, description=f"reading {f}"))
    except DistillError as e:
        fail(e)
    print_skipped(res.details.get("skipped_inputs", []))
    out.print(f"[green]{res.status}[/]: {res.message} → {store.path('chunks.parquet')}")


@app.command()
def estimate(
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Documents, as for `distill run`. Repeatable."),
    ] = None,
    config: ConfigOpt = None,
    run_name: RunNameOpt = None,
    runs_dir: RunsDirOpt = None,
    domain: DomainOpt = None,
    language: LanguageOpt = None,
    template: TemplateOpt = None,
    concepts: ConceptsOpt = None,
    teacher: TeacherOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    budget: BudgetOpt = None,
    input_price: InputPriceOpt = None,
    output_price: OutputPriceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """What a run's LLM stages will cost, before anything is spent: calls, tokens, expected and worst-case
    USD per stage against its budget. Sends no LLM call. Document mode chunks the input first (the ingest
    stage, cached for the run that follows); requests already in the call cache count as free.

    Examples:

      distill estimate -i manuals/ --teacher openai --model gpt-4o-mini

      distill estimate --domain legal --language de --concepts 100 \\
        --teacher anthropic --model claude-3-5-haiku-latest
    """
    cfg = load_or_fail(config, config_overrides(locals()))
    if not cfg.input.paths and not cfg.generation.domain:
        fail(DistillError("nothing to estimate: give --input (documents) or --domain"))
    from distiller.generation import bootstrap_mode
    from distiller.generation.estimate import plan_run
    from distiller.llm import CallCache
    from distiller.llm.estimate import estimate_cost, render_estimate
    from distiller.records import Chunk, read_parquet
    from distiller.stages import ingest_stage, open_store

    try:
        chunks: list[Chunk] = []
        if not bootstrap_mode(cfg):  # document mode chunks into the run folder: hold it
            hold_run(cfg)
            store = open_store(cfg)
            res = ingest_stage(store, cfg)
            chunks = read_parquet(store.path("chunks.parquet"), Chunk)
            console.print(f"ingest {res.status}: {res.message}")
        plan = plan_run(cfg, chunks)
        with contextlib.closing(CallCache.in_dir(cfg.cache_path)) as cache:
            est = estimate_cost(plan.requests, plan.endpoints, cfg.budget, cache=cache)
    except DistillError as e:
        fail(e)
    est.notes += plan.notes
    if json_out:
        import json

        steps = [{"stage": st, "step": step, "requests": n} for st, step, n in plan.steps]
        totals = {
            "calls": est.calls,
            "input_tokens": est.input_tokens,
            "expected_cost_usd": est.expected_cost_usd,
            "worst_case_usd": est.worst_case_usd,
        }
        print(
            json.dumps({"steps": steps, "totals": totals, "estimate": est.model_dump(mode="json")}, indent=2)
        )
        return
    print_table(
        "Requests planned", ("stage", "step", "requests"), [(s, step, f"{n:,}") for s, step, n in plan.steps]
    )
    out.print(render_estimate(est))
    if not cfg.teacher.offline:
        from distiller.generation.estimate import budget_plan

        with contextlib.closing(CallCache.in_dir(cfg.cache_path)) as cache:
            out.print(f"budget: {budget_plan(cfg, chunks, cache).coverage()}")
    if cfg.teacher.offline:
        out.print("[yellow]The offline teacher makes no LLM calls[/]: name one with --teacher/--model.")


@app.command()
def status(
    run: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/medquad-mini.")],
    json_out: JsonOpt = False,
) -> None:
    """Show a run's stages (status, rows, time, cost), key figures and metrics.

    Examples:

      distill status runs/medquad-mini

      distill status runs/medquad-mini --json | jq .figures.best_value
    """
    if not (run / "manifest.json").is_file():
        fail(DistillError(f"{run}: not a run folder (no manifest.json)"))
    if json_out:
        from distiller.summary import status_json

        print(status_json(run))
        return
    print_status(run, title=f"Run {run.name}")


@app.command()
def runs(
    runs_dir: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("runs"),
    json_out: JsonOpt = False,
) -> None:
    """List the runs in a folder with their state and key figures.

    Examples:

      distill runs runs/

      distill runs --json
    """
    from distiller.summary import runs_json, runs_table

    if json_out:
        print(runs_json(runs_dir))
        return
    out.print(runs_table(runs_dir))


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/medquad-mini.")],
    fmt: Annotated[
        list[str],
        typer.Option(
            "--format",
            "-f",
            help="jsonl, json, csv, tsv, alpaca, sharegpt (Q&A); triplets, ntuple, triplets-full, splade "
            "(retrieval); hf (all, load_from_disk). Repeat or comma-separate.",
        ),
    ] = ["jsonl"],  # noqa: B006 - typer reads the default
    split: Annotated[
        bool, typer.Option("--split", help="Re-split by document with the ratios below.")
    ] = False,
    train_ratio: Annotated[
        float | None,
        typer.Option(
            "--train-ratio", help="Share of documents for train \\[default: the run's split.train_ratio]."
        ),
    ] = None,
    val_ratio: Annotated[
        float | None,
        typer.Option(
            "--val-ratio", help="Share of documents for validation \\[default: the run's split.val_ratio]."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Split seed \\[default: the run's seed].")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder the formats go into, one subfolder each \\[default: RUN/exports]. A folder holds "
            "one split: formats already there are written again when the split changes.",
        ),
    ] = None,
    unvalidated: Annotated[
        str | None, typer.Option(help="keep | drop rows no judge checked \\[default: the run's policy].")
    ] = None,
) -> None:
    """Export a run's approved data in the formats trainers read, split by source document.

    No document and no near-duplicate query crosses splits; rejected rows are never exported.

    Examples:

      distill export runs/medquad-mini -f jsonl -f sharegpt

      distill export runs/medquad-mini -f hf --split --train-ratio 0.8 --val-ratio 0.1
    """
    from rich.markup import escape

    from distiller.export import export_run, split_from_ratios

    command = "distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        res = export_run(
            run,
            fmt,
            split_from_ratios(train_ratio, val_ratio, run) if split else None,
            seed,
            out_dir=out_dir,
            command=command,
            unvalidated_policy=cast("Literal['keep', 'drop'] | None", unvalidated),
        )
    except DistillError as e:
        fail(e)
    t = Table(title=f"Exported to {res.out_dir}")
    t.add_column("file")
    t.add_column("rows", justify="right")
    for f, n in res.files.items():
        t.add_row(f, str(n))
    out.print(t)
    for why, n in res.dropped.items():
        out.print(f"left out: {n} {escape(why)}")
    for note in res.notes:
        out.print(f"[yellow]note:[/] {escape(note)}")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="A run folder.")]) -> None:
    """Write RUN/report.html, a self-contained page of plots and samples.

    It needs no network to view: the funnel, costs against budget, approval rate, score
    distributions and metrics of a run.

    Example:  distill report runs/medquad-mini
    """
    from distiller.report import render_report

    try:
        out.print(f"report: {render_report(run)}")
    except DistillError as e:
        fail(e)


@app.command()
def push(
    run: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/medquad-mini.")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Model repository on the Hub, ORG/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repositories private.")] = False,
    dataset_repo_id: Annotated[
        str | None,
        typer.Option(
            "--dataset-repo-id", help="Also publish RUN/exports as this dataset repository, ORG/NAME."
        ),
    ] = None,
    license: Annotated[
        str | None,
        typer.Option(help="Licence id for the model card \\[default: the base model's, when known]."),
    ] = None,
) -> None:
    """Publish the run's best model (with its Hub-ready card) and, with --dataset-repo-id, its exports
    (with a dataset card whose configs load each format) to the Hugging Face Hub.

    The token comes from HF_TOKEN (a write token); HF_ENDPOINT points at another Hub.

    Examples:

      HF_TOKEN=hf_... distill push runs/medquad-mini --repo-id acme/medquad-minilm

      distill push runs/medquad-mini --repo-id acme/medquad-minilm --dataset-repo-id acme/medquad-data \\
        --private
    """
    from distiller.push import push_run

    try:
        res = push_run(run, repo_id, private=private, dataset_repo_id=dataset_repo_id, license=license)
    except DistillError as e:
        fail(e)
    out.print(f"model: {res.model_url} ({len(res.files[repo_id])} files)")
    if res.dataset_url and dataset_repo_id:
        out.print(f"dataset: {res.dataset_url} ({len(res.files[dataset_repo_id])} files)")


def _preflight(cfg: DistillConfig) -> None:
    try:
        preflight(cfg)
    except DistillError as e:
        fail(e)


def announce_budget(cfg: DistillConfig) -> None:
    """Before anything is sent: what the budget buys (the plan splits it over the LLM steps), and with
    `--budget-policy strict` a refusal when it does not cover the estimate. Document mode chunks the input
    first (the ingest stage, cached for the run that follows)."""
    if cfg.teacher.offline or cfg.input.qa_file:
        return
    from distiller.generation import bootstrap_mode
    from distiller.stages import ingest_stage, open_store, plan_llm_budget

    try:
        store = open_store(cfg)
        if not bootstrap_mode(cfg):
            ingest_stage(store, cfg)
        plan = plan_llm_budget(store, cfg, announce=False)
    except DistillError as e:
        fail(e)
    if plan is not None:
        style = "green" if plan.covered else "yellow"
        console.print(f"[{style}]budget:[/] {plan.coverage()}")


@app.command()
def bootstrap(
    domain: Annotated[str, typer.Option(help="The domain, e.g. legal, medical, 'maritime law'.")],
    language: LanguageOpt = None,
    concepts: ConceptsOpt = None,
    template: TemplateOpt = None,
    config: ConfigOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run folder (default: <domain>-<language>).")] = None,
    runs_dir: RunsDirOpt = None,
    teacher: TeacherOpt = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    input_price: InputPriceOpt = None,
    output_price: OutputPriceOpt = None,
) -> None:
    """Ask the LLM for a domain's knowledge base: concepts (term, definition, example, related terms) and
    relationships (type, description, examples), in batches until the count is reached, de-duplicated,
    into runs/<run-name>/concepts.parquet. `distill run --domain ...` continues from it.

    Examples:

      distill bootstrap --domain legal --language de --concepts 100 --teacher openai --model gpt-4o-mini

      distill bootstrap --domain 'maritime law' --template legal --teacher openai --base-url http://localhost:8000/v1
    """
    cfg = load_or_fail(config, config_overrides(locals()))
    if cfg.input.paths or cfg.input.qa_file:
        fail(DistillError("bootstrap is for a domain without documents: this config names input files"))
    _preflight(cfg)
    hold_run(cfg)
    from rich.markup import escape

    from distiller.records import Concept, read_parquet
    from distiller.stages import bootstrap_stage, open_store

    try:
        store = open_store(cfg)
        with llm_progress_lines(every_s=2.0):
            res = bootstrap_stage(store, cfg)
    except DistillError as e:
        fail(e)
    rows = read_parquet(store.path("concepts.parquet"), Concept)
    print_table(
        f"{len(rows)} rows in {store.path('concepts.parquet')} (first 10)",
        ("kind", "term", "definition", "related"),
        [(c.kind, c.term, c.definition[:160], ", ".join(c.related_terms)) for c in rows[:10]],
    )
    out.print(f"[green]{res.status}[/]: {escape(res.message or '')}")


@app.command()
def templates(
    templates_dir: Annotated[
        str | None, typer.Option(help="Also your own folder (domains/*.yaml); env DISTILL_TEMPLATES_DIR.")
    ] = None,
) -> None:
    """List the domain templates: the packaged ones and your own (drop a YAML file into a folder named by
    --templates-dir, generation.templates_dir or DISTILL_TEMPLATES_DIR, under domains/)."""
    from distiller.templates import list_domains

    try:
        found = list_domains(templates_dir)
    except DistillError as e:
        fail(e)
    columns = ("name", "description", "complexity mix", "query types", "file")
    rows = [
        (d.name, d.description, mix_text(d.complexity_mix), mix_text(d.query_types), d.source) for d in found
    ]
    print_table("Domain templates", columns, rows)


@app.command()
def languages(
    templates_dir: Annotated[
        str | None, typer.Option(help="Also your own folder (languages/*.yaml); env DISTILL_TEMPLATES_DIR.")
    ] = None,
) -> None:
    """List the languages generated data can be written in (add one as languages/<code>.yaml)."""
    from distiller.templates import list_languages

    try:
        found = list_languages(templates_dir)
    except DistillError as e:
        fail(e)
    columns = ("code", "name", "native name", "example query", "file")
    rows = [
        (lang.code, lang.name, lang.native_name, next(iter(lang.examples.values()), ""), lang.source)
        for lang in found
    ]
    print_table("Languages", columns, rows)
