"""Shared fixtures: isolated settings, a real Platform, and a real control plane on a free port."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from loopml.core.settings import Settings


def _controlplane_available() -> bool:
    try:
        return importlib.util.find_spec("loopml.controlplane") is not None
    except ImportError:
        return False


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings under tmp_path (SQLite + local artifacts), port 0, untouched by the caller's LOOPML_*."""
    for var in list(os.environ):
        if var.startswith("LOOPML_") and not var.startswith("LOOPML_TEST_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("LOOPML_CONFIG", str(tmp_path / "no-such-loopml.toml"))
    home = tmp_path / "loopml-home"
    return Settings(home=home, port=0, serving_port=0, token=None, reconcile_interval_s=0.2)


@pytest.fixture
def platform(settings: Settings):
    from loopml.platform import Platform

    plat = Platform(settings)
    yield plat
    plat.close()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """create_app(settings) under a real uvicorn on 127.0.0.1:<free port>, with the control loop."""
    import uvicorn

    from loopml.api.app import create_app

    app = create_app(settings, start_loop=_controlplane_available())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="loopml-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive():
            pytest.fail("the test server exited during startup (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            pytest.fail("the test server did not start within 60 s")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive(), "the test server did not shut down"
