"""The control loop ticked by hand with a fake clock: time limits, cancellation grace, stale
workers elsewhere and dispatch into a freed slot, decided at the fake time — no minutes of
waiting. Real SQLite store, real LocalExecutor processes (a sleeping stand-in for the worker
command, so no job actually trains)."""

from __future__ import annotations

import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from loopml.controlplane.loop import CANCEL_GRACE_S, TIME_LIMIT_GRACE_S, Clock, ControlLoop
from loopml.core.jobstatus import CANCELLED, FAILED, QUEUED, RUNNING
from loopml.core.settings import Settings
from loopml.core.timeutil import utcnow
from loopml.jobs.executor import Executor
from loopml.jobs.local import LocalExecutor
from loopml.platform import Platform


class SleepingWorkers(LocalExecutor):
    """The real LocalExecutor (process group, SIGTERM, reaping) running `sleep` as the worker."""

    @staticmethod
    def command(job_id: str) -> list[str]:
        return [sys.executable, "-c", "import time; time.sleep(600)", job_id]


class NoDataPlane:
    """The endpoints' supervisor is not under test here (it would start a serving process)."""

    url = None
    log_path = Path("/dev/null")

    def bind(self) -> None: ...

    def tick(self) -> None: ...

    def stop(self) -> None: ...


class FakeTime:
    def __init__(self) -> None:
        self.wall: datetime = utcnow()
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.wall += timedelta(seconds=seconds)
        self.mono += seconds

    def clock(self) -> Clock:
        return Clock(now=lambda: self.wall, monotonic=lambda: self.mono)


@pytest.fixture
def plat(tmp_path: Path):
    p = Platform(Settings(home=tmp_path / "home", max_concurrent_jobs=1, heartbeat_timeout_s=60))
    yield p
    p.close()


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def loop(plat: Platform, fake: FakeTime):
    executor = SleepingWorkers(plat.settings)
    lp = ControlLoop(plat, executor, clock=fake.clock(), endpoints=NoDataPlane())
    yield lp
    for job_id in list(executor._procs):
        executor.cancel(job_id)
    for proc in executor._procs.values():
        proc.wait(timeout=30)
    lp.stop()


def tick_until(lp: ControlLoop, done, what: str, real_s: float = 30.0) -> None:
    """Tick until ``done()``; the only real waiting is for a signalled process to exit."""
    deadline = time.monotonic() + real_s
    while True:
        lp.tick()
        if done():
            return
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.02)


def status(plat: Platform, job_id: str) -> str:
    return plat.jobs.get(job_id)["status"]


def test_the_loop_takes_its_executor_through_the_protocol(loop: ControlLoop) -> None:
    assert isinstance(loop.executor, Executor)  # free_slots, submit, cancel, poll, owns, adopt, shutdown, host
    assert LocalExecutor.command("job-x")[1:] == ["-m", "loopml.jobs.worker", "job-x"]  # no settings, no secrets


def test_a_job_past_its_hard_time_limit_is_failed_and_the_queued_one_gets_the_slot(
        loop: ControlLoop, plat: Platform, fake: FakeTime) -> None:
    limited = plat.jobs.create("train", {"time_limit_s": 30})["id"]
    waiting = plat.jobs.create("train", {})["id"]
    loop.tick()
    assert (status(plat, limited), status(plat, waiting)) == (RUNNING, QUEUED)  # one slot
    worker = plat.jobs.get(limited)["worker"]
    assert worker["pid"] and worker["host"] == loop.executor.host

    fake.advance(30 + TIME_LIMIT_GRACE_S - 5)  # within the grace: the worker's own limit may still stop it
    loop.tick()
    assert (status(plat, limited), status(plat, waiting)) == (RUNNING, QUEUED)

    fake.advance(10)
    loop.tick()
    job = plat.jobs.get(limited)
    assert job["status"] == FAILED and "time limit of 30 s exceeded" in job["reason"]
    # the stopped worker is reaped; its slot goes to the queued job
    tick_until(loop, lambda: status(plat, waiting) == RUNNING, "the queued job dispatched")
    assert not loop.executor.owns(limited) and loop.executor.owns(waiting)


def test_a_cancel_request_is_enforced_after_the_grace_period(loop: ControlLoop, plat: Platform,
                                                              fake: FakeTime) -> None:
    job_id = plat.jobs.create("predict", {})["id"]
    loop.tick()
    plat.jobs.request_cancel(job_id)
    loop.tick()  # the worker is given CANCEL_GRACE_S to stop itself at its next heartbeat
    fake.advance(CANCEL_GRACE_S - 1)
    loop.tick()
    assert status(plat, job_id) == RUNNING and loop.executor.owns(job_id)
    fake.advance(2)
    tick_until(loop, lambda: status(plat, job_id) == CANCELLED, "the signalled worker reaped as cancelled")
    assert plat.jobs.get(job_id)["reason"] == "cancelled by request"


def test_a_running_job_on_another_host_fails_only_once_its_heartbeat_is_stale(
        loop: ControlLoop, plat: Platform, fake: FakeTime) -> None:
    job_id = plat.jobs.create("evaluate", {})["id"]
    assert plat.jobs.transition(job_id, RUNNING, expect=[QUEUED])
    plat.jobs.set_fields(job_id, worker_host="another-node", worker_pid=4242)
    fake.advance(30)
    loop.tick()
    assert status(plat, job_id) == RUNNING  # silent for 30 s of a 60 s timeout: still trusted
    fake.advance(40)
    loop.tick()
    job = plat.jobs.get(job_id)
    assert job["status"] == FAILED and "worker process 4242 on another-node is gone" in job["reason"]
