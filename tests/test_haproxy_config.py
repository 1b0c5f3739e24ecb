"""`loopml nodes haproxy`: HAProxy's configuration with the live data-plane nodes as servers —
the shipped deploy/haproxy.cfg is the same template, so what the tests run is what users get."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from loopml.cli.haproxy import live_servers, render
from loopml.cli.main import app
from tests.process_support import wait_for
from tests.test_cli import one_line_error

DEPLOY_CFG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"


def test_the_shipped_config_is_the_template():
    assert render([("node1", "10.0.0.11:8081"), ("node2", "10.0.0.12:8081")]) == DEPLOY_CFG.read_text()


def test_only_live_nodes_once_per_address():
    nodes = [
        {"id": "a-1-x", "address": "http://10.0.0.1:8081", "state": "ready", "lost": False},
        {"id": "a-2-y", "address": "http://10.0.0.1:8081", "state": "ready", "lost": False},  # 2nd worker
        {"id": "b-1-z", "address": "http://10.0.0.2:9000", "state": "starting", "lost": False},
        {"id": "c-1-q", "address": "http://10.0.0.3:8081", "state": "ready", "lost": True},
        {"id": "d-1-r", "address": "http://10.0.0.4:8081", "state": "draining", "lost": False},
        {"id": "e-1-s", "address": "http://10.0.0.5:8081", "state": "gone", "lost": False},
        {"id": "f 1/t", "address": "http://[::1]:8081", "state": "ready", "lost": False},
    ]
    assert live_servers(nodes) == [("a-1-x", "10.0.0.1:8081"), ("b-1-z", "10.0.0.2:9000"),
                                   ("f_1_t", "[::1]:8081")]
    cfg = render(live_servers(nodes), bind="127.0.0.1:9999")
    assert "    bind 127.0.0.1:9999\n" in cfg and cfg.endswith("    server f_1_t [::1]:8081 check\n")


def test_cli_lists_the_running_data_plane_and_refuses_an_empty_backend(live_server, monkeypatch):
    from loopml.sdk.client import Client

    monkeypatch.setenv("LOOPML_API_URL", live_server)
    client = Client(live_server)
    nodes = wait_for(lambda: [n for n in client.serving_nodes() if n["state"] == "ready"], 120, 0.2,
                     what="the embedded data plane reporting itself")
    out = CliRunner().invoke(app, ["nodes", "haproxy", "--bind", "127.0.0.1:18081"])
    assert out.exit_code == 0, out.output
    address = nodes[0]["address"].removeprefix("http://")
    assert f" {address} check\n" in out.stdout and "    bind 127.0.0.1:18081\n" in out.stdout
    assert "option httpchk GET /readyz" in out.stdout
    one_line_error(CliRunner().invoke(app, ["nodes", "haproxy", "--endpoint", "nope"]), 2,
                   "no live data-plane node serves endpoint 'nope'")
