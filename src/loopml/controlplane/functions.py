"""Runs queued function invocations, each in its own sandboxed process under a supervisor, at
most ``settings.function_concurrency`` at once; after a restart, records what finished meanwhile.

Whoever queued an invocation (the API, a trigger, a workflow) may call ``run_now`` to skip the
wait for the next tick. Every start is a compare-and-set queued → running in the store, so an
invocation runs once however many paths try to start it.

Restarts: a supervisor outlives a control plane killed with ``kill -9`` and spools the outcome.
The next control plane records spooled outcomes, waits for supervisors still running, and treats
a running invocation with neither as cut off: an async one (a trigger's firing) is retried like
Lambda does — up to ``MAX_ATTEMPTS`` attempts with backoff — then dead-lettered (its firing is
marked failed, and ``loopml triggers redrive`` replays it); any other one fails as
``Function.Interrupted`` (its caller, e.g. a workflow's Retry, decides).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, Callable

from loopml.core.errors import NotFound
from loopml.core.timeutil import utcnow
from loopml.functions.runtime import (
    HOST,
    INTERRUPTED,
    Outcome,
    collect,
    detect_sandbox,
    find_supervisor,
    forget,
    kill_group,
    pid_is_runner,
    run_invocation,
    spooled_ids,
    supervisor_alive,
    wait_supervisor,
)
from loopml.identity.service import end_invocation_token, mint_invocation_token
from loopml.platform import Platform
from loopml.store.functions_repo import FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL

log = logging.getLogger("loopml.controlplane.functions")
MAX_ATTEMPTS = 3  # an async invocation cut off by a crash: the first try and 2 retries (Lambda's)
RETRY_BACKOFF_S = (2.0, 8.0)  # before the 2nd and the 3rd attempt
ASYNC_SOURCE = "trigger:"  # invocations started by a trigger's firing are asynchronous


def is_async(invocation: dict[str, Any]) -> bool:
    return (invocation.get("source") or "").startswith(ASYNC_SOURCE)


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
        self.sandbox = detect_sandbox()
        if self.sandbox.warning:
            log.warning(self.sandbox.warning)

    # -- the loop's hooks -----------------------------------------------------------------
    def tick(self) -> None:
        if self._stop.is_set():
            return
        if self._first:
            self._recover()
            self._first = False
        with self._lock:
            free = self.concurrency - len(self._submitted)
        if free <= 0:
            return
        for invocation_id in self.repo.runnable_ids():
            if free <= 0:
                break
            if self._submit(invocation_id):
                free -= 1

    def stop(self) -> None:
        """End running invocations (recorded as interrupted; async ones queued for a retry) and
        stop taking new ones."""
        self._stop.set()  # each worker asks its supervisor to end the invocation
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
            self._finished(invocation_id)

    def _finished(self, invocation_id: str) -> None:
        """No longer handled here: free its slot, wake waiters, tell listeners."""
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

        # the child's LOOPML_TOKEN: limited to the function's permissions, expiring with the
        # invocation, deleted when it ends (None while auth is off); a control plane killed meanwhile
        # leaves it to expire by itself
        minted = self.invocation_token(function, invocation)
        outcome: Outcome | None = None
        try:
            outcome = run_invocation(self.platform.settings, self.platform.artifacts, function, invocation,
                                     token=minted[1] if minted else None, sandbox=self.sandbox,
                                     stop=self._stop, on_start=started)
        finally:
            # interrupted (this control plane stops): the supervisor may still be running it
            if minted and outcome is not None and outcome.error_type != INTERRUPTED:
                end_invocation_token(self.platform, minted[0])
        self._record(invocation, outcome)
        forget(self.platform.settings, invocation_id)  # only once recorded: a kill before finds the spool

    def invocation_token(self, function: dict[str, Any], invocation: dict[str, Any]) -> tuple[str, str] | None:
        """THE place that chooses the LOOPML_TOKEN a function's process gets: (token id, token)."""
        # the supervisor may outlive its timeout by the kill grace: a little slack on the expiry
        return mint_invocation_token(self.platform, function, invocation["id"], float(function["timeout_s"]) + 30.0)

    def _record(self, invocation: dict[str, Any], outcome: Outcome) -> None:
        if outcome.error_type == INTERRUPTED:  # the control plane stopped it: not the function's fault
            self._cut_off(invocation, outcome.error_message or "the control plane stopped during the invocation",
                          outcome)
            return
        self.repo.transition(invocation["id"], SUCCEEDED if outcome.succeeded else FAILED, expect=[RUNNING],
                             **outcome.fields())

    def _cut_off(self, invocation: dict[str, Any], why: str, outcome: Outcome | None = None) -> None:
        """An invocation that did not run to its end through no fault of its own: retried if async
        and attempts remain, else failed as interrupted (and an async one dead-lettered)."""
        inv_id, attempt = invocation["id"], int(invocation.get("attempt") or 1)
        if is_async(invocation) and attempt < MAX_ATTEMPTS:
            delay = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S)) - 1]
            if self.repo.retry(inv_id, not_before=utcnow() + timedelta(seconds=delay), error_type=INTERRUPTED,
                               error_message=f"attempt {attempt} of {MAX_ATTEMPTS}: {why}; retrying in {delay:g} s"):
                log.warning("invocation %s: attempt %d was cut off (%s); retrying", inv_id, attempt, why)
            return
        fields = outcome.fields() if outcome is not None else {}
        fields.update(error_type=INTERRUPTED, error_message=why if attempt == 1 else
                      f"{why} (attempt {attempt} of {MAX_ATTEMPTS}; no retries left)")
        if not self.repo.transition(inv_id, FAILED, expect=[RUNNING], **fields):
            return
        if is_async(invocation):
            firing = self.platform.triggers.dead_letter(
                inv_id, f"dead letter: invocation {inv_id} was cut off {attempt} time(s) ({INTERRUPTED}: {why}); "
                        "`loopml triggers redrive` replays it")
            if firing is not None:
                log.warning("invocation %s dead-lettered: firing %s of trigger %s is failed",
                            inv_id, firing["id"], firing["trigger"])

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

    def _recover(self) -> None:
        """After a restart: record outcomes spooled while the control plane was down, wait for
        supervisors still running, and retry (or fail) running invocations that have neither."""
        settings = self.platform.settings
        for invocation_id in spooled_ids(settings):
            try:
                self._record_spooled(invocation_id)
            except Exception:  # noqa: BLE001
                log.exception("recording the spooled outcome of %s failed", invocation_id)
        for invocation_id in self.repo.ids_with_status(RUNNING):
            with self._lock:
                if invocation_id in self._submitted:
                    continue
            try:
                record = self.repo.invocation(invocation_id)
                if record["worker_host"] not in (None, HOST):
                    continue  # another machine's control plane owns it
                pid = record["worker_pid"] if supervisor_alive(record["worker_pid"], invocation_id) \
                    else find_supervisor(invocation_id)  # started, but its pid never recorded
                if pid is not None:
                    self._adopt(invocation_id, pid)
                    continue
                if pid_is_runner(record["worker_pid"]):  # a runner left by an older LoopML
                    kill_group(record["worker_pid"])
                if not self._record_spooled(invocation_id):  # it may have ended just now
                    forget(self.platform.settings, invocation_id)
                    self._cut_off(record, "control plane restarted during the invocation")
                    log.warning("invocation %s was cut off by a control-plane restart", invocation_id)
            except Exception:  # noqa: BLE001
                log.exception("recovering running invocation %s failed", invocation_id)

    def _record_spooled(self, invocation_id: str) -> bool:
        """Record the outcome a supervisor spooled, if any; True when there was one."""
        settings = self.platform.settings
        outcome = collect(settings, invocation_id)
        if outcome is None:
            return False
        try:
            record = self.repo.invocation(invocation_id)
        except NotFound:
            record = None
        if record is not None and record["status"] == RUNNING:
            self._record(record, outcome)
            log.info("invocation %s: recorded the outcome spooled while the control plane was down", invocation_id)
        forget(settings, invocation_id)
        return True

    def _adopt(self, invocation_id: str, pid: int) -> None:
        """Wait (in the pool) for a supervisor a previous control plane started, then record it."""
        with self._lock:
            if invocation_id in self._submitted:
                return
            self._submitted.add(invocation_id)
            self._pids[invocation_id] = pid

        def wait_and_record() -> None:
            try:
                wait_supervisor(pid, self._stop)
                if not self._record_spooled(invocation_id):
                    record = self.repo.invocation(invocation_id)
                    if record["status"] == RUNNING:
                        self._cut_off(record, "the invocation's supervisor ended without an outcome")
            except Exception:  # noqa: BLE001
                log.exception("waiting for invocation %s failed", invocation_id)
            finally:
                self._finished(invocation_id)

        try:
            self._pool.submit(wait_and_record)
        except RuntimeError:
            with self._lock:
                self._submitted.discard(invocation_id)
