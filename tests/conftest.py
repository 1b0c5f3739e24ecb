"""Shared fixtures: isolated settings, a real Platform, and a real control plane on a free port."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterator

import pytest

from loopml.core.settings import Settings
from tests.process_support import WARM_WORKERS_VAR, drop_loopml_vars
# the browser suites share ONE Playwright session, browser and control plane: defined here, not
# imported into each module (a fixture imported into two modules is two fixtures, and a second
# sync_playwright inside the first one's event loop fails)
from tests.ui_support import browser, page, ui_server  # noqa: F401 - fixtures

# The suite's many short-lived control planes would each start a spare worker importing
# TensorFlow: cold workers unless the caller asks (LOOPML_WARM_WORKERS=1 pytest runs it all
# warm); tests/test_warm_workers.py covers the warm path.
os.environ.setdefault(WARM_WORKERS_VAR, "0")


def _controlplane_available() -> bool:
    try:
        return importlib.util.find_spec("loopml.controlplane") is not None
    except ImportError:
        return False


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No LOOPML_* setting from the caller's shell and no loopml.toml reach this test."""
    drop_loopml_vars(monkeypatch)
    monkeypatch.setenv("LOOPML_CONFIG", str(tmp_path / "no-such-loopml.toml"))


@pytest.fixture
def settings(tmp_path: Path, clean_env: None) -> Settings:
    """Settings under tmp_path (SQLite + local artifacts), port 0, untouched by the caller's LOOPML_*."""
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
    """create_app(settings) under a real uvicorn on 127.0.0.1:<free port>, with the control loop.
    The server's settings name its real URL (api_url), so functions it starts can call it back."""
    from loopml.api.app import create_app
    from tests.asgi_server import bound_socket, serve_asgi

    sock = bound_socket()
    own = settings.model_copy(update={"api_url": f"http://127.0.0.1:{sock.getsockname()[1]}"})
    with sock, serve_asgi(create_app(own, start_loop=_controlplane_available()), sock=sock) as url:
        yield url
