"""Run an ASGI app under a real uvicorn on 127.0.0.1:<free port> (or another local address) in a
thread (for tests)."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator


def bound_socket() -> socket.socket:
    """A socket bound to 127.0.0.1:<free port>, held until served: its URL is known before the app
    is built (settings are frozen, so an app that must know its own URL gets it up front)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve_asgi(app, name: str = "loopml-test-server", startup_s: float = 60,
               sock: socket.socket | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Yield the base URL while ``app`` serves (on ``sock`` if given, else on ``host`` port 0);
    shut it down (lifespan included) afterwards."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock] if sock else None},
                              name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_s
    while not server.started:
        if not thread.is_alive():
            raise AssertionError(f"{name} exited during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise AssertionError(f"{name} did not start within {startup_s:g} s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), f"{name} did not shut down"
