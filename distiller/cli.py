"""`distill`: the command line. Every command is a thin wrapper over `distiller` and `flows`."""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from distiller.errors import DistillError

app = typer.Typer(
    name="distill",
    help="Turn a domain's documents (or just its name) into retrieval training data and a "
    "domain-adapted embedding model.\n\nQuick start:  distill run --input examples/medquad-mini",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (see README, 'Configuration'). Flags override it."),
]
RunsDirOpt = Annotated[str | None, typer.Option("--runs-dir", help="Folder of run folders [default: runs].")]


def _prefect_env(runs_dir: str) -> None:
    """With no Prefect server configured, run Prefect in its embedded (SQLite) mode with its home
    inside the runs folder, so a fresh machine needs nothing set up."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_HOME", str(Path(runs_dir).resolve() / ".prefect"))
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


def _fail(e: Exception) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(code=2)


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
        str | None, typer.Option(help="Run folder name [default: from the input's name].")
    ] = None,
    runs_dir: RunsDirOpt = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed for sampling, splits and training [default: 13].")
    ] = None,
    qa_file: Annotated[
        str | None, typer.Option(help="Labeled mode: your own Q&A pairs (JSON, JSONL, CSV, Parquet).")
    ] = None,
    teacher: Annotated[
        str | None, typer.Option(help="offline | openai | anthropic [default: offline, no LLM needed].")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Teacher model, e.g. gpt-4o-mini.")] = None,
    base_url: Annotated[
        str | None,
        typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (vLLM, Ollama)."),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(help="sentence-transformers name or path [default: packaged all-MiniLM-L6-v2]."),
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Mine-and-train iterations [default: 1].")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs per iteration [default: 1].")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in tokens [default: 200].")] = None,
    export_format: Annotated[
        list[str] | None,
        typer.Option("--format", "-f", help="Export format(s) [default: jsonl]. Repeatable."),
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
    """
    overrides: dict[str, Any] = {}
    _set(overrides, "input.paths", list(input or []))
    _set(overrides, "input.qa_file", qa_file)
    _set(overrides, "run_name", run_name)
    _set(overrides, "runs_dir", runs_dir)
    _set(overrides, "seed", seed)
    _set(overrides, "teacher.provider", teacher)
    _set(overrides, "teacher.model", model)
    _set(overrides, "teacher.base_url", base_url)
    _set(overrides, "training.student", student)
    _set(overrides, "mining.iterations", iterations)
    _set(overrides, "training.epochs", epochs)
    _set(overrides, "chunking.chunk_size", chunk_size)
    _set(overrides, "export.formats", list(export_format or []))
    cfg = _load(config, overrides)
    if not cfg.input.paths and not cfg.input.qa_file and not cfg.generation.domain:
        _fail(
            DistillError("nothing to distill: give --input (documents), --qa-file, or a domain in the config")
        )
    _prefect_env(cfg.runs_dir)
    if cfg.teacher.offline:
        console.print(
            "[yellow]No LLM configured[/]: using the offline teacher (inverse-cloze pseudo-queries). "
            "Set [bold]--teacher openai --model <name>[/] (OPENAI_API_KEY) or [bold]--base-url[/] for a "
            "local server to generate real questions."
        )
    command = "distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.perf_counter()
    try:
        if no_prefect:
            from distiller.pipeline import run_pipeline

            store = run_pipeline(cfg, command=command)
            run_dir = store.dir
        else:
            from flows.distill import distill

            result = distill(config=cfg, command=command)
            run_dir = Path(result["run_dir"])
    except DistillError as e:
        _fail(e)
    _print_status(run_dir, title=f"Run finished in {time.perf_counter() - t0:.1f}s")


@app.command()
def ingest(
    input: Annotated[list[str], typer.Option("--input", "-i", help="Files, folders or globs. Repeatable.")],
    config: ConfigOpt = None,
    run_name: Annotated[str | None, typer.Option(help="Run folder name.")] = None,
    runs_dir: RunsDirOpt = None,
    chunk_size: Annotated[int | None, typer.Option(help="Chunk size in tokens [default: 200].")] = None,
    overlap: Annotated[float | None, typer.Option(help="Chunk overlap, a fraction [default: 0.1].")] = None,
    encoding: Annotated[
        str | None, typer.Option(help="Text encoding of .txt/.md/.html [default: utf-8].")
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
def status(
    run: Annotated[Path, typer.Argument(help="A run folder, e.g. runs/medquad-mini.")],
) -> None:
    """Show a run's stages (status, rows, time, cost) and metrics."""
    if not (run / "manifest.json").is_file():
        _fail(DistillError(f"{run}: not a run folder (no manifest.json)"))
    _print_status(run, title=f"Run {run.name}")


@app.command()
def runs(runs_dir: Annotated[Path, typer.Argument(help="Folder of run folders.")] = Path("runs")) -> None:
    """List the runs in a folder with their state and key figures."""
    import json

    table = Table(title=f"Runs in {runs_dir}")
    for col in ("run", "updated", "stages", "state", "queries", "best", "cost $"):
        table.add_column(col)
    found = sorted(p for p in runs_dir.glob("*/manifest.json")) if runs_dir.is_dir() else []
    for m in found:
        data = json.loads(m.read_text(encoding="utf-8"))
        stages = data.get("stages", {})
        states = {s["status"] for s in stages.values()}
        state = "failed" if "failed" in states else "running" if "running" in states else "done"
        gen = stages.get("generate", {}).get("outputs", {})
        best = stages.get("evaluate", {}).get("details", {}).get("best", "")
        cost = sum(s.get("cost_usd", 0.0) for s in stages.values())
        table.add_row(
            m.parent.name,
            data.get("updated_at", ""),
            str(len(stages)),
            state,
            str(gen.get("queries.parquet", "")),
            best,
            f"{cost:.4f}",
        )
    if not found:
        console.print(f"no runs in {runs_dir}")
        return
    out.print(table)


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
    import json

    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    t = Table(title=title)
    for col in ("stage", "status", "outputs", "seconds", "cost $", "note"):
        t.add_column(col, overflow="fold")
    colors = {"completed": "green", "cached": "cyan", "failed": "red", "running": "yellow"}
    for name, s in manifest.get("stages", {}).items():
        outs = ", ".join(f"{k} ({v})" if v >= 0 else k for k, v in s.get("outputs", {}).items())
        c = colors.get(s["status"], "white")
        t.add_row(
            name,
            f"[{c}]{s['status']}[/]",
            outs,
            f"{s.get('seconds', 0):.1f}",
            f"{s.get('cost_usd', 0):.4f}",
            s.get("message") or "",
        )
    out.print(t)
    _print_skipped(manifest.get("skipped_inputs", []))
    metrics = run_dir / "metrics.parquet"
    if metrics.is_file():
        import pandas as pd

        df = pd.read_parquet(metrics).pivot_table(index="model", columns="metric", values="value")
        mt = Table(title="Retrieval on held-out queries")
        mt.add_column("model")
        for c in df.columns:
            mt.add_column(c, justify="right")
        for m, row in df.iterrows():
            mt.add_row(str(m), *(f"{v:.3f}" for v in row))
        out.print(mt)
    for note in manifest.get("stages", {}).get("generate", {}).get("details", {}).get("notes", []):
        out.print(f"[yellow]note:[/] {note}")
    extras = [p for p in ("models/best", "exports", "report.html") if (run_dir / p).exists()]
    out.print(f"Run folder: {run_dir}  ({', '.join(extras)})")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
