"""`loopml users|tokens|login|logout|audit` against a real control plane (uvicorn, port 0) with a
bootstrap LOOPML_TOKEN: what a new team member does, start to end."""

from __future__ import annotations

import json
import stat

import pytest
from typer.testing import CliRunner

from loopml.cli.main import app
from loopml.core.settings import credentials_path

BOOT = "bootstrap-secret"


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"token": BOOT})


@pytest.fixture
def loopml(live_server, monkeypatch, tmp_path):
    monkeypatch.setenv("LOOPML_API_URL", live_server)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    runner = CliRunner()

    def run(*args: str, token: str | None = None, code: int = 0):
        if token is None:
            monkeypatch.delenv("LOOPML_TOKEN", raising=False)
        else:
            monkeypatch.setenv("LOOPML_TOKEN", token)
        result = runner.invoke(app, list(args), catch_exceptions=False)
        assert result.exit_code == code, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
        if code:
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output
        return result
    return run


def test_users_tokens_login_and_audit_from_the_command_line(loopml, live_server) -> None:
    made = json.loads(loopml("users", "create", "alice", "--role", "editor", "--json", token=BOOT).stdout)
    alice = made["token"]
    assert "missing API token" in loopml("datasets", "list", code=2).stderr
    # login: checked against the server, saved 0600, then used by the CLI (and SDK)
    assert "invalid" in loopml("login", "--token", alice[:-1] + ("1" if alice.endswith("0") else "0"), code=2).stderr
    assert not credentials_path().exists()
    out = loopml("login", "--token", alice).stdout
    assert "alice" in out and "editor" in out
    path = credentials_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert alice in path.read_text() and live_server in path.read_text()
    assert json.loads(loopml("datasets", "list", "--json").stdout) == []
    assert "users:read" in loopml("users", "list", code=2).stderr
    assert "invalid" in loopml("datasets", "list", token="lml_000000000000_" + "0" * 48, code=2).stderr  # env wins
    # tokens: a narrower one for CI, shown once, listed without its secret, revoked
    ci = loopml("tokens", "create", "--name", "ci", "--expires", "30d", "--role", "viewer").stdout
    ci_token = [line for line in ci.splitlines() if line.startswith("lml_")][0]
    listed = json.loads(loopml("tokens", "list", "--json").stdout)
    assert {t["name"] for t in listed} == {"initial", "ci"} and ci_token not in json.dumps(listed)
    assert json.loads(loopml("datasets", "list", "--json", token=ci_token).stdout) == []
    assert "datasets:write" in loopml("datasets", "add", "x", "sample:mnist", token=ci_token, code=2).stderr
    assert "--role 'boss'" in loopml("tokens", "create", "--role", "boss", code=2).stderr
    assert "30d" in loopml("tokens", "create", "--expires", "soon", code=2).stderr
    loopml("tokens", "revoke", ci_token)  # the whole token pasted: its id is used
    assert "revoked" in loopml("datasets", "list", token=ci_token, code=2).stderr
    # the admin reads who did what
    events = json.loads(loopml("audit", "list", "--user", "alice", "--json", token=BOOT).stdout)
    assert [e["action"] for e in events][:2] == ["DELETE /tokens/{token_id}", "POST /tokens"]
    assert "alice" in loopml("audit", "list", "--since", "1h", token=BOOT).stdout
    assert "audit:read" in loopml("audit", "list", code=2).stderr
    assert "alice" in loopml("users", "list", token=BOOT).stdout
    loopml("logout")
    assert not path.exists()
    assert "missing API token" in loopml("datasets", "list", code=2).stderr


def test_a_saved_login_is_never_sent_to_another_server(loopml, live_server, monkeypatch) -> None:
    from loopml.core.settings import save_login
    from loopml.sdk.http import Connection

    alice = json.loads(loopml("users", "create", "alice", "--role", "viewer", "--json", token=BOOT).stdout)["token"]
    monkeypatch.delenv("LOOPML_TOKEN", raising=False)
    save_login(live_server + "/", alice)
    assert Connection(live_server)._http.headers["authorization"] == f"Bearer {alice}"
    assert "authorization" not in Connection("http://127.0.0.1:1")._http.headers


def test_login_into_an_unwritable_config_folder_is_one_line(loopml, monkeypatch, tmp_path) -> None:
    alice = json.loads(loopml("users", "create", "alice", "--role", "viewer", "--json", token=BOOT).stdout)["token"]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the config folder should be")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(blocker))
    err = loopml("login", "--token", alice, code=2).stderr
    assert "cannot save the token" in err and "LOOPML_TOKEN" in err
