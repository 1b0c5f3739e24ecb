"""``loopml triggers``."""

from __future__ import annotations

import typer

app = typer.Typer(help="Triggers.", no_args_is_help=True)
