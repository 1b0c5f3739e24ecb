"""Shared by the API/SDK/CLI surface tests: the error-body check, an in-process CLI runner and a
small CSV dataset file."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import httpx
import pytest
from typer.testing import CliRunner, Result


def assert_error(resp: httpx.Response, status: int, code: str, *fragments: str) -> dict:
    """The response is ``status`` with a JSON error body of ``code`` whose message names
    ``fragments`` (and no traceback)."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == code, body
    assert "Traceback" not in body["message"]
    for fragment in fragments:
        assert fragment in body["message"], body
    return body


def write_csv(path: Path, rows: int = 40) -> Path:
    """A small tabular dataset file (two numeric columns, a two-class ``species`` label)."""
    lines = ["sepal,petal,species"] + [f"{i * 0.1:.1f},{(i % 7) * 0.3:.1f},{'ab'[i % 2]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_runner(api_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``run("endpoints", "list")`` → the result of `loopml endpoints list` against ``api_url``."""
    from loopml.cli.main import app as cli_app

    monkeypatch.setenv("LOOPML_API_URL", api_url)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli_app, list(args), catch_exceptions=False)
    return run
