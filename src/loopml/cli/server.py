"""``loopml server``: run the control plane (API + job control loop)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def server(
    host: Annotated[Optional[str], typer.Option("--host", help="Bind address (default LOOPML_HOST or 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=0, max=65535, help="Port (default LOOPML_PORT or 8080).")] = None,
) -> None:
    """Run the control plane: the REST API plus the loop that runs queued jobs."""
    import uvicorn

    from loopml.api.app import create_app
    from loopml.cli.output import err_console
    from loopml.platform import Platform
    from loopml.sdk.client import load_settings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(**overrides)
    # open the stores here, so a bad database URL or an old schema is one line, not a traceback
    platform = Platform(settings)
    try:
        app = create_app(settings, platform=platform)
        shown = f"[{settings.host}]" if ":" in settings.host else settings.host
        err_console().print(f"LoopML control plane on http://{shown}:{settings.port} "
                            f"(home {settings.home}, auth {'on' if settings.token else 'off'}); Ctrl-C stops it")
        if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.token:
            err_console().print("[yellow]warning:[/] listening beyond localhost without LOOPML_TOKEN: "
                                "anyone who can reach this port can use the API")
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower())
    finally:
        platform.close()
