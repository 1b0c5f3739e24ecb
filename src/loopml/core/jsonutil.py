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

# strings (with their escapes) are skipped when counting brackets; possessive: no backtracking
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_OPENERS = frozenset(b"[{")
_DEPTH_TABLE = bytes(2 if c in _OPENERS else 0 if c in b"]}" else 1 for c in range(256))  # +1 / -1 after -1
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
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


def too_deep(data: bytes) -> bool:
    """Whether arrays/objects nest more than MAX_DEPTH levels in the JSON text ``data`` (brackets
    inside strings do not count), without parsing it: a regex, a byte translation and a
    cumulative sum, all C-speed."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:  # the usual case: it cannot be
        return False
    import numpy as np  # only here: the CLI imports this module at start-up

    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    steps = np.frombuffer(brackets.translate(_DEPTH_TABLE), dtype=np.uint8).astype(np.int32) - 1
    return bool(steps.size) and int(np.cumsum(steps).max()) > MAX_DEPTH


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
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if too_deep(raw):
        raise NotStrictJSON(f"arrays/objects nested more than {MAX_DEPTH} levels deep")
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:  # the count above missed it (malformed strings): still the user's input
        raise NotStrictJSON(f"nested more than {MAX_DEPTH} levels deep") from None
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
