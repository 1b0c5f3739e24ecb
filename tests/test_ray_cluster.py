"""Jobs on a real Ray cluster: a head and a second node (real raylets) on this machine, a real
PostgreSQL and the moto S3 server, a real `loopml server` with LOOPML_EXECUTOR=ray, real training.

- a job lands on the node its resources require, reports to the stores as locally, and survives
  a control-plane restart (the new control plane re-attaches to its Ray actor);
- the node running a job dies: the job finishes on the other node from its checkpoint, registered once;
- cancelling a job stops its Ray actor (its node has the resources back);
- warm actors: a spare actor with TensorFlow imported takes a job that fits what it holds (the job's
  events name it; a control-plane restart re-attaches to it), a new spare replaces it, a job asking
  for more starts cold where it fits; a tuning job's trials carry its resource request;
- cluster mode is explicit: SQLite or a local folder with LOOPML_EXECUTOR=ray is refused.

Marked ``ray`` (run alone: pytest -m ray). Every Ray process is stopped at the end of the module.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.process_support import free_port, server_env, start_server, wait_for

pytest_plugins = ("tests.backends",)

SRC = str(Path(__file__).resolve().parents[1] / "src")
RAY_ENV = {
    # one machine: every node on 127.0.0.1 (Ray would otherwise pick the machine's own address)
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    # a killed node is declared dead in a few seconds, not half a minute
    "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_initial_delay_ms": "1000",
    # the S3 server's dummy credentials, as a node's environment would hold real ones
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Head (1 CPU, resource "head") + side node (2 CPUs); workers import this checkout's loopml."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed: pip install -e '.[cluster]'")
    tmp = tmp_path_factory.mktemp("ray")
    (tmp / "ray").mkdir()
    saved = dict(os.environ)
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    # set before Ray is imported: it reads some of them once, at import
    os.environ.update(RAY_ENV, RAY_TMPDIR=str(tmp), NO_PROXY=no_proxy, no_proxy=no_proxy,
                      PYTHONPATH=os.pathsep.join(filter(None, [SRC, os.environ.get("PYTHONPATH")])))
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    ray_constants.ENABLE_RAY_CLUSTER = False  # in case Ray was imported earlier in this process
    common = {"node_ip_address": "127.0.0.1", "temp_dir": str(tmp), "object_store_memory": 80 * 2**20,
              "include_dashboard": False}
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            **common, "gcs_server_port": free_port(), "num_cpus": 1, "resources": {"head": 1},
            "dashboard_agent_listen_port": free_port(), "dashboard_port": free_port()})
        side = cluster.add_node(**common, num_cpus=2)
        yield {"cluster": cluster, "side": side, "address": cluster.address,
               "add_side": lambda: cluster.add_node(**common, num_cpus=2)}
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        _kill_leftovers(f"RAY_TMPDIR={tmp}".encode())
        os.environ.clear()
        os.environ.update(saved)


def _kill_leftovers(marker: bytes) -> None:
    """Ray's worker and agent processes of this cluster that outlived its nodes (they carry its
    RAY_TMPDIR in their environment): killed, so no Ray process is left behind."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            pass


@pytest.fixture(scope="module")
def stores(ray_cluster: dict[str, Any], moto_endpoint: str) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL schema and S3 bucket that every node reaches."""
    import psycopg

    from tests.backends import PG_URL_ENV, _pg_admin_url, _unavailable, make_bucket, with_search_path

    base = os.environ.get(PG_URL_ENV) or f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
    schema = f"loopml_ray_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(_pg_admin_url(base), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {base} is unreachable: {exc}",
                     required=os.environ.get("LOOPML_TEST_REQUIRE_POSTGRES") == "1")
    try:
        yield {"LOOPML_DATABASE_URL": with_search_path(base, schema),
               "LOOPML_ARTIFACT_URI": f"s3://{make_bucket(moto_endpoint)}/loopml",
               "LOOPML_S3_ENDPOINT_URL": moto_endpoint}
    finally:
        with psycopg.connect(_pg_admin_url(base), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


class ControlPlane:
    """`loopml server` with LOOPML_EXECUTOR=ray on the test cluster; restartable."""

    def __init__(self, home: Path, settings: dict[str, str]) -> None:
        self.home, self.settings, self.port = home, settings, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_server(self.home, self.port, self.home / "server.log", **self.settings)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def client(self):
        from loopml.sdk.client import Client

        return Client(f"http://127.0.0.1:{self.port}", token="", timeout=120)


@pytest.fixture(scope="module")
def control(ray_cluster: dict[str, Any], stores: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    home = tmp_path_factory.mktemp("cp")
    # cold actors only: these tests place jobs on given nodes; warm actors have their own test
    cp = ControlPlane(home, {**stores, "LOOPML_EXECUTOR": "ray", "LOOPML_RAY_ADDRESS": ray_cluster["address"],
                             "LOOPML_HEARTBEAT_TIMEOUT_S": "600", "LOOPML_WARM_WORKERS": "0"})
    cp.start()
    try:
        cp.client.add_dataset("digits", "sample:digits")
        yield cp
    finally:
        cp.stop()


def _node_ids(address: str) -> dict[str, str]:
    """{"head": id12, "side": id12} as Ray names the nodes (this process joins as a driver)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace="loopml-test", log_to_driver=False)
    out = {}
    for node in ray.nodes():
        if node["Alive"]:
            out["head" if "head" in node["Resources"] else "side"] = node["NodeID"][:12]
    return out


def _messages(job: dict[str, Any]) -> list[str]:
    return [e.get("message") or "" for e in job["events"]]


@pytest.mark.ray
def test_job_lands_where_its_resources_fit_and_survives_a_control_plane_restart(
        ray_cluster: dict[str, Any], control: ControlPlane) -> None:
    nodes = _node_ids(ray_cluster["address"])
    c = control.client
    # 2 CPUs: only the side node has them
    job = c.train("digits", "cnn", {"epochs": 8, "batch_size": 64}, register_as="digits-ray", cpus=2,
                  memory_gb=1)
    assert job["spec"]["resources"] == {"cpus": 2, "memory_gb": 1, "gpus": 0}
    placed = wait_for(lambda: (j := c.job(job["id"]))["worker"]["host"] not in (None, "ray:pending") and j,
                      timeout=120, what="the job placed on a node")
    assert placed["worker"]["host"] == f"ray:{nodes['side']}"
    status = c.cluster_status()
    assert status["executor"] == "ray" and {n["node"] for n in status["nodes"] if n["alive"]} == set(nodes.values())
    side = next(n for n in status["nodes"] if n["node"] == nodes["side"])
    assert side["total"]["cpus"] == 2 and [j["id"] for j in side["jobs"]] == [job["id"]]
    assert side["free"]["cpus"] == 0  # the job's actor holds both

    wait_for(lambda: c.job_metrics(job["id"]), timeout=300, what="a first epoch")
    control.kill()  # the control plane dies mid-job; the job's actor (detached) runs on
    control.start()
    final = c.wait(job["id"], timeout=240)
    assert final["status"] == "succeeded", final.get("reason")
    messages = _messages(final)
    assert not any(m.startswith("retry") for m in messages)  # re-attached, never restarted
    assert sum(m.startswith("running on node") for m in messages) == 1
    assert [m["epoch"] for m in c.job_metrics(job["id"])] == list(range(1, 9))
    logs = [line["text"] for line in c.logs(job["id"])["lines"]]
    assert any(line.startswith("worker pid") for line in logs) and any("registered model version" in l for l in logs)
    version = c.model_version("digits-ray", 1)
    assert version["job_id"] == job["id"] and version["metrics"]["epochs"] == 8
    assert not c.cluster_status()["unplaced"]


@pytest.mark.ray
def test_predict_and_evaluate_jobs_run_on_the_cluster_with_their_resources(
        ray_cluster: dict[str, Any], control: ControlPlane) -> None:
    """Not only training: a prediction and an evaluation are jobs placed on a node, their output in
    the shared stores (the model of the first test: digits-ray:1)."""
    nodes = _node_ids(ray_cluster["address"])
    c = control.client
    predict = c.predict("digits-ray:1", "digits:test", cpus=2)  # only the side node has 2 CPUs
    evaluate = c.evaluate({"candidate": "digits-ray:1"}, "digits", cpus=1, memory_gb=0.5)
    assert evaluate["spec"]["resources"] == {"cpus": 1, "memory_gb": 0.5, "gpus": 0}
    for job in (predict, evaluate):
        final = c.wait(job["id"], timeout=300)
        assert final["status"] == "succeeded", final.get("reason")
        assert final["worker"]["host"].removeprefix("ray:") in nodes.values()
        assert any(m.startswith("running on node") for m in _messages(final))
    assert c.job(predict["id"])["worker"]["host"] == f"ray:{nodes['side']}"
    rows = c.prediction_output(predict["id"]).decode().strip().splitlines()
    assert len(rows) > 100 and rows[0].startswith("row,") and "confidence" in rows[0]  # header + a row per image
    result = c.job(evaluate["id"])["result"]
    assert result["results"]["candidate"]["ref"].startswith("digits-ray") and result["rows"] > 100, result


@pytest.mark.ray
def test_a_job_whose_node_dies_finishes_on_the_other_node_from_its_checkpoint(
        ray_cluster: dict[str, Any], control: ControlPlane) -> None:
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    nodes = _node_ids(ray_cluster["address"])
    hold = placement_group([{"CPU": 1, "head": 1}])  # the head's CPU is taken: the job starts on the side node
    ray.get(hold.ready(), timeout=60)
    c = control.client
    job = c.train("digits", "cnn", {"epochs": 16, "batch_size": 64}, register_as="digits-lost", cpus=1)
    wait_for(lambda: c.job(job["id"])["worker"]["host"] == f"ray:{nodes['side']}", timeout=120,
             what="the job on the side node")
    wait_for(lambda: len(c.job_metrics(job["id"])) >= 2, timeout=120, what="two finished epochs")
    ray_cluster["cluster"].remove_node(ray_cluster["side"], allow_graceful=False)  # the node dies
    remove_placement_group(hold)  # the head has room again

    final = c.wait(job["id"], timeout=300)
    assert final["status"] == "succeeded", final.get("reason")
    messages = _messages(final)
    retries = [m for m in messages if m.startswith("retry")]
    assert len(retries) == 1 and f"node {nodes['side']} died" in retries[0], messages
    resumed_at = int(retries[0].split("checkpoint of epoch ")[1])
    assert resumed_at >= 1  # at least the first epoch is not trained again
    placed_on = [m.split()[3] for m in messages if m.startswith("running on node")]
    assert placed_on == [nodes["side"], nodes["head"]]  # the node change, in the job's events
    assert final["worker"]["host"] == f"ray:{nodes['head']}"
    logs = [line["text"] for line in c.logs(job["id"])["lines"]]
    assert any("continuing this job from" in line and f"(epoch {resumed_at})" in line for line in logs)
    assert [m["epoch"] for m in c.job_metrics(job["id"])] == list(range(1, 17))  # each epoch once
    model = c.model("digits-lost")
    assert [v["version"] for v in model["versions"]] == [1]  # registered once
    assert final["result"]["epochs_run"] == 16 - resumed_at  # the retry ran only the epochs left
    ray_cluster["side"] = ray_cluster["add_side"]()  # a new side node (2 CPUs) for the tests after this one


@pytest.mark.ray
def test_cancel_stops_the_job_and_frees_its_node(ray_cluster: dict[str, Any], control: ControlPlane) -> None:
    c = control.client
    job = c.train("digits", "cnn", {"epochs": 300, "batch_size": 64}, register_as="digits-cancel", cpus=1)
    wait_for(lambda: c.job_metrics(job["id"]), timeout=300, what="a first epoch")
    holding = next(n for n in c.cluster_status()["nodes"] if any(j["id"] == job["id"] for j in n["jobs"]))
    c.cancel(job["id"])
    final = c.wait(job["id"], timeout=120)
    assert final["status"] == "cancelled"
    # the job's actor is gone: its node has the CPU back
    wait_for(lambda: next(n for n in c.cluster_status()["nodes"] if n["node"] == holding["node"])["free"]["cpus"]
             == holding["total"]["cpus"], timeout=60, what="the node's CPU freed")


def _spares(c: Any) -> dict[str, tuple[str, bool]]:
    """{spare name: (node, ready)} as `cluster status` shows them."""
    return {s["name"]: (n["node"], s["ready"]) for n in c.cluster_status()["nodes"] for s in n.get("spares", [])}


@pytest.fixture
def warm_control(control: ControlPlane, tmp_path: Path) -> Iterator[ControlPlane]:
    """The module's control plane replaced, for one test, by one keeping a warm actor (same stores)."""
    control.stop()
    warm = ControlPlane(tmp_path, {**control.settings, "LOOPML_WARM_WORKERS": "1"})
    warm.start()
    try:
        yield warm
    finally:
        warm.stop()
        control.start()


@pytest.mark.ray
def test_a_warm_actor_takes_a_fitting_job_and_a_bigger_job_starts_cold(
        ray_cluster: dict[str, Any], warm_control: ControlPlane) -> None:
    nodes = _node_ids(ray_cluster["address"])
    c = warm_control.client
    first = wait_for(lambda: [(name, node) for name, (node, ready) in _spares(c).items() if ready], timeout=240,
                     what="a warm actor with TensorFlow imported")
    spare, spare_node = first[0]
    job = c.train("digits", "cnn", {"epochs": 6, "batch_size": 64}, register_as="digits-warm")  # 1 CPU: fits
    placed = wait_for(lambda: (j := c.job(job["id"]))["worker"]["host"] not in (None, "ray:pending") and j, timeout=60,
                      what="the job handed to the warm actor")
    assert placed["worker"]["host"] == f"ray:{spare_node}"
    assert any(m.endswith(f"warm actor {spare}") for m in _messages(placed)), _messages(placed)
    wait_for(lambda: c.job_metrics(job["id"]), timeout=300, what="a first epoch")
    warm_control.kill()  # re-attached by the actor's name, which the placement event recorded
    warm_control.start()
    final = c.wait(job["id"], timeout=240)
    assert final["status"] == "succeeded", final.get("reason")
    assert not any(m.startswith("retry") for m in _messages(final))
    assert sum(m.startswith("running on node") for m in _messages(final)) == 1
    assert [m["epoch"] for m in c.job_metrics(job["id"])] == list(range(1, 7))
    logs = [line["text"] for line in c.logs(job["id"])["lines"]]
    assert any(line.startswith("worker pid") for line in logs)
    assert c.model_version("digits-warm", 1)["job_id"] == job["id"]
    # the used spare is gone; the restarted control plane keeps its own
    wait_for(lambda: (names := _spares(c)) and spare not in names, timeout=120, what="a new warm actor")

    # 2 CPUs: more than a spare holds, so a cold actor on the side node (a spare there gives way)
    big = c.train("digits", "cnn", {"epochs": 1, "batch_size": 64}, register_as="digits-cold", cpus=2)
    final = c.wait(big["id"], timeout=300)
    assert final["status"] == "succeeded", final.get("reason")
    assert final["worker"]["host"] == f"ray:{nodes['side']}"
    placements = [m for m in _messages(final) if m.startswith("running on node")]
    assert len(placements) == 1 and "warm actor" not in placements[0]


@pytest.mark.ray
def test_tuning_trials_ask_for_the_tuning_jobs_resources(ray_cluster: dict[str, Any], control: ControlPlane) -> None:
    nodes = _node_ids(ray_cluster["address"])
    c = control.client
    tuning = c.tune("digits", ["dropout=uniform(0,0.5)"], max_trials=1, parallel=1, params={"epochs": 1},
                    cpus=2, memory_gb=1, name="ray-tune")
    assert tuning["spec"]["resources"] == {"cpus": 2, "memory_gb": 1, "gpus": 0}
    final = c.wait_tuning("ray-tune", timeout=300)
    assert final["status"] == "succeeded", final.get("reason")
    trial = c.job(final["trials"][0]["job_id"])
    assert trial["spec"]["resources"] == {"cpus": 2, "memory_gb": 1, "gpus": 0}
    assert trial["worker"]["host"] == f"ray:{nodes['side']}"  # only the side node has 2 CPUs


def test_cluster_mode_refuses_this_hosts_sqlite_or_folder(tmp_path: Path) -> None:
    """LOOPML_EXECUTOR=ray with a store only this host sees, or no Ray head at the address: one line
    saying what to set, exit 2."""
    def server(**extra: str) -> subprocess.CompletedProcess:
        env = server_env(tmp_path, free_port(), LOOPML_EXECUTOR="ray", **extra)
        return subprocess.run([sys.executable, "-m", "loopml.cli.main", "server"], env=env, capture_output=True,
                              text=True, timeout=60)

    sqlite = server()
    assert sqlite.returncode == 2
    assert sqlite.stderr.strip().count("\n") == 0 and "LOOPML_DATABASE_URL=postgresql://" in sqlite.stderr
    folder = server(LOOPML_DATABASE_URL="postgresql://someone@127.0.0.1:5432/test")
    assert folder.returncode == 2
    assert folder.stderr.strip().count("\n") == 0 and "LOOPML_ARTIFACT_URI=s3://" in folder.stderr
    nobody = server(LOOPML_DATABASE_URL="postgresql://someone@127.0.0.1:5432/test", LOOPML_ARTIFACT_URI="s3://b/p",
                    LOOPML_RAY_ADDRESS=f"127.0.0.1:{free_port()}")
    assert nobody.returncode == 2  # at once, not after Ray's half a minute of retries
    assert nobody.stderr.strip().count("\n") == 0 and "no Ray cluster answers" in nobody.stderr


def test_cluster_status_on_the_local_executor_is_this_host(live_server: str) -> None:
    import socket

    from loopml.sdk.client import Client

    status = Client(live_server, token="").cluster_status()
    assert status["executor"] == "local" and len(status["nodes"]) == 1
    node = status["nodes"][0]
    assert node["node"] == socket.gethostname() and node["alive"] and node["total"]["cpus"] == (os.cpu_count() or 1)
    assert node["jobs"] == []


def test_job_resources_default_per_kind_and_refuse_nonsense() -> None:
    from loopml.core.errors import InvalidInput
    from loopml.core.resources import job_resources, of_job

    assert job_resources("train") == {"cpus": 1, "memory_gb": 2, "gpus": 0}
    assert job_resources("predict", {"cpus": 2.5, "gpus": None}) == {"cpus": 2.5, "memory_gb": 1, "gpus": 0}
    assert of_job({"kind": "monitor", "spec": {}}) == {"cpus": 1, "memory_gb": 1, "gpus": 0}
    for given, words in (({"memory_gb": 0}, "memory_gb must be more than 0"), ({"gpus": -1}, "gpus must be at least 0"),
                         ({"cpus": "two"}, "cpus must be a number"), ({"disk": 1}, "unknown resource disk")):
        with pytest.raises(InvalidInput, match=words):
            job_resources("train", given)


def test_bad_resource_requests_are_4xx(live_server: str) -> None:
    import httpx

    for body in ({"dataset": "digits", "resources": {"cpus": 0}}, {"dataset": "digits", "resources": {"disk": 1}},
                 {"model": "m", "input": "digits:test", "resources": {"gpus": -1}}):
        route = "/jobs/train" if "dataset" in body else "/jobs/predict"
        resp = httpx.post(live_server + route, json=body)
        assert 400 <= resp.status_code < 500 and resp.json()["code"], resp.text
