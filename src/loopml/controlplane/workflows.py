"""Advances workflow executions: starts pending ones, fires due timers, starts tasks and feeds
their results to the engine, persisting state and history after every event.

The engine (``loopml.workflows.engine``) decides; this runner does what it says and writes the
outcome down. After every engine event the execution row (engine state, ``pending`` work, status)
and the new history events are saved in one transaction, conditional on the row's revision, so a
control plane killed at any point resumes from the last saved event:

* timers (Wait, Retry backoff, execution TimeoutSeconds) are stored with their absolute ``due``
  time and fire on the first tick after it, before or after a restart;
* a task's child (job, function invocation) has an id derived from the execution and the task
  token and its handle is saved as soon as it is started; after a restart the runner polls the
  same child again (and starting is idempotent), so no task ever runs twice;
* events redelivered after a crash are ignored by the engine (stale tokens).

``pending`` is ``{"tasks": {token: {resource, state, input, timeout_due, handle}},
"timers": {token: {due, reason, state}}}``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any, Callable

from loopml.core.timeutil import iso, parse_iso, utcnow
from loopml.platform import Platform
from loopml.store.workflows_repo import ABORTED, FAILED, PENDING, RUNNING, SUCCEEDED, TIMED_OUT
from loopml.workflows.actions import TIMEOUT, Outcome, TaskContext, TaskError, action_for
from loopml.workflows.engine import CancelTask, Command, Execution, Fail, RunTask, StartTimer, Succeed

log = logging.getLogger("loopml.controlplane.workflows")
MAX_ROUNDS = 50  # quick actions chained in one tick (set-alias → register → …), then the next tick


class StaleExecution(Exception):
    """Another writer saved the execution first: drop this pass, reload at the next tick."""


def _drain_history(ex: Execution) -> list[dict[str, Any]]:
    """The engine's new history entries (its own and its live branches'), removed from it so the
    persisted state never carries an ever-growing history."""
    out, ex.history = ex.history, []
    for child in ex._children.values():  # noqa: SLF001 - Parallel / Map branches
        out += [{"branch": child._prefix.rstrip("/"), **h} for h in _drain_history(child)]  # noqa: SLF001
    return out


def _event(entry: dict[str, Any]) -> dict[str, Any]:
    details = {k: v for k, v in entry.items() if k not in ("type", "timestamp", "state")}
    kind = entry["type"]
    if "branch" in entry and kind.startswith("Execution"):  # a Parallel branch / Map iteration, not the run
        kind = "Branch" + kind[len("Execution"):]
    return {"type": kind, "state": entry.get("state"), "details": details or None, "at": entry.get("timestamp")}


class _Run:
    """One execution being advanced in this tick: the engine, its pending work and the events
    not yet saved."""

    def __init__(self, runner: WorkflowRunner, rec: dict[str, Any], ex: Execution) -> None:
        self.runner, self.rec, self.ex = runner, rec, ex
        self.id: str = rec["id"]
        self.revision: int = rec["revision"]
        self.pending: dict[str, Any] = rec.get("pending") or {"tasks": {}, "timers": {}}
        self.pending.setdefault("tasks", {})
        self.pending.setdefault("timers", {})
        self.status: str = rec["status"]
        self.output: Any = rec.get("output")
        self.error: str | None = rec.get("error")
        self.cause: str | None = rec.get("cause")
        self.started_at: datetime | None = None
        self.timed_out = False
        self.events: list[dict[str, Any]] = []

    @property
    def done(self) -> bool:
        return self.status not in (PENDING, RUNNING)

    def now(self) -> datetime:
        return self.runner.clock()

    def context(self, token: str, task: dict[str, Any]) -> TaskContext:
        return TaskContext(self.runner.platform, self.id, token, task.get("state") or "", self.now(),
                           start_function=self.runner.start_function)

    def note(self, kind: str, state: str | None, **details: Any) -> None:
        """A runner event (TaskStarted, …) after the engine's events so far."""
        self.events += [_event(e) for e in _drain_history(self.ex)]
        self.events.append({"type": kind, "state": state, "details": details or None, "at": iso(self.now())})

    # -- commands ---------------------------------------------------------------------------
    def apply(self, cmds: list[Command]) -> None:
        now = self.now()
        for cmd in cmds:
            if isinstance(cmd, RunTask):
                due = iso(now + timedelta(seconds=cmd.timeout_seconds)) if cmd.timeout_seconds else None
                self.pending["tasks"][cmd.token] = {"resource": cmd.resource, "state": cmd.state, "input": cmd.input,
                                                    "timeout_s": cmd.timeout_seconds, "timeout_due": due,
                                                    "handle": None}
            elif isinstance(cmd, StartTimer):
                self.pending["timers"][cmd.token] = {"due": cmd.due, "reason": cmd.reason, "state": cmd.state}
            elif isinstance(cmd, CancelTask):
                self.cancel_task(cmd.token)
            elif isinstance(cmd, Succeed):
                self.finish(SUCCEEDED, output=cmd.output)
            elif isinstance(cmd, Fail):
                self.finish(TIMED_OUT if self.timed_out and cmd.error == TIMEOUT else FAILED,
                            error=cmd.error, cause=cmd.cause)

    def cancel_task(self, token: str) -> None:
        task = self.pending["tasks"].pop(token, None)
        if task and task.get("handle"):
            try:
                action_for(task["resource"]).cancel(self.context(token, task), task["handle"])
            except Exception:  # noqa: BLE001 - cancelling is best effort
                log.exception("execution %s: cancelling task %s failed", self.id, token)

    def finish(self, status: str, *, output: Any = None, error: str | None = None, cause: str | None = None) -> None:
        self.status, self.output, self.error, self.cause = status, output, error, cause
        for token in list(self.pending["tasks"]):
            self.cancel_task(token)
        self.pending = {"tasks": {}, "timers": {}}

    # -- persistence ------------------------------------------------------------------------
    def next_due(self) -> datetime | None:
        dues = [t["due"] for t in self.pending["timers"].values()]
        dues += [t["timeout_due"] for t in self.pending["tasks"].values() if t.get("timeout_due")]
        return min((parse_iso(d) for d in dues), default=None)

    def commit(self) -> None:
        self.events += [_event(e) for e in _drain_history(self.ex)]
        state = self.ex.to_dict()
        state.pop("definition", None)  # the row keeps the definition snapshot
        saved = self.runner.repo.save(
            self.id, revision=self.revision, state=state, pending=self.pending, status=self.status,
            next_due=None if self.done else self.next_due(), output=self.output, error=self.error,
            cause=self.cause, started_at=self.started_at, ended_at=self.now() if self.done else None,
            events=self.events)
        if not saved:
            raise StaleExecution(self.id)
        self.revision += 1
        self.events, self.started_at = [], None

    def feed(self, event: Callable[[], list[Command]]) -> None:
        """Run one engine event, apply its commands and save. An event that raises (an engine
        fault, or input no state can handle, e.g. a Wait or a task timeout past year 9999) fails
        the execution with States.Runtime: otherwise it would fail again at every tick, forever."""
        try:
            self.apply(event())
        except StaleExecution:
            raise
        except Exception as exc:  # noqa: BLE001 - one execution's fault is that execution's failure
            log.exception("execution %s: the engine could not handle an event", self.id)
            cause = f"LoopML could not advance the execution: {type(exc).__name__}: {str(exc)[:500]}"
            self.note("ExecutionFailed", None, error="States.Runtime", cause=cause)
            self.finish(FAILED, error="States.Runtime", cause=cause)
        self.commit()


class WorkflowRunner:
    def __init__(self, platform: Platform, clock: Callable[[], datetime] | None = None,
                 start_function: Callable[[str], Any] | None = None) -> None:
        self.platform = platform
        self.repo = platform.workflows
        self.clock = clock or utcnow
        self.start_function = start_function  # the function dispatcher's run_now, when in a control loop

    def tick(self) -> None:
        now = self.clock()
        for row in self.repo.active():
            if not self._needs_work(row, now):
                continue
            try:
                self.advance(row["id"])
            except StaleExecution:
                log.info("execution %s changed meanwhile; reloading at the next tick", row["id"])
            except Exception:  # noqa: BLE001 - one bad execution never stops the others
                log.exception("advancing execution %s failed", row["id"])

    def stop(self) -> None:
        pass  # nothing held between ticks: everything is in the store

    @staticmethod
    def _needs_work(row: dict[str, Any], now: datetime) -> bool:
        if row["status"] == PENDING or row["stop_requested"]:
            return True
        if (row["pending"] or {}).get("tasks"):
            return True  # poll them
        due = row["next_due"]  # tz-aware on every backend (the store's contract suite checks it)
        return due is not None and due <= now

    # -- one execution ----------------------------------------------------------------------
    def advance(self, execution_id: str) -> str:
        """Move one execution as far as it can go now; returns its status."""
        rec = self.repo.load(execution_id)
        if rec["status"] == PENDING:
            run = self._start(rec)
            if run is None or run.done:
                return run.status if run else self.repo.execution(execution_id)["status"]
        elif rec["status"] == RUNNING:
            ex = Execution.from_dict(rec["state"], rec["definition"])
            run = _Run(self, rec, ex)
        else:
            return rec["status"]
        if rec["stop_requested"]:
            run.apply(run.ex.stop(now=run.now(), cause="stopped by request"))
            run.finish(ABORTED, error=run.ex.error, cause=run.ex.cause)
            run.commit()
            return run.status
        for _ in range(MAX_ROUNDS):
            if run.done or not self._round(run):
                break
        return run.status

    def _start(self, rec: dict[str, Any]) -> _Run | None:
        now = self.clock()
        try:
            ex = Execution(rec["definition"], execution_id=rec["id"], name=rec["id"],
                           state_machine_id=rec["workflow"])
        except Exception as exc:  # noqa: BLE001 - e.g. a trigger started an invalid definition
            ex = Execution({"StartAt": "x", "States": {"x": {"Type": "Succeed"}}}, execution_id=rec["id"])
            run = _Run(self, rec, ex)
            run.started_at = now
            run.note("ExecutionFailed", None, error="States.Runtime", cause=str(exc))
            run.finish(FAILED, error="States.Runtime", cause=f"invalid definition: {exc}")
            run.commit()
            return run
        run = _Run(self, rec, ex)
        run.started_at = now
        if rec["stop_requested"]:
            run.note("ExecutionAborted", None, error="States.Aborted", cause="stopped before it started")
            run.finish(ABORTED, error="States.Aborted", cause="stopped before it started")
            run.commit()
            return run
        run.status = RUNNING
        run.feed(lambda: ex.start({} if rec["input"] is None else rec["input"], now=now))
        return run

    def _round(self, run: _Run) -> bool:
        """Dispatch new tasks, fire due timers and task timeouts, collect finished tasks.
        Returns whether anything happened (then another round may make more progress)."""
        progressed = False
        now = run.now()
        for token, task in list(run.pending["tasks"].items()):
            if run.done:
                return progressed
            if token not in run.pending["tasks"]:
                continue  # cancelled by an earlier event in this round
            if task.get("handle") is None:
                progressed = True
                outcome = self._dispatch(run, token, task)
            elif task.get("timeout_due") and parse_iso(task["timeout_due"]) <= now:
                progressed = True
                run.cancel_task(token)
                outcome = Outcome(error=TIMEOUT, cause=f'task "{task["state"]}" ({task["resource"]}) did not '
                                                       f"finish within {task['timeout_s']} seconds")
            else:
                outcome = self._poll(run, token, task)
            if outcome is not None:
                progressed = True
                run.pending["tasks"].pop(token, None)
                if outcome.ok:
                    run.feed(lambda: run.ex.on_task_result(token, outcome.output, now=now))
                else:
                    run.feed(lambda: run.ex.on_task_failure(token, outcome.error or "States.TaskFailed",
                                                            outcome.cause, now=now))
        for token, timer in sorted(run.pending["timers"].items(), key=lambda kv: kv[1]["due"]):
            if run.done:
                return progressed
            if token not in run.pending["timers"] or parse_iso(timer["due"]) > now:
                continue
            progressed = True
            del run.pending["timers"][token]
            run.timed_out = timer["reason"] == "execution-timeout"
            run.feed(lambda: run.ex.on_timer_fired(token, now=now))
            run.timed_out = False
        return progressed

    def _dispatch(self, run: _Run, token: str, task: dict[str, Any]) -> Outcome | None:
        """Start the task's child and save its handle at once; an immediate result is returned."""
        ctx = run.context(token, task)
        try:
            handle = action_for(task["resource"]).start(ctx, task["input"])
        except TaskError as exc:
            return Outcome(error=exc.error, cause=exc.cause)
        except Exception as exc:  # noqa: BLE001 - an action's failure is the task's failure
            return Outcome(error="States.TaskFailed", cause=getattr(exc, "message", None) or str(exc)
                           or type(exc).__name__)
        task["handle"] = handle
        run.note("TaskStarted", task["state"], token=token, resource=task["resource"],
                 handle={k: v for k, v in handle.items() if k != "output"})
        if "output" in handle:  # in-process and already done: no need to save the handle first
            return Outcome(handle["output"])
        run.commit()
        return None

    def _poll(self, run: _Run, token: str, task: dict[str, Any]) -> Outcome | None:
        try:
            return action_for(task["resource"]).poll(run.context(token, task), task["handle"])
        except TaskError as exc:
            return Outcome(error=exc.error, cause=exc.cause)
        except Exception as exc:  # noqa: BLE001
            return Outcome(error="States.TaskFailed", cause=getattr(exc, "message", None) or str(exc)
                           or type(exc).__name__)
