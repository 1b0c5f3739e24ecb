"""loopml.workflows: ASL validation, the data flow and the event-driven interpreter, on small
state machines. Pure: no I/O, no clock, no sleeping (timers are virtual)."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loopml.core.errors import InvalidInput
from loopml.workflows.asl import load_definition, parse_definition
from loopml.workflows.engine import (
    ABORTED,
    FAILED,
    SUCCEEDED,
    CancelTask,
    Execution,
    Fail,
    RunTask,
    StartTimer,
    Succeed,
    WorkflowError,
    command_from_dict,
    evaluate_rule,
    retry_delay,
    simulate,
)
from loopml.workflows.paths import get_path, parse_path, resolve_template, set_path

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def machine(states: dict[str, Any], start: str | None = None, **top: Any) -> dict[str, Any]:
    return {"StartAt": start or next(iter(states)), "States": states, **top}


def task(resource: str = "loopml:f", **fields: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": resource, **({"End": True} if "Next" not in fields else {}), **fields}


def only(cmds: list, kind: type) -> Any:
    found = [c for c in cmds if isinstance(c, kind)]
    assert len(found) == 1, cmds
    return found[0]


class Boom(Exception):
    pass


# -- paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("$", (False, [])),
    ("$.a.b", (False, ["a", "b"])),
    ("$.a[0]", (False, ["a", 0])),
    ("$['x y'].z", (False, ["x y", "z"])),
    ('$["q"][12]', (False, ["q", 12])),
    ("$$.Execution.Id", (True, ["Execution", "Id"])),
])
def test_parse_path(path, expected):
    assert parse_path(path) == expected


@pytest.mark.parametrize("bad", ["a.b", "$.", "$.a[x]", "$.a[", "$.*", "$[-1]", "$.a..b"])
def test_parse_path_rejects(bad):
    with pytest.raises(ValueError):
        parse_path(bad)


def test_get_and_set_path():
    data = {"a": {"b": [10, {"c": 3}]}, "x y": 1}
    assert get_path(data, "$.a.b[1].c") == 3
    assert get_path(data, "$['x y']") == 1
    assert get_path({}, "$$.Execution.Id", {"Execution": {"Id": "e"}}) == "e"
    with pytest.raises(WorkflowError) as err:
        get_path(data, "$.a.nope")
    assert err.value.error == "States.Runtime" and "$.a.nope" in err.value.cause
    out = set_path(data, "$.new.deep.key", 5)
    assert out["new"] == {"deep": {"key": 5}} and "new" not in data  # a copy, input untouched
    assert set_path(data, "$.a.b[0]", 11)["a"]["b"][0] == 11
    assert set_path(data, "$", 7) == 7
    with pytest.raises(WorkflowError) as err:
        set_path({"a": 1}, "$.a.b", 2)
    assert err.value.error == "States.ResultPathMatchFailure"


def test_parameters_and_intrinsic_functions():
    data = {"name": "mnist", "n": 3, "obj": {"k": [1, 2]}, "js": '{"a": 1}', "items": ["a", "b"]}
    template = {
        "static": {"nested": True},
        "name.$": "$.name",
        "deep": {"n.$": "$.n", "list": [{"v.$": "$.obj.k[1]"}]},
        "msg.$": "States.Format('dataset {} has {} parts, \\{literal\\} it\\'s', $.name, $.n)",
        "parsed.$": "States.StringToJson($.js)",
        "text.$": "States.JsonToString($.obj)",
        "arr.$": "States.Array($.n, 'two', 3.5, true, null, States.MathAdd($.n, -1))",
        "sum.$": "States.MathAdd($.n, 10)",
        "len.$": "States.ArrayLength($.items)",
        "ctx.$": "$$.Execution.Id",
    }
    out = resolve_template(template, data, {"Execution": {"Id": "exec-9"}})
    assert out == {
        "static": {"nested": True}, "name": "mnist", "deep": {"n": 3, "list": [{"v": 2}]},
        "msg": "dataset mnist has 3 parts, {literal} it's", "parsed": {"a": 1}, "text": '{"k":[1,2]}',
        "arr": [3, "two", 3.5, True, None, 2], "sum": 13, "len": 2, "ctx": "exec-9",
    }
    ids = resolve_template({"id.$": "States.UUID()"}, {}, None, lambda: "fixed")
    assert ids == {"id": "fixed"}
    with pytest.raises(WorkflowError) as err:
        resolve_template({"x.$": "States.MathAdd($.name, 1)"}, data)
    assert err.value.error == "States.IntrinsicFailure"


def test_array_range_is_capped_at_1000_items():
    # an execution input must not make the control plane build a billion-item list (Step Functions' cap)
    assert len(resolve_template({"r.$": "States.ArrayRange(1, 1000, 1)"}, {})["r"]) == 1000
    with pytest.raises(WorkflowError) as err:
        resolve_template({"r.$": "States.ArrayRange(1, $.n, 1)"}, {"n": 10**9})
    assert (err.value.error, "more than 1000" in err.value.cause) == ("States.IntrinsicFailure", True)


# -- Pass, Succeed, Fail and the data flow -----------------------------------------------------------------


def test_pass_data_flow_fields():
    d = machine({
        "P1": {"Type": "Pass", "InputPath": "$.in", "Parameters": {"v.$": "$.value", "const": 1},
               "ResultPath": "$.in.out", "OutputPath": "$.in", "Next": "P2"},
        "P2": {"Type": "Pass", "Result": {"r": True}, "ResultPath": "$.added.here", "Next": "P3"},
        "P3": {"Type": "Pass", "ResultPath": None, "Result": "dropped", "Next": "Done"},
        "Done": {"Type": "Succeed", "OutputPath": "$.added"},
    })
    ex = Execution(d)
    cmds = ex.start({"in": {"value": 42}, "other": 0}, now=T0)
    assert cmds == [Succeed({"here": {"r": True}})]
    assert ex.status == SUCCEEDED
    # the intermediate outputs are in the history
    exits = {h["state"]: h["output"] for h in ex.history if h["type"] == "StateExited"}
    assert exits["P1"] == {"value": 42, "out": {"v": 42, "const": 1}}
    assert exits["P3"] == exits["P2"] == {"value": 42, "out": {"v": 42, "const": 1}, "added": {"here": {"r": True}}}


def test_input_and_output_path_null():
    d = machine({"P": {"Type": "Pass", "InputPath": None, "Next": "Q"},
                 "Q": {"Type": "Pass", "Result": 1, "OutputPath": None, "End": True}})
    assert simulate(d, {"a": 1}).execution.output == {}


def test_context_object():
    d = machine({
        "Ctx": task(Parameters={"id.$": "$$.Execution.Id", "state.$": "$$.State.Name",
                                "entered.$": "$$.State.EnteredTime", "input.$": "$$.Execution.Input",
                                "token.$": "$$.Task.Token", "started.$": "$$.Execution.StartTime"}),
    })
    ex = Execution(d, execution_id="exec-42")
    run = only(ex.start({"x": 1}, now=T0), RunTask)
    assert run.input == {"id": "exec-42", "state": "Ctx", "entered": "2026-01-01T00:00:00Z",
                         "input": {"x": 1}, "token": run.token, "started": "2026-01-01T00:00:00Z"}


def test_uuid_is_deterministic():
    d = machine({"P": {"Type": "Pass", "Parameters": {"a.$": "States.UUID()", "b.$": "States.UUID()"},
                       "End": True}})
    one, two = simulate(d).execution.output, simulate(d).execution.output
    assert one == two and one["a"] != one["b"] and len(one["a"]) == 36


def test_fail_state_error_and_cause():
    d = machine({"F": {"Type": "Fail", "Error": "Custom.Bad", "Cause": "because"}})
    ex = Execution(d)
    assert ex.start(now=T0) == [Fail("Custom.Bad", "because")]
    assert (ex.status, ex.error, ex.cause) == (FAILED, "Custom.Bad", "because")
    d = machine({"F": {"Type": "Fail", "ErrorPath": "$.e", "CausePath": "States.Format('code {}', $.c)"}})
    ex = simulate(d, {"e": "Dyn.Err", "c": 7}).execution
    assert (ex.error, ex.cause) == ("Dyn.Err", "code 7")


def test_missing_input_path_is_a_runtime_error_not_caught_by_states_all():
    d = machine({"T": task(InputPath="$.missing",
                           Catch=[{"ErrorEquals": ["States.ALL"], "Next": "C"}]),
                 "C": {"Type": "Succeed"}})
    ex = simulate(d, {}).execution
    assert ex.status == FAILED and ex.error == "States.Runtime" and "$.missing" in ex.cause


# -- Task, Retry and Catch ------------------------------------------------------------------------


def test_task_command_and_result_processing():
    d = machine({"Train": task("loopml:train", InputPath="$.job", Parameters={"dataset.$": "$.ds", "epochs": 2},
                               TimeoutSeconds=600, HeartbeatSeconds=60,
                               ResultSelector={"acc.$": "$.metrics.accuracy"}, ResultPath="$.result",
                               OutputPath="$.result")})
    ex = Execution(d)
    run = only(ex.start({"job": {"ds": "mnist"}}, now=T0), RunTask)
    assert (run.resource, run.input, run.timeout_seconds, run.heartbeat_seconds, run.state) == (
        "loopml:train", {"dataset": "mnist", "epochs": 2}, 600, 60, "Train")
    assert ex.on_task_result("nope", {}, now=at(1)) == []  # unknown token: ignored
    done = ex.on_task_result(run.token, {"metrics": {"accuracy": 0.97, "loss": 0.1}}, now=at(5))
    assert done == [Succeed({"acc": 0.97})]
    assert ex.on_task_result(run.token, {"metrics": {}}, now=at(6)) == []  # duplicate: ignored


def test_retry_backoff_defaults_and_exhaustion():
    d = machine({"T": task(Retry=[{"ErrorEquals": ["States.TaskFailed"]}])})
    ex = Execution(d)
    run = only(ex.start({}, now=T0), RunTask)
    delays, clock = [], 0.0
    for _ in range(3):
        timer = only(ex.on_task_failure(run.token, "States.TaskFailed", "boom", now=at(clock)), StartTimer)
        assert timer.reason == "retry" and timer.state == "T"
        assert timer.due == (at(clock) + timedelta(seconds=timer.seconds)).isoformat().replace("+00:00", "Z")
        delays.append(timer.seconds)
        clock += timer.seconds
        run = only(ex.on_timer_fired(timer.token, now=at(clock)), RunTask)
    assert delays == [1.0, 2.0, 4.0]
    assert ex.context["State"]["RetryCount"] == 3
    assert ex.on_task_failure(run.token, "States.TaskFailed", "still", now=at(clock)) == [
        Fail("States.TaskFailed", "still")]


def test_retry_custom_interval_rate_and_cap():
    retrier = {"ErrorEquals": ["Boom"], "IntervalSeconds": 3, "MaxAttempts": 5, "BackoffRate": 1.5,
               "MaxDelaySeconds": 6}
    d = machine({"T": task(Retry=[retrier])})
    calls = []

    def flaky(payload):
        calls.append(payload)
        if len(calls) < 5:
            raise Boom("again")
        return "ok"

    result = simulate(d, {"p": 1}, {"loopml:f": flaky})
    assert [t.seconds for t in result.timers] == [3.0, 4.5, 6.0, 6.0]
    assert [retry_delay(retrier, a) for a in range(4)] == [3.0, 4.5, 6.0, 6.0]
    assert result.execution.output == "ok" and len(calls) == 5 and calls[0] == {"p": 1}
    # the virtual clock advanced by the backoff: the task ran at 0, 3, 7.5, 13.5, 19.5
    assert [round(when, 3) for when, c in result.log if isinstance(c, RunTask)] == [0, 3, 7.5, 13.5, 19.5]


def test_retry_first_matching_retrier_only_and_max_attempts_zero():
    d = machine({"T": task(Retry=[{"ErrorEquals": ["A"], "MaxAttempts": 0},
                                  {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5}],
                           Catch=[{"ErrorEquals": ["A"], "Next": "Caught"}]),
                 "Caught": {"Type": "Pass", "End": True}})
    result = simulate(d, {"in": 1}, lambda r, p: (_ for _ in ()).throw(WorkflowError("A", "no")))
    assert result.timers == []  # retrier 0 matched and is exhausted; retrier 1 is not consulted
    assert result.execution.output == {"Error": "A", "Cause": "no"}


def test_retry_counters_are_per_retrier():
    errors = iter(["X", "Y", "X", "Y"])
    d = machine({"T": task(Retry=[{"ErrorEquals": ["X"], "MaxAttempts": 2},
                                  {"ErrorEquals": ["Y"], "MaxAttempts": 2, "IntervalSeconds": 10}])})

    def f(payload):
        e = next(errors, None)
        if e:
            raise WorkflowError(e, "")
        return "done"

    result = simulate(d, {}, {"loopml:f": f})
    assert [t.seconds for t in result.timers] == [1.0, 10.0, 2.0, 20.0]
    assert result.execution.output == "done"


@pytest.mark.parametrize("result_path, expected", [
    (None, {"keep": 1}),
    ("$", {"Error": "Boom", "Cause": "bad"}),
    ("$.err", {"keep": 1, "err": {"Error": "Boom", "Cause": "bad"}}),
    ("$.a.b", {"keep": 1, "a": {"b": {"Error": "Boom", "Cause": "bad"}}}),
])
def test_catch_result_path(result_path, expected):
    catcher = {"ErrorEquals": ["Boom"], "Next": "Handle"}
    if result_path != "$":
        catcher["ResultPath"] = result_path
    d = machine({"T": task(Catch=[catcher]), "Handle": {"Type": "Pass", "End": True}})

    def f(_):
        raise Boom("bad")

    ex = simulate(d, {"keep": 1}, {"loopml:f": f}).execution
    assert ex.status == SUCCEEDED and ex.output == expected
    assert any(h["type"] == "ErrorCaught" and h["next"] == "Handle" for h in ex.history)


def test_catch_order_and_task_failed_wildcard_excludes_timeout():
    d = machine({"T": task(Catch=[{"ErrorEquals": ["States.TaskFailed"], "Next": "Failed"},
                                  {"ErrorEquals": ["States.Timeout"], "Next": "TimedOut"}]),
                 "Failed": {"Type": "Pass", "Result": "failed", "End": True},
                 "TimedOut": {"Type": "Pass", "Result": "timeout", "End": True}})
    ex = Execution(d)
    run = only(ex.start({}, now=T0), RunTask)
    assert ex.on_task_failure(run.token, "States.Timeout", "60 s", now=at(60)) == [Succeed("timeout")]
    ex = Execution(d)
    run = only(ex.start({}, now=T0), RunTask)
    assert ex.on_task_failure(run.token, "ValueError", "x", now=at(1)) == [Succeed("failed")]


def test_result_path_match_failure_is_catchable():
    d = machine({"T": task(ResultPath="$.s.deeper",
                           Catch=[{"ErrorEquals": ["States.ResultPathMatchFailure"], "ResultPath": "$.err",
                                   "Next": "C"}]),
                 "C": {"Type": "Succeed"}})
    ex = simulate(d, {"s": "a string"}, {"loopml:f": lambda _: 1}).execution
    assert ex.output["err"]["Error"] == "States.ResultPathMatchFailure"


# -- Choice -------------------------------------------------------------------------------------------


def choice_machine(rules: list[dict], default: bool = True) -> dict:
    states: dict[str, Any] = {"C": {"Type": "Choice", "Choices": [{**r, "Next": f"R{i}"} for i, r in enumerate(rules)]}}
    if default:
        states["C"]["Default"] = "Dflt"
        states["Dflt"] = {"Type": "Pass", "Result": "default", "End": True}
    for i in range(len(rules)):
        states[f"R{i}"] = {"Type": "Pass", "Result": f"R{i}", "End": True}
    return machine(states)


DATA = {"s": "beta", "n": 5, "f": 2.5, "b": True, "t": "2026-01-01T12:00:00Z", "nul": None,
        "other_n": 5, "other_s": "alpha", "other_t": "2026-01-02T00:00:00+00:00", "other_b": True}


@pytest.mark.parametrize("rule, expected", [
    ({"Variable": "$.s", "StringEquals": "beta"}, True),
    ({"Variable": "$.s", "StringLessThan": "gamma"}, True),
    ({"Variable": "$.s", "StringGreaterThan": "gamma"}, False),
    ({"Variable": "$.s", "StringLessThanEquals": "beta"}, True),
    ({"Variable": "$.s", "StringGreaterThanEquals": "c"}, False),
    ({"Variable": "$.n", "StringEquals": "5"}, False),  # wrong type: no match
    ({"Variable": "$.n", "NumericEquals": 5.0}, True),
    ({"Variable": "$.f", "NumericLessThan": 3}, True),
    ({"Variable": "$.n", "NumericGreaterThan": 5}, False),
    ({"Variable": "$.n", "NumericLessThanEquals": 5}, True),
    ({"Variable": "$.f", "NumericGreaterThanEquals": 2.5}, True),
    ({"Variable": "$.b", "NumericEquals": 1}, False),  # a boolean is not a number
    ({"Variable": "$.b", "BooleanEquals": True}, True),
    ({"Variable": "$.t", "TimestampEquals": "2026-01-01T13:00:00+01:00"}, True),
    ({"Variable": "$.t", "TimestampLessThan": "2026-01-01T12:00:01Z"}, True),
    ({"Variable": "$.t", "TimestampGreaterThan": "2026-01-01T12:00:01Z"}, False),
    ({"Variable": "$.t", "TimestampLessThanEquals": "2026-01-01T12:00:00Z"}, True),
    ({"Variable": "$.t", "TimestampGreaterThanEquals": "2027-01-01T00:00:00Z"}, False),
    ({"Variable": "$.n", "NumericEqualsPath": "$.other_n"}, True),
    ({"Variable": "$.s", "StringGreaterThanPath": "$.other_s"}, True),
    ({"Variable": "$.t", "TimestampLessThanPath": "$.other_t"}, True),
    ({"Variable": "$.b", "BooleanEqualsPath": "$.other_b"}, True),
    ({"Variable": "$.s", "StringEqualsPath": "$$.Execution.Name"}, False),
    ({"Variable": "$.nul", "IsNull": True}, True),
    ({"Variable": "$.s", "IsNull": True}, False),
    ({"Variable": "$.absent", "IsPresent": False}, True),
    ({"Variable": "$.nul", "IsPresent": True}, True),
    ({"Variable": "$.f", "IsNumeric": True}, True),
    ({"Variable": "$.b", "IsNumeric": False}, True),
    ({"Variable": "$.s", "IsString": True}, True),
    ({"Variable": "$.b", "IsBoolean": True}, True),
    ({"Variable": "$.t", "IsTimestamp": True}, True),
    ({"Variable": "$.s", "IsTimestamp": True}, False),
    ({"Variable": "$.s", "StringMatches": "b*a"}, True),
    ({"Variable": "$.s", "StringMatches": "*et*"}, True),
    ({"Variable": "$.s", "StringMatches": "b\\*"}, False),
    ({"And": [{"Variable": "$.n", "NumericGreaterThan": 1}, {"Variable": "$.b", "BooleanEquals": True}]}, True),
    ({"And": [{"Variable": "$.n", "NumericGreaterThan": 1}, {"Variable": "$.b", "BooleanEquals": False}]}, False),
    ({"Or": [{"Variable": "$.n", "NumericGreaterThan": 10}, {"Variable": "$.s", "StringEquals": "beta"}]}, True),
    ({"Not": {"Variable": "$.s", "StringEquals": "beta"}}, False),
    ({"Not": {"Or": [{"Variable": "$.absent", "IsPresent": True}, {"Variable": "$.n", "NumericEquals": 6}]}}, True),
])
def test_choice_operators(rule, expected):
    out = simulate(choice_machine([rule]), DATA).execution.output
    assert out == ("R0" if expected else "default")


def test_choice_first_match_wins_and_output_path():
    d = choice_machine([{"Variable": "$.n", "NumericGreaterThan": 0}, {"Variable": "$.n", "NumericGreaterThan": 1}])
    assert simulate(d, {"n": 2}).execution.output == "R0"
    d = machine({"C": {"Type": "Choice", "InputPath": "$.x", "OutputPath": "$.y",
                       "Choices": [{"Variable": "$.y", "IsPresent": True, "Next": "End"}]},
                 "End": {"Type": "Succeed"}})
    assert simulate(d, {"x": {"y": [1]}}).execution.output == [1]


def test_choice_no_match_without_default():
    ex = simulate(choice_machine([{"Variable": "$.n", "NumericEquals": 1}], default=False), {"n": 2}).execution
    assert ex.status == FAILED and ex.error == "States.NoChoiceMatched" and '"C"' in ex.cause


def test_choice_on_missing_variable_is_a_runtime_error():
    ex = simulate(choice_machine([{"Variable": "$.missing", "StringEquals": "x"}]), {}).execution
    assert ex.error == "States.Runtime"


_NUM = st.one_of(st.integers(-10**6, 10**6), st.floats(-1e6, 1e6, allow_nan=False))
_OPS = {"Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b, "GreaterThan": lambda a, b: a > b,
        "LessThanEquals": lambda a, b: a <= b, "GreaterThanEquals": lambda a, b: a >= b}


@settings(max_examples=150, deadline=None)
@given(a=_NUM, b=_NUM, op=st.sampled_from(sorted(_OPS)))
def test_numeric_rules_agree_with_python(a, b, op):
    assert evaluate_rule({"Variable": "$.a", f"Numeric{op}": b}, {"a": a}) == _OPS[op](a, b)
    assert evaluate_rule({"Variable": "$.a", f"Numeric{op}Path": "$.b"}, {"a": a, "b": b}) == _OPS[op](a, b)


@settings(max_examples=150, deadline=None)
@given(a=st.text(max_size=8), b=st.text(max_size=8), op=st.sampled_from(sorted(_OPS)))
def test_string_rules_agree_with_python(a, b, op):
    assert evaluate_rule({"Variable": "$.a", f"String{op}": b}, {"a": a}) == _OPS[op](a, b)


@settings(max_examples=100, deadline=None)
@given(s=st.text(alphabet="ab*", max_size=6))
def test_string_matches_literal_text(s):
    escaped = s.replace("*", "\\*")
    assert evaluate_rule({"Variable": "$.a", "StringMatches": escaped}, {"a": s})
    assert evaluate_rule({"Variable": "$.a", "StringMatches": "*"}, {"a": s})


# -- Wait ------------------------------------------------------------------------------------------


def test_wait_seconds_timer_and_output():
    d = machine({"W": {"Type": "Wait", "Seconds": 30, "InputPath": "$.keep", "OutputPath": "$.a", "Next": "Done"},
                 "Done": {"Type": "Succeed"}})
    ex = Execution(d)
    timer = only(ex.start({"keep": {"a": 1}, "drop": 2}, now=T0), StartTimer)
    assert (timer.seconds, timer.reason, timer.due) == (30.0, "wait", "2026-01-01T00:00:30Z")
    assert ex.on_task_result(timer.token, "x", now=at(1)) == []  # a timer token is not a task
    assert ex.on_timer_fired("999", now=at(30)) == []  # stale timer: ignored
    assert ex.on_timer_fired(timer.token, now=at(30)) == [Succeed(1)]


@pytest.mark.parametrize("field, value, data, seconds", [
    ("SecondsPath", "$.s", {"s": 12}, 12.0),
    ("Timestamp", "2026-01-01T00:01:00Z", {}, 60.0),
    ("TimestampPath", "$.when", {"when": "2026-01-01T02:00:00+02:00"}, 0.0),  # in the past: no timer
    ("TimestampPath", "$.when", {"when": "2026-01-01T00:00:05.5Z"}, 5.5),
    ("Seconds", 0, {}, 0.0),
])
def test_wait_variants(field, value, data, seconds):
    d = machine({"W": {"Type": "Wait", field: value, "End": True}})
    ex = Execution(d)
    cmds = ex.start(data, now=T0)
    if seconds == 0:
        assert cmds == [Succeed(data)]
    else:
        timer = only(cmds, StartTimer)
        assert timer.seconds == seconds
        assert ex.on_timer_fired(timer.token, now=at(seconds)) == [Succeed(data)]


def test_wait_seconds_path_must_be_a_non_negative_integer():
    ex = simulate(machine({"W": {"Type": "Wait", "SecondsPath": "$.s", "End": True}}), {"s": "ten"}).execution
    assert ex.error == "States.Runtime" and "SecondsPath" in ex.cause


# -- Parallel and Map -----------------------------------------------------------------------------


def branch(resource: str) -> dict:
    return machine({f"B-{resource}": task(resource)})


def test_parallel_output_is_ordered_and_tokens_route():
    constant = machine({"PassB": {"Type": "Pass", "Result": "p", "End": True}})
    d = machine({"Par": {"Type": "Parallel", "Branches": [branch("r:a"), branch("r:b"), constant],
                         "Parameters": {"v.$": "$.v"}, "ResultSelector": {"first.$": "$[0]", "all.$": "$"},
                         "ResultPath": "$.par", "Next": "Done"},
                 "Done": {"Type": "Succeed"}})
    ex = Execution(d)
    runs = [c for c in ex.start({"v": 1}, now=T0) if isinstance(c, RunTask)]
    assert [r.resource for r in runs] == ["r:a", "r:b"] and all(r.input == {"v": 1} for r in runs)
    assert len({r.token for r in runs}) == 2
    assert ex.on_task_result(runs[1].token, "B", now=at(1)) == []  # completes out of order
    assert ex.on_task_result(runs[0].token, "A", now=at(2)) == [
        Succeed({"v": 1, "par": {"first": "A", "all": ["A", "B", "p"]}})]


def test_parallel_branch_failure_is_caught_with_the_branch_error():
    d = machine({"Par": {"Type": "Parallel", "Branches": [branch("r:slow"),
                                                          machine({"Bad": {"Type": "Fail", "Error": "Inner.Err",
                                                                           "Cause": "c"}})],
                         "Catch": [{"ErrorEquals": ["Inner.Err"], "ResultPath": "$.error", "Next": "Handled"}],
                         "End": True},
                 "Handled": {"Type": "Pass", "End": True}})
    ex = Execution(d)
    cmds = ex.start({"x": 1}, now=T0)
    run = only(cmds, RunTask)
    assert CancelTask(run.token) in cmds  # the other branch is abandoned
    assert cmds[-1] == Succeed({"x": 1, "error": {"Error": "Inner.Err", "Cause": "c"}})
    assert ex.on_task_result(run.token, "late", now=at(1)) == []


def test_map_items_path_item_selector_and_context():
    d = machine({"M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 0,
                       "ItemSelector": {"item.$": "$$.Map.Item.Value", "index.$": "$$.Map.Item.Index",
                                        "factor.$": "$.factor"},
                       "ItemProcessor": {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": "Mul",
                                         "States": {"Mul": task("r:mul")}},
                       "ResultPath": "$.out", "End": True}})
    result = simulate(d, {"items": [1, 2, 3], "factor": 10},
                      {"r:mul": lambda p: p["item"] * p["factor"] + p["index"]})
    assert result.execution.output == {"items": [1, 2, 3], "factor": 10, "out": [10, 21, 32]}


def test_map_max_concurrency_is_enforced():
    d = machine({"M": {"Type": "Map", "MaxConcurrency": 1, "Iterator": {"StartAt": "I", "States": {"I": task("r:i")}},
                       "End": True}})
    ex = Execution(d)
    run = only(ex.start(["a", "b", "c"], now=T0), RunTask)
    seen = []
    for i in range(3):
        seen.append(run.input)
        cmds = ex.on_task_result(run.token, run.input.upper(), now=at(i))
        if i < 2:
            run = only(cmds, RunTask)
    assert seen == ["a", "b", "c"] and cmds == [Succeed(["A", "B", "C"])]
    # unlimited: all at once
    d["States"]["M"]["MaxConcurrency"] = 0
    assert len(Execution(d).start(["a", "b", "c"], now=T0)) == 3


def test_map_empty_and_not_an_array():
    d = machine({"M": {"Type": "Map", "ItemProcessor": {"StartAt": "I", "States": {"I": task("r:i")}}, "End": True}})
    assert simulate(d, []).execution.output == []
    ex = simulate(d, {"not": "a list"}).execution
    assert ex.error == "States.Runtime" and "not an array" in ex.cause


def test_a_failed_parallel_is_retried_as_a_whole():
    d = machine({"Par": {"Type": "Parallel", "Branches": [branch("r:a"), branch("r:b")], "End": True,
                         "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 5}]}})
    calls: list[str] = []

    def f(resource, payload):
        calls.append(resource)
        if len(calls) == 2:  # the second branch fails on the first attempt
            raise WorkflowError("Flaky", "b failed once")
        return resource

    result = simulate(d, {}, f)
    assert result.execution.output == ["r:a", "r:b"]
    assert calls == ["r:a", "r:b", "r:a", "r:b"] and [t.seconds for t in result.timers] == [5.0]


def test_map_iteration_retries_inside_the_iteration():
    d = machine({"M": {"Type": "Map", "ItemProcessor": {"StartAt": "I", "States": {
        "I": task("r:i", Retry=[{"ErrorEquals": ["Flaky"], "IntervalSeconds": 2}])}}, "End": True}})
    failures = {"b": 2}

    def f(item):
        if failures.get(item, 0):
            failures[item] -= 1
            raise WorkflowError("Flaky", item)
        return item * 2

    result = simulate(d, ["a", "b"], {"r:i": f})
    assert result.execution.output == ["aa", "bb"]
    assert [t.seconds for t in result.timers] == [2.0, 4.0]


# -- TimeoutSeconds, stop, persistence -------------------------------------------------------------


def test_execution_timeout():
    d = machine({"T": task()}, TimeoutSeconds=5)
    ex = Execution(d)
    cmds = ex.start({}, now=T0)
    timer, run = only(cmds, StartTimer), only(cmds, RunTask)
    assert (timer.reason, timer.seconds) == ("execution-timeout", 5.0)
    out = ex.on_timer_fired(timer.token, now=at(5))
    assert out[0] == CancelTask(run.token) and out[1].error == "States.Timeout"
    assert ex.on_task_result(run.token, 1, now=at(6)) == []


def test_stop_aborts_and_cancels():
    ex = Execution(machine({"T": task()}))
    run = only(ex.start({}, now=T0), RunTask)
    assert ex.stop(now=at(1)) == [CancelTask(run.token)]
    assert ex.status == ABORTED and ex.on_task_result(run.token, 1, now=at(2)) == []


COMPLEX = machine({
    "Prepare": {"Type": "Pass", "Parameters": {"items.$": "$.items", "run.$": "$$.Execution.Id"}, "Next": "Fan"},
    "Fan": {"Type": "Parallel", "ResultPath": "$.fan", "Next": "Wait", "Branches": [
        machine({"Map": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "End": True,
                         "ItemProcessor": {"StartAt": "Work", "States": {"Work": task(
                             "r:work", Retry=[{"ErrorEquals": ["Flaky"], "IntervalSeconds": 3}])}}}}),
        branch("r:side"),
    ]},
    "Wait": {"Type": "Wait", "Seconds": 100, "Next": "Check"},
    "Check": {"Type": "Choice", "Choices": [{"Variable": "$.fan[1]", "StringEquals": "side-ok", "Next": "Done"}],
              "Default": "Bad"},
    "Done": {"Type": "Succeed", "OutputPath": "$.fan"},
    "Bad": {"Type": "Fail", "Error": "Check.Failed"},
})


def drive(definition: dict, input: Any, persist: bool) -> tuple[Execution, list[dict]]:
    """A tiny durable driver: tasks complete in FIFO order, timers by due time; with ``persist``
    the execution is written to JSON and read back after every event."""
    attempts: dict[Any, int] = {}
    ex = Execution(definition, execution_id="exec-1")
    pending: list[Any] = []
    clock = 0.0
    commands: list[dict] = []

    def take(cmds):
        for c in cmds:
            commands.append(c.to_dict())
            assert command_from_dict(json.loads(json.dumps(c.to_dict()))) == c
            if isinstance(c, (RunTask, StartTimer)):
                pending.append(c)
            elif isinstance(c, CancelTask):
                pending[:] = [p for p in pending if p.token != c.token]

    take(ex.start(input, now=at(0)))
    while pending and not ex.done:
        tasks = [p for p in pending if isinstance(p, RunTask)]
        if tasks:
            c = tasks[0]
            pending.remove(c)
            if c.resource == "r:work" and c.input == 2 and attempts.get(2, 0) < 2:
                attempts[2] = attempts.get(2, 0) + 1
                take(ex.on_task_failure(c.token, "Flaky", "try again", now=at(clock)))
            else:
                take(ex.on_task_result(c.token, c.input * 10 if c.resource == "r:work" else "side-ok",
                                       now=at(clock)))
        else:
            c = min(pending, key=lambda p: p.due)
            pending.remove(c)
            clock = (datetime.fromisoformat(c.due) - T0).total_seconds()
            take(ex.on_timer_fired(c.token, now=at(clock)))
        if persist:
            saved = json.dumps(ex.to_dict())
            ex = Execution.from_dict(json.loads(saved))
            assert sorted(c.token for c in ex.outstanding()) == sorted(p.token for p in pending)
    return ex, commands


def test_save_restore_after_every_event_gives_the_same_run():
    plain, plain_cmds = drive(COMPLEX, {"items": [1, 2, 3]}, persist=False)
    durable, durable_cmds = drive(COMPLEX, {"items": [1, 2, 3]}, persist=True)
    assert plain.status == durable.status == SUCCEEDED
    assert plain.output == durable.output == [[10, 20, 30], "side-ok"]
    assert plain_cmds == durable_cmds and plain.history == durable.history
    retries = [c["seconds"] for c in plain_cmds if c["type"] == "StartTimer" and c["reason"] == "retry"]
    assert retries == [3.0, 6.0]


def test_restore_in_the_middle_of_a_wait():
    d = machine({"W": {"Type": "Wait", "Seconds": 3600, "Next": "T"}, "T": task()})
    ex = Execution(d)
    timer = only(ex.start({"a": 1}, now=T0), StartTimer)
    restored = Execution.from_dict(json.loads(json.dumps(ex.to_dict())))
    assert restored.current_state == "W" and restored.outstanding() == [timer]
    run = only(restored.on_timer_fired(timer.token, now=at(3600)), RunTask)
    assert restored.on_task_result(run.token, {"b": 2}, now=at(3601)) == [Succeed({"b": 2})]


def test_a_long_pass_chain_is_fast():
    n = 1000
    states = {f"S{i}": {"Type": "Pass", "Result": i, "ResultPath": "$.last", "Next": f"S{i + 1}"} for i in range(n)}
    states[f"S{n}"] = {"Type": "Succeed"}
    ex = simulate(machine(states, start="S0"), {}).execution
    assert ex.output == {"last": n - 1}


# -- validation -------------------------------------------------------------------------------------


def test_load_definition_json_and_yaml():
    d = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
    assert load_definition(json.dumps(d)) == d
    yaml_text = "StartAt: A\nStates:\n  A:\n    Type: Pass\n    End: true\n"
    assert load_definition(yaml_text) == d
    assert parse_definition(b'{"a": 1}') == {"a": 1}
    with pytest.raises(InvalidInput, match="not valid JSON"):
        load_definition('{"StartAt": ')
    # YAML timestamps stay RFC 3339 strings (PyYAML would turn them into datetime objects)
    waits = load_definition("StartAt: W\nStates:\n  W: {Type: Wait, Timestamp: 2026-01-01T00:00:00Z, End: true}\n")
    assert waits["States"]["W"]["Timestamp"] == "2026-01-01T00:00:00Z"
    with pytest.raises(InvalidInput, match="must be an object"):
        load_definition("- just\n- a list\n")


def test_heartbeat_must_be_below_the_timeout():
    with pytest.raises(InvalidInput, match='state "T": HeartbeatSeconds must be smaller than TimeoutSeconds'):
        load_definition(machine({"T": task(TimeoutSeconds=30, HeartbeatSeconds=30)}))


GOOD = {
    "StartAt": "Train",
    "TimeoutSeconds": 3600,
    "States": {
        "Train": {"Type": "Task", "Resource": "loopml:train", "Next": "Check",
                  "Retry": [{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 2},
                            {"ErrorEquals": ["States.ALL"]}],
                  "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Failed"}]},
        "Check": {"Type": "Choice", "Default": "Skip",
                  "Choices": [{"Variable": "$.acc", "NumericGreaterThan": 0.9, "Next": "Fan"}]},
        "Fan": {"Type": "Parallel", "Next": "Each", "ResultPath": "$.fan", "Branches": [
            {"StartAt": "Reg", "States": {"Reg": {"Type": "Task", "Resource": "loopml:register", "End": True}}}]},
        "Each": {"Type": "Map", "ItemsPath": "$.items", "Next": "Pause",
                 "ItemProcessor": {"StartAt": "Item", "States": {"Item": {"Type": "Pass", "End": True}}}},
        "Pause": {"Type": "Wait", "Seconds": 1, "Next": "Done"},
        "Done": {"Type": "Succeed"},
        "Skip": {"Type": "Succeed"},
        "Failed": {"Type": "Fail", "Error": "Train.Failed"},
    },
}


def mutate(path: str, value: Any = None, delete: bool = False):
    def apply(d: dict) -> dict:
        d = copy.deepcopy(d)
        keys = path.split("/")
        cur: Any = d
        for k in keys[:-1]:
            cur = cur[int(k)] if isinstance(cur, list) else cur[k]
        last: Any = int(keys[-1]) if isinstance(cur, list) else keys[-1]
        if delete:
            del cur[last]
        else:
            cur[last] = value
        return d
    return apply


@pytest.mark.parametrize("change, message", [
    (mutate("States/Train/Retry/0/MaxAttempts", -1),
     'state "Train": Retry[0].MaxAttempts must be a non-negative integer'),
    (mutate("States/Train/Retry/0/IntervalSeconds", 0),
     'state "Train": Retry[0].IntervalSeconds must be a positive integer'),
    (mutate("States/Train/Retry/1/BackoffRate", 0.5), 'state "Train": Retry[1].BackoffRate must be a number >= 1.0'),
    (mutate("States/Train/Retry/1/MaxDelaySeconds", "x"),
     'state "Train": Retry[1].MaxDelaySeconds must be a positive integer'),
    (mutate("States/Train/Retry/0/ErrorEquals", ["States.ALL"]),
     'state "Train": Retry[0].ErrorEquals: States.ALL must be in the last retrier'),
    (mutate("States/Train/Retry/1/ErrorEquals", ["States.ALL", "X"]),
     'state "Train": Retry[1].ErrorEquals: States.ALL must appear alone'),
    (mutate("States/Train/Retry/1/ErrorEquals", []), 'state "Train": Retry[1].ErrorEquals must be a non-empty list'),
    (mutate("States/Train/Catch/0/Next", "Nowhere"), 'state "Train": Catch[0].Next "Nowhere" is not a state'),
    (mutate("States/Train/Catch/0/Next", delete=True), 'state "Train": Catch[0].Next is required'),
    (mutate("States/Train/Catch/0/ResultPath", "$$.x"),
     'state "Train": Catch[0].ResultPath cannot point into the context'),
    (mutate("States/Train/Resource", ""), 'state "Train": Resource must be a non-empty string'),
    (mutate("States/Train/TimeoutSeconds", 0), 'state "Train": TimeoutSeconds must be a positive integer'),
    (mutate("States/Train/End", True), 'state "Train": has both Next and End'),
    (mutate("States/Train/Next", delete=True), 'state "Train": needs Next or End: true'),
    (mutate("States/Train/Next", "Ghost"), 'state "Train": Next "Ghost" is not a state'),
    (mutate("States/Train/Type", "Lambda"), 'state "Train": Type must be one of'),
    (mutate("States/Train/Recource", "x"), 'state "Train": unknown field(s) for a Task state: Recource'),
    (mutate("States/Train/InputPath", "a.b"), 'state "Train": InputPath is not a valid path'),
    (mutate("States/Train/Parameters", {"x.$": "$.a["}), 'state "Train": Parameters."x.$"'),
    (mutate("States/Train/Parameters", {"x.$": "States.Nope()"}), "unknown intrinsic function"),
    (mutate("States/Done/Next", "Skip"), 'state "Done": unknown field(s) for a Succeed state: Next'),
    (mutate("States/Orphan", {"Type": "Succeed"}), 'state "Orphan": unreachable from StartAt "Train"'),
    (mutate("StartAt", "Nope"), 'definition: StartAt "Nope" is not a state'),
    (mutate("TimeoutSeconds", -5), "definition: TimeoutSeconds must be a positive integer"),
    (mutate("States", {}), "definition: States must be a non-empty object"),
    (mutate("States/Check/Choices", []), 'state "Check": Choices must be a non-empty list'),
    (mutate("States/Check/Choices/0/Next", delete=True), 'state "Check": Choices[0].Next is required'),
    (mutate("States/Check/Choices/0/NumericGreaterThan", "0.9"),
     'state "Check": Choices[0].NumericGreaterThan must be a number'),
    (mutate("States/Check/Choices/0/StringEquals", "x"), 'state "Check": Choices[0] needs exactly one operator'),
    (mutate("States/Check/Choices/0/Variable", "acc"), 'state "Check": Choices[0].Variable must be a path'),
    (mutate("States/Check/Choices/0", {"Not": {"Variable": "$.a", "Frobnicate": 1}, "Next": "Fan"}),
     "state \"Check\": Choices[0].Not: unknown operator 'Frobnicate'"),
    (mutate("States/Check/Choices/0", {"And": [{"Variable": "$.a", "IsNull": True, "Next": "Fan"}], "Next": "Fan"}),
     'state "Check": Choices[0].And[0]: Next is only allowed on top-level Choices'),
    (mutate("States/Check/Choices/0", {"Variable": "$.t", "TimestampEquals": "yesterday", "Next": "Fan"}),
     'state "Check": Choices[0].TimestampEquals must be an RFC 3339 timestamp'),
    (mutate("States/Check/Choices/0", {"Variable": "$.t", "IsPresent": "yes", "Next": "Fan"}),
     'state "Check": Choices[0].IsPresent must be true or false'),
    (mutate("States/Check/Default", "Void"), 'state "Check": Default "Void" is not a state'),
    (mutate("States/Pause/Timestamp", "2026-01-01T00:00:00Z"),
     'state "Pause": needs exactly one of Seconds, Timestamp'),
    (mutate("States/Pause/Seconds", delete=True), 'state "Pause": needs exactly one of Seconds'),
    (mutate("States/Pause/Seconds", -1), 'state "Pause": Seconds must be a non-negative integer'),
    (mutate("States/Fan/Branches", []), 'state "Fan": Branches must be a non-empty list'),
    (mutate("States/Fan/Branches/0/StartAt", "Nope"), 'state "Fan": Branches[0]: StartAt "Nope" is not a state'),
    (mutate("States/Fan/Branches/0/States/Reg", {"Type": "Task", "Resource": "loopml:register", "Next": "Train"}),
     'state "Reg": Next "Train" is not a state of this machine'),
    (mutate("States/Fan/Branches/0/States/Train", {"Type": "Pass", "End": True}),
     'state "Train": the name is used twice'),
    (mutate("States/Each/Iterator", {"StartAt": "X", "States": {"X": {"Type": "Succeed"}}}),
     'state "Each": needs exactly one of ItemProcessor and Iterator'),
    (mutate("States/Each/MaxConcurrency", -1), 'state "Each": MaxConcurrency must be a non-negative integer'),
    (mutate("States/Each/ItemsPath", "items"), 'state "Each": ItemsPath is not a valid path'),
    (mutate("States/Each/ItemProcessor/ProcessorConfig", {"Mode": "DISTRIBUTED"}),
     'state "Each": ItemProcessor.ProcessorConfig.Mode'),
    (mutate("States/Failed/Error", 3), 'state "Failed": Error must be a string'),
])
def test_validation_errors_name_the_state_and_the_field(change, message):
    load_definition(GOOD)  # the base definition is valid
    with pytest.raises(InvalidInput) as err:
        load_definition(change(GOOD))
    assert message in err.value.message, err.value.message
    with pytest.raises(InvalidInput):
        Execution(change(GOOD))


def test_the_valid_example_runs():
    result = simulate(GOOD, {"acc": 0.95, "items": [1, 2]},
                      lambda resource, payload: payload if resource == "loopml:register" else {**payload})
    assert result.execution.status == SUCCEEDED
    assert [c.resource for c in result.tasks] == ["loopml:train", "loopml:register"]
    assert result.execution.output == [1, 2]  # the Map's array replaced its input (no ResultPath)


def test_finished_branches_keep_their_events_in_the_history():
    # a branch that finishes inside one event is removed from the parent: its events must not be lost
    d = {"StartAt": "Fan", "States": {"Fan": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": "B1", "States": {"B1": {"Type": "Pass", "Result": 1, "End": True}}},
        {"StartAt": "B2", "States": {"B2": {"Type": "Pass", "Result": 2, "End": True}}}]}}}
    ex = simulate(d, {}).execution
    entered = [h["state"] for h in ex.history if h["type"] == "StateEntered"]
    assert entered == ["Fan", "B1", "B2"]
    assert [h.get("branch") for h in ex.history if h["type"] == "ExecutionSucceeded"] == ["1.0", "1.1", None]
