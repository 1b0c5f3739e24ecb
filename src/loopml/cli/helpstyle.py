"""Help-screen conventions on top of Typer's: flags show no value type, positionals read ``NAME``.

Typer (0.2x) prints a value type beside every option, flags included (``--json <bool>``), and
names positionals by their Python parameter (``{name}``, ``{execution_id}``). Both are fixed
here, once, for every command — including ones added later — instead of in each module.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperOption

_value_type = TyperOption.display_type_rich


def _display_type_rich(self: TyperOption, ctx: Any) -> str | None:
    return None if self.is_flag or self.count else _value_type(self, ctx)


TyperOption.display_type_rich = _display_type_rich  # type: ignore[method-assign]


def polish(command: Any) -> None:
    """Give every positional of ``command`` and its subcommands an upper-case metavar (NAME, ID)."""
    for param in getattr(command, "params", ()):
        if isinstance(param, TyperArgument) and param.metavar is None and param.name:
            # execution_id -> ID, as the README writes it (`loopml executions show ID`)
            param.metavar = "ID" if param.name.endswith("_id") else param.name.upper()
    for sub in (getattr(command, "commands", None) or {}).values():
        polish(sub)
