"""``loopml server``: run the control plane (API + job control loop)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def _check_port_free(host: str, port: int, what: str, setting: str, wait_s: float = 0.0) -> None:
    """A port already taken is one line (exit 2), not a uvicorn ERROR after the banner.

    ``wait_s``: how long a busy port may take to free up before that line."""
    import errno
    import socket
    import time

    from loopml.core.errors import InvalidInput

    if port == 0:
        return  # any free port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # as the real listeners do: a port in TIME_WAIT is free, one with a listener is not
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                                       f"(check {setting})") from None
        if time.monotonic() >= deadline:
            raise InvalidInput(f"port {port}{what} is in use — is another `loopml server` "
                               f"running? set {setting}")
        time.sleep(0.1)


def _hold_sqlite_home(database_url: str) -> object | None:
    """SQLite is single-process: a second ``loopml server`` on the same database is one line.

    An exclusive ``flock`` beside the database file, held for the life of this process (the
    kernel drops it when the process dies, also on ``kill -9``, so a restart never finds a stale
    lock). PostgreSQL needs none: two control planes may share it."""
    import fcntl
    import os

    from loopml.core.errors import InvalidInput

    if not database_url.startswith("sqlite:///"):
        return None
    db_path = database_url.removeprefix("sqlite:///")
    lock_path = f"{db_path}.server-lock"
    os.makedirs(os.path.dirname(lock_path) or ".", exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise InvalidInput(f"another `loopml server` (pid {holder}) is using the SQLite database {db_path}; "
                           "SQLite serves one control plane: stop that one, or set LOOPML_DATABASE_URL "
                           "to PostgreSQL to run two") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd  # kept open (and locked) until the process exits


def _log_to_stderr(level: str) -> None:
    """LoopML's own log lines (the control loop, the start/stop lines) beside uvicorn's."""
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("loopml")
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("loopml.server").setLevel(logging.INFO)  # start/stop: always shown


def server(
    host: Annotated[Optional[str], typer.Option("--host", help="Bind address (default LOOPML_HOST or 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=0, max=65535, help="Port (default LOOPML_PORT or 8080).")] = None,
) -> None:
    """Run the control plane: the REST API plus the loop that runs queued jobs."""
    import uvicorn

    from loopml.api.app import create_app
    from loopml.cli.output import err_console
    from loopml.core.errors import InvalidInput
    from loopml.platform import Platform
    from loopml.core.settings import load_settings

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = load_settings(**overrides)
    if settings.executor != "local":  # a Ray cluster: shared stores, and a head that answers
        from loopml.jobs.executors import check_cluster_mode, check_ray_address

        check_cluster_mode(settings)
        check_ray_address(settings)
    if settings.port and settings.port == settings.serving_port:
        raise InvalidInput(f"the control plane (LOOPML_PORT / --port) and the data plane "
                           f"(LOOPML_SERVING_PORT) are both set to port {settings.port}; they "
                           "need a port each")
    _hold_sqlite_home(settings.resolved_database_url)
    _check_port_free(settings.host, settings.port, "", "LOOPML_PORT (or --port)")
    # the serving process of a control plane killed a moment ago holds the data plane's socket
    # until it notices (it polls for its parent): give it a few seconds to go
    _check_port_free(settings.serving_host, settings.serving_port, " (the data plane's)",
                     "LOOPML_SERVING_PORT", wait_s=5.0)
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
        _log_to_stderr(settings.log_level)
        from loopml.serving.read_timeout import read_timeout_protocol

        # slow clients: headers have http_read_timeout_s to arrive, a body as long between bytes
        # (uploads may be large) — else 408
        uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                    http=read_timeout_protocol(settings.http_read_timeout_s, idle_body=True))
    finally:
        platform.close()
