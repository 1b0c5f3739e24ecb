"""What an operator meets first: the two ports of `loopml server` (issue 10, items 1, 10, 19).

Real control planes (the ``live_server`` fixture, and `loopml server` itself in a subprocess on
free ports), real serving processes, real httpx / boto3 / CLI clients.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading

import httpx
import pytest
from typer.testing import CliRunner

from loopml.cli.main import app
from tests.process_support import free_port, server_env, wait_for

pytest_plugins = ("tests.serving_support",)  # digit_bundles: small trained CNNs


def _data_plane(control_url: str) -> str:
    health = httpx.get(f"{control_url}/healthz").json()
    assert health["status"] == "ok" and health["data_plane"], health
    return health["data_plane"]


# -- item 1: the data-plane port answers from the start, with zero endpoints --------------------

def test_data_plane_answers_before_any_endpoint_exists(live_server):
    data_plane = _data_plane(live_server)
    with httpx.Client(base_url=data_plane, timeout=30) as http:
        # the serving process starts with the control plane: /ping settles to 200 (503
        # "loading" only until its first look at the metadata store), it never hangs
        wait_for(lambda: http.get("/ping").status_code == 200, what="/ping 200")
        for path in ("/healthz", "/readyz"):
            r = http.get(path)
            assert (r.status_code, r.json()) == (200, {"status": "ok"}), path
        r = http.post("/endpoints/x/invocations", content=b'{"instances": [[1]]}',
                      headers={"content-type": "application/json"})
        assert r.status_code == 404
        assert r.headers["x-amzn-errortype"] == "ValidationError"
        assert r.json() == {"message": "Endpoint x not found."}

    import boto3
    from botocore.config import Config

    rt = boto3.client("sagemaker-runtime", endpoint_url=data_plane, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x",
                      config=Config(read_timeout=30, retries={"max_attempts": 1}))
    with pytest.raises(rt.exceptions.ValidationError) as err:
        rt.invoke_endpoint(EndpointName="x", ContentType="application/json", Body=b"[[1]]")
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "Endpoint x not found" in str(err.value)


# -- item 19: /healthz on the control plane, API docs without a CDN ----------------------------

def test_control_plane_healthz_and_docs_load_only_local_assets(live_server):
    r = httpx.get(f"{live_server}/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["version"]
    for page in ("/docs", "/redoc"):
        html = httpx.get(live_server + page)
        assert html.status_code == 200 and "text/html" in html.headers["content-type"]
        assert not re.search(r"https?://", html.text), html.text  # no CDN, no web fonts
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
        assert any(a.endswith(".js") for a in assets), assets
        for asset in assets:
            assert asset.startswith("/"), asset
            got = httpx.get(live_server + asset)
            assert got.status_code == 200 and len(got.content) > 0, asset
    spec = httpx.get(f"{live_server}/openapi.json")
    assert spec.status_code == 200 and "/healthz" in spec.json()["paths"]


def test_control_plane_healthz_is_open_with_a_token(settings):
    from loopml.api.app import create_app
    from tests.asgi_server import serve_asgi

    with serve_asgi(create_app(settings.model_copy(update={"token": "s3cret"}),
                               start_loop=False)) as url:
        assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
        assert httpx.get(f"{url}/datasets").status_code == 401


# -- item 10: the CLI pointed at the data plane says so -----------------------------------------

def test_cli_pointed_at_the_data_plane_says_so(live_server, monkeypatch):
    data_plane = _data_plane(live_server)
    monkeypatch.setenv("LOOPML_API_URL", data_plane)
    wait_for(lambda: httpx.get(f"{data_plane}/healthz", timeout=30).status_code == 200,
             what="data plane up")
    result = CliRunner().invoke(app, ["datasets", "list"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    assert f"{data_plane} is LoopML's data plane" in lines[0]
    assert "LOOPML_API_URL" in lines[0] and ":8080" in lines[0]
    assert "no route" not in lines[0]


# -- items 10 and 19: `loopml server` itself ----------------------------------------------------

class _Server:
    """`loopml server` in a subprocess; its stderr collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "server"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def has(self, fragment: str) -> bool:
        return any(fragment in line for line in self.lines)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._reader.join(10)
        return code


def _server_env(tmp_path, port: int, serving_port: int) -> dict[str, str]:
    return server_env(tmp_path / "home", port, serving_port,
                      PYTHONPATH=os.pathsep.join(p for p in sys.path if p))


def _second_server(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "loopml.cli.main", "server"], env=env,
                          capture_output=True, text=True, timeout=120)


def test_server_start_stop_lines_and_busy_ports(tmp_path):
    port, serving_port = free_port(), free_port()
    first = _Server(_server_env(tmp_path, port, serving_port))
    try:
        wait_for(lambda: first.has("LoopML started") or first.proc.poll() is not None,
                 timeout=120, what="the start line")
        started = next(line for line in first.lines if "LoopML started" in line)
        assert f"control plane http://127.0.0.1:{port}" in started
        assert f"data plane http://127.0.0.1:{serving_port}" in started
        assert f"serving log {tmp_path / 'home' / 'logs' / 'serving.log'}" in started
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{serving_port}/ping",
                                   timeout=30).status_code == 200, what="/ping 200")

        # the same control-plane port again: one line, exit 2, no uvicorn ERROR
        again = _second_server(_server_env(tmp_path / "b", port, free_port()))
        assert again.returncode == 2, again.stderr
        assert again.stderr.strip() == (f"error: port {port} is in use — is another `loopml "
                                        "server` running? set LOOPML_PORT (or --port)")
        # a free control-plane port, but the data plane's is taken
        again = _second_server(_server_env(tmp_path / "c", free_port(), serving_port))
        assert again.returncode == 2, again.stderr
        assert again.stderr.strip() == (f"error: port {serving_port} (the data plane's) is in "
                                        "use — is another `loopml server` running? set "
                                        "LOOPML_SERVING_PORT")
    finally:
        code = first.stop()
    assert code == 0, "\n".join(first.lines)
    stopped = [line for line in first.lines if "LoopML stopped" in line]
    assert len(stopped) == 1 and f"data plane http://127.0.0.1:{serving_port}" in stopped[0]
    assert not any("ERROR" in line or "Traceback" in line for line in first.lines), first.lines


def test_server_refuses_one_port_for_both_planes(tmp_path):
    port = free_port()
    out = _second_server(_server_env(tmp_path, port, port))
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: the control plane (LOOPML_PORT / --port) and the data "
                                  f"plane (LOOPML_SERVING_PORT) are both set to port {port}; they "
                                  "need a port each")


def test_a_second_server_on_the_same_sqlite_home_refuses_to_start(tmp_path):
    # SQLite is single-process (issue 14): two control planes on one home would both dispatch
    first = _Server(_server_env(tmp_path, free_port(), free_port()))
    try:
        wait_for(lambda: first.has("LoopML started") or first.proc.poll() is not None,
                 timeout=120, what="the start line")
        assert first.has("LoopML started"), first.lines
        again = _second_server(_server_env(tmp_path, free_port(), free_port()))  # same home
        assert again.returncode == 2, again.stderr
        db = tmp_path / "home" / "loopml.db"
        assert again.stderr.strip() == (f"error: another `loopml server` (pid {first.proc.pid}) is "
                                        f"using the SQLite database {db}; SQLite serves one control "
                                        "plane: stop that one, or set LOOPML_DATABASE_URL to "
                                        "PostgreSQL to run two")
    finally:
        assert first.stop() == 0, first.lines


def test_server_killed_and_restarted_at_once_gets_its_data_plane_port_back(tmp_path):
    # the killed control plane's serving process holds the data plane's socket until it notices
    # its parent is gone (the new server allows it a few seconds): the restart must not be
    # refused with "port in use", as test_server_restart's re-attach relies on
    env = _server_env(tmp_path, free_port(), free_port())
    first = _Server(env)
    second = None
    try:
        wait_for(lambda: first.has("LoopML started") or first.proc.poll() is not None,
                 timeout=120, what="the start line")
        assert first.has("LoopML started"), first.lines
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
        second = _Server(env)
        wait_for(lambda: second.has("LoopML started") or second.proc.poll() is not None,
                 timeout=120, what="the second start line")
        assert second.has("LoopML started"), second.lines
        port = env["LOOPML_SERVING_PORT"]
        wait_for(lambda: httpx.get(f"http://127.0.0.1:{port}/ping", timeout=30).status_code == 200,
                 what="/ping 200")
    finally:
        first.stop()
        if second is not None:
            assert second.stop() == 0, second.lines


# -- item 14 through the CLI: an image file to a real endpoint --------------------------------

def test_cli_invokes_an_endpoint_with_a_png_file(live_server, settings, digit_bundles,
                                                 digits_data, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    import json

    import numpy as np
    from PIL import Image

    from loopml.platform import Platform
    from tests.serving_support import register

    plat = Platform(settings, create_schema=False)  # the live server's own store
    try:
        register(plat, "digits", digit_bundles[1])
    finally:
        plat.close()
    monkeypatch.setenv("LOOPML_API_URL", live_server)
    runner = CliRunner()
    made = runner.invoke(app, ["endpoints", "create", "digits", "--model", "digits:1", "--wait"])
    assert made.exit_code == 0, made.output
    images = digits_data[0]
    Image.fromarray(images[3].astype(np.uint8)).save(tmp_path / "digit.png")
    out = runner.invoke(app, ["endpoints", "invoke", "digits", "--file",
                              str(tmp_path / "digit.png"), "--json"])
    assert out.exit_code == 0, out.output
    (pred,) = json.loads(out.stdout)["predictions"]
    as_json = httpx.post(f"{_data_plane(live_server)}/endpoints/digits/invocations",
                         json={"instances": images[3:4].tolist()}).json()["predictions"]
    assert [pred] == as_json
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(tmp_path / "wide.png")
    bad = runner.invoke(app, ["endpoints", "invoke", "digits", "--file", str(tmp_path / "wide.png")])
    assert bad.exit_code == 2 and "8×8 greyscale images" in bad.stderr, bad.output
