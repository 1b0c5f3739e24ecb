"""Amazon States Language: parse (JSON or YAML) and validate a state machine definition.

``load_definition(text)`` returns the definition as a plain dict after validation; every
problem raises ``InvalidInput`` whose message names the state and the field, e.g.
``state "Train": Retry[0].MaxAttempts must be a non-negative integer``.

Supported: the eight state types (Task, Pass, Choice, Wait, Succeed, Fail, Parallel, Map),
Next/End, Retry/Catch, the data-flow fields, Choice rules with every comparison operator of the
specification, and TimeoutSeconds. Only reference paths (``$.a.b``, ``$.a[0]``, ``$['x']``,
``$$...``) are accepted where the specification allows paths.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopml.core.errors import InvalidInput
from loopml.core.jsonutil import loads_strict
from loopml.workflows.paths import is_valid_path, parse_path, validate_expression

STATE_TYPES = ("Task", "Pass", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")

_IO = {"InputPath", "OutputPath"}
_RESULT = {"ResultPath", "ResultSelector", "Parameters", "Retry", "Catch"}
_NEXT = {"Next", "End"}
_FIELDS: dict[str, set[str]] = {
    "Task": _IO | _RESULT | _NEXT | {"Resource", "TimeoutSeconds", "TimeoutSecondsPath",
                                     "HeartbeatSeconds", "HeartbeatSecondsPath"},
    "Pass": _IO | _NEXT | {"Parameters", "Result", "ResultPath"},
    "Choice": _IO | {"Choices", "Default"},
    "Wait": _IO | _NEXT | {"Seconds", "Timestamp", "SecondsPath", "TimestampPath"},
    "Succeed": set(_IO),
    "Fail": {"Error", "Cause", "ErrorPath", "CausePath"},
    "Parallel": _IO | _RESULT | _NEXT | {"Branches"},
    "Map": _IO | _RESULT | _NEXT | {"ItemProcessor", "Iterator", "ItemsPath", "ItemSelector",
                                    "MaxConcurrency"},
}
_TERMINAL = ("Choice", "Succeed", "Fail")

STRING_OPS = ("StringEquals", "StringLessThan", "StringGreaterThan", "StringLessThanEquals",
              "StringGreaterThanEquals")
NUMERIC_OPS = ("NumericEquals", "NumericLessThan", "NumericGreaterThan", "NumericLessThanEquals",
               "NumericGreaterThanEquals")
TIMESTAMP_OPS = ("TimestampEquals", "TimestampLessThan", "TimestampGreaterThan",
                 "TimestampLessThanEquals", "TimestampGreaterThanEquals")
BOOLEAN_OPS = ("BooleanEquals",)
TYPE_OPS = ("IsNull", "IsPresent", "IsNumeric", "IsString", "IsBoolean", "IsTimestamp")
PATH_OPS = tuple(op + "Path" for op in STRING_OPS + NUMERIC_OPS + TIMESTAMP_OPS + BOOLEAN_OPS)
COMPARISON_OPS = STRING_OPS + NUMERIC_OPS + TIMESTAMP_OPS + BOOLEAN_OPS + TYPE_OPS + PATH_OPS + (
    "StringMatches",)


def parse_definition(text: str | bytes) -> Any:
    """JSON first, then YAML (a JSON document is also YAML; the JSON parser gives better errors
    for JSON-looking text)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return loads_strict(text)
        except ValueError as exc:  # JSONDecodeError, or NotStrictJSON (NaN, lone surrogates, deep nesting)
            raise InvalidInput(f"definition: not valid JSON: {exc}") from None
    import yaml

    class _Loader(yaml.SafeLoader):
        """SafeLoader that keeps timestamps as strings (ASL compares them as RFC 3339 text)."""

    _Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise InvalidInput(f"definition: not valid JSON or YAML: {exc}") from None


def load_definition(source: str | bytes | dict) -> dict[str, Any]:
    """Parse (unless already a dict) and validate; returns the definition."""
    definition = source if isinstance(source, dict) else parse_definition(source)
    validate_definition(definition)
    return definition


def validate_definition(definition: Any) -> None:
    if not isinstance(definition, dict):
        raise InvalidInput("definition: must be an object with StartAt and States")
    extra = set(definition) - {"StartAt", "States", "Comment", "TimeoutSeconds", "Version"}
    if extra:
        raise InvalidInput(f"definition: unknown field(s) {', '.join(sorted(extra))}")
    if "TimeoutSeconds" in definition and not _positive_int(definition["TimeoutSeconds"]):
        raise InvalidInput("definition: TimeoutSeconds must be a positive integer")
    if "Comment" in definition and not isinstance(definition["Comment"], str):
        raise InvalidInput("definition: Comment must be a string")
    _validate_machine(definition, "definition", set())


# -- helpers ----------------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _non_negative_int(v: Any) -> bool:
    return _is_int(v) and v >= 0


def parse_timestamp(v: Any) -> datetime | None:
    """An RFC 3339 timestamp with a time zone, or None."""
    if not isinstance(v, str) or "T" not in v:
        return None
    try:
        ts = datetime.fromisoformat(v)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else None


class _State:
    def __init__(self, name: str, body: dict) -> None:
        self.name = name
        self.body = body

    def error(self, message: str) -> InvalidInput:
        return InvalidInput(f'state "{self.name}": {message}', state=self.name)


# -- state machines ------------------------------------------------------------------------------


def _validate_machine(machine: Any, where: str, seen_names: set[str]) -> None:
    if not isinstance(machine, dict):
        raise InvalidInput(f"{where}: must be an object with StartAt and States")
    states = machine.get("States")
    if not isinstance(states, dict) or not states:
        raise InvalidInput(f"{where}: States must be a non-empty object")
    start = machine.get("StartAt")
    if not isinstance(start, str):
        raise InvalidInput(f"{where}: StartAt must be a string naming a state")
    if start not in states:
        raise InvalidInput(f'{where}: StartAt "{start}" is not a state')
    for name, body in states.items():
        if not isinstance(name, str) or not name or len(name) > 80:
            raise InvalidInput(f"{where}: state name {name!r} must be a string of 1 to 80 characters")
        if name in seen_names:
            raise InvalidInput(f'state "{name}": the name is used twice (state names are unique in the whole machine)')
        seen_names.add(name)
        _validate_state(_State(name, body), states, seen_names)
    # reachability
    reached = {start}
    todo = [start]
    while todo:
        for nxt in _successors(states[todo.pop()]):
            if nxt not in reached:
                reached.add(nxt)
                todo.append(nxt)
    unreachable = [n for n in states if n not in reached]
    if unreachable:
        raise InvalidInput(f'state "{unreachable[0]}": unreachable from StartAt "{start}"',
                           state=unreachable[0])


def _successors(body: dict) -> list[str]:
    out = []
    if "Next" in body:
        out.append(body["Next"])
    if "Default" in body:
        out.append(body["Default"])
    out += [c["Next"] for c in body.get("Catch", [])]
    out += [c["Next"] for c in body.get("Choices", [])]
    return out


def _validate_state(st: _State, states: dict, seen_names: set[str]) -> None:
    body = st.body
    if not isinstance(body, dict):
        raise st.error("must be an object")
    kind = body.get("Type")
    if kind not in STATE_TYPES:
        raise st.error(f"Type must be one of {', '.join(STATE_TYPES)} (got {kind!r})")
    extra = set(body) - _FIELDS[kind] - {"Type", "Comment"}
    if extra:
        raise st.error(f"unknown field(s) for a {kind} state: {', '.join(sorted(extra))}")
    if "Comment" in body and not isinstance(body["Comment"], str):
        raise st.error("Comment must be a string")

    # transitions
    if kind not in _TERMINAL:
        has_next, end = "Next" in body, body.get("End")
        if "End" in body and end is not True:
            raise st.error("End must be true when present")
        if has_next and end:
            raise st.error("has both Next and End (exactly one is allowed)")
        if not has_next and not end:
            raise st.error("needs Next or End: true")
        if has_next:
            _check_target(st, "Next", body["Next"], states)

    # paths
    for field in ("InputPath", "OutputPath"):
        if field in body and body[field] is not None:
            _check_path(st, field, body[field])
    if "ResultPath" in body and body["ResultPath"] is not None:
        _check_result_path(st, "ResultPath", body["ResultPath"])
    for field in ("Parameters", "ResultSelector", "ItemSelector"):
        if field in body:
            if kind != "Pass" and not isinstance(body[field], dict):
                raise st.error(f"{field} must be an object")
            _check_template(st, field, body[field])

    if "Retry" in body:
        _check_retry(st, body["Retry"])
    if "Catch" in body:
        _check_catch(st, body["Catch"], states)

    {"Task": _check_task, "Pass": _check_pass, "Choice": _check_choice, "Wait": _check_wait,
     "Succeed": _check_nothing, "Fail": _check_fail, "Parallel": _check_parallel,
     "Map": _check_map}[kind](st, states, seen_names)


def _check_target(st: _State, field: str, target: Any, states: dict) -> None:
    if not isinstance(target, str):
        raise st.error(f"{field} must be a string naming a state")
    if target not in states:
        raise st.error(f'{field} "{target}" is not a state of this machine')


def _check_path(st: _State, field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise st.error(f"{field} must be a path string or null")
    try:
        parse_path(value)
    except ValueError as exc:
        raise st.error(f"{field} is not a valid path: {exc}") from None


def _check_result_path(st: _State, field: str, value: Any) -> None:
    _check_path(st, field, value)
    if value.startswith("$$"):
        raise st.error(f"{field} cannot point into the context object ($$)")


def _check_template(st: _State, field: str, template: Any) -> None:
    if isinstance(template, dict):
        for key, value in template.items():
            if isinstance(key, str) and key.endswith(".$"):
                why = validate_expression(value)
                if why:
                    raise st.error(f'{field}."{key}" {why}')
            else:
                _check_template(st, f'{field}."{key}"', value)
    elif isinstance(template, list):
        for i, value in enumerate(template):
            _check_template(st, f"{field}[{i}]", value)


def _check_error_equals(st: _State, where: str, errors: Any, last: bool) -> None:
    if not isinstance(errors, list) or not errors or not all(isinstance(e, str) and e for e in errors):
        raise st.error(f"{where}.ErrorEquals must be a non-empty list of error names")
    if "States.ALL" in errors:
        if len(errors) != 1:
            raise st.error(f"{where}.ErrorEquals: States.ALL must appear alone")
        if not last:
            noun = "retrier" if where.startswith("Retry") else "catcher"
            raise st.error(f"{where}.ErrorEquals: States.ALL must be in the last {noun}")


def _check_retry(st: _State, retry: Any) -> None:
    if not isinstance(retry, list):
        raise st.error("Retry must be a list of retriers")
    for i, r in enumerate(retry):
        where = f"Retry[{i}]"
        if not isinstance(r, dict):
            raise st.error(f"{where} must be an object")
        extra = set(r) - {"ErrorEquals", "IntervalSeconds", "MaxAttempts", "BackoffRate",
                          "MaxDelaySeconds", "JitterStrategy", "Comment"}
        if extra:
            raise st.error(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        _check_error_equals(st, where, r.get("ErrorEquals"), i == len(retry) - 1)
        if "IntervalSeconds" in r and not _positive_int(r["IntervalSeconds"]):
            raise st.error(f"{where}.IntervalSeconds must be a positive integer")
        if "MaxAttempts" in r and not _non_negative_int(r["MaxAttempts"]):
            raise st.error(f"{where}.MaxAttempts must be a non-negative integer")
        if "BackoffRate" in r and not (_is_number(r["BackoffRate"]) and r["BackoffRate"] >= 1.0):
            raise st.error(f"{where}.BackoffRate must be a number >= 1.0")
        if "MaxDelaySeconds" in r and not _positive_int(r["MaxDelaySeconds"]):
            raise st.error(f"{where}.MaxDelaySeconds must be a positive integer")
        if "JitterStrategy" in r and r["JitterStrategy"] != "NONE":
            raise st.error(f'{where}.JitterStrategy: only "NONE" is supported (the engine is deterministic)')


def _check_catch(st: _State, catch: Any, states: dict) -> None:
    if not isinstance(catch, list):
        raise st.error("Catch must be a list of catchers")
    for i, c in enumerate(catch):
        where = f"Catch[{i}]"
        if not isinstance(c, dict):
            raise st.error(f"{where} must be an object")
        extra = set(c) - {"ErrorEquals", "Next", "ResultPath", "Comment"}
        if extra:
            raise st.error(f"{where}: unknown field(s) {', '.join(sorted(extra))}")
        _check_error_equals(st, where, c.get("ErrorEquals"), i == len(catch) - 1)
        if "Next" not in c:
            raise st.error(f"{where}.Next is required")
        _check_target(st, f"{where}.Next", c["Next"], states)
        if "ResultPath" in c and c["ResultPath"] is not None:
            _check_result_path(st, f"{where}.ResultPath", c["ResultPath"])


def _check_nothing(st: _State, states: dict, seen: set[str]) -> None:
    return None


def _check_task(st: _State, states: dict, seen: set[str]) -> None:
    b = st.body
    if not isinstance(b.get("Resource"), str) or not b["Resource"]:
        raise st.error("Resource must be a non-empty string (for example loopml:train)")
    for field in ("TimeoutSeconds", "HeartbeatSeconds"):
        if field in b and not _positive_int(b[field]):
            raise st.error(f"{field} must be a positive integer")
        if field in b and field + "Path" in b:
            raise st.error(f"has both {field} and {field}Path")
        if field + "Path" in b:
            _check_path(st, field + "Path", b[field + "Path"])
    if ("HeartbeatSeconds" in b and "TimeoutSecondsPath" not in b
            and b["HeartbeatSeconds"] >= b.get("TimeoutSeconds", 60)):
        raise st.error("HeartbeatSeconds must be smaller than TimeoutSeconds (default 60)")


def _check_pass(st: _State, states: dict, seen: set[str]) -> None:
    return None


def _check_fail(st: _State, states: dict, seen: set[str]) -> None:
    b = st.body
    for field in ("Error", "Cause"):
        if field in b and field + "Path" in b:
            raise st.error(f"has both {field} and {field}Path")
        if field in b and not isinstance(b[field], str):
            raise st.error(f"{field} must be a string")
        if field + "Path" in b:
            why = validate_expression(b[field + "Path"])
            if why:
                raise st.error(f"{field}Path {why}")


def _check_wait(st: _State, states: dict, seen: set[str]) -> None:
    b = st.body
    given = [f for f in ("Seconds", "Timestamp", "SecondsPath", "TimestampPath") if f in b]
    if len(given) != 1:
        raise st.error("needs exactly one of Seconds, Timestamp, SecondsPath, TimestampPath"
                       + (f" (got {', '.join(given)})" if given else ""))
    field = given[0]
    if field == "Seconds" and not _non_negative_int(b[field]):
        raise st.error("Seconds must be a non-negative integer")
    if field == "Timestamp" and parse_timestamp(b[field]) is None:
        raise st.error("Timestamp must be an RFC 3339 timestamp with a time zone (2026-01-31T12:00:00Z)")
    if field.endswith("Path"):
        _check_path(st, field, b[field])


def _check_parallel(st: _State, states: dict, seen: set[str]) -> None:
    branches = st.body.get("Branches")
    if not isinstance(branches, list) or not branches:
        raise st.error("Branches must be a non-empty list of state machines")
    for i, branch in enumerate(branches):
        if isinstance(branch, dict):
            extra = set(branch) - {"StartAt", "States", "Comment"}
            if extra:
                raise st.error(f"Branches[{i}]: unknown field(s) {', '.join(sorted(extra))}")
        _validate_machine(branch, f'state "{st.name}": Branches[{i}]', seen)


def _check_map(st: _State, states: dict, seen: set[str]) -> None:
    b = st.body
    if ("ItemProcessor" in b) == ("Iterator" in b):
        raise st.error("needs exactly one of ItemProcessor and Iterator")
    field = "ItemProcessor" if "ItemProcessor" in b else "Iterator"
    processor = b[field]
    if isinstance(processor, dict):
        extra = set(processor) - {"StartAt", "States", "Comment", "ProcessorConfig"}
        if extra:
            raise st.error(f"{field}: unknown field(s) {', '.join(sorted(extra))}")
        config = processor.get("ProcessorConfig", {})
        if not isinstance(config, dict) or config.get("Mode", "INLINE") != "INLINE":
            raise st.error(f'{field}.ProcessorConfig.Mode: only "INLINE" is supported')
    _validate_machine(processor, f'state "{st.name}": {field}', seen)
    if "ItemSelector" in b and "Parameters" in b:
        raise st.error("has both ItemSelector and Parameters (Parameters is the old name of ItemSelector)")
    if "ItemsPath" in b:
        _check_path(st, "ItemsPath", b["ItemsPath"])
    if "MaxConcurrency" in b and not _non_negative_int(b["MaxConcurrency"]):
        raise st.error("MaxConcurrency must be a non-negative integer")


# -- Choice rules ------------------------------------------------------------------------------------


def _check_choice(st: _State, states: dict, seen: set[str]) -> None:
    b = st.body
    choices = b.get("Choices")
    if not isinstance(choices, list) or not choices:
        raise st.error("Choices must be a non-empty list of rules")
    for i, rule in enumerate(choices):
        where = f"Choices[{i}]"
        if not isinstance(rule, dict):
            raise st.error(f"{where} must be an object")
        if "Next" not in rule:
            raise st.error(f"{where}.Next is required")
        _check_target(st, f"{where}.Next", rule["Next"], states)
        _check_rule(st, where, rule, top=True)
    if "Default" in b:
        _check_target(st, "Default", b["Default"], states)


def _check_rule(st: _State, where: str, rule: Any, top: bool) -> None:
    if not isinstance(rule, dict):
        raise st.error(f"{where} must be an object")
    if not top and "Next" in rule:
        raise st.error(f"{where}: Next is only allowed on top-level Choices")
    allowed_meta = {"Next", "Comment"} if top else {"Comment"}
    ops = [k for k in rule if k not in allowed_meta and k != "Variable"]
    if len(ops) != 1:
        raise st.error(f"{where} needs exactly one operator (And, Or, Not or a comparison)"
                       + (f", got {', '.join(ops)}" if ops else ""))
    op = ops[0]
    value = rule[op]
    if op in ("And", "Or"):
        if "Variable" in rule:
            raise st.error(f"{where}: Variable is not allowed with {op}")
        if not isinstance(value, list) or not value:
            raise st.error(f"{where}.{op} must be a non-empty list of rules")
        for j, sub in enumerate(value):
            _check_rule(st, f"{where}.{op}[{j}]", sub, top=False)
        return
    if op == "Not":
        if "Variable" in rule:
            raise st.error(f"{where}: Variable is not allowed with Not")
        _check_rule(st, f"{where}.Not", value, top=False)
        return
    if op not in COMPARISON_OPS:
        raise st.error(f"{where}: unknown operator {op!r}")
    if "Variable" not in rule:
        raise st.error(f"{where}.Variable is required with {op}")
    variable = rule["Variable"]
    if not is_valid_path(variable):
        raise st.error(f"{where}.Variable must be a path (got {variable!r})")
    field = f"{where}.{op}"
    if op in PATH_OPS:
        if not is_valid_path(value):
            raise st.error(f"{field} must be a path")
    elif op in STRING_OPS or op == "StringMatches":
        if not isinstance(value, str):
            raise st.error(f"{field} must be a string")
    elif op in NUMERIC_OPS:
        if not _is_number(value):
            raise st.error(f"{field} must be a number")
    elif op in TIMESTAMP_OPS:
        if parse_timestamp(value) is None:
            raise st.error(f"{field} must be an RFC 3339 timestamp with a time zone")
    elif not isinstance(value, bool):  # BooleanEquals and the Is* tests
        raise st.error(f"{field} must be true or false")
