"""Data-plane nodes behind a load balancer (issue 14, point 2a): real processes end to end.

PostgreSQL (fresh schema) + the moto S3 server; a `loopml server` control plane creates endpoint
``digits`` (a tiny trained CNN, 100 % capture); two `loopml serve` nodes on two ports, each with
its own home; HAProxy (/usr/sbin/haproxy) in front, running the shipped deploy/haproxy.cfg with
its bind and server lines swapped for this test's ports. Load goes through HAProxy; one node is
killed with SIGKILL mid-load, then the control plane too. What is asserted:

* every request through the LB is answered 200 — HAProxy resends a request the killed node
  never answered (``retry-on conn-failure empty-response``) — at most ``THREADS`` (the requests in
  flight at the kill) are allowed to fail, and the number that did is printed;
* `endpoints show` lists both nodes, then the killed one as lost; with the control plane killed
  the surviving node keeps answering through the LB;
* capture: every object name carries the node id of the node that wrote it (never the same name
  from two nodes), event ids are unique; the surviving node (stopped cleanly) captured exactly the
  requests its /metrics counted as answered 200; the killed node's records are in its spool and
  are uploaded, under its own node id, when a node starts on the same home — between the 200s it
  answered and those plus the requests in flight at the kill (spooled, never answered: the client
  got the answer from the other node after HAProxy's retry).

Run alone: ``pytest -m nodes tests/test_serving_nodes.py -s``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest

from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.sdk.client import Client
from tests.process_support import free_port, start_server, wait_for, without_loopml_vars
from tests.serving_support import Hammer, register
from tests.test_endpoints import images_body

pytestmark = pytest.mark.nodes
pytest_plugins = ("tests.backends", "tests.serving_support")

HAPROXY = "/usr/sbin/haproxy"
DEPLOY_CFG = Path(__file__).resolve().parents[1] / "deploy" / "haproxy.cfg"
THREADS = 4
LOST_AFTER_S = "2"


def haproxy_config(lb_port: int, nodes: list[int]) -> str:
    """deploy/haproxy.cfg with this test's ports, logging off (the test reads no HAProxy log)."""
    cfg = DEPLOY_CFG.read_text()
    cfg = re.sub(r"(?m)^    bind :8081$", f"    bind 127.0.0.1:{lb_port}", cfg)
    cfg = re.sub(r"(?m)^    log stdout.*\n", "", cfg)
    cfg = re.sub(r"(?m)^    log global\n", "", cfg)
    cfg = re.sub(r"(?m)^    server node\d .*\n", "", cfg)
    servers = "".join(f"    server node{i + 1} 127.0.0.1:{port} check\n" for i, port in enumerate(nodes))
    assert "bind 127.0.0.1" in cfg
    return cfg.rstrip("\n") + "\n" + servers


def node_env(home: Path, stores: dict[str, str]) -> dict[str, str]:
    env = without_loopml_vars()
    env.update(LOOPML_HOME=str(home), LOOPML_CONFIG=str(home / "no-such-loopml.toml"),
               LOOPML_NODE_HEARTBEAT_S="0.5", **stores)
    return env


def start_node(home: Path, port: int, stores: dict[str, str], log: Path, *extra: str) -> subprocess.Popen:
    home.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), *extra], env=node_env(home, stores), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"loopml serve exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False
    wait_for(ready, 120, 0.2, what=f"node on port {port} ready")
    return proc


def metric_200(port: int) -> int:
    """Requests of endpoint digits this node answered 200 (its /metrics)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = 0
    for line in text.splitlines():
        if line.startswith("loopml_requests_total{") and 'endpoint="digits"' in line and 'code="200"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def by_node(nodes: list[dict], port: int) -> dict | None:
    return next((n for n in nodes if n["address"] == f"http://127.0.0.1:{port}"), None)


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="needs HAProxy at /usr/sbin/haproxy")
def test_two_nodes_behind_haproxy_one_killed_then_the_control_plane(
        tmp_path, postgres_url, moto_endpoint, s3_bucket, digit_bundles, digits_data) -> None:
    stores = {"LOOPML_DATABASE_URL": postgres_url, "LOOPML_ARTIFACT_URI": f"s3://{s3_bucket}/loopml",
              "LOOPML_S3_ENDPOINT_URL": moto_endpoint}
    platform = Platform(Settings(home=tmp_path / "test-home", database_url=postgres_url,
                                 artifact_uri=stores["LOOPML_ARTIFACT_URI"], s3_endpoint_url=moto_endpoint))
    procs: list[subprocess.Popen] = []
    try:
        register(platform, "digits", digit_bundles[1])
        cp_port = free_port()
        control = start_server(tmp_path / "cp", cp_port, tmp_path / "cp.log", **stores,
                               LOOPML_NODE_LOST_AFTER_S=LOST_AFTER_S, LOOPML_NODE_HEARTBEAT_S="0.5")
        procs.append(control)
        client = Client(f"http://127.0.0.1:{cp_port}", token="")
        client.create_endpoint("digits", model="digits:1", capture_percent=100, wait=True, timeout=120)

        ports = [free_port(), free_port()]
        nodes = [start_node(tmp_path / f"node{i}", port, stores, tmp_path / f"node{i}.log")
                 for i, port in enumerate(ports)]
        procs += nodes

        # endpoints show: where it is served (the control plane's own data plane, and both nodes)
        def both_listed():
            listed = client.endpoint("digits")["nodes"]
            found = [by_node(listed, p) for p in ports]
            return listed if all(n and n["state"] == "ready" and not n["lost"] for n in found) else None
        listed = wait_for(both_listed, 60, 0.2, what="both nodes in endpoints show")
        assert {n["kind"] for n in listed} == {"node", "embedded"}
        ids = [by_node(listed, p)["id"] for p in ports]
        shown = subprocess.run([sys.executable, "-m", "loopml.cli.main", "endpoints", "show", "digits"],
                               env={**without_loopml_vars(), "LOOPML_API_URL": f"http://127.0.0.1:{cp_port}",
                                    "LOOPML_CONFIG": os.devnull, "COLUMNS": "250"},
                               capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        for p in ports:
            assert f"127.0.0.1:{p}" in shown.stdout, shown.stdout
        every = client.serving_nodes()  # GET /nodes: the same rows, whatever they serve
        assert {n["id"] for n in every} >= {n["id"] for n in listed}
        listing = subprocess.run([sys.executable, "-m", "loopml.cli.main", "nodes", "list"],
                                 env={**without_loopml_vars(), "LOOPML_API_URL": f"http://127.0.0.1:{cp_port}",
                                      "LOOPML_CONFIG": os.devnull, "COLUMNS": "300"},
                                 capture_output=True, text=True, timeout=60)
        assert listing.returncode == 0 and all(i in listing.stdout for i in ids), listing.stdout + listing.stderr

        lb_port = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(haproxy_config(lb_port, ports))
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        lb = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=open(tmp_path / "haproxy.log", "wb"),
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(lb)
        url = f"http://127.0.0.1:{lb_port}/endpoints/digits/invocations"
        body = images_body(digits_data[0][:1])
        probes: list[int] = []  # answered by one node or the other: counted with the load
        wait_for(lambda: probes.append(_post(url, body)) or probes[-1] == 200, 30, 0.2, what="HAProxy answering")

        with Hammer(url, body, threads=THREADS) as hammer:
            wait_for(lambda: len(hammer.codes) > 300, 120, what="traffic through the LB")
            killed_at = len(hammer.codes)
            nodes[1].kill()  # SIGKILL
            nodes[1].wait(10)
            wait_for(lambda: len(hammer.codes) > killed_at + 300, 120, what="traffic after the kill")
            # the control plane killed too: the surviving node keeps answering through the LB
            control.kill()
            control.wait(10)
            after_cp = len(hammer.codes)
            wait_for(lambda: len(hammer.codes) > after_cp + 200, 120, what="traffic without a control plane")
        failed = [c for c in hammer.codes if c != 200]
        print(f"\nthrough HAProxy: {len(hammer.codes)} answered, {len(failed)} not 200 {sorted(set(failed))}, "
              f"{len(hammer.errors)} transport errors {hammer.errors[:3]}; node 2 killed after {killed_at}, "
              f"control plane after {after_cp}")
        assert len(failed) + len(hammer.errors) <= THREADS, (failed, hammer.errors[:5])
        assert all(c == 200 for c in hammer.codes[after_cp + THREADS:])  # no control plane: still served

        # the killed node shows as lost (read from the store: the control plane is down too)
        def lost():
            rows = {r["id"]: r for r in platform.nodes.list(serving="digits", lost_after_s=float(LOST_AFTER_S))}
            dead, alive = rows[ids[1]], rows[ids[0]]
            return dead["lost"] and not alive["lost"] and alive["state"] == "ready"
        wait_for(lost, 30, 0.2, what="the killed node shown as lost")

        answered_n1 = metric_200(ports[0])
        stop(nodes[0])  # clean: in-flight answered, capture flushed, its row says gone
        assert nodes[0].returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
        assert platform.nodes.get(ids[0])["state"] == "gone"
        # a node started on the killed node's home uploads its spool (under the killed node's id)
        assert _spooled(tmp_path / "node1"), "the killed node left no spool"
        again = start_node(tmp_path / "node1", ports[1], stores, tmp_path / "node1-again.log")
        procs.append(again)
        stop(again)  # its capture thread recovers the spool before its final flush
        assert again.returncode in (0, -signal.SIGTERM)
        assert not _spooled(tmp_path / "node1") and not _spooled(tmp_path / "node0")
        stop(lb)

        files = [k for k in platform.artifacts.list("capture/digits/primary") if k.endswith(".jsonl")]
        records: dict[str, list[dict]] = {i: [] for i in ids}
        for key in files:
            owner = [i for i in ids if f"-{i}-" in key.rsplit("/", 1)[1]]
            assert len(owner) == 1, key  # every name carries exactly one writer's node id
            records[owner[0]] += [orjson.loads(line) for line in platform.artifacts.get_bytes(key).splitlines()]
        events = [r["eventMetadata"]["eventId"] for rs in records.values() for r in rs]
        assert len(events) == len(set(events))
        answered = hammer.codes.count(200) + probes.count(200)
        captured_n1, captured_n2 = len(records[ids[0]]), len(records[ids[1]])
        print(f"capture: node 1 answered {answered_n1} 200s, captured {captured_n1}; node 2 (killed) "
              f"answered {answered - answered_n1}, captured {captured_n2} (recovered from its spool)")
        assert captured_n1 == answered_n1
        assert answered - answered_n1 <= captured_n2 <= answered - answered_n1 + THREADS
    finally:
        for proc in reversed(procs):
            stop(proc, signal.SIGKILL if proc.poll() is None else signal.SIGTERM, 10)
        platform.close()


def _post(url: str, body: bytes) -> int:
    try:
        return httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def _spooled(home: Path) -> int:
    """Spool segments in ``home`` (a live writer keeps its current one and a spare)."""
    return len(list((home / "spool" / "capture").glob("*.spool")))


def test_a_node_for_other_machines_refuses_this_hosts_stores_in_one_line(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from loopml.cli.main import app
    from tests.process_support import drop_loopml_vars
    from tests.test_cli import one_line_error

    drop_loopml_vars(monkeypatch)
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LOOPML_CONFIG", os.devnull)
    run = CliRunner().invoke
    one_line_error(run(app, ["serve", "--host", "0.0.0.0", "--port", "0"]), 2,
                   "LOOPML_DATABASE_URL=postgresql://", "127.0.0.1 only")
    monkeypatch.setenv("LOOPML_DATABASE_URL", "postgresql://loopml@db.invalid/loopml")
    one_line_error(run(app, ["serve", "--host", "0.0.0.0", "--port", "0"]), 2, "LOOPML_ARTIFACT_URI=s3://")
    one_line_error(run(app, ["serve", "--advertise", "10.0.0.7:8081"]), 2, "--advertise")


def test_sigterm_drains_first_readiness_fails_while_it_still_answers(tmp_path) -> None:
    """A stopping node leaves the load balancer before it stops accepting: for
    LOOPML_SERVING_DRAIN_S after SIGTERM /readyz and /ping say 503 "draining", /healthz and the
    data plane still answer, its row says draining; a second SIGTERM ends the wait (the drain is
    60 s here, so every check runs inside it however slow the machine); then it exits cleanly
    and is gone."""
    home, port, log = tmp_path / "home", free_port(), tmp_path / "node.log"
    platform = Platform(Settings(home=home))  # the schema, as a control plane would have made it
    stores = {"LOOPML_SERVING_DRAIN_S": "60"}
    node = start_node(home, port, stores, log)
    base = f"http://127.0.0.1:{port}"
    try:
        node.send_signal(signal.SIGTERM)
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 503, 10, 0.05,
                 what="/readyz 503 after SIGTERM")
        assert httpx.get(f"{base}/readyz", timeout=5).json() == {"status": "draining"}
        assert httpx.get(f"{base}/ping", timeout=5).status_code == 503
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        missing = httpx.post(f"{base}/endpoints/nope/invocations", content=b"{}", timeout=5,
                             headers={"Content-Type": "application/json"})
        assert missing.status_code == 404  # still routing requests while draining
        wait_for(lambda: [n["state"] for n in platform.nodes.list()] == ["draining"], 10, 0.1,
                 what="the node reported draining")
        assert node.poll() is None
        node.send_signal(signal.SIGTERM)  # the second signal: stop now
        # uvicorn re-raises the SIGTERM it handled once it has shut down: ended by that signal
        assert node.wait(60) in (0, -signal.SIGTERM), log.read_text()[-2000:]
        assert [n["state"] for n in platform.nodes.list()] == ["gone"]
    finally:
        stop(node, signal.SIGKILL)
        platform.close()


def test_a_node_serves_only_the_endpoints_it_is_given(tmp_path, digits_data) -> None:
    """`loopml serve --endpoints a`: the node loads, answers, reports and readies for `a` only;
    `b` (an endpoint of the same store) is a 404 there, and its /readyz does not wait for `b`."""
    from loopml.serving import service
    from tests.serving_support import _train

    images, target = digits_data
    home, port, log = tmp_path / "home", free_port(), tmp_path / "node.log"
    platform = Platform(Settings(home=home))
    register(platform, "digits", _train(tmp_path / "bundle", images, target, seed=1, epochs=1))
    for name in ("a", "b"):
        service.create_endpoint(platform, name, {"model": "digits:1"})
    node = start_node(home, port, {}, log, "--endpoints", "a")  # returns once /readyz is 200
    base, body = f"http://127.0.0.1:{port}", images_body(images[:2])
    try:
        assert _post(f"{base}/endpoints/a/invocations", body) == 200
        missing = httpx.post(f"{base}/endpoints/b/invocations", content=body, timeout=10,
                             headers={"Content-Type": "application/json"})
        assert missing.status_code == 404 and "b" in missing.text, missing.text
        wait_for(lambda: [n["endpoints_loaded"] for n in platform.nodes.list()] == [["a"]], 30, 0.1,
                 what="the node reports endpoint a only")
        assert "endpoints a from" in " ".join(log.read_text().split())  # its banner says so
    finally:
        stop(node)
        platform.close()
