"""Data capture for real-time endpoints, in SageMaker Model Monitor's JSON Lines format.

One JSON object per line::

    {"captureData": {"endpointInput":  {"observedContentType": "application/json", "mode": "INPUT",
                                        "data": "...", "encoding": "JSON"},
                     "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                                        "data": "...", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "<uuid4>", "inferenceTime": "2026-11-27T10:00:00Z",
                       "inferenceId": "<only if the client sent one>",
                       "endpoint": "...", "variant": "...", "model": "...", "modelVersion": 3,
                       "latencyMs": 1.7, "shadow": true  # only for shadow traffic},
     "eventVersion": "0"}

Encoding: ``JSON`` for ``application/json`` (``*+json`` too) bodies, ``CSV`` for ``text/csv``
(``data`` is the body decoded as UTF-8), ``BASE64`` for everything else (npy, octet-stream,
images) and for bodies that are not valid UTF-8.

Files: ``{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/{yyyymmddTHHMMSS}-{8 hex}.jsonl`` (UTC; the
folder is the hour of the records' inference time, the name the time of the file's first record).
Every flush writes one file per (endpoint, variant, hour) with ``ArtifactStore.put_bytes``
(atomic: a reader never sees half a file).

Hot path: ``CaptureWriter.record()`` runs on the serving event loop. It only appends a tuple to a
list under a lock held for a few bytecodes — no serialization, no I/O. A daemon thread flushes
every ``flush_interval_s`` (sooner when half of either bound is reached). Memory is bounded by
``max_pending_records`` / ``max_pending_bytes`` (body sizes + a fixed overhead per record),
counting records not yet written, including a failed batch waiting for its retry: over either
bound ``record()`` drops the record (returns False, counted in ``stats()["dropped"]``, a warning
at most every 10 s). A failed write is retried as is (same key, same bytes) at the next flush.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from typing import Any, NamedTuple

import orjson

from loopml.artifacts.keys import join, validate_key
from loopml.artifacts.store import ArtifactStore
from loopml.core.errors import InvalidInput

__all__ = ["CaptureWriter"]

log = logging.getLogger(__name__)

_RECORD_OVERHEAD_BYTES = 256  # per-record estimate of the tuple + metadata, for max_pending_bytes
_DROP_LOG_INTERVAL_S = 10.0
_CLOSE_ATTEMPTS = 3
_CLOSE_RETRY_DELAY_S = 0.2
_MAX_EPOCH_S = 253402300800  # 10000-01-01: event times outside [0, this) are replaced by "now"


class _Pending(NamedTuple):
    """One captured request, exactly as record() got it (no work done on the hot path).

    record() builds a plain tuple in this field order (cheaper than the NamedTuple's __new__);
    the flusher views it as a _Pending.
    """

    event_time: float
    endpoint: str
    variant: str
    input_body: bytes
    input_content_type: str | None
    output_body: bytes
    output_content_type: str
    inference_id: str | None
    model: str
    model_version: int | None
    latency_ms: float
    shadow: bool
    size: int


_SIZE = len(_Pending._fields) - 1
assert _Pending._fields[_SIZE] == "size"


class _File(NamedTuple):
    """A serialized file waiting to be written (kept as is for a retry)."""

    key: str
    data: bytes
    records: int
    size: int  # sum of its records' size estimates (what it holds of the pending bounds)


def _encode(body: bytes, content_type: str | None) -> tuple[str, str]:
    """(data, encoding) for one body."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime == "application/json" or mime.endswith("+json") or mime == "text/csv":
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return text, ("CSV" if mime == "text/csv" else "JSON")
    return base64.b64encode(body).decode("ascii"), "BASE64"


class CaptureWriter:
    """Buffers captured requests and writes them to ``store`` under ``prefix`` from a thread."""

    def __init__(self, store: ArtifactStore, prefix: str = "capture", *, flush_interval_s: float = 1.0,
                 max_pending_records: int = 50_000, max_pending_bytes: int = 256 * 2**20) -> None:
        validate_key(prefix)
        if not flush_interval_s > 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s!r}")
        if max_pending_records < 1 or max_pending_bytes < 1:
            raise ValueError(f"max_pending_records and max_pending_bytes must be >= 1, got "
                             f"{max_pending_records!r} and {max_pending_bytes!r}")
        self.store = store
        self.prefix = prefix.strip("/")
        self.flush_interval_s = float(flush_interval_s)
        self.max_pending_records = int(max_pending_records)
        self.max_pending_bytes = int(max_pending_bytes)
        self._wake_records = max(1, self.max_pending_records // 2)
        self._wake_bytes = max(1, self.max_pending_bytes // 2)

        self._lock = threading.Lock()        # guards _buf and the pending counters (held briefly)
        self._flush_lock = threading.Lock()  # one flush at a time (thread, flush(), close())
        self._buf: list[tuple] = []          # _Pending fields, as plain tuples
        self._buf_bytes = 0                  # of _buf only: wakes the thread early (not the retries)
        self._retry: list[_File] = []        # failed files, rewritten at the next flush
        self._pending_records = 0            # in _buf + in flight + in _retry
        self._pending_bytes = 0
        self._closed = False

        self._n_captured = 0
        self._n_dropped = 0
        self._n_files = 0
        self._n_errors = 0
        self._last_drop_log = -_DROP_LOG_INTERVAL_S * 2

        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="loopml-capture", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------------------ hot path
    def record(self, endpoint: str, variant: str, *, input_body: bytes, input_content_type: str | None,
               output_body: bytes, output_content_type: str = "application/json",
               inference_id: str | None = None, model: str = "", model_version: int | None = None,
               latency_ms: float = 0.0, event_time: float | None = None, shadow: bool = False) -> bool:
        """Queue one request/response pair; False if it was dropped (full or closed). O(1), no I/O.

        The bodies are kept by reference until the flush: pass ``bytes`` (not a buffer reused later).
        """
        size = len(input_body) + len(output_body) + _RECORD_OVERHEAD_BYTES
        item = (time.time() if event_time is None else event_time, endpoint, variant,
                input_body, input_content_type, output_body, output_content_type,
                inference_id, model, model_version, latency_ms, shadow, size)
        with self._lock:
            if (self._closed or self._pending_records >= self.max_pending_records
                    or self._pending_bytes + size > self.max_pending_bytes):
                self._n_dropped += 1
                closed = self._closed
                accepted = False
            else:
                buf = self._buf
                buf.append(item)
                self._buf_bytes += size
                self._pending_records += 1
                self._pending_bytes += size
                accepted = True
                wake = len(buf) >= self._wake_records or self._buf_bytes >= self._wake_bytes
        if accepted:
            if wake and not self._wake.is_set():
                self._wake.set()
            return True
        self._log_drop(closed)
        return False

    def _log_drop(self, closed: bool) -> None:
        now = time.monotonic()
        if now - self._last_drop_log < _DROP_LOG_INTERVAL_S:
            return
        self._last_drop_log = now
        if closed:
            log.warning("data capture: writer to %s/%s is closed; dropping captured records "
                        "(%d dropped so far)", self.store.uri, self.prefix, self._n_dropped)
        else:
            log.warning("data capture: %d records / %d bytes pending (limits %d / %d), the store %s is "
                        "slow or failing; dropping captured records (%d dropped so far)",
                        self._pending_records, self._pending_bytes, self.max_pending_records,
                        self.max_pending_bytes, self.store.uri, self._n_dropped)

    # ----------------------------------------------------------------------------- flushing
    def flush(self) -> None:
        """Write everything pending now (synchronously).

        Files waiting for a retry go first. At the first failed write the flush stops: that file
        and the ones not tried yet stay pending for the next flush (the failed one moved last, so
        one unwritable file cannot starve the others, and a dead store costs one error per flush).
        """
        with self._flush_lock:
            with self._lock:
                buf, self._buf = self._buf, []
                self._buf_bytes = 0
            files = self._retry
            self._retry = []
            if buf:
                try:
                    files.extend(self._serialize(buf))
                except Exception:  # noqa: BLE001 - a bug here must not leak the pending counts
                    self._give_up(len(buf), sum(item[_SIZE] for item in buf))
                    log.exception("data capture: could not serialize %d records; they are dropped", len(buf))
            for i, f in enumerate(files):
                if not self._write(f):
                    self._retry = files[i + 1:] + [f]
                    return

    def _write(self, f: _File) -> bool:
        try:
            self.store.put_bytes(f.key, f.data)
        except Exception as exc:  # noqa: BLE001 - any store failure: keep the file, retry later
            with self._lock:
                self._n_errors += 1
            log.warning("data capture: writing %s (%d records) to %s failed, will retry: %s: %s",
                        f.key, f.records, self.store.uri, type(exc).__name__, exc)
            return False
        with self._lock:
            self._pending_records -= f.records
            self._pending_bytes -= f.size
            self._n_captured += f.records
            self._n_files += 1
        return True

    def _give_up(self, records: int, size: int, *, error: bool = True) -> None:
        with self._lock:
            self._pending_records -= records
            self._pending_bytes -= size
            self._n_dropped += records
            if error:
                self._n_errors += 1

    def _serialize(self, buf: list[tuple]) -> list[_File]:
        """Group by (endpoint, variant, UTC hour), in arrival order; one file per group."""
        groups: dict[tuple[str, str, int], list[_Pending]] = {}
        for item in map(_Pending._make, buf):
            t = item.event_time
            if not (isinstance(t, (int, float)) and 0 <= t < _MAX_EPOCH_S):  # also False for NaN
                item = item._replace(event_time=time.time())
            groups.setdefault((item.endpoint, item.variant, int(item.event_time // 3600)), []).append(item)
        files = []
        stamps: dict[int, str] = {}
        for (endpoint, variant, _hour), items in groups.items():
            first = min(item.event_time for item in items)
            tm = time.gmtime(first)
            name = f"{time.strftime('%Y%m%dT%H%M%S', tm)}-{uuid.uuid4().hex[:8]}.jsonl"
            size = sum(item.size for item in items)
            try:
                key = validate_key(join(self.prefix, endpoint, variant, time.strftime("%Y/%m/%d/%H", tm), name))
                if "/" in endpoint or "/" in variant or not endpoint or not variant:
                    raise InvalidInput(f"endpoint {endpoint!r} / variant {variant!r} is not a single "
                                       "non-empty path segment")
                lines = [orjson.dumps(self._to_record(item, stamps)) for item in items]
            except Exception as exc:  # noqa: BLE001 - never retry what can never be written
                self._give_up(len(items), size)
                log.error("data capture: dropping %d records of endpoint %r variant %r: %s: %s",
                          len(items), endpoint, variant, type(exc).__name__, exc)
                continue
            lines.append(b"")
            files.append(_File(key, b"\n".join(lines), len(items), size))
        return files

    @staticmethod
    def _to_record(item: _Pending, stamps: dict[int, str]) -> dict[str, Any]:
        second = int(item.event_time)
        stamp = stamps.get(second)
        if stamp is None:
            stamp = stamps[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        in_data, in_encoding = _encode(item.input_body, item.input_content_type)
        out_data, out_encoding = _encode(item.output_body, item.output_content_type)
        meta: dict[str, Any] = {"eventId": str(uuid.uuid4()), "inferenceTime": stamp}
        if item.inference_id is not None:
            meta["inferenceId"] = item.inference_id
        meta["endpoint"] = item.endpoint
        meta["variant"] = item.variant
        meta["model"] = item.model
        meta["modelVersion"] = item.model_version
        meta["latencyMs"] = item.latency_ms
        if item.shadow:
            meta["shadow"] = True
        return {
            "captureData": {
                "endpointInput": {"observedContentType": item.input_content_type or "application/octet-stream",
                                  "mode": "INPUT", "data": in_data, "encoding": in_encoding},
                "endpointOutput": {"observedContentType": item.output_content_type, "mode": "OUTPUT",
                                   "data": out_data, "encoding": out_encoding},
            },
            "eventMetadata": meta,
            "eventVersion": "0",
        }

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop:
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the capture thread must not die
                log.exception("data capture: flush failed unexpectedly")

    # ------------------------------------------------------------------------------- control
    def close(self) -> None:
        """Flush everything and stop the thread. Idempotent; record() afterwards returns False.

        A write still failing after a few attempts is given up: its records count as dropped.
        It blocks on I/O: from an event loop, call it via ``asyncio.to_thread`` (or at shutdown).
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        for attempt in range(_CLOSE_ATTEMPTS):
            self.flush()
            if not self._retry:
                return
            if attempt + 1 < _CLOSE_ATTEMPTS:
                time.sleep(_CLOSE_RETRY_DELAY_S)
        with self._flush_lock:
            lost = sum(f.records for f in self._retry)
            self._give_up(lost, sum(f.size for f in self._retry), error=False)
            self._retry = []
        log.error("data capture: closing with %d records that could not be written to %s; they are lost",
                  lost, self.store.uri)

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"captured": self._n_captured, "dropped": self._n_dropped,
                    "pending": self._pending_records, "files": self._n_files, "errors": self._n_errors}

    def __enter__(self) -> "CaptureWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CaptureWriter({self.store.uri!r}, prefix={self.prefix!r})"
