"""A deterministic, I/O-free interpreter for Amazon States Language, driven by events.

An :class:`Execution` never runs anything itself, never sleeps and never reads a clock. The
caller feeds it events and carries out the commands it returns::

    ex = Execution(definition, execution_id="exec-1")
    commands = ex.start({"x": 1}, now=now)        # e.g. [RunTask(token="1", resource="loopml:train", ...)]
    commands = ex.on_task_result("1", {"acc": .9}, now=now)
    commands = ex.on_task_failure("1", "States.Timeout", "took too long", now=now)
    commands = ex.on_timer_fired("2", now=now)   # a Wait, a Retry backoff or the execution timeout

Commands: :class:`RunTask` (start the resource with this input, report back with its token),
:class:`StartTimer` (call ``on_timer_fired(token)`` after ``seconds``; ``due`` is the absolute
time), :class:`CancelTask` (the result of that task is no longer wanted), :class:`Succeed` and
:class:`Fail` (the execution is over). Events for unknown or stale tokens are ignored (they
return ``[]``), so redelivering an event after a crash is harmless.

The whole state is JSON: ``Execution.from_dict(json.loads(json.dumps(ex.to_dict())))``
continues exactly where ``ex`` was, so a caller can persist it after every event.
Parallel branches and Map iterations are nested executions inside their parent (Map honours
MaxConcurrency; 0 means all at once). Their task and timer tokens are prefixed with the
parent's, and events are routed by token.
"""

from __future__ import annotations

import copy
import heapq
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from loopml.core.errors import InvalidInput
from loopml.workflows.asl import (
    NUMERIC_OPS,
    STRING_OPS,
    TIMESTAMP_OPS,
    parse_timestamp,
    validate_definition,
)
from loopml.workflows.paths import (
    WorkflowError,
    apply_input_path,
    apply_output_path,
    apply_result_path,
    effective_input,
    evaluate_expression,
    get_path,
    path_exists,
    process_result,
    resolve_template,
)

__all__ = ["WorkflowError", "Execution", "RunTask", "StartTimer", "CancelTask", "Succeed", "Fail",
           "Command", "command_from_dict", "evaluate_rule", "retry_delay", "simulate",
           "SimulationResult", "NOT_STARTED", "RUNNING", "SUCCEEDED", "FAILED", "ABORTED"]

NOT_STARTED, RUNNING, SUCCEEDED, FAILED, ABORTED = "NOT_STARTED", "RUNNING", "SUCCEEDED", "FAILED", "ABORTED"
_EMPTY_INPUT: Any = object()
_UUID_NS = uuid.UUID("6f1b8c2e-0d7a-4c53-9a51-6c1f1f0a2b77")


# -- commands ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunTask:
    token: str
    state: str
    resource: str
    input: Any
    timeout_seconds: int | None = None
    heartbeat_seconds: int | None = None
    type: str = field(default="RunTask", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StartTimer:
    token: str
    state: str | None
    seconds: float
    due: str
    reason: str  # "wait" | "retry" | "execution-timeout"
    type: str = field(default="StartTimer", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CancelTask:
    token: str
    type: str = field(default="CancelTask", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Succeed:
    output: Any
    type: str = field(default="Succeed", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Fail:
    error: str
    cause: str
    type: str = field(default="Fail", init=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Command = RunTask | StartTimer | CancelTask | Succeed | Fail
_COMMANDS = {cls.__name__: cls for cls in (RunTask, StartTimer, CancelTask, Succeed, Fail)}


def command_from_dict(body: Mapping[str, Any]) -> Command:
    fields = dict(body)
    cls = _COMMANDS[fields.pop("type")]
    return cls(**fields)


# -- time and retries ------------------------------------------------------------------------------


def _as_datetime(now: datetime | str) -> datetime:
    if isinstance(now, str):
        now = datetime.fromisoformat(now)
    if not isinstance(now, datetime):
        raise TypeError(f"now must be a datetime or an ISO 8601 string, not {type(now).__name__}")
    return now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)


def _iso(now: datetime) -> str:
    return now.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def retry_delay(retrier: Mapping[str, Any], attempt: int) -> float:
    """Seconds before retry number ``attempt + 1``: IntervalSeconds x BackoffRate^attempt, capped
    by MaxDelaySeconds (defaults: 1 s, rate 2.0, no cap)."""
    delay = float(retrier.get("IntervalSeconds", 1)) * float(retrier.get("BackoffRate", 2.0)) ** attempt
    if "MaxDelaySeconds" in retrier:
        delay = min(delay, float(retrier["MaxDelaySeconds"]))
    return delay


def _error_matches(names: list[str], error: str) -> bool:
    if error in names:
        return True
    if error == "States.Runtime":  # never caught by a wildcard, as in Step Functions
        return False
    if "States.ALL" in names:
        return True
    return "States.TaskFailed" in names and error != "States.Timeout"


# -- Choice rules ------------------------------------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b, "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b, "GreaterThanEquals": lambda a, b: a >= b,
}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _wildcard(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if c == "*" else re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def evaluate_rule(rule: Mapping[str, Any], data: Any, context: Any = None) -> bool:
    """Whether a Choice rule matches ``data``. A comparison whose value has the wrong type is
    false; a Variable that is not present is a ``States.Runtime`` error (test it with IsPresent)."""
    if "And" in rule:
        return all(evaluate_rule(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(evaluate_rule(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not evaluate_rule(rule["Not"], data, context)
    op = next(k for k in rule if k not in ("Variable", "Next", "Comment"))
    variable, expected = rule["Variable"], rule[op]
    if op == "IsPresent":
        return path_exists(data, variable, context) == expected
    value = get_path(data, variable, context)
    if op == "IsNull":
        return (value is None) == expected
    if op == "IsNumeric":
        return _is_number(value) == expected
    if op == "IsString":
        return isinstance(value, str) == expected
    if op == "IsBoolean":
        return isinstance(value, bool) == expected
    if op == "IsTimestamp":
        return (parse_timestamp(value) is not None) == expected
    if op == "StringMatches":
        return isinstance(value, str) and _wildcard(expected).fullmatch(value) is not None
    if op.endswith("Path"):
        op = op[:-4]
        expected = get_path(data, expected, context)
    if op == "BooleanEquals":
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    for family, ops, accept in (("String", STRING_OPS, lambda v: isinstance(v, str)),
                                ("Numeric", NUMERIC_OPS, _is_number),
                                ("Timestamp", TIMESTAMP_OPS, lambda v: parse_timestamp(v) is not None)):
        if op in ops:
            if not (accept(value) and accept(expected)):
                return False
            if family == "Timestamp":
                value, expected = parse_timestamp(value), parse_timestamp(expected)
            return _COMPARE[op[len(family):]](value, expected)
    raise WorkflowError("States.Runtime", f"unknown Choice operator {op!r}")  # validated away


# -- the interpreter -----------------------------------------------------------------------------


class Execution:
    """One run of a state machine (or, nested, of a Parallel branch or a Map iteration)."""

    def __init__(self, definition: Mapping[str, Any], *, execution_id: str = "execution",
                 name: str | None = None, state_machine_id: str = "", validate: bool = True) -> None:
        if validate:
            validate_definition(definition)
        self.definition: dict[str, Any] = dict(definition)
        self.execution_id = execution_id
        self.name = name or execution_id
        self.state_machine_id = state_machine_id
        self.status = NOT_STARTED
        self.input: Any = None
        self.output: Any = None
        self.error: str | None = None
        self.cause: str | None = None
        self.history: list[dict[str, Any]] = []
        self._root = True
        self._prefix = ""
        self._seq = 0
        self._current: str | None = None
        self._raw_input: Any = None  # the current state's input, before InputPath
        self._effective: Any = None  # a Wait's input after InputPath, kept for its output
        self._retries: list[int] = []
        self._waiting: dict[str, Any] | None = None  # {"kind", "token", "command"}
        self._fanout: dict[str, Any] | None = None   # Parallel / Map bookkeeping
        self._children: dict[str, Execution] = {}
        self.context: dict[str, Any] = {}

    # -- public API --------------------------------------------------------------------------

    @property
    def current_state(self) -> str | None:
        return self._current

    @property
    def done(self) -> bool:
        return self.status in (SUCCEEDED, FAILED, ABORTED)

    def start(self, input: Any = _EMPTY_INPUT, *, now: datetime | str) -> list[Command]:
        """Begin at StartAt with ``input`` (``{}`` when omitted)."""
        if self.status != NOT_STARTED:
            raise InvalidInput(f"execution {self.execution_id}: already started ({self.status})")
        t = _as_datetime(now)
        self.status = RUNNING
        self.input = {} if input is _EMPTY_INPUT else copy.deepcopy(input)
        if not self.context:
            self.context = {
                "Execution": {"Id": self.execution_id, "Name": self.name, "Input": copy.deepcopy(self.input),
                              "StartTime": _iso(t)},
                "StateMachine": {"Id": self.state_machine_id, "Name": self.state_machine_id},
            }
        self._record("ExecutionStarted", t, input=self.input)
        cmds: list[Command] = []
        if self._root and "TimeoutSeconds" in self.definition:
            seconds = self.definition["TimeoutSeconds"]
            cmds.append(StartTimer(token=self._prefix + "timeout", state=None, seconds=float(seconds),
                                   due=_iso(t + timedelta(seconds=seconds)), reason="execution-timeout"))
        self._enter(self.definition["StartAt"], self.input, t)
        self._run(t, cmds)
        return cmds

    def on_task_result(self, token: str, output: Any, *, now: datetime | str) -> list[Command]:
        """The task ``token`` succeeded with ``output``."""
        return self._event(token, "task", _as_datetime(now),
                           lambda ex, t, cmds: ex._task_succeeded(output, t, cmds))

    def on_task_failure(self, token: str, error: str, cause: str = "", *,
                        now: datetime | str) -> list[Command]:
        """The task ``token`` failed (``States.TaskFailed``, ``States.Timeout``, a custom error...)."""
        def handle(ex: Execution, t: datetime, cmds: list[Command]) -> None:
            ex._waiting = None
            ex._record("TaskFailed", t, state=ex._current, error=error, cause=cause)
            ex._handle_error(error, cause, t, cmds)
        return self._event(token, "task", _as_datetime(now), handle)

    def on_timer_fired(self, token: str, *, now: datetime | str) -> list[Command]:
        t = _as_datetime(now)
        if self._root and token == self._prefix + "timeout" and self.status == RUNNING:
            cmds: list[Command] = []
            seconds = self.definition.get("TimeoutSeconds")
            self._fail("States.Timeout", f"the execution did not finish within {seconds} seconds", t, cmds)
            return cmds
        return self._event(token, "timer", t, lambda ex, t_, cmds: ex._timer_fired(t_, cmds))

    def stop(self, *, now: datetime | str, error: str = "States.Aborted", cause: str = "stopped") -> list[Command]:
        """Abort: returns CancelTask for every task still running."""
        if self.done or self.status == NOT_STARTED:
            return []
        cmds: list[Command] = [CancelTask(tok) for tok in self._inflight_tasks()]
        self.status, self.error, self.cause = ABORTED, error, cause
        self._waiting, self._fanout, self._children = None, None, {}
        self._record("ExecutionAborted", _as_datetime(now), error=error, cause=cause)
        return cmds

    def outstanding(self) -> list[Command]:
        """The RunTask / StartTimer commands the execution is waiting on (to re-arm after a restart)."""
        out: list[Command] = []
        if self._waiting and self._waiting.get("command"):
            out.append(command_from_dict(self._waiting["command"]))
        for child in self._children.values():
            out += child.outstanding()
        return out

    def to_dict(self) -> dict[str, Any]:
        body = {
            "version": 1, "execution_id": self.execution_id, "name": self.name,
            "state_machine_id": self.state_machine_id, "status": self.status, "input": self.input,
            "output": self.output, "error": self.error, "cause": self.cause, "history": self.history,
            "root": self._root, "prefix": self._prefix, "seq": self._seq, "current": self._current,
            "raw_input": self._raw_input, "effective": self._effective, "retries": self._retries,
            "waiting": self._waiting, "fanout": self._fanout, "context": self.context,
            "children": {k: c.to_dict() for k, c in self._children.items()},
        }
        if self._root:
            body["definition"] = self.definition
        return copy.deepcopy(body)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], definition: Mapping[str, Any] | None = None) -> Execution:
        body = copy.deepcopy(dict(body))
        definition = body.get("definition", definition)
        if definition is None:
            raise InvalidInput("execution state: no definition")
        ex = cls(definition, execution_id=body["execution_id"], name=body["name"],
                 state_machine_id=body["state_machine_id"], validate=False)
        ex.status, ex.input, ex.output = body["status"], body["input"], body["output"]
        ex.error, ex.cause, ex.history = body["error"], body["cause"], body["history"]
        ex._root, ex._prefix, ex._seq = body["root"], body["prefix"], body["seq"]
        ex._current, ex._raw_input, ex._effective = body["current"], body["raw_input"], body["effective"]
        ex._retries, ex._waiting, ex._fanout = body["retries"], body["waiting"], body["fanout"]
        ex.context = body["context"]
        ex._children = {k: cls.from_dict(c, ex._child_definition(int(k)))
                        for k, c in body["children"].items()}
        return ex

    # -- internals ----------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        assert self._current is not None
        return self.definition["States"][self._current]

    def _new_token(self) -> str:
        self._seq += 1
        return f"{self._prefix}{self._seq}"

    def _new_uuid(self) -> str:
        return str(uuid.uuid5(_UUID_NS, f"{self.execution_id}/{self._new_token()}"))

    def _record(self, kind: str, t: datetime, **details: Any) -> None:
        self.history.append({"type": kind, "timestamp": _iso(t), **copy.deepcopy(details)})

    def _inflight_tasks(self) -> list[str]:
        out = [self._waiting["token"]] if self._waiting and self._waiting["kind"] == "task" else []
        for child in self._children.values():
            out += child._inflight_tasks()
        return out

    def _event(self, token: str, kind: str, t: datetime,
               handler: Callable[[Execution, datetime, list[Command]], None]) -> list[Command]:
        cmds: list[Command] = []
        if self.status != RUNNING:
            return cmds
        if self._waiting and self._waiting["token"] == token:
            expected = ("task",) if kind == "task" else ("wait", "retry")
            if self._waiting["kind"] in expected:
                handler(self, t, cmds)
                self._run(t, cmds)
            return cmds
        for child in self._children.values():
            if token.startswith(child._prefix):
                cmds += child._event(token, kind, t, handler)
                self._pump(t, cmds)
                self._run(t, cmds)
                break
        return cmds

    def _enter(self, name: str, raw_input: Any, t: datetime) -> None:
        self._current = name
        self._raw_input = raw_input
        self._effective = None
        self._retries = [0] * len(self.definition["States"][name].get("Retry", []))
        self.context["State"] = {"Name": name, "EnteredTime": _iso(t), "RetryCount": 0}
        self.context.pop("Task", None)
        self._record("StateEntered", t, state=name, input=raw_input)

    def _goto(self, name: str, output: Any, t: datetime) -> None:
        self._record("StateExited", t, state=self._current, output=output)
        self._enter(name, output, t)

    def _transition(self, output: Any, t: datetime, cmds: list[Command]) -> None:
        st = self._state()
        if st.get("End"):
            self._record("StateExited", t, state=self._current, output=output)
            self._succeed(output, t, cmds)
        else:
            self._goto(st["Next"], output, t)

    def _succeed(self, output: Any, t: datetime, cmds: list[Command]) -> None:
        self.status, self.output = SUCCEEDED, output
        self._record("ExecutionSucceeded", t, output=output)
        if self._root:
            cmds.append(Succeed(copy.deepcopy(output)))

    def _fail(self, error: str, cause: str, t: datetime, cmds: list[Command]) -> None:
        cmds += [CancelTask(tok) for tok in self._inflight_tasks()]
        self.status, self.error, self.cause = FAILED, error, cause
        self._waiting, self._fanout, self._children = None, None, {}
        self._record("ExecutionFailed", t, error=error, cause=cause)
        if self._root:
            cmds.append(Fail(error, cause))

    def _run(self, t: datetime, cmds: list[Command]) -> None:
        while self.status == RUNNING and self._waiting is None:
            try:
                self._execute(t, cmds)
            except WorkflowError as exc:
                cmds += [CancelTask(tok) for tok in self._inflight_tasks()]
                self._waiting, self._fanout, self._children = None, None, {}
                self._handle_error(exc.error, exc.cause, t, cmds)

    def _execute(self, t: datetime, cmds: list[Command]) -> None:
        st, name, raw, ctx = self._state(), self._current, self._raw_input, self.context
        kind = st["Type"]
        if kind == "Pass":
            eff = effective_input(st, raw, ctx, self._new_uuid)
            result = copy.deepcopy(st["Result"]) if "Result" in st else eff
            placed = apply_result_path(st.get("ResultPath", "$"), raw, result)
            self._transition(apply_output_path(st, placed, ctx), t, cmds)
        elif kind == "Task":
            token = self._new_token()
            ctx["Task"] = {"Token": token}
            eff = effective_input(st, raw, ctx, self._new_uuid)
            timeout = st.get("TimeoutSeconds")
            if "TimeoutSecondsPath" in st:
                timeout = self._positive_int_at(st["TimeoutSecondsPath"], raw, "TimeoutSecondsPath")
            heartbeat = st.get("HeartbeatSeconds")
            if "HeartbeatSecondsPath" in st:
                heartbeat = self._positive_int_at(st["HeartbeatSecondsPath"], raw, "HeartbeatSecondsPath")
            cmd = RunTask(token=token, state=name, resource=st["Resource"], input=eff,
                          timeout_seconds=timeout, heartbeat_seconds=heartbeat)
            self._waiting = {"kind": "task", "token": token, "command": cmd.to_dict()}
            self._record("TaskScheduled", t, state=name, token=token, resource=st["Resource"], input=eff)
            cmds.append(cmd)
        elif kind == "Choice":
            eff = apply_input_path(st, raw, ctx)
            target = next((rule["Next"] for rule in st["Choices"] if evaluate_rule(rule, eff, ctx)),
                          st.get("Default"))
            if target is None:
                raise WorkflowError("States.NoChoiceMatched",
                                    f'state "{name}": no Choice rule matched and there is no Default')
            self._goto(target, apply_output_path(st, eff, ctx), t)
        elif kind == "Wait":
            eff = apply_input_path(st, raw, ctx)
            self._effective = eff
            seconds = self._wait_seconds(st, eff, t)
            if seconds > 0:
                token = self._new_token()
                cmd = StartTimer(token=token, state=name, seconds=seconds,
                                 due=_iso(t + timedelta(seconds=seconds)), reason="wait")
                self._waiting = {"kind": "wait", "token": token, "command": cmd.to_dict()}
                self._record("WaitStarted", t, state=name, token=token, seconds=seconds)
                cmds.append(cmd)
            else:
                self._transition(apply_output_path(st, eff, ctx), t, cmds)
        elif kind == "Succeed":
            out = apply_output_path(st, apply_input_path(st, raw, ctx), ctx)
            self._record("StateExited", t, state=name, output=out)
            self._succeed(out, t, cmds)
        elif kind == "Fail":
            error = st.get("Error")
            cause = st.get("Cause")
            if "ErrorPath" in st:
                error = evaluate_expression(st["ErrorPath"], raw, ctx, self._new_uuid)
            if "CausePath" in st:
                cause = evaluate_expression(st["CausePath"], raw, ctx, self._new_uuid)
            self._fail(str(error if error is not None else "States.Failed"),
                       str(cause if cause is not None else ""), t, cmds)
        elif kind in ("Parallel", "Map"):
            self._start_fanout(st, t, cmds)
        else:  # pragma: no cover - validated away
            raise WorkflowError("States.Runtime", f'state "{name}": unknown Type {kind!r}')

    def _positive_int_at(self, path: str, data: Any, what: str) -> int:
        value = get_path(data, path, self.context)
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise WorkflowError("States.Runtime",
                                f'state "{self._current}": {what} {path!r} is {value!r}, not a positive integer')
        return value

    def _wait_seconds(self, st: dict[str, Any], eff: Any, t: datetime) -> float:
        name = self._current
        if "Seconds" in st:
            return float(st["Seconds"])
        if "SecondsPath" in st:
            value = get_path(eff, st["SecondsPath"], self.context)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise WorkflowError("States.Runtime", f'state "{name}": SecondsPath {st["SecondsPath"]!r} '
                                    f"is {value!r}, not a non-negative integer")
            return float(value)
        raw = st["Timestamp"] if "Timestamp" in st else get_path(eff, st["TimestampPath"], self.context)
        ts = parse_timestamp(raw)
        if ts is None:
            raise WorkflowError("States.Runtime", f'state "{name}": {raw!r} is not an RFC 3339 timestamp')
        return max(0.0, (ts - t).total_seconds())

    def _task_succeeded(self, output: Any, t: datetime, cmds: list[Command]) -> None:
        st = self._state()
        self._waiting = None
        self._record("TaskSucceeded", t, state=self._current, output=output)
        try:
            out = process_result(st, self._raw_input, output, self.context, self._new_uuid)
        except WorkflowError as exc:
            self._handle_error(exc.error, exc.cause, t, cmds)
            return
        self._transition(out, t, cmds)

    def _timer_fired(self, t: datetime, cmds: list[Command]) -> None:
        kind = self._waiting["kind"] if self._waiting else None
        self._waiting = None
        if kind == "wait":
            st = self._state()
            try:
                out = apply_output_path(st, self._effective, self.context)
            except WorkflowError as exc:
                self._handle_error(exc.error, exc.cause, t, cmds)
                return
            self._transition(out, t, cmds)
        # "retry": _run executes the current state again

    def _handle_error(self, error: str, cause: str, t: datetime, cmds: list[Command]) -> None:
        st = self._state()
        for i, retrier in enumerate(st.get("Retry", [])):
            if not _error_matches(retrier["ErrorEquals"], error):
                continue
            attempt = self._retries[i]
            if attempt < retrier.get("MaxAttempts", 3):
                delay = retry_delay(retrier, attempt)
                self._retries[i] += 1
                self.context["State"]["RetryCount"] = sum(self._retries)
                token = self._new_token()
                cmd = StartTimer(token=token, state=self._current, seconds=delay,
                                 due=_iso(t + timedelta(seconds=delay)), reason="retry")
                self._waiting = {"kind": "retry", "token": token, "command": cmd.to_dict()}
                self._record("RetryScheduled", t, state=self._current, error=error, cause=cause,
                             attempt=attempt + 1, seconds=delay)
                cmds.append(cmd)
                return
            break  # the first matching retrier is exhausted: on to the catchers
        for catcher in st.get("Catch", []):
            if _error_matches(catcher["ErrorEquals"], error):
                try:
                    out = apply_result_path(catcher.get("ResultPath", "$"), self._raw_input,
                                            {"Error": error, "Cause": cause})
                except WorkflowError as exc:
                    self._fail(exc.error, exc.cause, t, cmds)
                    return
                self._record("ErrorCaught", t, state=self._current, error=error, cause=cause,
                             next=catcher["Next"])
                self._goto(catcher["Next"], out, t)
                return
        self._fail(error, cause, t, cmds)

    # -- Parallel and Map -----------------------------------------------------------------------

    def _child_definition(self, index: int) -> dict[str, Any]:
        st = self._state()
        if st["Type"] == "Parallel":
            return st["Branches"][index]
        return st.get("ItemProcessor") or st["Iterator"]

    def _start_fanout(self, st: dict[str, Any], t: datetime, cmds: list[Command]) -> None:
        raw, ctx = self._raw_input, self.context
        if st["Type"] == "Parallel":
            eff = effective_input(st, raw, ctx, self._new_uuid)
            inputs = [eff] * len(st["Branches"])
            limit = 0
        else:
            eff = apply_input_path(st, raw, ctx)
            items_path = st.get("ItemsPath", "$")
            items = get_path(eff, items_path, ctx)
            if not isinstance(items, list):
                raise WorkflowError("States.Runtime", f'state "{self._current}": ItemsPath {items_path!r} '
                                    f"selects {type(items).__name__}, not an array")
            selector = st.get("ItemSelector", st.get("Parameters"))
            inputs = []
            for i, item in enumerate(items):
                if selector is None:
                    inputs.append(item)
                else:
                    item_ctx = {**ctx, "Map": {"Item": {"Index": i, "Value": item}}}
                    inputs.append(resolve_template(selector, eff, item_ctx, self._new_uuid))
            limit = st.get("MaxConcurrency", 0)
        token = self._new_token()
        self._fanout = {"token": token, "inputs": inputs, "results": [None] * len(inputs),
                        "done": 0, "next": 0, "limit": limit}
        self._waiting = {"kind": "fanout", "token": token}
        self._children = {}
        self._record("FanoutStarted", t, state=self._current, count=len(inputs))
        self._pump(t, cmds)

    def _pump(self, t: datetime, cmds: list[Command]) -> None:
        """Collect finished children, start more, and finish the Parallel/Map state when all are done."""
        while self._fanout is not None:
            f = self._fanout
            for key, child in list(self._children.items()):
                if child.done:  # keep a finished branch's events: they are part of the execution's history
                    self.history += [{"branch": child._prefix.rstrip("/"), **h} for h in child.history]
                    child.history = []
                if child.status == SUCCEEDED:
                    f["results"][int(key)] = child.output
                    f["done"] += 1
                    del self._children[key]
                elif child.status in (FAILED, ABORTED):
                    del self._children[key]
                    cmds += [CancelTask(tok) for tok in self._inflight_tasks()]
                    self._waiting, self._fanout, self._children = None, None, {}
                    self._handle_error(child.error or "States.BranchFailed", child.cause or "", t, cmds)
                    return
            n = len(f["inputs"])
            if f["done"] == n:
                results = f["results"]
                self._waiting, self._fanout = None, None
                try:
                    out = process_result(self._state(), self._raw_input, results, self.context, self._new_uuid)
                except WorkflowError as exc:
                    self._handle_error(exc.error, exc.cause, t, cmds)
                    return
                self._transition(out, t, cmds)
                return
            started = False
            while f["next"] < n and (not f["limit"] or len(self._children) < f["limit"]):
                i = f["next"]
                f["next"] += 1
                child = Execution(self._child_definition(i), execution_id=self.execution_id, name=self.name,
                                  state_machine_id=self.state_machine_id, validate=False)
                child._root = False
                child._prefix = f"{f['token']}.{i}/"
                child.context = {k: copy.deepcopy(v) for k, v in self.context.items()
                                 if k in ("Execution", "StateMachine")}
                self._children[str(i)] = child
                cmds += child.start(f["inputs"][i], now=t)
                started = True
            if not started:
                return


# -- a synchronous driver with a virtual clock (tests, benchmarks, dry runs) -----------------------


@dataclass
class SimulationResult:
    execution: Execution
    log: list[tuple[float, Command]]  # (virtual seconds since start, command)

    @property
    def timers(self) -> list[StartTimer]:
        return [c for _, c in self.log if isinstance(c, StartTimer)]

    @property
    def tasks(self) -> list[RunTask]:
        return [c for _, c in self.log if isinstance(c, RunTask)]


def simulate(definition: Mapping[str, Any], input: Any = None,
             tasks: Callable[[str, Any], Any] | Mapping[str, Callable[[Any], Any]] | None = None, *,
             start: datetime | str = "2026-01-01T00:00:00+00:00", execution_id: str = "simulation",
             max_events: int = 1_000_000) -> SimulationResult:
    """Run ``definition`` to the end in virtual time: tasks run at once through ``tasks`` (a
    function ``(resource, input) -> output`` or a mapping resource -> ``fn(input)``); timers jump
    the clock. A task that raises ``WorkflowError`` fails with its error; any other exception
    fails with the exception's class name (as a Lambda function's error does)."""
    t0 = _as_datetime(start)
    ex = Execution(definition, execution_id=execution_id)

    def call(resource: str, payload: Any) -> Any:
        if tasks is None:
            raise WorkflowError("States.TaskFailed", f"no handler for {resource}")
        if isinstance(tasks, Mapping):
            if resource not in tasks:
                raise WorkflowError("States.TaskFailed", f"no handler for {resource}")
            return tasks[resource](payload)
        return tasks(resource, payload)

    log: list[tuple[float, Command]] = []
    queue: list[Command] = []
    timers: list[tuple[float, int, str]] = []
    cancelled: set[str] = set()
    clock = 0.0
    order = 0

    def take(cmds: list[Command]) -> None:
        nonlocal order
        for c in cmds:
            log.append((clock, c))
            if isinstance(c, StartTimer):
                order += 1
                heapq.heappush(timers, (clock + c.seconds, order, c.token))
            elif isinstance(c, CancelTask):
                cancelled.add(c.token)
            elif isinstance(c, RunTask):
                queue.append(c)

    take(ex.start({} if input is None else input, now=t0))
    events = 0
    while not ex.done and events < max_events:
        events += 1
        now = t0 + timedelta(seconds=clock)
        if queue:
            task = queue.pop(0)
            if task.token in cancelled:
                continue
            try:
                result = call(task.resource, copy.deepcopy(task.input))
            except WorkflowError as exc:
                take(ex.on_task_failure(task.token, exc.error, exc.cause, now=now))
            except Exception as exc:  # noqa: BLE001 - a task's own failure, reported like Lambda's
                take(ex.on_task_failure(task.token, type(exc).__name__, str(exc), now=now))
            else:
                take(ex.on_task_result(task.token, result, now=now))
        elif timers:
            due, _, token = heapq.heappop(timers)
            clock = max(clock, due)
            take(ex.on_timer_fired(token, now=t0 + timedelta(seconds=clock)))
        else:
            break
    return SimulationResult(ex, log)
