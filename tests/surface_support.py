"""Shared by the API/SDK/CLI surface tests: the error-body check and an in-process CLI runner."""

from __future__ import annotations

from typing import Callable

import httpx
import pytest
from typer.testing import CliRunner, Result


def assert_error(resp: httpx.Response, status: int, code: str, *fragments: str) -> dict:
    """The response is ``status`` with a JSON error body of ``code`` whose message names ``fragments``."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body
    return body


def cli_runner(api_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``run("endpoints", "list")`` → the result of `loopml endpoints list` against ``api_url``."""
    from loopml.cli.main import app as cli_app

    monkeypatch.setenv("LOOPML_API_URL", api_url)
    runner = CliRunner()

    def run(*args: str) -> Result:
        return runner.invoke(cli_app, list(args), catch_exceptions=False)
    return run
