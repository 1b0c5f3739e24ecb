"""An endpoint's replicas on a real Ray cluster (issue 14, point 2): the 2-node cluster of
tests/test_ray_cluster.py (head: 1 CPU, side: 2 CPUs), real PostgreSQL and S3 server, a real
`loopml server` with LOOPML_EXECUTOR=ray, a real tiny digits CNN.

`endpoints create … --replicas 2` → two replica actors placed where a CPU is free, each running
LoopML's serving process on its node's address and answering there; its serving process killed →
Ray restarts the actor (a new process, a new address) and it answers again; its actor killed for
good → the leader's replica controller places a new one; `endpoints show` lists each replica's
state, node and address; the control plane killed → the replicas answer on and the restarted one
adopts them; scale-in drains one. Marked ``ray`` (run alone: pytest -m ray).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.process_support import free_port, wait_for
from tests.serving_support import digit_bundles, digits_data, register  # noqa: F401 - fixtures
from tests.test_ray_cluster import ControlPlane, ray_cluster, stores  # noqa: F401 - fixtures
from tests.test_serving_nodes import HAPROXY, haproxy_config

pytest_plugins = ("tests.backends",)
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(scope="module")
def control(ray_cluster: dict[str, Any], stores: dict[str, str],  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    home = tmp_path_factory.mktemp("cp")
    cp = ControlPlane(home, {**stores, "LOOPML_EXECUTOR": "ray", "LOOPML_RAY_ADDRESS": ray_cluster["address"],
                             "LOOPML_WARM_WORKERS": "0"})
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()
        _end_replicas(ray_cluster["address"])


def _end_replicas(address: str) -> None:
    """Replicas are detached (they outlive a control plane by design): the test ends them."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace="loopml-test", log_to_driver=False)
    for a in ray.util.list_named_actors(all_namespaces=True):
        if a["name"].startswith("replica:"):
            ray.kill(ray.get_actor(a["name"], namespace=a["namespace"]), no_restart=True)


def _platform(stores: dict[str, str], home: Path):
    from loopml.core.settings import Settings
    from loopml.platform import Platform

    return Platform(Settings(home=home, database_url=stores["LOOPML_DATABASE_URL"],
                             artifact_uri=stores["LOOPML_ARTIFACT_URI"],
                             s3_endpoint_url=stores["LOOPML_S3_ENDPOINT_URL"]), create_schema=False)


def _invoke(address: str, image: list) -> int:
    req = urllib.request.Request(f"{address}/endpoints/digits/invocations", method="POST",
                                 data=json.dumps({"instances": [image]}).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as r:
            return r.status if "predictions" in json.loads(r.read()) else 0
    except OSError:
        return 0


def _replicas(c) -> dict[int, dict[str, Any]]:
    return {r["index"]: r for r in c.endpoint("digits").get("replicas") or []}


def _serving(c, image, *, not_pids: set[int] = frozenset()) -> dict[int, dict[str, Any]] | None:
    """Both replicas running (none with a pid in ``not_pids``) and answering at their address."""
    reps = _replicas(c)
    if sorted(reps) != [0, 1] or any(r["state"] != "running" or r["pid"] in not_pids for r in reps.values()):
        return None
    return reps if all(_invoke(r["address"], image) == 200 for r in reps.values()) else None


@pytest.mark.ray
def test_replicas_are_placed_serve_and_are_replaced_when_they_die(
        ray_cluster: dict[str, Any], stores: dict[str, str], control: ControlPlane,  # noqa: F811
        digit_bundles: list[Path], digits_data, tmp_path: Path) -> None:  # noqa: F811
    import ray

    platform = _platform(stores, tmp_path)
    register(platform, "digits-cnn", digit_bundles[1])
    image = digits_data[0][0].tolist()
    c = control.client
    created = c.create_endpoint("digits", model="digits-cnn:1", replicas=2)
    assert created["spec"]["replicas"] == 2

    first = wait_for(lambda: _serving(c, image), timeout=180, poll=0.5, what="two replicas serving")
    assert len({r["address"] for r in first.values()}) == 2  # two serving processes, two addresses
    if not ray.is_initialized():
        ray.init(address=ray_cluster["address"], namespace="loopml-test", log_to_driver=False)
    assert {r["node"] for r in first.values()} <= {n["NodeID"][:12] for n in ray.nodes() if n["Alive"]}

    # each replica's serving process reports itself as a node of kind replica (GET /endpoints/NAME "nodes")
    wait_for(lambda: {(n["address"], n["kind"], n["endpoint"]) for n in c.endpoint("digits")["nodes"]}
             >= {(r["address"], "replica", "digits") for r in first.values()}, timeout=60, what="replica nodes")

    # HAProxy in front (deploy/haproxy.cfg, routing by /readyz), the replicas' addresses as its servers
    lb = None
    if os.path.exists(HAPROXY):
        cfg, lb_url = tmp_path / "haproxy.cfg", f"http://127.0.0.1:{free_port()}"
        cfg.write_text(haproxy_config(int(lb_url.rsplit(":", 1)[1]),
                                      [int(r["address"].rsplit(":", 1)[1]) for r in first.values()]))
        lb = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        if lb is not None:
            wait_for(lambda: _invoke(lb_url, image) == 200, timeout=30, what="answers through HAProxy")
        # the serving process of replica 0 is killed: the LB routes around it at once (resends what
        # it never answered); Ray restarts its actor, a new process serves
        os.kill(first[0]["pid"], signal.SIGKILL)
        if lb is not None:
            assert [_invoke(lb_url, image) for _ in range(20)] == [200] * 20
    finally:
        if lb is not None:
            lb.terminate()
            lb.wait(10)
    second = wait_for(lambda: _serving(c, image, not_pids={first[0]["pid"]}), timeout=120, poll=0.5,
                      what="replica 0 restarted by Ray and serving")
    assert "serving process exited" in (second[0]["reason"] or "")
    assert second[1]["pid"] == first[1]["pid"]  # the other one never stopped

    # replica 1's actor is killed for good (Ray will not restart it): the controller places a new one
    ray.kill(ray.get_actor("replica:digits:1", namespace="loopml"), no_restart=True)
    third = wait_for(lambda: _serving(c, image, not_pids={first[1]["pid"]}), timeout=120, poll=0.5,
                     what="replica 1 placed again by the controller and serving")
    assert third[0]["pid"] == second[0]["pid"]

    # `loopml endpoints show` lists them
    env = {**os.environ, "LOOPML_API_URL": f"http://127.0.0.1:{control.port}", "LOOPML_TOKEN": "",
           "PYTHONPATH": SRC, "COLUMNS": "200"}
    shown = subprocess.run([sys.executable, "-m", "loopml.cli.main", "endpoints", "show", "digits"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "replicas: 2 running of 2" in shown.stdout
    for r in third.values():
        assert r["address"] in shown.stdout

    # the control plane dies: the replicas serve on; the restarted one adopts them (same processes)
    control.kill()
    assert all(_invoke(r["address"], image) == 200 for r in third.values())
    control.start()
    adopted = wait_for(lambda: _serving(c, image), timeout=60, poll=0.5, what="replicas adopted")
    assert {i: r["pid"] for i, r in adopted.items()} == {i: r["pid"] for i, r in third.items()}

    # scale in to 1: replica 1 is drained and stopped
    c.update_endpoint("digits", replicas=1)
    wait_for(lambda: sorted(_replicas(c)) == [0], timeout=60, what="one replica left")
    wait_for(lambda: _invoke(third[1]["address"], image) == 0, timeout=60, what="replica 1 stopped")
    assert _invoke(third[0]["address"], image) == 200
    platform.close()


def test_replicas_above_one_need_ray(tmp_path: Path) -> None:
    """On one machine, --replicas 2 is refused with one line naming the flag (pure service check)."""
    from loopml.core.errors import InvalidInput
    from loopml.core.settings import Settings
    from loopml.platform import Platform
    from loopml.serving.service import create_endpoint

    platform = Platform(Settings(home=tmp_path))
    with pytest.raises(InvalidInput, match="replicas=2 needs a Ray cluster"):
        create_endpoint(platform, "digits", {"model": "x:1", "replicas": 2})
    with pytest.raises(InvalidInput, match="replicas must be between 1 and 64"):
        create_endpoint(platform, "digits", {"model": "x:1", "replicas": 0})
    platform.close()
