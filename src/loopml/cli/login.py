"""``loopml login`` / ``logout``: keep a token for the CLI and SDK in the user's credentials file
(``~/.config/loopml/credentials.toml``, mode 0600), used only for the server it was saved for.
``LOOPML_TOKEN`` still wins over it."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from loopml.cli.output import console
from loopml.core.errors import InvalidInput


def login(
    token: Annotated[Optional[str], typer.Option(
        "--token", help="The token (default: asked for, hidden; or read from stdin when piped).")] = None,
    url: Annotated[Optional[str], typer.Option("--url", help="The control plane (default: LOOPML_API_URL).")] = None,
) -> None:
    """Check a token against the control plane and save it for the CLI and SDK (mode 0600).

    Example: loopml login   (paste the token `loopml users create` or `tokens create` printed)
    """
    from loopml.core.settings import credentials_path, load_settings, save_login
    from loopml.sdk.client import Client

    if token is None:
        token = (typer.prompt("token", hide_input=True) if sys.stdin.isatty() else sys.stdin.readline()).strip()
    if not token:
        raise InvalidInput("no token given: pass --token, pipe it on stdin, or paste it when asked")
    target = (url or load_settings().resolved_api_url).rstrip("/")
    with Client(target, token=token) as c:
        me = c.whoami()
    if not me.get("auth"):
        console().print(f"note: {target} does not require tokens yet (no user and no LOOPML_TOKEN)")
    try:
        save_login(target, token)
    except OSError as exc:  # an unwritable or missing config folder: the user's to fix, one line
        raise InvalidInput(f"cannot save the token in {credentials_path()}: {exc.strerror or exc} (make "
                           "$XDG_CONFIG_HOME or ~/.config writable, or set LOOPML_TOKEN instead)") from None
    role = f", role {me['role']}" if me.get("role") else ""
    console().print(f"logged in to {target} as [bold]{me['name']}[/]{role}; token saved in "
                    f"{credentials_path()} (mode 0600)")


def logout() -> None:
    """Forget the token `loopml login` saved."""
    from loopml.core.settings import credentials_path, forget_login

    try:
        removed = forget_login()
    except OSError as exc:
        raise InvalidInput(f"cannot remove {credentials_path()}: {exc.strerror or exc}") from None
    console().print(f"removed {credentials_path()}" if removed else "not logged in")
