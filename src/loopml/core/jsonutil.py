"""Strict JSON parsing: what Python's ``json`` accepts but JSON does not (NaN, Infinity, numbers
out of float range) is refused, and so are two things that break the server later rather than
now: strings holding a lone UTF-16 surrogate (``"\\ud800"``: no UTF-8 encoding exists, so every
answer that includes the stored value would fail) and nesting deeper than ``MAX_DEPTH``
(Python's parser recurses: ~1,000 levels raise RecursionError). PostgreSQL's json columns refuse
the first kind too, so input that would be stored is checked with this first.

``dumps_safe`` is the other side: an answer's JSON as UTF-8 even when an old record holds a lone
surrogate (replaced with U+FFFD), so one bad record never breaks a list.
"""

from __future__ import annotations

import codecs
import json
import re
from typing import Any

MAX_DEPTH = 128  # arrays/objects inside each other; real requests use a handful

# a lone surrogate can only come from a \uD800-\uDFFF escape or raw surrogate bytes (which
# Python's parser lets through with 'surrogatepass')
_SURROGATE_HINT = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE_HINT_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


class NotStrictJSON(ValueError):
    """Valid for Python's parser, not JSON (the message names the value)."""


def _refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotStrictJSON(f"{text} is out of range for a JSON number")
    return value


def deeper_than(value: dict | list, limit: int = MAX_DEPTH) -> bool:
    """Whether arrays/objects nest more than ``limit`` levels in the parsed ``value``: one
    level at a time (no recursion), stopping as soon as a level has no containers left."""
    level = [value]
    for _ in range(limit):
        level = [child for item in level for child in (item.values() if type(item) is dict else item)
                 if type(child) is dict or type(child) is list]
        if not level:
            return False
    return True


def lone_surrogate(value: Any) -> str | None:
    """The first string (key or value) in ``value`` holding a lone surrogate, shown escaped; None if none."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return item.encode("utf-8", "backslashreplace").decode("ascii", "replace")[:80]
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def loads_strict(data: str | bytes) -> Any:
    """``json.loads`` refusing NaN/Infinity/1e999, lone surrogates and nesting deeper than
    MAX_DEPTH with :class:`NotStrictJSON`; other parse errors raise ``json.JSONDecodeError`` (a
    ``ValueError``) as usual."""
    too_deep = NotStrictJSON(f"arrays/objects nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # Python's parser recurses: ~1,000 levels (the user's input, not a bug)
        raise too_deep from None
    openers = data.count("[") + data.count("{") if isinstance(data, str) else data.count(b"[") + data.count(b"{")
    if openers > MAX_DEPTH and isinstance(value, (dict, list)) and deeper_than(value):
        raise too_deep
    hint = _SURROGATE_HINT_TEXT if isinstance(data, str) else _SURROGATE_HINT
    if hint.search(data):  # type: ignore[arg-type]
        bad = lone_surrogate(value)
        if bad is not None:
            raise NotStrictJSON(f"the string {bad!r} holds a lone UTF-16 surrogate (not text; send "
                                "characters as UTF-8 or as a \\uXXXX surrogate pair)")
    return value


def _replace_surrogate(exc: UnicodeError) -> tuple[bytes, int]:
    if isinstance(exc, UnicodeEncodeError):  # bytes: the UTF-8 encoder takes only ASCII text back
        return "\ufffd".encode() * (exc.end - exc.start), exc.end
    raise exc


codecs.register_error("loopml.surrogate", _replace_surrogate)


def dumps_safe(value: Any, **kwargs: Any) -> bytes:
    """``json.dumps(value, ensure_ascii=False)`` as UTF-8; a lone surrogate becomes U+FFFD
    instead of a UnicodeEncodeError (an answer never fails for one bad stored string)."""
    return json.dumps(value, ensure_ascii=False, **kwargs).encode("utf-8", "loopml.surrogate")
