"""Runs queued function invocations, each in its own process, at most
``settings.function_concurrency`` at once; fails invocations orphaned by a restart.

Whoever queued an invocation (the API, a trigger, a workflow) may call ``run_now`` to skip the
wait for the next tick. Every start is a compare-and-set queued → running in the store, so an
invocation runs once however many paths try to start it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from loopml.core.errors import NotFound
from loopml.identity.service import end_invocation_token, mint_invocation_token
from loopml.functions.runtime import HOST, INTERRUPTED, kill_group, pid_is_runner, run_invocation
from loopml.platform import Platform
from loopml.store.functions_repo import FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL

log = logging.getLogger("loopml.controlplane.functions")


class FunctionDispatcher:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.repo = platform.functions
        self.concurrency = platform.settings.function_concurrency
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="loopml-function")
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._submitted: set[str] = set()  # handed to the pool, not finished yet
        self._pids: dict[str, int] = {}  # running here: invocation id -> process group
        self._stop = threading.Event()
        self._first = True
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- the loop's hooks -----------------------------------------------------------------
    def tick(self) -> None:
        if self._stop.is_set():
            return
        if self._first:
            self._fail_orphans()
            self._first = False
        with self._lock:
            free = self.concurrency - len(self._submitted)
        if free <= 0:
            return
        for invocation_id in self.repo.ids_with_status(QUEUED):
            if free <= 0:
                break
            if self._submit(invocation_id):
                free -= 1

    def stop(self) -> None:
        """Kill running invocations (recorded as interrupted) and stop taking new ones."""
        self._stop.set()  # each worker's watch kills its process group within a poll
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            leftover = list(self._pids)
        for invocation_id in leftover:  # normally the workers recorded these themselves
            self.repo.transition(invocation_id, FAILED, expect=[RUNNING], error_type=INTERRUPTED,
                                 error_message="the control plane stopped during the invocation")

    # -- public --------------------------------------------------------------------------
    def run_now(self, invocation_id: str) -> bool:
        """Start a queued invocation now (it waits for a free slot when all are busy).
        Returns False when it is already handled here or the dispatcher is stopping."""
        return self._submit(invocation_id)

    def wait(self, invocation_id: str, timeout: float) -> dict[str, Any]:
        """The invocation's record once it ended, or as it is after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.repo.invocation(invocation_id)
            left = deadline - time.monotonic()
            if record["status"] in TERMINAL or left <= 0:
                return record
            with self._done:
                self._done.wait(min(left, 0.5))  # woken by every finish; re-read the store anyway

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(record)`` after every invocation run here ends (in a worker thread)."""
        self._listeners.append(listener)

    # -- internals -----------------------------------------------------------------------
    def _submit(self, invocation_id: str) -> bool:
        with self._lock:
            if self._stop.is_set() or invocation_id in self._submitted:
                return False
            self._submitted.add(invocation_id)
        try:
            self._pool.submit(self._run, invocation_id)
        except RuntimeError:  # the pool shut down meanwhile
            with self._lock:
                self._submitted.discard(invocation_id)
            return False
        return True

    def _run(self, invocation_id: str) -> None:
        try:
            self._run_one(invocation_id)
        except Exception as exc:  # noqa: BLE001 - one invocation never takes the dispatcher down
            log.exception("running invocation %s failed", invocation_id)
            self.repo.transition(invocation_id, FAILED, expect=[RUNNING], error_type="Function.Error",
                                 error_message=f"LoopML could not run the invocation: "
                                               f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            with self._done:
                self._submitted.discard(invocation_id)
                self._pids.pop(invocation_id, None)
                self._done.notify_all()
            self._notify(invocation_id)

    def _run_one(self, invocation_id: str) -> None:
        if self._stop.is_set() or not self.repo.transition(invocation_id, RUNNING, expect=[QUEUED],
                                                           worker_host=HOST):
            return  # someone else runs it, or it is no longer queued
        invocation = self.repo.invocation(invocation_id)
        try:
            function = self.repo.get(invocation["function"])
        except NotFound:
            self.repo.transition(invocation_id, FAILED, expect=[RUNNING], error_type="Function.NotFound",
                                 error_message=f"function {invocation['function']!r} no longer exists")
            return

        def started(pid: int) -> None:
            with self._lock:
                self._pids[invocation_id] = pid
            self.repo.set_fields(invocation_id, worker_pid=pid)

        # the child's LOOPML_TOKEN: limited to the function's permissions, expiring at its timeout,
        # deleted when it ends (None while auth is off)
        minted = mint_invocation_token(self.platform, function, invocation_id, float(function["timeout_s"]))
        try:
            outcome = run_invocation(self.platform.settings, self.platform.artifacts,
                                     {**function, "invocation_token": minted[1] if minted else None}, invocation,
                                     stop=self._stop, on_start=started)
        finally:
            if minted:
                end_invocation_token(self.platform, minted[0])
        self.repo.transition(invocation_id, SUCCEEDED if outcome.succeeded else FAILED, expect=[RUNNING],
                             **outcome.fields())

    def _notify(self, invocation_id: str) -> None:
        if not self._listeners:
            return
        try:
            record = self.repo.invocation(invocation_id)
        except Exception:  # noqa: BLE001
            return
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:  # noqa: BLE001
                log.exception("invocation listener failed for %s", invocation_id)

    def _fail_orphans(self) -> None:
        """After a restart: invocations still 'running' on this machine that nobody here runs.
        Their process (if it survived in its own session) is killed: its result has no reader."""
        for invocation_id in self.repo.ids_with_status(RUNNING):
            with self._lock:
                if invocation_id in self._submitted:
                    continue
            try:
                record = self.repo.invocation(invocation_id)
                if record["worker_host"] not in (None, HOST):
                    continue  # another machine's control plane owns it
                if pid_is_runner(record["worker_pid"]):
                    kill_group(record["worker_pid"])
                self.repo.transition(invocation_id, FAILED, expect=[RUNNING], error_type=INTERRUPTED,
                                     error_message="control plane restarted during the invocation")
                log.warning("invocation %s was interrupted by a control-plane restart", invocation_id)
            except Exception:  # noqa: BLE001
                log.exception("failing orphaned invocation %s failed", invocation_id)
