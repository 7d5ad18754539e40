"""Entry points of the end-to-end flow for deployments that do not take the config as a form.

- `distill_from_file`: the config comes from a YAML file in the working directory (the clone), so a
  schedule re-distils a folder with settings kept under version control; its stages are cached by
  content, so a night on which nothing changed redoes nothing.
- `distill_on_dask`: `distill` itself, with its stages on a Dask cluster (`DISTILL_DASK_ADDRESS` on
  the worker names the scheduler; unset, each run starts a local cluster).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from distiller.config import DistillConfig, load_config
from flows.distill import distill
from flows.stages import with_runner


@flow(name="distill-from-file", log_prints=True)
def distill_from_file(
    config_path: str = "deployments/nightly.yaml", overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Load a YAML config (paths relative to the working directory) and run `distill` on it, as a
    sub-flow on the task runner the config names.

    Args:
        config_path: YAML config file, relative to the worker's working directory (the clone).
        overrides: Settings that replace the file's, as nested mappings, e.g. {mining: {iterations: 2}}.
    """
    config = load_config(config_path, overrides)
    return with_runner(distill, config)(config=config, command=f"distill-from-file {config_path}")


# DistillConfig reads DISTILL_DASK_ADDRESS from the worker's environment when the module is loaded.
distill_on_dask = with_runner(distill, DistillConfig(runner="dask"))
