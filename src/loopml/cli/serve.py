"""``loopml serve``: a standalone data-plane node (serves every endpoint, or those of ``--endpoints``;
no control plane in it)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def shared_stores_problem(host: str, database_url: str, artifact_uri: str) -> str | None:
    """A node other machines reach must read the same stores as the control plane: SQLite and a
    local folder are fine only for a node on this machine's loopback (one line, else None)."""
    if host in _LOOPBACK:
        return None
    if not database_url.startswith(("postgresql://", "postgres://", "postgresql+")):
        return (f"a node listening on {host} serves other machines and needs the control plane's "
                "database: set LOOPML_DATABASE_URL=postgresql://USER@HOST/DB (SQLite is a file on "
                "this host; it serves a node on 127.0.0.1 only)")
    if not artifact_uri.startswith("s3://"):
        return (f"a node listening on {host} needs the control plane's artifact store: set "
                "LOOPML_ARTIFACT_URI=s3://BUCKET/PREFIX (a local folder serves a node on 127.0.0.1 only)")
    return None


def _endpoint_names(value: str) -> list[str]:
    """``--endpoints a,b``: valid endpoint names (they need not exist yet), at least one."""
    from loopml.core.errors import InvalidInput
    from loopml.core.names import endpoint_name

    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise InvalidInput("--endpoints: give one or more endpoint names, e.g. --endpoints mnist,penguins")
    return sorted({endpoint_name(name) for name in names})


def _shown_url(url: str) -> str:
    """The database URL without its password."""
    import re

    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Bind address (default LOOPML_SERVING_HOST or 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=0, max=65535, help="Port (default LOOPML_SERVING_PORT or 8081).")] = None,
    advertise: Annotated[Optional[str], typer.Option("--advertise", help="Address this node registers, e.g. http://10.0.0.7:8081 (default: as bound).")] = None,
    endpoints: Annotated[Optional[str], typer.Option("--endpoints", metavar="NAME[,NAME]", help="Serve only these endpoints (default: every endpoint); others answer 404 here.")] = None,
) -> None:
    """Run a data-plane node: it serves every endpoint (or only --endpoints); run several behind a load balancer.

    Stateless: endpoints come from the metadata store (LOOPML_DATABASE_URL, PostgreSQL for nodes on other machines), models from the artifact store (LOOPML_ARTIFACT_URI=s3://...). Capture files carry the node id; the node reports itself (address, endpoints loaded, load): `loopml nodes list`. No control plane needs to run: it keeps serving while every `loopml server` is down. /readyz is the load balancer's health check; SIGTERM drains in-flight requests and capture.

    Example: loopml serve --host 0.0.0.0 --port 8081
    """
    from loopml.cli.output import err_console
    from loopml.cli.server import _check_port_free
    from loopml.core.errors import InvalidInput
    from loopml.core.settings import load_settings
    from loopml.platform import Platform

    overrides = {k: v for k, v in {"serving_host": host, "serving_port": port}.items() if v is not None}
    settings = load_settings(**overrides)
    problem = shared_stores_problem(settings.serving_host, settings.resolved_database_url,
                                    settings.resolved_artifact_uri)
    if problem:
        raise InvalidInput(problem)
    if advertise is not None and not advertise.startswith(("http://", "https://")):
        raise InvalidInput(f"--advertise {advertise!r}: give the URL clients reach, e.g. http://10.0.0.7:8081")
    only = _endpoint_names(endpoints) if endpoints is not None else None
    _check_port_free(settings.serving_host, settings.serving_port, " (this node's)",
                     "--port (or LOOPML_SERVING_PORT)")
    # the stores open here, so a bad URL or a schema `loopml db upgrade` must bring is one line
    Platform(settings, create_schema=False).close()
    shown = f"[{settings.serving_host}]" if ":" in settings.serving_host else settings.serving_host
    err_console().print(f"LoopML data-plane node on http://{shown}:{settings.serving_port} "
                        f"({'endpoints ' + ', '.join(only) if only else 'endpoints'} from "
                        f"{_shown_url(settings.resolved_database_url)}); "
                        "Ctrl-C stops it")
    from loopml.serving.server import main

    args = ["--node", "--host", settings.serving_host, "--port", str(settings.serving_port)]
    if advertise:
        args += ["--advertise", advertise]
    if only:
        args += ["--endpoints", ",".join(only)]
    raise typer.Exit(main(args))
