"""The control plane's reconcile loop over the metadata store.

Each tick: reap ended workers, carry out cancellations and time limits, re-attach or fail
running jobs nobody watches (after a restart), dispatch queued jobs to free slots, then keep
endpoints at their desired state (controlplane.endpoints) and their replicas on a Ray cluster
(controlplane.replicas), fire triggers (controlplane.triggers),
run queued function invocations (controlplane.functions), advance workflow executions
(controlplane.workflows), queue scheduled monitor runs (controlplane.monitors) and keep
autoscaled endpoints' desired replica counts (controlplane.autoscaler).
Every step runs in its own exception boundary: one bad job never stops the loop.

Its collaborators (the job executor, the supervisors, the clock) can be given to the
constructor, so a test ticks the loop by hand with a fake clock (tests/test_control_loop.py).

Several servers on one PostgreSQL: only the LEADER runs the loop (controlplane/leadership.py: a
lease with a fencing epoch; every transaction of a leader's tick is fenced). A follower serves
the API: what it queues wakes the leader through the database (``wake``), its ``functions.run_now``
starts nothing here. A server that loses the lease stops every part (serving process, trigger
poller, function runs) and builds fresh ones, to lead again later; one that gains it binds the
data plane's port and runs a first tick (re-attach jobs, fail orphaned invocations, sweep
deletions). The per-loop table is in docs/architecture.md ("Two control planes").
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Protocol

from loopml.controlplane.autoscaler import Autoscaler
from loopml.controlplane.endpoints import EndpointSupervisor
from loopml.controlplane.functions import FunctionDispatcher
from loopml.controlplane.leadership import Leadership, leadership_for
from loopml.controlplane.monitors import MonitorScheduler
from loopml.controlplane.replicas import ReplicaController
from loopml.controlplane.triggers import TriggerPoller
from loopml.controlplane.tuning import TuningSupervisor
from loopml.controlplane.workflows import WorkflowRunner
from loopml.core.jobstatus import CANCELLED, FAILED, QUEUED, RUNNING
from loopml.core.timeutil import parse_iso, utcnow
from loopml.jobs.executor import Executor
from loopml.jobs.executors import make_executor
from loopml.platform import Platform
from loopml.registry import deletion
from loopml.store.leases_repo import Fenced

log = logging.getLogger("loopml.controlplane")
TIME_LIMIT_GRACE_S = 60.0
CANCEL_GRACE_S = 15.0  # the worker stops itself at its next heartbeat; signals are the fallback


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


@dataclass(frozen=True)
class Clock:
    """Wall time (time limits, heartbeats, schedules) and a monotonic one (grace periods)."""

    now: Callable[[], datetime] = utcnow
    monotonic: Callable[[], float] = time.monotonic


class Part(Protocol):
    """A supervisor the loop ticks (endpoints, triggers, functions, workflows, monitors)."""

    def tick(self) -> None: ...

    def stop(self) -> None: ...


class ServingPart(Part, Protocol):
    """The endpoints' supervisor also holds the data plane's port from the loop's start."""

    @property
    def url(self) -> str | None: ...  # where the data plane answers (None: not bound)

    @property
    def log_path(self) -> Path: ...

    def bind(self) -> None: ...


class LeaderFunctions:
    """``control.functions`` as the API sees it: ``run_now`` starts the invocation here only while
    this server leads; on a follower it wakes the leader through the database instead. ``wait``
    reads the store, so a follower's sync invoke waits for the leader's run."""

    def __init__(self, loop: ControlLoop) -> None:
        self._loop = loop

    def run_now(self, invocation_id: str) -> bool:
        if self._loop.acts_here:
            return self._loop.dispatcher.run_now(invocation_id)
        self._loop.leadership.notify()
        return False

    def __getattr__(self, name: str) -> Any:  # wait, subscribe, tick, stop, …
        return getattr(self._loop.dispatcher, name)


class ControlLoop:
    def __init__(self, platform: Platform, executor: Executor | None = None, *, clock: Clock | None = None,
                 endpoints: ServingPart | None = None, functions: FunctionDispatcher | None = None,
                 triggers: Part | None = None, workflows: Part | None = None, monitors: Part | None = None,
                 tuning: Part | None = None, autoscaler: Part | None = None,
                 leadership: Leadership | None = None, replicas: Part | None = None) -> None:
        """Every collaborator not given is the real one for ``platform``."""
        self.platform = platform
        self.clock = clock or Clock()
        self.leadership: Leadership = leadership or leadership_for(platform)
        self._given: dict[str, Any] = dict(executor=executor, endpoints=endpoints, functions=functions,
                                           triggers=triggers, workflows=workflows, monitors=monitors,
                                           tuning=tuning, autoscaler=autoscaler, replicas=replicas)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._executor_lock = threading.Lock()
        self._leader = False  # this loop runs the reconcile ticks (promoted, not demoted since)
        self.functions = LeaderFunctions(self)
        self._build_parts()

    def _build_parts(self) -> None:
        """The parts of one leadership term (fresh after a demotion; given ones are reused)."""
        given, platform = self._given, self.platform
        self._first = True
        self._cancel_seen: dict[str, float] = {}
        self._executor: Executor | None = given["executor"]  # built on first use: a follower starts
        # no spare worker and no Ray driver
        self.endpoints: ServingPart = given["endpoints"] or EndpointSupervisor(platform)
        self.dispatcher: FunctionDispatcher = given["functions"] or FunctionDispatcher(platform)
        self.triggers = given["triggers"] or TriggerPoller(platform, now=self.clock.now, on_fired=self._fired)
        self.workflows = given["workflows"] or WorkflowRunner(platform, clock=self.clock.now,
                                                              start_function=self.functions.run_now)
        self.monitors = given["monitors"] or MonitorScheduler(platform, now=self.clock.now,
                                                              on_queued=lambda _run: self.wake())
        self.tuning = given["tuning"] or TuningSupervisor(platform, on_queued=self.wake)
        self.autoscaler = given["autoscaler"] or Autoscaler(platform, now=self.clock.now)
        # an endpoint's replicas on a Ray cluster (nothing on one machine)
        self.replicas = given["replicas"] or ReplicaController(platform)

    @property
    def executor(self) -> Executor:
        with self._executor_lock:  # the loop thread and a caller may ask at once: build one
            if self._executor is None:
                self._executor = make_executor(self.platform)  # LOOPML_EXECUTOR: local | ray
            return self._executor

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.leadership.try_lead():  # a lone server leads at once: its data plane is up on return
            self._promote()
        self.leadership.start(on_change=self._wake.set)  # gained / lost the lease, or a follower's NOTIFY
        self._thread = threading.Thread(target=self._run, name="loopml-control-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._stop_parts()
        self.leadership.stop()  # after the parts: a follower takes over once nothing runs here

    def _stop_parts(self) -> None:
        for part in (self.triggers, self.workflows, self.dispatcher, self.monitors, self.tuning, self.autoscaler, self.replicas):
            self._guard(part.stop)  # the replicas' watch ends before the executor disconnects from Ray
        if self._executor is not None:
            self._executor.shutdown()
        self.endpoints.stop()

    @property
    def leading(self) -> bool:
        """This server runs the reconcile loop now (always on SQLite)."""
        return self._leader and self.leadership.leading()

    @property
    def acts_here(self) -> bool:
        """Work started through this loop runs in this process: it leads, or it is a loop a test
        ticks by hand (never started, so no lease either way)."""
        return self._thread is None or self.leading

    def _promote(self) -> None:
        self._leader, self._first = True, True
        self.executor  # noqa: B018 - built now: its warm spare gets ready before the first job
        self.endpoints.bind()  # the data plane's port is known (and held) from the start

    def _demote(self) -> None:
        log.warning("control plane: no longer leading; stopping the data plane, trigger polling and "
                    "function runs here (the new leader re-attaches jobs and restarts what ran here)")
        self._leader = False
        self._stop_parts()
        self._build_parts()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            if self.leadership.leading():
                if not self._leader:
                    self._promote()
                with self.leadership.fenced():  # a stale epoch commits nothing (leadership.py)
                    self.tick()
            elif self._leader:
                self._demote()
            self._wake.wait(self.platform.settings.reconcile_interval_s)

    def wake(self) -> None:
        """Run the next tick now (new work arrived), not after the reconcile interval; on a
        follower, wake the leader through the database."""
        if self.acts_here:
            self._wake.set()
        else:
            self.leadership.notify()

    def _fired(self, firings: list[dict]) -> None:
        for firing in firings:
            if firing.get("status") == "started" and firing["target"]["kind"] == "function" and firing.get("started_id"):
                self.functions.run_now(firing["started_id"])
        self.wake()  # pending executions start on the next tick

    # -- one reconciliation pass --------------------------------------------------------------
    def tick(self) -> None:
        if self._first:  # deletions a crash interrupted: their records are gone, remove the files
            self._guard(lambda: deletion.sweep(self.platform))
        for step in (self._reap, self._reconcile_running, self._dispatch, self.endpoints.tick,
                     self.replicas.tick, self.triggers.tick, self.dispatcher.tick, self.workflows.tick, self.monitors.tick,
                     self.tuning.tick, self.autoscaler.tick):
            if self._leader and not self.leadership.leading():
                return  # lost the lease mid-tick: the next turn demotes (a test's hand tick: no lease)
            self._guard(step)
        self._first = False

    def _guard(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Fenced as exc:  # a takeover happened: this write was refused, nothing was done
            log.warning("control loop step %s fenced: %s", step.__qualname__, exc)
        except Exception:  # noqa: BLE001 - the loop must never die (see Ray's controller)
            log.exception("control loop step %s failed", step.__qualname__)

    def _reap(self) -> None:
        jobs = self.platform.jobs
        for ended in self.executor.poll():
            self._cancel_seen.pop(ended.job_id, None)
            job = jobs.get(ended.job_id)
            if job["status"] != RUNNING:
                continue  # the worker recorded its own outcome
            if job["cancel_requested"]:
                jobs.transition(ended.job_id, CANCELLED, expect=[RUNNING], reason="cancelled by request")
                continue
            detail = _last_line(ended.output_tail)
            code = f"exit code {ended.returncode}" if ended.returncode is not None else "exited"
            jobs.transition(ended.job_id, FAILED, expect=[RUNNING],
                            reason=f"worker {code} without recording a result" + (f": {detail}" if detail else ""))

    def _reconcile_running(self) -> None:
        jobs = self.platform.jobs
        now = self.clock.now()
        for job_id in jobs.ids_with_status(RUNNING):
            try:
                job = jobs.get(job_id)
                if not self.executor.owns(job_id):
                    worker = job["worker"]
                    if self.executor.adopt(job_id, worker["host"], worker["pid"]):
                        log.warning("re-attached job %s (pid %s)", job_id, worker["pid"])
                    elif worker["host"] == self.executor.host or self._stale(job, now):
                        jobs.transition(job_id, FAILED, expect=[RUNNING],
                                        reason=f"worker process {worker['pid']} on {worker['host']} is gone "
                                               "(control plane restarted or worker killed)")
                        continue
                if job["cancel_requested"]:
                    first = self._cancel_seen.setdefault(job_id, self.clock.monotonic())
                    if self.clock.monotonic() - first > CANCEL_GRACE_S:
                        self.executor.cancel(job_id)
                limit = job["spec"].get("time_limit_s")
                started = job["started_at"]
                if limit and started:
                    age = (now - parse_iso(started)).total_seconds()
                    if age > limit + TIME_LIMIT_GRACE_S:  # the worker's own limit did not stop it
                        self.executor.cancel(job_id)
                        jobs.transition(job_id, FAILED, expect=[RUNNING],
                                        reason=f"time limit of {limit:g} s exceeded; worker stopped")
            except Exception:  # noqa: BLE001
                log.exception("reconciling job %s failed", job_id)

    def _stale(self, job: dict, now: datetime) -> bool:
        beat = job["worker"]["heartbeat_at"]
        if not beat:
            return True
        return now - parse_iso(beat) > timedelta(seconds=self.platform.settings.heartbeat_timeout_s)

    def _dispatch(self) -> None:
        jobs = self.platform.jobs
        for job_id in jobs.ids_with_status(QUEUED):
            if self.executor.free_slots() <= 0:
                return
            if not jobs.transition(job_id, RUNNING, expect=[QUEUED], reason=f"dispatched to {self.executor.host}"):
                continue  # cancelled meanwhile
            if self._leader and not self.leadership.leading():  # before the external side effect: a process
                jobs.transition(job_id, QUEUED, expect=[RUNNING], reason="control plane lost its lease; re-queued")
                return
            try:
                where = self.executor.submit(job_id)
            except Exception as exc:  # noqa: BLE001
                jobs.transition(job_id, FAILED, expect=[RUNNING], reason=f"could not start worker: {exc}")
                continue
            jobs.set_fields(job_id, worker_host=where.host, worker_pid=where.pid)
