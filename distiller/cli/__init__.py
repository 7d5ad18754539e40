"""`distill`: the command line, the one part of `distiller` above the flows.

- `base`: the application and what commands share (config loading, one-line failures, Prefect's server)
- `options`: each flag declared once, and the table from flags to config settings
- `commands`: the commands; `fuse`: `distill fuse`
- `render`: tables, status and progress output; `errors`: errors as one line and an exit code
"""

from __future__ import annotations

from distiller.cli import commands, fuse
from distiller.cli.base import app

__all__ = ["app", "commands", "fuse", "main"]


def main() -> None:  # pragma: no cover - console entry point
    app()
