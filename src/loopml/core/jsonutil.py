"""Strict JSON parsing: what Python's ``json`` accepts but JSON does not (NaN, Infinity, numbers
out of float range) is refused. PostgreSQL's json columns refuse those values, so input that
would be stored is checked with this first."""

from __future__ import annotations

import json
from typing import Any


class NotStrictJSON(ValueError):
    """Valid for Python's parser, not JSON (the message names the value)."""


def _refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise NotStrictJSON(f"{text} is out of range for a JSON number")
    return value


def loads_strict(data: str | bytes) -> Any:
    """``json.loads`` refusing NaN/Infinity/1e999 with :class:`NotStrictJSON`; other parse errors
    raise ``json.JSONDecodeError`` (a ``ValueError``) as usual."""
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
