"""Issue 10, automation: functions update keeps what is not given; deleting what is in use is
refused (or forced, saying what breaks); failed firings are re-driven exactly once; triggers
update; GitHub-style webhook signatures; alerts ack/resolve; object-trigger locations; failed
executions name their state. Real control plane (``live_server``), real function processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from loopml.core.errors import Conflict, InvalidInput
from loopml.sdk.client import Client
from tests.surface_support import assert_error, cli_runner
from tests.test_cli import ok_json, one_line_error

DEADLINE_S = 120  # a noisy 2-core machine: generous, and no assertion is about time

ENV_HANDLER = '''import os


def handler(event, context):
    return {k: os.environ.get(k) for k in ("A", "B", "C")}
'''


def poll(fn: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def server(live_server: str, settings) -> str:
    settings.api_url = live_server  # port 0: the functions' LOOPML_API_URL must name the real port
    return live_server


@pytest.fixture
def sdk(server: str):
    with Client(server, token="") as c:
        yield c


@pytest.fixture
def run(server: str, monkeypatch: pytest.MonkeyPatch):
    return cli_runner(server, monkeypatch)


# -- item 3: functions update keeps what is not given ----------------------------------------------

def test_functions_update_keeps_what_is_not_given(sdk: Client, run, server: str, tmp_path: Path):
    code = tmp_path / "envy.py"
    code.write_text(ENV_HANDLER)
    ok_json(run("functions", "create", "envy", "--file", str(code), "--timeout", "30", "--memory-mb", "256",
                "--env", "A=1", "--env", "B=2", "--json"))

    # new code only: timeout, memory, environment and handler are kept (they used to be reset)
    code.write_text(ENV_HANDLER.replace("return {k:", 'return {"v": 2} | {k:'))
    updated = ok_json(run("functions", "update", "envy", "--file", str(code), "--json"))
    assert (updated["timeout_s"], updated["memory_mb"], updated["environment"], updated["handler"]) == \
        (30, 256, {"A": "1", "B": "2"}, "envy.handler")
    assert sdk.invoke_function("envy")["result"] == {"A": "1", "B": "2", "C": None, "v": 2}

    # configuration without new code; --env merges, --unset-env removes
    updated = ok_json(run("functions", "update", "envy", "--timeout", "90", "--env", "A=9", "--env", "C=3",
                          "--unset-env", "B", "--json"))
    assert (updated["timeout_s"], updated["memory_mb"], updated["environment"]) == (90, 256, {"A": "9", "C": "3"})
    assert updated["code_sha256"] == sdk.function("envy")["code_sha256"]
    assert sdk.invoke_function("envy")["result"] == {"A": "9", "B": None, "C": "3", "v": 2}

    # the SDK and REST PATCH behave alike
    assert sdk.update_function("envy", memory_mb=128, environment={"C": None})["environment"] == {"A": "9"}
    with httpx.Client(base_url=server) as http:
        patched = http.patch("/functions/envy", data={"environment": json.dumps({"B": "b"})})
        assert patched.status_code == 200 and patched.json()["environment"] == {"A": "9", "B": "b"}
        assert patched.json()["memory_mb"] == 128 and patched.json()["timeout_s"] == 90
        assert_error(http.patch("/functions/envy", data={"timeout_s": "-1"}), 400, "invalid_input", "timeout")
        assert_error(http.patch("/functions/ghost", data={"timeout_s": "5"}), 404, "not_found", "ghost")

    # mistakes: one line, exit 2, nothing changed
    one_line_error(run("functions", "update", "envy"), 2, "nothing to change")
    one_line_error(run("functions", "update", "envy", "--unset-env", "NOPE"), 2, "NOPE is not set")
    one_line_error(run("functions", "update", "envy", "--handler", "envy.nope"), 2, "nope")
    other = tmp_path / "other.py"
    other.write_text(ENV_HANDLER)
    one_line_error(run("functions", "update", "envy", "--file", str(other)), 2, "--handler")
    assert sdk.function("envy")["handler"] == "envy.handler"
    moved = ok_json(run("functions", "update", "envy", "--file", str(other), "--handler", "other.handler", "--json"))
    assert moved["handler"] == "other.handler" and moved["environment"] == {"A": "9", "B": "b"}
