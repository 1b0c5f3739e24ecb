"""The functions sandbox, observed from inside real functions run by a real control plane: what a
function tries to read, see, spawn and leave behind, and what the sandbox refuses or kills."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import psutil
import pytest

from loopml.core.settings import Settings
from loopml.functions import sandbox as sandbox_mod
from loopml.sdk.client import Client
from tests.process_support import wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "functions"
DEADLINE_S = 180
TOKEN = "sandbox-test-token"
SERVER_SECRET = "LOOPML_SANDBOX_TEST_SERVER_SECRET"

needs_bwrap = pytest.mark.skipif(sandbox_mod.detect().mode != "bwrap",
                                 reason=f"bubblewrap sandbox unavailable: {sandbox_mod.detect().reason}")


@pytest.fixture
def settings(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv(SERVER_SECRET, "the-server-s-own-secret")  # in the server's environment only
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "server-aws-secret")
    return Settings(home=tmp_path / "loopml-home", port=0, serving_port=0, token=TOKEN, reconcile_interval_s=0.2)


@pytest.fixture
def sdk(live_server):
    with Client(live_server, token=TOKEN) as c:
        yield c


def _ended(sdk: Client, name: str, inv_id: str) -> dict:
    return wait_for(lambda: (lambda r: r if r["status"] in ("succeeded", "failed") else None)(
        sdk.function_invocation(name, inv_id)), DEADLINE_S, what=f"invocation {inv_id}")


def _processes_of(function_name: str) -> list[psutil.Process]:
    """Live processes started for ``function_name`` (found by the name in their environment)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("LOOPML_FUNCTION_NAME") == function_name:
                found.append(p)
        except psutil.Error:
            continue
    return found


@needs_bwrap
def test_function_cannot_reach_what_is_not_its_own(sdk, settings):
    sdk.create_function("other", FIXTURES / "hello.py")
    other = sdk.invoke_function("other", {})  # unpacks its code under LoopML's home
    assert other["status"] == "succeeded", other
    other_fn = sdk.function("other")
    sdk.create_function("probe", FIXTURES / "probe.py", environment={"MY_SETTING": "mine",
                                                                       "AWS_ACCESS_KEY_ID": "fn-key"})
    home = settings.home.resolve()
    db = settings.resolved_database_url[len("sqlite:///"):]
    artifact = next(p for p in (home / "artifacts").rglob("*") if p.is_file())
    other_code = home / "functions" / "other" / other_fn["code_sha256"][:16] / "code" / "hello.py"
    assert Path(db).is_file() and other_code.is_file() and artifact.is_file()
    event = {"db": db, "home": str(home), "other_code": str(other_code), "artifact": str(artifact),
             "server_pid": os.getpid()}
    record = sdk.invoke_function("probe", event)
    assert record["status"] == "succeeded", record
    out = record["result"]
    for what in ("db", "home", "other_code", "artifact", "server_environ", "server_cmdline"):
        assert out[what]["ok"] is False, (what, out[what])
    assert os.getpid() not in out["pids"] and len(out["pids"]) < 10, out["pids"]  # its own PID namespace
    assert out["uid"] != 0 if os.geteuid() == 0 else True
    assert out["write_own_code"]["ok"] is False and out["write_tmp"]["ok"] is True
    assert out["own_code"] == {"ok": True, "value": ["probe.py"]}
    assert out["api"] == "ok"  # the control plane's API stays reachable on loopback
    env = out["env"]
    assert env["MY_SETTING"] == "mine" and env["AWS_ACCESS_KEY_ID"] == "fn-key"
    # its own short-lived invocation token (identity), never the server's
    assert env["LOOPML_TOKEN"].startswith("lml_") and env["LOOPML_TOKEN"] != TOKEN
    assert env["LOOPML_FUNCTION_NAME"] == "probe"
    assert env["LOOPML_API_URL"].startswith("http://127.0.0.1:")
    assert SERVER_SECRET not in env and "AWS_SECRET_ACCESS_KEY" not in env
    assert set(env) <= set(sandbox_mod.BASE_ENV) | {"PYTHONPATH", "PWD", "MY_SETTING", "AWS_ACCESS_KEY_ID",
                                                    "LOOPML_TOKEN", "LOOPML_FUNCTION_NAME", "LOOPML_API_URL"}
    assert not any(k.startswith("LOOPML_") and k not in ("LOOPML_TOKEN", "LOOPML_FUNCTION_NAME",
                                                         "LOOPML_API_URL", "LOOPML_CONFIG") for k in env)


@needs_bwrap
def test_fork_bomb_ends_the_invocation_not_the_machine(sdk):
    sdk.create_function("forker", FIXTURES / "forker.py", timeout_s=120, memory_mb=16384)
    record = sdk.invoke_function("forker", {"n": 1000})
    record = _ended(sdk, "forker", record["id"])
    assert record["status"] == "succeeded", record  # the limit refused a fork: the handler saw EAGAIN
    assert record["result"]["made"] < sandbox_mod.MAX_PROCESSES
    assert "Resource temporarily unavailable" in record["result"]["refused"]
    assert wait_for(lambda: not _processes_of("forker"), 30, what="the forked children to be gone")
    assert sdk.health()["status"] == "ok"
    sdk.create_function("after", FIXTURES / "hello.py")
    assert sdk.invoke_function("after", {})["error_type"] != "Function.ProcessExited"  # forks again


@pytest.mark.parametrize("return_now", [False, True], ids=["timeout", "returned"])
@needs_bwrap
def test_setsid_child_dies_with_the_invocation(sdk, return_now):
    sdk.create_function("escaper", FIXTURES / "escaper.py", timeout_s=3)
    marker = f"loopml-escaper-{uuid.uuid4().hex}"
    record = sdk.invoke_function("escaper", {"marker": marker, "return_now": return_now})
    record = _ended(sdk, "escaper", record["id"])
    if return_now:
        assert record["status"] == "succeeded", record
    else:
        assert record["error_type"] == "Function.Timeout", record
    def stray():
        return [p for p in psutil.process_iter() if _cmd_has(p, marker)]
    assert wait_for(lambda: not stray(), 30, what="the setsid child to be gone")


def _cmd_has(p: psutil.Process, text: str) -> bool:
    try:
        return text in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- the fallback (no bubblewrap) ----------------------------------------------------------------

def test_fallback_when_bwrap_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox_mod, "BWRAP", "no-such-bwrap-binary")
    sandbox_mod.detect.cache_clear()
    try:
        chosen = sandbox_mod.detect()
    finally:
        sandbox_mod.detect.cache_clear()
    assert chosen.mode == "fallback" and "bwrap not found" in chosen.reason
    assert "WITHOUT the bubblewrap sandbox" in chosen.warning and "process limit" in chosen.warning.replace(
        "-process limit", " process limit")


def test_fallback_still_kills_setsid_children_and_scrubs_the_environment(platform, monkeypatch):
    """Without namespaces the supervisor is a child subreaper: a setsid child is still found and
    killed, and the environment is still only the function's."""
    from loopml.functions import service
    from loopml.functions.runtime import run_invocation

    monkeypatch.setenv(SERVER_SECRET, "x")
    fallback = sandbox_mod.Sandbox("fallback", reason="test", run_as=None)
    fn = service.create_function(platform, "escaper", filename="escaper.py",
                                 data=(FIXTURES / "escaper.py").read_bytes(), timeout_s=3)
    marker = f"loopml-escaper-{uuid.uuid4().hex}"
    inv = platform.functions.enqueue("escaper", {"marker": marker}, source="test")
    outcome = run_invocation(platform.settings, platform.artifacts, fn, inv, token="t", sandbox=fallback)
    assert outcome.error_type == "Function.Timeout", outcome
    assert wait_for(lambda: not [p for p in psutil.process_iter() if _cmd_has(p, marker)], 30,
                    what="the setsid child to be gone")
    env = sandbox_mod.function_env(fn, api_url="http://127.0.0.1:1", token="t")
    assert SERVER_SECRET not in env and env["LOOPML_TOKEN"] == "t"


@needs_bwrap
def test_loopml_home_inside_a_mounted_path_is_masked(tmp_path, monkeypatch):
    """A LOOPML_HOME (or database, or artifact folder) inside the virtualenv or the package folder
    would be mounted with it: it is covered by an empty folder (a file by /dev/null)."""
    import subprocess

    venv = tmp_path / "venv"
    home = venv / "loopml-home"
    (home / "artifacts").mkdir(parents=True)
    (home / "loopml.db").write_text("secret rows")
    lone_db = venv / "elsewhere.db"
    lone_db.write_text("more secret rows")
    code = tmp_path / "code"
    code.mkdir()
    monkeypatch.setattr(sandbox_mod, "python_paths", lambda: [str(venv)])
    argv = sandbox_mod.bwrap_argv(code, ["/bin/sh", "-c", f"ls -A {venv} {home}; cat {lone_db}; echo end"],
                                  [str(home), str(lone_db)], root=os.geteuid() == 0)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "loopml.db" not in out.stdout and "artifacts" not in out.stdout and "secret" not in out.stdout
    assert "elsewhere.db" in out.stdout and out.stdout.rstrip().endswith("end")  # there, but empty


def test_fallback_is_announced_at_server_start(platform, monkeypatch, caplog):
    from loopml.controlplane import functions as cp

    monkeypatch.setattr(cp, "detect_sandbox", lambda: sandbox_mod.Sandbox("fallback", reason="bwrap not found"))
    with caplog.at_level("WARNING", logger="loopml.controlplane.functions"):
        cp.FunctionDispatcher(platform).stop()
    [line] = [r.getMessage() for r in caplog.records if "bubblewrap" in r.getMessage()]
    assert "WITHOUT the bubblewrap sandbox (bwrap not found)" in line and "\n" not in line
