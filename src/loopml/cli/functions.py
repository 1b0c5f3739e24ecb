"""``loopml functions``."""

from __future__ import annotations

import typer

app = typer.Typer(help="Functions.", no_args_is_help=True)
