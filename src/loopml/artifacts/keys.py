"""Artifact keys are relative, '/'-separated paths; anything else is refused."""

from __future__ import annotations

import re

from loopml.core.errors import InvalidInput

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Return ``key`` unchanged if it is safe, else raise InvalidInput naming it.

    Refused: absolute paths, ``..`` or ``.`` segments, empty segments (``a//b``, trailing ``/``),
    backslashes and control characters. A prefix may be empty only when ``allow_empty``.
    """
    if not isinstance(key, str):
        raise InvalidInput(f"artifact key must be a string, got {type(key).__name__}")
    if key == "":
        if allow_empty:
            return key
        raise InvalidInput("artifact key must not be empty")
    if key.startswith("/"):
        raise InvalidInput(f"artifact key {key!r} must be relative (no leading '/')")
    if _BAD_CHARS.search(key):
        raise InvalidInput(f"artifact key {key!r} contains a backslash or control character")
    for part in key.split("/"):
        if part == "":
            raise InvalidInput(f"artifact key {key!r} has an empty path segment")
        if part in (".", ".."):
            raise InvalidInput(f"artifact key {key!r} must not contain '.' or '..' segments")
    return key


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))
