"""Hardening of the control plane and its storage (issue 15 point 4), each item reproduced
against a real control plane (uvicorn on 127.0.0.1, SQLite, local artifacts) and refused:
JSON with lone surrogates or deep nesting, webhook bodies read only after the secret,
names with a trailing newline, monitor webhook URLs, file modes, stale upload temporaries,
dataset sources / symlinks and function zip entries."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import time
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.store import tables as t
from loopml.store.triggers_repo import Firing
from tests.surface_support import assert_error

LONE_SURROGATE = b'{"x": "\\ud800"}'
DEEP = b"[" * 1000 + b"]" * 1000


def add_function(plat: Platform, name: str = "echo") -> None:
    with plat.meta.session() as s:
        s.add(t.Function(name=name, handler="handler.main", code_key=f"functions/{name}/code.py",
                         code_sha256="0" * 64, timeout_s=30.0, memory_mb=128, environment={}))


@pytest.fixture
def plat(live_server: str, settings: Settings):
    plat = Platform(settings)
    add_function(plat)
    yield plat
    plat.close()


@pytest.fixture
def api(live_server: str, plat: Platform):
    with httpx.Client(base_url=live_server, timeout=30) as http:
        yield http


def _hook(api: httpx.Client, name: str = "gh") -> str:
    created = api.post("/triggers", json={"name": name, "kind": "webhook", "function": "echo"})
    assert created.status_code == 201, created.text
    return created.json()["secret"]


# -- a. lone surrogates ---------------------------------------------------------------------------

def test_lone_surrogates_are_refused_wherever_json_enters(api: httpx.Client, plat: Platform):
    secret = _hook(api)
    json_type = {"Content-Type": "application/json"}
    assert_error(api.post("/triggers", content=LONE_SURROGATE, headers=json_type), 400, "invalid_input",
                 "lone UTF-16 surrogate")
    assert_error(api.post("/triggers", content=LONE_SURROGATE), 400, "invalid_input", "surrogate")  # no type
    assert_error(api.post("/functions/echo/invocations", content=b'{"event": {"k\\udc00": 1}}', headers=json_type),
                 400, "invalid_input", "surrogate")
    assert_error(api.post("/hooks/gh", content=LONE_SURROGATE, headers={"Authorization": f"Bearer {secret}"}),
                 400, "invalid_input", "surrogate")
    handler = b"def handler(event, context):\n    return event\n"
    assert_error(api.post("/functions", data={"name": "env-fn", "environment": '{"K": "\\ud800"}'},
                          files={"code": ("handler.py", handler)}), 400, "invalid_input", "environment", "surrogate")
    # a surrogate PAIR is a real character (U+1F600) and goes through
    ok = api.post("/hooks/gh", content=b'{"x": "\\ud83d\\ude00"}', headers={"Authorization": f"Bearer {secret}"})
    assert ok.status_code == 202, ok.text
    assert api.get("/triggers/gh/history").status_code == 200


def test_a_stored_lone_surrogate_never_breaks_a_list(api: httpx.Client, plat: Platform):
    """Records written before input was checked (or by another writer) still list: the bad
    string is answered as U+FFFD."""
    _hook(api)
    plat.triggers.fire("gh", [Firing({"body": {"x": "\ud800"}})])
    plat.functions.enqueue("echo", {"x": "bad \udfff end"}, source="test")
    for path in ("/triggers", "/triggers/gh", "/triggers/gh/history", "/functions/echo/invocations"):
        resp = api.get(path)
        assert resp.status_code == 200, (path, resp.text)
    [firing] = api.get("/triggers/gh/history").json()
    assert firing["event"]["body"] == {"x": "\ufffd"}
    events = [i["event"] for i in api.get("/functions/echo/invocations").json()]
    assert {"x": "bad \ufffd end"} in events


# -- b. deep nesting, webhook bodies ---------------------------------------------------------------

def test_deep_nesting_is_a_400_not_a_recursion_error(api: httpx.Client):
    secret = _hook(api)
    for body in (DEEP, b'{"name": ' + DEEP + b"}", b'{"a":' * 1000 + b"1" + b"}" * 1000):
        assert_error(api.post("/triggers", content=body, headers={"Content-Type": "application/json"}),
                     400, "invalid_input", "nested more than")
    assert_error(api.post("/hooks/gh", content=DEEP, headers={"Authorization": f"Bearer {secret}"}),
                 400, "invalid_input", "nested more than")
    # brackets inside strings are text, not nesting
    text = {"name": "ok-name", "kind": "webhook", "function": "echo", "suffix": "[" * 500}
    resp = api.post("/triggers", content=json.dumps(text).encode(), headers={"Content-Type": "application/json"})
    assert_error(resp, 400, "invalid_input", "suffix")  # the route's own rule, not the nesting check
    assert api.get("/health").status_code == 200


def _raw_request(url: str, head: bytes) -> bytes:
    """Send ``head`` (request line + headers, no body) and read the answer; the server must
    answer without waiting for the announced body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        sock.sendall(head)
        data = b""
        while b"\r\n\r\n" not in data or not _complete(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def test_hook_bodies_are_read_only_after_the_secret(api: httpx.Client, live_server: str, plat: Platform):
    """An anonymous caller announcing 50 MiB gets its 401/404 at once: nothing of the body is
    read (the old server buffered up to 8 MiB before looking at the secret)."""
    _hook(api)
    announce = (b"POST /hooks/%s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 52428800\r\n%s\r\n")
    answer = _raw_request(live_server, announce % (b"gh", b""))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    answer = _raw_request(live_server, announce % (b"gh", b"Authorization: Bearer wrong\r\n"))
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    answer = _raw_request(live_server, announce % (b"nobody", b"Authorization: Bearer x\r\n"))
    assert answer.startswith(b"HTTP/1.1 404"), answer[:200]


def test_unknown_hooks_do_not_name_other_triggers(api: httpx.Client):
    created = api.post("/triggers", json={"name": "nightly", "kind": "cron", "cron": "0 3 * * *",
                                          "function": "echo"})
    assert created.status_code == 201, created.text
    for name in ("nightly", "nobody"):
        body = assert_error(api.post("/hooks/" + name, json={}, headers={"Authorization": "Bearer x"}),
                            404, "not_found", f"no webhook trigger {name!r}")
        assert "cron" not in body["message"] and "kind" not in body["message"]


# -- c. names -----------------------------------------------------------------------------------

def test_names_with_a_trailing_newline_are_refused(api: httpx.Client):
    assert_error(api.post("/endpoints", json={"name": "nl\n", "model": "tiny:1"}), 400, "invalid_input",
                 "endpoint name")
    assert_error(api.post("/endpoints", json={"name": "ok", "variants": [{"name": "v\n", "ref": "tiny:1"}]}),
                 400, "invalid_input", "variant name")
    assert_error(api.post("/triggers", json={"name": "t\n", "kind": "webhook", "function": "echo"}),
                 400, "invalid_input", "name")


def test_every_name_rule_is_anchored_at_the_very_end():
    from loopml.core import names
    from loopml.registry.refs import check_alias_name
    from loopml.serving.spec import normalise_spec

    rules = [getattr(names, n) for n in dir(names) if n.endswith("_RE")]
    assert len(rules) >= 9
    for rule in rules:
        assert rule.match("a1\n") is None, rule.pattern  # even .match (not only fullmatch) refuses
    for check in (names.dataset_name, names.model_name, names.endpoint_name, names.function_name,
                  names.workflow_name, names.execution_name, names.trigger_name, names.monitor_name,
                  names.tuning_name, check_alias_name):
        with pytest.raises(Exception) as caught:
            check("abc\n")
        assert type(caught.value).__name__ == "InvalidInput"
    with pytest.raises(Exception, match="variant name"):
        normalise_spec({"variants": [{"name": "v\n", "ref": "m:1"}]})


# -- d. monitor webhook URLs ---------------------------------------------------------------------

REFUSED_WEBHOOKS = {
    "http://169.254.169.254/latest/meta-data/": "link-local",
    "http://127.0.0.1:6379/": "loopback",
    "http://localhost:5432/": "loopback",
    "http://10.1.2.3/hook": "private",
    "http://[::1]:8080/hook": "loopback",
    "http://[::ffff:169.254.169.254]/": "link-local",
    "http://2130706433/": "written as a number",
    "http://0x7f000001/": "written as a number",
    "http://0177.0.0.1/": "written as a number",
    "http://127.1/": "written as a number",
    "https://user:hunter2@hooks.example/alert": "credentials",
}


def test_monitor_webhooks_refuse_private_hosts_tricks_and_credentials(api: httpx.Client, plat: Platform):
    from tests.test_monitors import add_endpoint

    add_endpoint(plat, "mnist")
    for url, why in REFUSED_WEBHOOKS.items():
        body = assert_error(api.post("/monitors", json={"name": "m", "endpoint": "mnist", "webhooks": [url]}),
                            400, "invalid_input", "webhook", why)
        assert "hunter2" not in body["message"]
    assert api.get("/monitors").json() == []
    ok = api.post("/monitors", json={"name": "m", "endpoint": "mnist",
                                     "webhooks": ["https://hooks.example/alert?token=abc"]})
    assert ok.status_code == 201, ok.text


def test_private_webhooks_are_allowed_only_by_a_setting(platform: Platform):
    from loopml.core.errors import InvalidInput
    from loopml.core.urlpolicy import URLPolicy
    from loopml.monitoring import monitors
    from tests.test_monitors import add_endpoint

    add_endpoint(platform, "mnist")
    with pytest.raises(InvalidInput, match="loopback"):
        monitors.create_monitor(platform, "m", "mnist", webhooks=["http://127.0.0.1:9/hook"])
    lab = Platform(platform.settings.model_copy(update={"webhook_allow_private": True}))
    try:
        assert monitors.create_monitor(lab, "m", "mnist", webhooks=["http://127.0.0.1:9/hook"])["webhooks"]
    finally:
        lab.close()
    listed = URLPolicy(allow_hosts=["10.2.0.0/16", "hooks.internal"])
    assert listed.check("http://10.2.3.4/h") and listed.check("http://hooks.internal/h")
    with pytest.raises(ValueError, match="private"):
        listed.check("http://10.3.0.1/h")
    with pytest.raises(ValueError, match="credentials"):  # credentials stay refused, whatever is allowed
        URLPolicy(allow_private=True).check("http://u:p@127.0.0.1/h")


def test_webhook_sends_follow_no_redirect_and_redact_the_url(tmp_path: Path):
    """A 302 to the metadata service is a failure, not a second request; what is recorded and
    logged has no query string or credentials."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from loopml.core.urlpolicy import URLPolicy
    from loopml.monitoring.alerts import post_webhook

    hits: list[str] = []

    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    lab = URLPolicy(allow_private=True)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/alert?token=s3cret"
        outcome = post_webhook(url, {"a": 1}, policy=lab, tries=1)
        assert (outcome["ok"], outcome["status"]) == (False, 302) and "not followed" in outcome["error"]
        assert hits == ["/alert?token=s3cret"] and "s3cret" not in json.dumps(outcome)
        assert outcome["url"] == f"http://127.0.0.1:{server.server_address[1]}/alert"
    finally:
        server.shutdown()
        server.server_close()
    # a stored URL that policy now refuses (setting changed, or a name resolving to loopback) is
    # not contacted at all
    refused = post_webhook("http://localhost:9/x?key=abc", {"a": 1}, sleep=lambda _s: None)
    assert refused["attempts"] == 0 and "refused" in refused["error"] and "abc" not in json.dumps(refused)
    failed = post_webhook("http://127.0.0.1:9/x?key=abc", {"a": 1}, policy=lab, tries=1)
    assert not failed["ok"] and failed["error"] and "abc" not in json.dumps(failed)


# -- e. secrets off the command line, private files ------------------------------------------------

def test_worker_command_lines_carry_no_database_url(settings: Settings):
    """``ps`` shows every local user a process's arguments: the database URL (with its password)
    reaches workers through their environment only."""
    from loopml.jobs.local import LocalExecutor
    from loopml.jobs.spares import SparePool

    secret_url = "postgresql://loopml:pa55word@db.internal:5432/loopml"
    with_password = settings.model_copy(update={"database_url": secret_url})
    for command in (LocalExecutor.command("job-1"), SparePool.command(5)):
        assert not any("pa55word" in arg or "postgresql" in arg for arg in command), command
    assert with_password.child_env("worker")["LOOPML_DATABASE_URL"] == secret_url
    assert with_password.child_env("serving")["LOOPML_DATABASE_URL"] == secret_url
    assert "LOOPML_DATABASE_URL" not in with_password.child_env("function")


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_home_database_and_captured_traffic_are_private(settings: Settings):
    """Home 0700, the SQLite database (and its WAL) and every artifact — captured traffic among
    them, written by the data plane through the same store — 0600; folders 0700. An existing
    0755 home (made before this) is tightened."""
    home = settings.home
    home.mkdir(parents=True)
    home.chmod(0o755)
    plat = Platform(settings)
    try:
        plat.artifacts.put_bytes("capture/mnist/primary/2026/12/03/10/part-1.jsonl.gz", b"{}")
        with plat.artifacts.open_write("datasets/d/v1/data.npz") as f:
            f.write(b"x")
        source = home.parent / "model.keras"
        source.write_bytes(b"m")
        plat.artifacts.put_file(source, "models/m/v1/model.keras")
        plat.triggers.list()  # the database is open (WAL files exist)
        modes = _modes(home)
    finally:
        plat.close()
    assert modes["."] == 0o700
    assert modes["loopml.db"] == 0o600
    loose = {path: oct(mode) for path, mode in modes.items()
             if mode & 0o077 and not (home / path).is_symlink()}
    assert loose == {}, loose
    assert modes["artifacts/capture/mnist/primary/2026/12/03/10/part-1.jsonl.gz"] == 0o600


# -- f. leftovers of interrupted uploads --------------------------------------------------------------

def test_start_up_removes_stale_upload_leftovers_only(settings: Settings):
    """What a kill -9 during uploads leaves (``tmp/upload-*`` folders, ``*.tmp-*`` files) goes
    at the next start; recent ones (a live upload of another process) stay."""
    from loopml.api.app import create_app
    from tests.asgi_server import bound_socket, serve_asgi

    plat = Platform(settings)
    plat.artifacts.put_bytes("datasets/d/v1/data.npz", b"data")
    root = Path(plat.artifacts.local_root)
    plat.close()
    old = time.time() - 2 * 3600
    stale_upload = settings.home / "tmp" / "upload-abc123"
    (stale_upload / "unzipped").mkdir(parents=True)
    (stale_upload / "unzipped" / "img.png").write_bytes(b"png")
    stale_import = settings.home / "tmp" / "import-def456"
    stale_import.mkdir()
    live_upload = settings.home / "tmp" / "upload-live"
    live_upload.mkdir()
    (live_upload / "part").write_bytes(b"being written")
    stale_tmp = root / "datasets/d/v2/data.npz.tmp-0123abcd"
    stale_tmp.parent.mkdir(parents=True)
    stale_tmp.write_bytes(b"half")
    live_tmp = root / "datasets/d/v3/data.npz.tmp-4567ef"
    live_tmp.parent.mkdir(parents=True)
    live_tmp.write_bytes(b"writing")
    for path in (stale_upload / "unzipped" / "img.png", stale_upload / "unzipped", stale_upload, stale_import,
                 stale_tmp, root / "datasets/d/v1/data.npz"):
        os.utime(path, (old, old))

    sock = bound_socket()
    with sock, serve_asgi(create_app(settings, start_loop=False), sock=sock) as url:
        assert httpx.get(f"{url}/health").status_code == 200
    assert not stale_upload.exists() and not stale_import.exists() and not stale_tmp.exists()
    assert live_upload.exists() and live_tmp.exists()
    assert (root / "datasets/d/v1/data.npz").read_bytes() == b"data"  # real artifacts are untouched


# -- g. dataset sources, uploaded folders' symlinks, function zip entries -----------------------------

def test_unsupported_dataset_sources_are_400s(api: httpx.Client, monkeypatch: pytest.MonkeyPatch):
    for source in ("ftp://127.0.0.1:1/data.csv", "http://127.0.0.1:1/data.csv", "gopher://x/y"):
        assert_error(api.post("/datasets", json={"name": "d", "source": source}), 400, "invalid_input",
                     "unsupported scheme", "s3://")
    # S3 without any credentials (no env, no files, no instance metadata): said, not a 500
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert_error(api.post("/datasets", json={"name": "d", "source": "s3://bucket/data.csv"}), 400,
                 "invalid_input", "no S3 credentials", "AWS_ACCESS_KEY_ID")
    assert api.get("/datasets").json() == []


def test_uploaded_folders_refuse_dangling_and_outward_symlinks(live_server: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    from tests.surface_support import cli_runner
    from tests.test_cli import one_line_error

    cli = cli_runner(live_server, monkeypatch)
    secret = tmp_path / "outside" / "id_rsa.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for the server")
    folder = tmp_path / "digits"
    (folder / "0").mkdir(parents=True)
    (folder / "0" / "a.png").write_bytes(b"png")
    (folder / "0" / "gone.png").symlink_to(tmp_path / "deleted.png")
    one_line_error(cli("datasets", "add", "digits", str(folder)), 2, "gone.png", "does not exist")
    (folder / "0" / "gone.png").unlink()
    (folder / "0" / "key.png").symlink_to(secret)
    one_line_error(cli("datasets", "add", "digits", str(folder)), 2, "key.png", "out of the folder")
    (folder / "0" / "key.png").unlink()
    (folder / "1").symlink_to(secret.parent, target_is_directory=True)
    one_line_error(cli("datasets", "add", "digits", str(folder)), 2, "out of the folder")


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data)
    return buf.getvalue()


def test_function_zips_with_dot_dotdot_or_absolute_entries_are_refused(api: httpx.Client):
    handler = b"def handler(event, context):\n    return event\n"
    for bad in (".", "./", "../evil.py", "/etc/cron.d/x", "pkg/./mod.py", "a\\b.py"):
        code = _zip({"handler.py": handler, bad: b"x"})
        resp = api.post("/functions", data={"name": "fn", "handler": "handler.handler"},
                        files={"code": ("code.zip", code, "application/zip")})
        assert_error(resp, 400, "invalid_input", "zip entry")
    assert all(f["name"] != "fn" for f in api.get("/functions").json())
    good = api.post("/functions", data={"name": "fn", "handler": "handler.handler"},
                    files={"code": ("code.zip", _zip({"handler.py": handler, "lib/": b""}), "application/zip")})
    assert good.status_code == 201, good.text
