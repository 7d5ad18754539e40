"""`python -m distiller.cli`: the same as `distill`."""

from distiller.cli import app

app()
