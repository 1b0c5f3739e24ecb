"""One error hierarchy for all of LoopML.

    LoopMLError                 code="error"            HTTP 500  CLI exit 1
    ├── InvalidInput            code="invalid_input"    HTTP 400  CLI exit 2   (the user's mistake)
    │   └── UnsupportedFormat   code="unsupported_format"
    ├── NotFound                code="not_found"        HTTP 404  CLI exit 2
    ├── Conflict                code="conflict"         HTTP 409  CLI exit 2
    ├── CorruptArtifact         code="corrupt_artifact" HTTP 422  CLI exit 2   (files missing or damaged)
    └── SchemaOutOfDate         code="schema_out_of_date" HTTP 503 CLI exit 2

The edges translate: ``api/`` maps ``status`` to the HTTP status and ``code``/``message``
to the JSON body; ``cli/`` prints ``message`` on one line and exits with ``exit_code``.
Messages name the object and the bad value.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class LoopMLError(Exception):
    code = "error"
    status = 500
    exit_code = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(LoopMLError):
    code = "invalid_input"
    status = 400
    exit_code = 2


class UnsupportedFormat(InvalidInput):
    code = "unsupported_format"


class NotFound(LoopMLError):
    code = "not_found"
    status = 404
    exit_code = 2


class Conflict(LoopMLError):
    code = "conflict"
    status = 409
    exit_code = 2


class CorruptArtifact(LoopMLError):
    code = "corrupt_artifact"
    status = 422
    exit_code = 2


class SchemaOutOfDate(LoopMLError):
    code = "schema_out_of_date"
    status = 503
    exit_code = 2


@contextmanager
def paths_shown_as(names: dict[str, str]) -> Iterator[None]:
    """A LoopMLError raised inside names the user's file (``names[path]``), not the temporary
    copy it was read from (an upload, an unpacked zip, a downloaded s3:// object)."""
    try:
        yield
    except LoopMLError as err:
        message = err.message
        for path, shown in sorted(names.items(), key=lambda kv: -len(kv[0])):  # the longest first
            message = message.replace(path, shown)
        err.message = message
        err.args = (message,)
        raise


_BY_CODE = {cls.code: cls for cls in (LoopMLError, InvalidInput, UnsupportedFormat, NotFound,
                                      Conflict, CorruptArtifact, SchemaOutOfDate)}


def error_from_dict(body: dict[str, Any]) -> LoopMLError:
    """Rebuild the typed error from an API error body (used by the SDK)."""
    cls = _BY_CODE.get(str(body.get("code")), LoopMLError)
    return cls(str(body.get("message", "unknown error")), **(body.get("details") or {}))
