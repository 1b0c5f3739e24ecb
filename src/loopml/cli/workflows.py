"""``loopml workflows``."""

from __future__ import annotations

import typer

app = typer.Typer(help="Workflows.", no_args_is_help=True)

executions_app = typer.Typer(help="Workflow executions.", no_args_is_help=True)
