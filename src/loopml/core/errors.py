"""One error hierarchy for all of LoopML: every exception a user can meet is one of these.

    LoopMLError                 code="error"            HTTP 500  CLI exit 1
    ├── InvalidInput            code="invalid_input"    HTTP 400  CLI exit 2   (the user's mistake)
    │   └── UnsupportedFormat   code="unsupported_format"
    ├── Unauthorized            code="unauthorized"     HTTP 401  CLI exit 2   (a missing/wrong token or secret)
    ├── NotFound                code="not_found"        HTTP 404  CLI exit 2
    ├── Conflict                code="conflict"         HTTP 409  CLI exit 2
    │   └── JobNoLongerRunning                                    (cancelled while its model was saved)
    ├── CorruptArtifact         code="corrupt_artifact" HTTP 422  CLI exit 2   (files missing or damaged)
    ├── SchemaOutOfDate         code="schema_out_of_date" HTTP 503 CLI exit 2
    ├── EndpointFailed          code="endpoint_failed"  HTTP 503  CLI exit 1   (its models failed to load)
    ├── TimedOut                code="timeout"                    CLI exit 1   (a client-side wait gave up)
    │   ├── EndpointTimeout                                       (``wait_endpoint``; ``.record``)
    │   └── ExecutionTimeout                                      (``wait_execution``; it keeps running)
    └── InvocationError         code=the data plane's x-amzn-ErrorType (ModelError, ServiceUnavailable…)

The edges translate: ``api/`` maps ``status`` to the HTTP status and ``code``/``message``
to the JSON body; the SDK rebuilds the same class from that body (``error_from_dict``);
``cli/`` prints ``message`` on one line and exits with ``exit_code``.
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


class Unauthorized(LoopMLError):
    """No or a wrong API token, endpoint key or webhook secret."""

    code = "unauthorized"
    status = 401
    exit_code = 2


class Forbidden(LoopMLError):
    """A valid API token whose role or scopes lack the permission a call needs."""

    code = "forbidden"
    status = 403
    exit_code = 2


class NotFound(LoopMLError):
    code = "not_found"
    status = 404
    exit_code = 2


class Conflict(LoopMLError):
    code = "conflict"
    status = 409
    exit_code = 2


class JobNoLongerRunning(Conflict):
    """The job was cancelled or failed while its model was being saved: nothing registered."""


class Fenced(Conflict):
    """A write on behalf of a lease epoch that is no longer current (another holder took over,
    or the lease expired): the transaction is rolled back (store/leases_repo.py)."""

    code = "fenced"


class CorruptArtifact(LoopMLError):
    code = "corrupt_artifact"
    status = 422
    exit_code = 2


class SchemaOutOfDate(LoopMLError):
    code = "schema_out_of_date"
    status = 503
    exit_code = 2


class EndpointFailed(LoopMLError):
    """An endpoint has nothing to serve: its current generation's models failed to load (the
    reason is the message; ``record`` is the endpoint record when the SDK read one)."""

    code = "endpoint_failed"
    status = 503

    def __init__(self, message: str, record: dict[str, Any] | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.record = record


class TimedOut(LoopMLError):
    """A wait gave up before the thing waited for ended (the thing itself goes on)."""

    code = "timeout"


class EndpointTimeout(TimedOut):
    """An endpoint did not become ready in time (``record`` is the last one read)."""

    def __init__(self, message: str, record: dict[str, Any] | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        self.record = record


class ExecutionTimeout(TimedOut):
    """``wait_execution`` gave up before the execution ended (it keeps running)."""


class InvocationError(LoopMLError):
    """The data plane refused or failed an invocation: ``code`` is its ``x-amzn-ErrorType``
    (ModelError, ServiceUnavailable, ModelNotReadyException…), ``status`` the HTTP status,
    ``retry_after`` its Retry-After seconds (503/429: try again shortly). 401, 403 and 413 are
    the caller's to fix (CLI exit 2)."""

    code = "invocation_error"

    def __init__(self, message: str, *, code: str | None = None, status: int = 500,
                 retry_after: float | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        if code:
            self.code = code  # the data plane's protocol names its errors, not LoopML
        self.status = status
        self.retry_after = retry_after
        self.exit_code = 2 if status in (401, 403, 413) else 1


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


# what the API sends → the class it came from (codes the API makes up itself, such as
# "method_not_allowed", stay a LoopMLError carrying that code and status)
ERRORS_BY_CODE: dict[str, type[LoopMLError]] = {
    cls.code: cls for cls in (LoopMLError, InvalidInput, UnsupportedFormat, Unauthorized, Forbidden, NotFound, Conflict,
                              CorruptArtifact, SchemaOutOfDate, EndpointFailed, TimedOut)}


def error_from_dict(body: dict[str, Any], status: int | None = None) -> LoopMLError:
    """Rebuild the typed error from an API error body ``{"code", "message"[, "details"]}``
    (answered with HTTP ``status``): what the SDK raises for a failed request."""
    code = str(body.get("code"))
    cls = ERRORS_BY_CODE.get(code, LoopMLError)
    err = cls(str(body.get("message", "unknown error")), **(body.get("details") or {}))
    if code != cls.code:  # a code without a class of its own: keep the server's code
        err.code = code
    if status is not None:  # and always the status the server answered with
        err.status = status
    return err
