"""`distill fuse -c fusion.yaml`: several domains fused into one student (`distiller.fusion`)."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from distiller.cli.base import app, fail, prefect_env, run_flow_with_retry
from distiller.cli.options import checked_table, config_overrides
from distiller.cli.render import console, live_stages, print_status
from distiller.errors import DistillError
from distiller.fusion.config import FusionConfig

FUSE_FLAGS = checked_table(
    FusionConfig,
    {
        "runs_dir": "base.runs_dir",
        "seed": "base.seed",
        "run_name": "run_name",
        "strategy": "fusion.strategy",
        "integration": "fusion.integration",
    },
)
"""`distill fuse`'s parameters -> the FusionConfig setting each one overrides."""


@app.command(name="fuse")
def fuse(
    config: Annotated[Path, typer.Option("--config", "-c", help="The fusion YAML (domains: + fusion:).")],
    runs_dir: Annotated[
        str | None, typer.Option(help="Where run folders live (default: base.runs_dir).")
    ] = None,
    run_name: Annotated[
        str | None, typer.Option(help="The fused run's folder (default: the config's run_name).")
    ] = None,
    strategy: Annotated[
        list[str] | None,
        typer.Option("--strategy", "-s", help="multitask, sequential or integration; repeat to compare."),
    ] = None,
    integration: Annotated[
        str | None, typer.Option(help="concat or llm (default: fusion.integration).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: base.seed).")] = None,
    no_prefect: Annotated[
        bool, typer.Option("--no-prefect", help="Run the stages in-process without Prefect.")
    ] = False,
) -> None:
    """Fuse several domains into one student: each domain's stages in its own sub-run, cross-domain and
    adversarial data, integrated answers, the chosen training strategies and a retention report.

    Example: distill fuse -c examples/fusion/fusion.yaml
    """
    from distiller.fusion.config import check_sources, load_fusion_config

    overrides = config_overrides(locals(), FUSE_FLAGS)
    command = "distill " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    t0 = time.perf_counter()
    try:
        cfg = load_fusion_config(config, overrides)
        check_sources(cfg)
        prefect_env(cfg.base.runs_dir)
        live_stages()
        if no_prefect:
            from distiller.fusion.run import fuse as run_fuse

            run_dir = run_fuse(cfg, command=command).dir
        else:
            from flows.fuse import distill_fuse

            run_dir = run_flow_with_retry(lambda: distill_fuse(fusion=cfg, command=command))
    except DistillError as e:
        fail(e)
    print_status(run_dir, title=f"Fusion run finished in {time.perf_counter() - t0:.1f}s")
    retention = run_dir / "retention.md"
    if retention.is_file():
        console.print(retention.read_text(encoding="utf-8"))


__all__ = ["fuse"]
