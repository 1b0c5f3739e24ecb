"""The ASL data flow: reference paths, the ``$$`` context object, Parameters templates with
intrinsic functions, and the InputPath -> Parameters -> ResultSelector -> ResultPath ->
OutputPath pipeline.

Everything here is pure: values in, new values out (inputs are never mutated). A path that does
not match raises ``WorkflowError("States.Runtime", ...)``; a ResultPath that cannot be placed
raises ``WorkflowError("States.ResultPathMatchFailure", ...)`` (catchable, as in Step Functions).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

Segment = str | int

_MISSING = object()


class WorkflowError(Exception):
    """A runtime error of a workflow, named like Step Functions errors (``States.Timeout``, ...)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


# -- reference paths -------------------------------------------------------------------------


def parse_path(path: str) -> tuple[bool, list[Segment]]:
    """``"$.a[0]['b c']"`` -> ``(False, ["a", 0, "b c"])``; a leading ``$$`` (the context object)
    gives ``True``. Raises ``ValueError`` on anything but a reference path."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise ValueError(f"{path!r} is not a path (it must start with '$')")
    is_context = path.startswith("$$")
    i = 2 if is_context else 1
    segments: list[Segment] = []
    n = len(path)
    while i < n:
        ch = path[i]
        if ch == ".":
            j = i + 1
            while j < n and path[j] not in ".[":
                j += 1
            name = path[i + 1:j]
            if not name:
                raise ValueError(f"{path!r}: empty field name at position {i}")
            if name == "*" or any(c in name for c in "]'\"()?@"):
                raise ValueError(f"{path!r}: {name!r} is not a plain field name (only reference paths are supported)")
            segments.append(name)
            i = j
        elif ch == "[":
            if i + 1 < n and path[i + 1] in "'\"":
                quote = path[i + 1]
                j = i + 2
                buf = []
                while j < n and path[j] != quote:
                    if path[j] == "\\" and j + 1 < n:
                        j += 1
                    buf.append(path[j])
                    j += 1
                if j + 1 >= n or path[j + 1] != "]":
                    raise ValueError(f"{path!r}: unterminated [{quote}...{quote}] at position {i}")
                segments.append("".join(buf))
                i = j + 2
            else:
                j = path.find("]", i)
                if j < 0:
                    raise ValueError(f"{path!r}: unterminated '[' at position {i}")
                text = path[i + 1:j]
                if not text.isdigit():
                    raise ValueError(f"{path!r}: [{text}] is not a non-negative array index")
                segments.append(int(text))
                i = j + 1
        else:
            raise ValueError(f"{path!r}: unexpected {ch!r} at position {i}")
    return is_context, segments


def is_valid_path(path: Any) -> bool:
    try:
        parse_path(path)
    except ValueError:
        return False
    return True


def _walk(data: Any, segments: list[Segment]) -> Any:
    cur = data
    for seg in segments:
        if isinstance(seg, int):
            if isinstance(cur, list) and 0 <= seg < len(cur):
                cur = cur[seg]
                continue
            return _MISSING
        if isinstance(cur, dict) and seg in cur:
            cur = cur[seg]
            continue
        return _MISSING
    return cur


def path_exists(data: Any, path: str, context: Any = None) -> bool:
    is_context, segments = _parse_or_runtime(path)
    return _walk(context if is_context else data, segments) is not _MISSING


def get_path(data: Any, path: str, context: Any = None) -> Any:
    """The value at ``path`` in ``data`` (or in ``context`` for ``$$`` paths)."""
    is_context, segments = _parse_or_runtime(path)
    value = _walk(context if is_context else data, segments)
    if value is _MISSING:
        where = "the context object" if is_context else "the input"
        raise WorkflowError("States.Runtime", f"the path {path!r} could not be found in {where}")
    return value


def set_path(data: Any, path: str, value: Any) -> Any:
    """A copy of ``data`` with ``value`` placed at ``path``; missing object keys are created."""
    is_context, segments = _parse_or_runtime(path)
    if is_context:
        raise WorkflowError("States.ResultPathMatchFailure", f"cannot write into the context object ({path!r})")
    if not segments:
        return copy.deepcopy(value)
    root = copy.deepcopy(data)
    cur = root
    for k, seg in enumerate(segments):
        last = k == len(segments) - 1
        if isinstance(seg, int):
            if not (isinstance(cur, list) and 0 <= seg < len(cur)):
                raise WorkflowError("States.ResultPathMatchFailure",
                                    f"unable to apply ResultPath {path!r}: no array element [{seg}] to replace")
            if last:
                cur[seg] = copy.deepcopy(value)
            else:
                cur = cur[seg]
            continue
        if not isinstance(cur, dict):
            raise WorkflowError("States.ResultPathMatchFailure",
                                f"unable to apply ResultPath {path!r}: {type(cur).__name__} is not an object")
        if last:
            cur[seg] = copy.deepcopy(value)
        else:
            if seg not in cur:
                cur[seg] = {}
            cur = cur[seg]
    return root


def _parse_or_runtime(path: str) -> tuple[bool, list[Segment]]:
    try:
        return parse_path(path)
    except ValueError as exc:
        raise WorkflowError("States.Runtime", str(exc)) from None


# -- intrinsic functions -----------------------------------------------------------------------

INTRINSICS = ("States.Format", "States.StringToJson", "States.JsonToString", "States.Array",
              "States.MathAdd", "States.UUID", "States.ArrayLength", "States.ArrayGetItem",
              "States.ArrayContains", "States.ArrayRange", "States.StringSplit",
              "States.Base64Encode", "States.Base64Decode", "States.Hash")


class _Call:
    __slots__ = ("name", "args")

    def __init__(self, name: str, args: list[Any]) -> None:
        self.name = name
        self.args = args


class _PathArg:
    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class _IntrinsicParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.text!r}: {what} at position {self.i}")

    def skip_ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def parse(self) -> _Call:
        call = self.call()
        self.skip_ws()
        if self.i != len(self.text):
            raise self.fail("unexpected text after the closing ')'")
        return call

    def call(self) -> _Call:
        t = self.text
        j = self.i
        while j < len(t) and (t[j].isalnum() or t[j] == "."):
            j += 1
        name = t[self.i:j]
        if name not in INTRINSICS:
            raise self.fail(f"unknown intrinsic function {name!r}")
        self.i = j
        self.skip_ws()
        if self.i >= len(t) or t[self.i] != "(":
            raise self.fail("expected '('")
        self.i += 1
        args: list[Any] = []
        self.skip_ws()
        if self.i < len(t) and t[self.i] == ")":
            self.i += 1
            return _Call(name, args)
        while True:
            self.skip_ws()
            args.append(self.arg())
            self.skip_ws()
            if self.i >= len(t):
                raise self.fail("expected ')'")
            if t[self.i] == ",":
                self.i += 1
                continue
            if t[self.i] == ")":
                self.i += 1
                return _Call(name, args)
            raise self.fail(f"unexpected {t[self.i]!r}")

    def arg(self) -> Any:
        t = self.text
        if self.i >= len(t):
            raise self.fail("expected an argument")
        ch = t[self.i]
        if ch == "'":
            self.i += 1
            buf = []
            while self.i < len(t) and t[self.i] != "'":
                if t[self.i] == "\\" and self.i + 1 < len(t):
                    nxt = t[self.i + 1]
                    # \{ and \} stay escaped for States.Format; \' and \\ unescape
                    buf.append(nxt if nxt in "'\\" else "\\" + nxt)
                    self.i += 2
                    continue
                buf.append(t[self.i])
                self.i += 1
            if self.i >= len(t):
                raise self.fail("unterminated string")
            self.i += 1
            return "".join(buf)
        if ch == "$":
            j = self.i
            depth = 0
            quote = None
            while j < len(t):
                c = t[j]
                if quote:
                    if c == "\\":
                        j += 1
                    elif c == quote:
                        quote = None
                elif c in "'\"" and depth:
                    quote = c
                elif c == "[":
                    depth += 1
                elif c == "]":
                    depth -= 1
                elif depth == 0 and (c in ",)" or c.isspace()):
                    break
                j += 1
            path = t[self.i:j]
            parse_path(path)  # ValueError if bad
            self.i = j
            return _PathArg(path)
        if t.startswith("States.", self.i):
            return self.call()
        j = self.i
        while j < len(t) and t[j] not in ",)" and not t[j].isspace():
            j += 1
        word = t[self.i:j]
        try:
            value = json.loads(word)
        except ValueError:
            raise self.fail(f"{word!r} is not a string, number, boolean, null, path or function") from None
        if isinstance(value, (dict, list, str)):
            raise self.fail(f"{word!r} is not a literal argument")
        self.i = j
        return value


def parse_intrinsic(text: str) -> _Call:
    """Parse ``States.Format('{}', $.a)``; raises ``ValueError`` on syntax errors."""
    return _IntrinsicParser(text).parse()


def _unescape_literal(s: str) -> str:
    return s.replace("\\{", "{").replace("\\}", "}")


ARRAY_RANGE_MAX = 1000


def _eval_call(call: _Call, data: Any, context: Any, new_uuid: Callable[[], str]) -> Any:
    args = [_eval_arg(a, data, context, new_uuid) for a in call.args]
    name = call.name

    def need(n: int) -> None:
        if len(args) != n:
            raise WorkflowError("States.IntrinsicFailure", f"{name} takes {n} argument(s), got {len(args)}")

    try:
        if name == "States.Format":
            if not args or not isinstance(args[0], str):
                raise WorkflowError("States.IntrinsicFailure", "States.Format needs a template string first")
            # a literal template keeps its \{ \} escapes; a template read from a path has none
            template = call.args[0] if isinstance(call.args[0], str) else args[0]
            values = args[1:]
            out, k, i = [], 0, 0
            while i < len(template):
                if template.startswith("\\{", i) or template.startswith("\\}", i):
                    out.append(template[i + 1])
                    i += 2
                elif template.startswith("{}", i):
                    if k >= len(values):
                        raise WorkflowError("States.IntrinsicFailure", "States.Format: more {} than arguments")
                    v = values[k]
                    out.append(v if isinstance(v, str) else json.dumps(v))
                    k += 1
                    i += 2
                else:
                    out.append(template[i])
                    i += 1
            if k != len(values):
                raise WorkflowError("States.IntrinsicFailure", "States.Format: more arguments than {}")
            return "".join(out)
        if name == "States.StringToJson":
            need(1)
            return json.loads(args[0])
        if name == "States.JsonToString":
            need(1)
            return json.dumps(args[0], separators=(",", ":"))
        if name == "States.Array":
            return list(args)
        if name == "States.MathAdd":
            need(2)
            if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
                raise WorkflowError("States.IntrinsicFailure", "States.MathAdd takes two numbers")
            return args[0] + args[1]
        if name == "States.UUID":
            need(0)
            return new_uuid()
        if name == "States.ArrayLength":
            need(1)
            return len(args[0])
        if name == "States.ArrayGetItem":
            need(2)
            return args[0][args[1]]
        if name == "States.ArrayContains":
            need(2)
            return args[1] in args[0]
        if name == "States.ArrayRange":
            need(3)
            start, end, step = args
            if step == 0:
                raise WorkflowError("States.IntrinsicFailure", "States.ArrayRange: step must not be 0")
            if (end - start) / step + 1 > ARRAY_RANGE_MAX:  # Step Functions' limit; else one input could exhaust memory
                raise WorkflowError("States.IntrinsicFailure",
                                    f"States.ArrayRange: more than {ARRAY_RANGE_MAX} items")
            out = []
            v = start
            while (step > 0 and v <= end) or (step < 0 and v >= end):
                out.append(v)
                v += step
            return out
        if name == "States.StringSplit":
            need(2)
            return [p for p in "".join(c if c not in args[1] else "\0" for c in args[0]).split("\0") if p]
        if name == "States.Base64Encode":
            need(1)
            return base64.b64encode(args[0].encode()).decode()
        if name == "States.Base64Decode":
            need(1)
            return base64.b64decode(args[0]).decode()
        if name == "States.Hash":
            need(2)
            algo = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384",
                    "SHA-512": "sha512"}.get(args[1])
            if algo is None:
                raise WorkflowError("States.IntrinsicFailure", f"States.Hash: unknown algorithm {args[1]!r}")
            return hashlib.new(algo, args[0].encode()).hexdigest()
    except WorkflowError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
        raise WorkflowError("States.IntrinsicFailure", f"{name}: {exc}") from None
    raise WorkflowError("States.IntrinsicFailure", f"unknown intrinsic function {name}")  # pragma: no cover


def _eval_arg(arg: Any, data: Any, context: Any, new_uuid: Callable[[], str]) -> Any:
    if isinstance(arg, _PathArg):
        return get_path(data, arg.path, context)
    if isinstance(arg, _Call):
        return _eval_call(arg, data, context, new_uuid)
    if isinstance(arg, str):
        return _unescape_literal(arg)
    return arg


def _random_uuid() -> str:
    return str(uuid.uuid4())


def evaluate_expression(expr: str, data: Any, context: Any = None,
                        new_uuid: Callable[[], str] | None = None) -> Any:
    """The value of a ``.$`` field: a path (``$.x``, ``$$.Execution.Id``) or an intrinsic call."""
    if expr.startswith("$"):
        return get_path(data, expr, context)
    try:
        call = parse_intrinsic(expr)
    except ValueError as exc:
        raise WorkflowError("States.Runtime", str(exc)) from None
    return _eval_call(call, data, context, new_uuid or _random_uuid)


def validate_expression(expr: Any) -> str | None:
    """None if ``expr`` is a valid ``.$`` value, else why not."""
    if not isinstance(expr, str):
        return "must be a string (a path or an intrinsic function)"
    try:
        if expr.startswith("$"):
            parse_path(expr)
        else:
            parse_intrinsic(expr)
    except ValueError as exc:
        return str(exc)
    return None


def resolve_template(template: Any, data: Any, context: Any = None,
                     new_uuid: Callable[[], str] | None = None) -> Any:
    """A Parameters / ResultSelector / ItemSelector template with its ``.$`` fields resolved."""
    if isinstance(template, dict):
        out: dict[str, Any] = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = evaluate_expression(value, data, context, new_uuid)
            else:
                out[key] = resolve_template(value, data, context, new_uuid)
        return out
    if isinstance(template, list):
        return [resolve_template(v, data, context, new_uuid) for v in template]
    return copy.deepcopy(template)


# -- the pipeline --------------------------------------------------------------------------------


def apply_input_path(state: dict, raw_input: Any, context: Any = None) -> Any:
    path = state.get("InputPath", "$")
    if path is None:
        return {}
    return get_path(raw_input, path, context)


def apply_parameters(state: dict, effective: Any, context: Any = None,
                     new_uuid: Callable[[], str] | None = None) -> Any:
    if "Parameters" not in state:
        return effective
    return resolve_template(state["Parameters"], effective, context, new_uuid)


def effective_input(state: dict, raw_input: Any, context: Any = None,
                    new_uuid: Callable[[], str] | None = None) -> Any:
    """InputPath then Parameters."""
    return apply_parameters(state, apply_input_path(state, raw_input, context), context, new_uuid)


def apply_result_selector(state: dict, result: Any, context: Any = None,
                          new_uuid: Callable[[], str] | None = None) -> Any:
    if "ResultSelector" not in state:
        return result
    return resolve_template(state["ResultSelector"], result, context, new_uuid)


def apply_result_path(result_path: str | None, raw_input: Any, result: Any) -> Any:
    """``$`` (default): the result replaces the input; ``None``: the input passes through."""
    if result_path is None:
        return copy.deepcopy(raw_input)
    return set_path(raw_input, result_path, result)


def apply_output_path(state: dict, value: Any, context: Any = None) -> Any:
    path = state.get("OutputPath", "$")
    if path is None:
        return {}
    return get_path(value, path, context)


def process_result(state: dict, raw_input: Any, result: Any, context: Any = None,
                   new_uuid: Callable[[], str] | None = None) -> Any:
    """ResultSelector -> ResultPath -> OutputPath: the state's output."""
    selected = apply_result_selector(state, result, context, new_uuid)
    placed = apply_result_path(state.get("ResultPath", "$"), raw_input, selected)
    return apply_output_path(state, placed, context)
