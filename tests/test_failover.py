"""Two control planes on one PostgreSQL (issue 14, point 4): one leads, the other serves the API
and takes over when the leader dies.

Unit level: the lease (expiry, takeover) and a paused ex-leader whose tick is fenced (commits
nothing). Process level: two real ``loopml server`` subprocesses on a fresh PostgreSQL schema
and one shared home / artifact store; the leader is killed with SIGKILL during a workflow Wait,
during a trigger burst and during a training job, and every outcome happens exactly once on the
other server. The measured takeover times are printed (``-s``), never asserted beyond a generous
bound. Run alone with ``pytest -m failover tests/test_failover.py -s``.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from loopml.controlplane.leadership import LEASE, LeaseLeadership
from loopml.controlplane.loop import ControlLoop
from loopml.core.settings import Settings
from loopml.jobs.executor import Exited, Placement
from loopml.platform import Platform
from loopml.sdk.client import Client
from loopml.store.leases_repo import Fenced
from tests.process_support import free_port, start_server, wait_for

pytestmark = pytest.mark.failover
pytest_plugins = ("tests.backends",)

TAKEOVER_BOUND_S = 30.0  # generous: the design target is TTL + renewal (≈ 6 s)


def _platform(tmp_path: Path, database_url: str) -> Platform:
    return Platform(Settings(home=tmp_path / "home", database_url=database_url,
                             artifact_uri=str(tmp_path / "artifacts")))


# -- unit level: the lease and the fence ----------------------------------------------------------

class FrozenClock:
    """A monotonic clock that stands still: the leader it drives never notices its lease expire
    (a process paused by the kernel, a long GC pause, a stalled VM)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class NoWorkers:
    """An executor that records what it was asked to start (no processes)."""

    host = "test-host"

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, job_id: str) -> Placement:
        self.submitted.append(job_id)
        return Placement(self.host, 4242)

    def poll(self) -> list[Exited]:
        return []

    def owns(self, job_id: str) -> bool:
        return job_id in self.submitted

    def adopt(self, job_id: str, host: str | None, pid: int | None) -> bool:
        return False

    def free_slots(self) -> int:
        return 4

    def cancel(self, job_id: str) -> None: ...

    def shutdown(self) -> None: ...


class NoDataPlane:
    url = None
    log_path = Path("/dev/null")

    def bind(self) -> None: ...

    def tick(self) -> None: ...

    def stop(self) -> None: ...


def test_lease_expiry_takeover_and_a_fenced_ex_leader(tmp_path, postgres_url) -> None:
    plat = _platform(tmp_path, postgres_url)
    try:
        paused = FrozenClock()
        a = LeaseLeadership(plat, ttl_s=3, renew_s=0.1, holder="a", monotonic=paused)
        b = LeaseLeadership(plat, ttl_s=3, renew_s=0.1, holder="b")
        assert a.try_lead() and a.epoch == 1
        assert not b.try_lead()  # held: b follows
        executor = NoWorkers()
        loop_a = ControlLoop(plat, executor, endpoints=NoDataPlane(), leadership=a)
        first = plat.jobs.create("train", {"dataset": "d:1", "model": "cnn"})["id"]
        with a.fenced():
            loop_a.tick()
        assert executor.submitted == [first]  # the leader acts

        wait_for(lambda: not plat.leases.get(LEASE)["held"], timeout=60, poll=0.1,
                 what="the lease to expire")  # a stops renewing (paused): its lease expires by the database's clock
        assert b.try_lead() and b.epoch == 2
        assert plat.leases.get(LEASE)["holder"] == "b"
        assert a.leading()  # its frozen clock says it still leads …
        second = plat.jobs.create("train", {"dataset": "d:1", "model": "cnn"})["id"]
        with a.fenced(), pytest.raises(Fenced, match="epoch 1 of a is stale"):
            loop_a._dispatch()  # … but its transactions (the job's claim) are refused
        with a.fenced():
            loop_a.tick()  # a whole tick: every step refused, the loop carries on
        assert plat.jobs.get(second)["status"] == "queued"
        assert executor.submitted == [first]  # no worker was started for it
        assert not a.try_lead() and a.epoch is None  # and at its next renewal it learns it follows
        loop_a.stop()
    finally:
        plat.close()


# -- process level: two real servers ------------------------------------------------------------

class Pair:
    """Two `loopml server` processes on one PostgreSQL schema, one home and one artifact store."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.tmp = tmp_path
        self.env = {"LOOPML_DATABASE_URL": database_url,
                    "LOOPML_ARTIFACT_URI": str(tmp_path / "artifacts")}
        self.ports = [free_port(), free_port()]
        self.procs: list[subprocess.Popen | None] = [None, None]
        self.plat = None

    def start(self) -> None:
        for i in (0, 1):  # one after the other: the first creates the schema (and leads)
            self.procs[i] = start_server(self.tmp / "home", self.ports[i], self.tmp / f"server-{i}.log", **self.env)
        self.plat = _platform(self.tmp, self.env["LOOPML_DATABASE_URL"])

    def client(self, i: int) -> Client:
        return Client(f"http://127.0.0.1:{self.ports[i]}", token="")

    def lease(self) -> dict[str, Any]:
        return self.plat.leases.get(LEASE)

    def leader(self) -> int:
        pid = int(self.lease()["holder"].split(":")[1])
        return [p.pid if p else None for p in self.procs].index(pid)

    def kill_leader(self) -> tuple[int, float]:
        """SIGKILL the leader; returns (the survivor's index, seconds until it holds the lease)."""
        i, epoch = self.leader(), self.lease()["epoch"]
        proc = self.procs[i]
        assert proc is not None
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        self.procs[i] = None
        lease = wait_for(lambda: (rec := self.lease())["epoch"] > epoch and rec["held"] and rec,
                         timeout=TAKEOVER_BOUND_S, poll=0.05, what="the other server to take the lease")
        took = time.monotonic() - killed_at
        survivor = 1 - i
        assert int(lease["holder"].split(":")[1]) == self.procs[survivor].pid
        print(f"\ntakeover: server {survivor} leads (epoch {lease['epoch']}) {took:.2f} s after the kill")
        return survivor, took

    def stop(self) -> None:
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            if proc is not None:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        if self.plat is not None:
            self.plat.close()


@pytest.fixture
def pair(tmp_path, postgres_url):
    servers = Pair(tmp_path, postgres_url)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


ECHO = "def handler(event, context):\n    return {'echo': event}\n"


def _echo_function(client: Client, tmp_path: Path) -> None:
    code = tmp_path / "echo.py"
    code.write_text(ECHO)
    client.create_function("echo", code, timeout_s=60)


def test_leader_killed_during_a_workflow_wait_completes_it_once_on_the_other(pair, tmp_path) -> None:
    leader = pair.leader()
    follower = pair.client(1 - leader)  # everything goes through the follower's API
    assert pair.client(leader).health().get("data_plane")
    assert "data_plane" not in follower.health()  # a follower starts no competing data plane
    _echo_function(follower, tmp_path)
    follower.create_workflow("pause-then-echo", {
        "StartAt": "Pause",
        "States": {"Pause": {"Type": "Wait", "Seconds": 4, "Next": "Echo"},
                   "Echo": {"Type": "Task", "Resource": "loopml:function:echo", "End": True}}})
    ex = follower.start_execution("pause-then-echo", {"n": 1})
    wait_for(lambda: any(e["type"] == "WaitStarted" for e in follower.execution_history(ex["id"])),
             timeout=60, what="the execution to enter its Wait")

    survivor, _took = pair.kill_leader()
    final = pair.client(survivor).wait_execution(ex["id"], timeout=120)
    assert pair.client(survivor).health().get("data_plane")  # the new leader serves the endpoints

    assert final["status"] == "SUCCEEDED", final
    assert final["output"] == {"echo": {"n": 1}}
    types = [e["type"] for e in pair.client(survivor).execution_history(ex["id"])]
    assert types.count("ExecutionSucceeded") == 1
    assert types.count("WaitStarted") == 1 and types.count("TaskScheduled") == 1
    invocations = pair.client(survivor).function_invocations("echo")
    assert len(invocations) == 1 and invocations[0]["status"] == "succeeded"


def test_leader_killed_during_a_trigger_burst_fires_each_object_once(pair, tmp_path) -> None:
    leader = pair.leader()
    follower = pair.client(1 - leader)
    _echo_function(follower, tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    follower.create_trigger("inbox", objects=str(inbox), function="echo")
    names = [f"obj-{i:02d}.txt" for i in range(30)]
    for name in names:
        (inbox / name).write_text(name)
    wait_for(lambda: follower.trigger_history("inbox"), timeout=60, poll=0.02, what="the first firing")

    survivor, _took = pair.kill_leader()
    client = pair.client(survivor)
    wait_for(lambda: len(client.trigger_history("inbox", limit=1000)) >= len(names), timeout=120,
             what="every object to fire")

    def all_ended() -> list[dict[str, Any]]:
        recs = client.function_invocations("echo", limit=1000)
        return recs if all(r["status"] in ("succeeded", "failed") for r in recs) else []

    invocations = wait_for(all_ended, timeout=120, what="every invocation to end")
    firings = client.trigger_history("inbox", limit=1000)
    fired = sorted(f["event"]["uri"].rsplit("/", 1)[1] for f in firings)
    assert fired == names  # each object exactly once, none lost
    assert all(f["status"] == "started" for f in firings)
    assert sorted(f["started_id"] for f in firings) == sorted(r["id"] for r in invocations)
    # an invocation running on the killed leader is recorded as interrupted (redrivable), never re-run
    interrupted = [r for r in invocations if r["status"] == "failed"]
    assert all(r["error_type"] == "Function.Interrupted" for r in interrupted), interrupted
    print(f"trigger burst: {len(firings)} firings, {len(invocations)} invocations, "
          f"{len(interrupted)} interrupted by the kill")


def test_leader_killed_during_a_job_reattaches_it_and_registers_the_model_once(pair) -> None:
    leader = pair.leader()
    follower = pair.client(1 - leader)
    follower.add_dataset("digits", "sample:digits")
    job = follower.train("digits", "cnn", params={"epochs": 5})
    wait_for(lambda: (follower.job(job["id"]).get("progress") or {}).get("epoch", 0) >= 1, timeout=180,
             poll=0.2, what="the job to finish an epoch")

    survivor, _took = pair.kill_leader()
    client = pair.client(survivor)
    final = client.wait(job["id"], timeout=300)
    assert final["status"] == "succeeded", final["reason"]
    assert [e["status"] for e in final["events"]] == ["queued", "running", "succeeded"]  # never re-run
    assert client.model_version("digits-cnn")["version"] == 1  # registered once: latest is version 1


def test_a_paused_leader_resumes_as_a_follower_and_changes_nothing(pair, tmp_path) -> None:
    """SIGSTOP (a stalled VM, a long pause) past the lease's TTL, then SIGCONT: the ex-leader's
    transactions are fenced, it demotes itself (stops its data plane) and nothing fires twice."""
    leader = pair.leader()
    follower = pair.client(1 - leader)
    _echo_function(follower, tmp_path)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    follower.create_trigger("inbox", objects=str(inbox), function="echo")
    epoch = pair.lease()["epoch"]
    paused = pair.procs[leader]
    assert paused is not None
    paused.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: pair.lease()["epoch"] > epoch and pair.lease()["held"], timeout=TAKEOVER_BOUND_S,
                 what="the other server to take the lease")
        names = [f"obj-{i:02d}.txt" for i in range(10)]
        for name in names:
            (inbox / name).write_text(name)
    finally:
        paused.send_signal(signal.SIGCONT)  # it wakes up believing it leads, with a listing to fire
    ex_leader = pair.client(leader)
    wait_for(lambda: "data_plane" not in ex_leader.health(), timeout=60, what="the ex-leader to demote")
    survivor = pair.client(1 - leader)
    wait_for(lambda: len(survivor.trigger_history("inbox", limit=1000)) >= len(names), timeout=120,
             what="every object to fire")
    time.sleep(2)  # room for a duplicate to appear, were the ex-leader still acting
    fired = sorted(f["event"]["uri"].rsplit("/", 1)[1] for f in survivor.trigger_history("inbox", limit=1000))
    assert fired == names
    assert len(survivor.function_invocations("echo", limit=1000)) == len(names)
    assert int(pair.lease()["holder"].split(":")[1]) == pair.procs[1 - leader].pid
    assert survivor.health().get("data_plane")
    assert "no longer leading" in (tmp_path / f"server-{leader}.log").read_text()
