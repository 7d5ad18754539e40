"""`distill`: the command line. Every command is a thin wrapper over `distiller` and `flows`."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from distiller.cli_errors import FriendlyErrors, exit_code, hold_until_command_ends, user_error_line
from distiller.errors import DistillError

app = typer.Typer(
    name="distill",
    help="Turn a domain's documents (or just its name) into retrieval training data and a "
    "domain-adapted embedding model.\n\nQuick start:  distill run --input examples/medquad-mini",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.info.cls = FriendlyErrors  # errors that escape a command: one line and an exit code, no traceback
# Wide enough for the tables when the output is a log, not a terminal.
_WIDTH = None if sys.stdout.isatty() else 160
console = Console(stderr=True, width=_WIDTH)
out = Console(width=_WIDTH)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see README, 'Configuration'). Flags override it."),
]
RunsDirOpt = Annotated[
    str | None, typer.Option("--runs-dir", help="Folder of run folders \\[default: runs].")
]
DomainOpt = Annotated[
    str | None, typer.Option(help="Bootstrap mode (no documents): the domain, e.g. legal, 'maritime law'.")
]
LanguageOpt = Annotated[
    str | None, typer.Option(help="Language of the generated data: en, de, es, fr (distill languages).")
]
TemplateOpt = Annotated[
    str | None,
    typer.Option(help="Domain template (distill templates); default: the domain's own, else general."),
]
ConceptsOpt = Annotated[int | None, typer.Option(help="Bootstrap: concepts to generate (default 50).")]
TeacherOpt = Annotated[
    str | None, typer.Option(help="offline | openai | anthropic (default: offline, no LLM needed).")
]
ModelOpt = Annotated[str | None, typer.Option(help="Teacher model, e.g. gpt-4o-mini.")]
BaseUrlOpt = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama).")
]
InputPriceOpt = Annotated[
    float | None,
    typer.Option(help="Teacher's input price, USD per million tokens (0 for a self-hosted model)."),
]
OutputPriceOpt = Annotated[
    float | None,
    typer.Option(help="Teacher's output price, USD per million tokens \\[default: the price library's]."),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option("--budget", help="Hard cap on the run's LLM spend in USD \\[default: 5]; 0 sends nothing."),
]
BudgetPolicyOpt = Annotated[
    str | None,
    typer.Option(
        "--budget-policy",
        help="partial: a budget short of the estimate is split over every LLM step [default]; "
        "strict: refuse to start.",
    ),
]


PREFECT_START_WAIT_S = 90


def _prefect_start_failed(e: BaseException | None) -> bool:
    """Prefect's embedded API server did not answer in time (the error may come wrapped)."""
    while e is not None:
        if "ephemeral Prefect API server" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _stop_unstarted_prefect_server() -> None:
    """Prefect leaves the server process it gave up waiting for running (and orphaned at exit)."""
    with contextlib.suppress(Exception):
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):
            proc = getattr(server, "server_process", None)
            if proc is not None and proc.poll() is None:
                proc.kill()  # not terminate: its shutdown prints tracebacks of the half-made database
                proc.wait(10)


def _run_with_prefect(cfg: Any, command: str) -> Path:
    from flows.distill import distill
    from flows.stages import with_runner

    return run_flow_with_retry(lambda: with_runner(distill, cfg)(config=cfg, command=command))


def run_flow_with_retry(call: Callable[[], dict[str, Any]]) -> Path:
    """A flow under Prefect; if its embedded server does not start, once more, then one line that says
    so and what runs without it (no traceback). Returns the flow's run_dir."""
    _quiet_expected_errors()
    for attempt in (1, 2):
        try:
            return Path(call()["run_dir"])
        except Exception as e:
            if not _prefect_start_failed(e):
                raise
            _stop_unstarted_prefect_server()
            if attempt == 1:
                console.print("[yellow]Prefect's local API server did not start in time: trying once more[/]")
                continue
            wait = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", PREFECT_START_WAIT_S)
            _fail(
                DistillError(
                    f"Prefect's local API server did not start within {wait} s, twice (the machine may be "
                    "busy; PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS sets the wait). "
                    "`--no-prefect` runs the same stages without Prefect."
                )
            )
    raise AssertionError("unreachable")


def _version(value: bool) -> None:
    if value:
        from distiller import __version__

        out.print(f"domain-distiller {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    # Before any library loads: their own progress bars and load reports would interleave with ours.
    from distiller.progress import quiet_libraries

    quiet_libraries()


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of tables.")]


def _prefect_env(runs_dir: str) -> None:
    """With no Prefect server configured, run Prefect in its embedded (SQLite) mode with its home
    inside the runs folder, so a fresh machine needs nothing set up."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(Path(runs_dir).resolve() / ".prefect"))
        # Prefect does not create missing parents of its home: on a fresh clone runs/ does not exist.
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # Prefect waits 20 s for its embedded API server to answer; a busy machine (load 8 on 2 cores)
    # needs longer, and a run that fails before any work for that is worse than one that waits.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(PREFECT_START_WAIT_S))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    if value is None or value == [] or value == ():
        return
    *parents, leaf = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _set_teacher(
    d: dict[str, Any],
    provider: str | None,
    model: str | None,
    base_url: str | None,
    input_price: float | None,
    output_price: float | None,
) -> None:
    """The teacher flags that run, estimate and bootstrap share."""
    for field, value in (
        ("provider", provider),
        ("model", model),
        ("base_url", base_url),
        ("input_price_per_mtok", input_price),
        ("output_price_per_mtok", output_price),
    ):
        _set(d, f"teacher.{field}", value)


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}", soft_wrap=True)
    raise typer.Exit(code=exit_code(e))


def _hold_run(cfg: Any) -> None:
    """Lock the run folder until the command ends: a second process on the same run name is refused
    with the holder's PID (distiller.runlock) before it touches anything."""
    from distiller.pipeline import lock_run

    hold_until_command_ends(lock_run(cfg))


def _load(config: Path | None, overrides: dict[str, Any]):
    from distiller.config import load_config

    try:
        return load_config(config, overrides)
    except DistillError as e:
        _fail(e)


@app.command()
def run(
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", help="A file, folder or glob of .txt/.md/.pdf/.html/.jsonl. Repeatable."
        ),
    ] = None,
    config: ConfigOpt = None,
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name \\[default: from the input's name].")
    ] = None,
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
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in tokens \\[default: 200].")] = None,
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
    overrides: dict[str, Any] = {}
    _set(overrides, "input.paths", list(input or []))
    _set(overrides, "input.qa_file", qa_file)
    _set(overrides, "input.question_column", question_column)
    _set(overrides, "input.answer_column", answer_column)
    _set(overrides, "input.group_column", group_column)
    _set_generation(overrides, domain, language, template, concepts)
    _set(overrides, "generation.contrastive", contrastive)
    _set(overrides, "run_name", run_name)
    _set(overrides, "runs_dir", runs_dir)
    _set(overrides, "seed", seed)
    _set_teacher(overrides, teacher, model, base_url, input_price, output_price)
    _set(overrides, "budget.run_usd", budget)
    _set(overrides, "budget.policy", budget_policy)
    _set(overrides, "training.student", student)
    _set(overrides, "mining.iterations", iterations)
    _set(overrides, "training.epochs", epochs)
    _set(overrides, "chunking.chunk_size", chunk_size)
    _set(overrides, "evaluation.eval_file", eval_file)
    _set(overrides, "export.formats", list(export_format or []))
    cfg = _load(config, overrides)
    if not cfg.input.paths and not cfg.input.qa_file and not cfg.generation.domain:
        _fail(DistillError("nothing to distill: give --input (documents), --qa-file, or --domain"))
    _preflight(cfg)
    _hold_run(cfg)
    _prefect_env(cfg.runs_dir)
    _announce_budget(cfg)
    if cfg.teacher.offline and not cfg.input.qa_file:
        console.print(
            "[yellow]No LLM configured[/]: using the offline teacher (inverse-cloze pseudo-queries: a "
            "sentence of each chunk as the query). For real questions, Q&A pairs and contrastive negatives: "
            "[bold]--teacher openai --model gpt-4o-mini[/] (OPENAI_API_KEY), [bold]--teacher anthropic "
            "--model claude-...[/] (ANTHROPIC_API_KEY), or [bold]--teacher openai --base-url "
            "http://localhost:8000/v1[/] for vLLM/Ollama/llama.cpp."
        )
        _said_once("No LLM configured")
    command = "distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    _live_stages()
    t0 = time.perf_counter()
    try:
        with _llm_progress_lines(), _work_progress():
            if no_prefect:
                from distiller.pipeline import run_pipeline

                store = run_pipeline(cfg, command=command)
                run_dir = store.dir
            else:
                run_dir = _run_with_prefect(cfg, command)
    except DistillError as e:
        _fail(e)
    _print_status(run_dir, title=f"Run finished in {time.perf_counter() - t0:.1f}s")


@app.command()
def ingest(
    input: Annotated[list[str], typer.Option("--input", "-i", help="Files, folders or globs. Repeatable.")],
    config: ConfigOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run folder name.")] = None,
    runs_dir: RunsDirOpt = None,
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in tokens \\[default: 200].")] = None,
    overlap: Annotated[float | None, typer.Option(help="Chunk overlap, a fraction \\[default: 0.1].")] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Text encoding of .txt/.md/.html \\[default: utf-8].")
    ] = None,
) -> None:
    """Read and chunk documents into runs/<run-name>/chunks.parquet (no model training).

    Bad files (empty, binary, undecodable, unreadable PDF) are listed with the reason; the rest go on.

    Example:  distill ingest -i docs/ -i 'notes/*.md' --chunk-size 256
    """
    overrides: dict[str, Any] = {}
    _set(overrides, "input.paths", list(input))
    _set(overrides, "run_name", run_name)
    _set(overrides, "runs_dir", runs_dir)
    _set(overrides, "chunking.chunk_size", chunk_size)
    _set(overrides, "chunking.overlap", overlap)
    _set(overrides, "input.encoding", encoding)
    cfg = _load(config, overrides)
    _hold_run(cfg)
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from distiller.pipeline import ingest_stage, open_store

    try:
        store = open_store(cfg)
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True
        ) as p:
            task = p.add_task("reading", total=None)
            res = ingest_stage(store, cfg, progress=lambda f: p.update(task, description=f"reading {f}"))
    except DistillError as e:
        _fail(e)
    _print_skipped(res.details.get("skipped_inputs", []))
    out.print(f"[green]{res.status}[/]: {res.message} → {store.path('chunks.parquet')}")


@app.command()
def estimate(
    input: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="Documents, as for `distill run`. Repeatable."),
    ] = None,
    config: ConfigOpt = None,
    run_name: Annotated[
        str | None, typer.Option(help="Run folder name \\[default: from the input's name].")
    ] = None,
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
    overrides: dict[str, Any] = {}
    _set(overrides, "input.paths", list(input or []))
    _set_generation(overrides, domain, language, template, concepts)
    _set(overrides, "run_name", run_name)
    _set(overrides, "runs_dir", runs_dir)
    _set_teacher(overrides, teacher, model, base_url, input_price, output_price)
    _set(overrides, "budget.run_usd", budget)
    cfg = _load(config, overrides)
    if not cfg.input.paths and not cfg.generation.domain:
        _fail(DistillError("nothing to estimate: give --input (documents) or --domain"))
    from distiller.generation import bootstrap_mode
    from distiller.generation.estimate import plan_run
    from distiller.llm import CallCache
    from distiller.llm.estimate import estimate_cost, render_estimate
    from distiller.pipeline import ingest_stage, open_store
    from distiller.records import Chunk, read_parquet

    try:
        chunks: list[Chunk] = []
        if not bootstrap_mode(cfg):  # document mode chunks into the run folder: hold it
            _hold_run(cfg)
            store = open_store(cfg)
            res = ingest_stage(store, cfg)
            chunks = read_parquet(store.path("chunks.parquet"), Chunk)
            console.print(f"ingest {res.status}: {res.message}")
        plan = plan_run(cfg, chunks)
        with contextlib.closing(CallCache.in_dir(cfg.cache_path)) as cache:
            est = estimate_cost(plan.requests, plan.endpoints, cfg.budget, cache=cache)
    except DistillError as e:
        _fail(e)
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
    _print_table(
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
        _fail(DistillError(f"{run}: not a run folder (no manifest.json)"))
    if json_out:
        from distiller.summary import status_json

        print(status_json(run))
        return
    _print_status(run, title=f"Run {run.name}")


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
    train_ratio: Annotated[float, typer.Option("--train-ratio", help="Share of documents for train.")] = 0.8,
    val_ratio: Annotated[float, typer.Option("--val-ratio", help="Share of documents for validation.")] = 0.1,
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
            split_from_ratios(train_ratio, val_ratio) if split else None,
            seed,
            out_dir=out_dir,
            command=command,
            unvalidated_policy=unvalidated,
        )
    except DistillError as e:
        _fail(e)
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
        _fail(e)


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
        _fail(e)
    out.print(f"model: {res.model_url} ({len(res.files[repo_id])} files)")
    if res.dataset_url and dataset_repo_id:
        out.print(f"dataset: {res.dataset_url} ({len(res.files[dataset_repo_id])} files)")


def _set_generation(
    overrides: dict[str, Any],
    domain: str | None,
    language: str | None,
    template: str | None,
    concepts: int | None,
) -> None:
    _set(overrides, "generation.domain", domain)
    _set(overrides, "generation.language", language)
    _set(overrides, "generation.template", template)
    _set(overrides, "generation.concepts", concepts)


class _NoTracebackForDistillErrors(logging.Filter):
    """Prefect logs a failed task's and flow's exception with its traceback, three times over. For a
    DistillError (bad input, config, budget, price, a full disk) that is noise: the CLI prints its
    message once, which says what to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and user_error_line(record.exc_info[1]):
            return False  # a DistillError, a full disk, a permission: the CLI's one line says it
        # "Finished in state Failed('Task run encountered an exception StageError: ...')" has no exc_info
        msg = record.getMessage()
        return not ("encountered an exception" in msg and any(f" {n}:" in msg for n in _distill_errors()))


def _distill_errors() -> set[str]:
    names, todo = set(), [DistillError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def _quiet_expected_errors() -> None:
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logging.getLogger(name).addFilter(_NoTracebackForDistillErrors())


def _announce_budget(cfg: Any) -> None:
    """Before anything is sent: what the budget buys (the plan splits it over the LLM steps), and with
    `--budget-policy strict` a refusal when it does not cover the estimate. Document mode chunks the input
    first (the ingest stage, cached for the run that follows)."""
    if cfg.teacher.offline or cfg.input.qa_file:
        return
    from distiller.generation import bootstrap_mode
    from distiller.pipeline import ingest_stage, open_store, plan_llm_budget

    try:
        store = open_store(cfg)
        if not bootstrap_mode(cfg):
            ingest_stage(store, cfg)
        plan = plan_llm_budget(store, cfg, announce=False)
    except DistillError as e:
        _fail(e)
    if plan is not None:
        style = "green" if plan.covered else "yellow"
        console.print(f"[{style}]budget:[/] {plan.coverage()}")


def _preflight(cfg: Any) -> None:
    """Fail before anything starts: an unknown template or language, a model whose price is unknown (its
    spend could not be kept within the budget), or bootstrap mode with the offline teacher (a domain's
    knowledge cannot come from it)."""
    from distiller.generation import bootstrap_mode
    from distiller.generation.validation import judge_endpoint
    from distiller.llm.pricing import Pricing

    if not cfg.input.qa_file and not cfg.teacher.offline:
        from distiller.generation.context import GenContext

        try:  # an unknown template or language first: it lists the known ones
            GenContext.from_config(cfg)
        except DistillError as e:
            _fail(e)
    if not cfg.input.qa_file:
        endpoints = [cfg.teacher] + ([judge_endpoint(cfg)] if cfg.validation.enabled else [])
        for endpoint in {id(e): e for e in endpoints}.values():
            if not endpoint.offline and not (pricing := Pricing(endpoint)).known:
                _fail(
                    DistillError(
                        pricing.unknown_message() + " On the command line: --input-price and --output-price."
                    )
                )

    if bootstrap_mode(cfg) and cfg.teacher.offline:
        _fail(
            DistillError(
                "bootstrap mode (--domain, no documents) needs an LLM teacher: --teacher openai --model "
                "gpt-4o-mini (OPENAI_API_KEY), --teacher anthropic --model NAME, or --teacher openai "
                "--base-url http://localhost:8000/v1 for an OpenAI-compatible server"
            )
        )


@contextlib.contextmanager
def _llm_progress_lines(every_s: float = 5.0) -> Iterator[None]:
    """LLM stages' progress (rows, cost so far, budget left) as a line every few seconds per step."""
    from distiller.generation.progress import Throttled, progress_sink

    with progress_sink(Throttled(lambda ev: console.print(f"  [dim]{ev.line()}[/]"), every_s=every_s)):
        yield


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
    overrides: dict[str, Any] = {}
    _set_generation(overrides, domain, language, template, concepts)
    _set(overrides, "run_name", run_name)
    _set(overrides, "runs_dir", runs_dir)
    _set_teacher(overrides, teacher, model, base_url, input_price, output_price)
    cfg = _load(config, overrides)
    if cfg.input.paths or cfg.input.qa_file:
        _fail(DistillError("bootstrap is for a domain without documents: this config names input files"))
    _preflight(cfg)
    _hold_run(cfg)
    from rich.markup import escape

    from distiller.pipeline import bootstrap_stage, open_store
    from distiller.records import Concept, read_parquet

    try:
        store = open_store(cfg)
        with _llm_progress_lines(every_s=2.0):
            res = bootstrap_stage(store, cfg)
    except DistillError as e:
        _fail(e)
    rows = read_parquet(store.path("concepts.parquet"), Concept)
    _print_table(
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
        _fail(e)
    columns = ("name", "description", "complexity mix", "query types", "file")
    rows = [(d.name, d.description, _mix(d.complexity_mix), _mix(d.query_types), d.source) for d in found]
    _print_table("Domain templates", columns, rows)


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
        _fail(e)
    columns = ("code", "name", "native name", "example query", "file")
    rows = [
        (lang.code, lang.name, lang.native_name, next(iter(lang.examples.values()), ""), lang.source)
        for lang in found
    ]
    _print_table("Languages", columns, rows)


def _mix(mix: dict[str, float]) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in mix.items())


def _print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.markup import escape

    t = Table(title=title)
    for col in columns:
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(*(escape(v) for v in row))
    out.print(t)


class _DropRepeats(logging.Filter):
    """Drops log records that start with a notice the CLI has already printed."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _said_once(prefix: str) -> None:
    """The CLI said it: the pipeline's log line with the same notice would repeat it."""
    logging.getLogger("distiller").addFilter(_DropRepeats(prefix))


@contextlib.contextmanager
def _work_progress(every_s: float = 10.0) -> Iterator[None]:
    """Training steps (loss, ETA) and encoding as rich progress bars on a terminal; as a line every
    `every_s` seconds (and at the end of each task) when the output is a log."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from distiller.progress import WorkEvent, work_sink

    if not console.is_terminal:
        last: dict[str, float] = {}

        def line(ev: WorkEvent) -> None:
            now = time.monotonic()
            if ev.finished or now - last.get(ev.task, -1e9) >= every_s:
                last[ev.task] = now
                console.print(f"  [dim]{ev.line()}[/]")

        with work_sink(line):
            yield
        return

    progress = Progress(
        TextColumn("  {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def bar(ev: WorkEvent) -> None:
        loss = f"loss {ev.loss:.4f}" if ev.loss is not None else ""
        if ev.task not in tasks:
            tasks[ev.task] = progress.add_task(ev.task, total=ev.total, unit=ev.unit, loss=loss)
        progress.update(tasks[ev.task], completed=ev.done, total=ev.total, loss=loss)
        if ev.finished:  # leave one line behind, drop the bar
            progress.remove_task(tasks.pop(ev.task))
            if ev.unit == "steps":
                progress.console.print(f"  [dim]{ev.line()}[/]")

    with progress, work_sink(bar):
        yield


def _live_stages() -> None:
    """One line per stage as it starts and ends, so a long run shows where it is."""
    from rich.markup import escape

    from distiller.store import add_stage_listener

    icons = {
        "running": "[yellow]▶[/]",
        "completed": "[green]✓[/]",
        "cached": "[cyan]↺[/]",
        "failed": "[red]✗[/]",
        "skipped": "[dim]–[/]",
    }

    def show(run: str, r: Any) -> None:
        if r.status == "running":
            console.print(f"{icons['running']} {r.stage} …")
        else:
            from distiller.summary import stage_status_text

            # A failure's message comes once, as the command's last line (or with its traceback).
            note = f": {escape(r.message)}" if r.message and r.status != "failed" else ""
            when = (
                stage_status_text(r.model_dump())
                if r.status == "cached"
                else f"{r.status} in {r.seconds:.1f}s"
            )
            console.print(f"{icons.get(r.status, '?')} {r.stage} [dim]{when}[/]{note}")

    add_stage_listener(show)


def _print_skipped(skipped: list[dict[str, Any]]) -> None:
    if not skipped:
        return
    t = Table(title=f"Skipped inputs ({len(skipped)})", title_style="yellow")
    t.add_column("file")
    t.add_column("why")
    for s in skipped:
        t.add_row(f"{s['path']}{':' + str(s['line']) if s.get('line') else ''}", s["reason"])
    out.print(t)


def _print_status(run_dir: Path, title: str) -> None:
    from rich.rule import Rule

    from distiller.summary import status_renderable

    out.print(Rule(title))
    out.print(status_renderable(run_dir))  # ends with LLM spend vs budget and estimate vs billed


# `distill fuse`: multi-domain fusion; its body lives in distiller.fusion.cli.
from distiller.fusion.cli import fuse as _fuse  # noqa: E402

app.command(name="fuse")(_fuse)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
