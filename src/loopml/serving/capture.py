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

Files: ``{prefix}/{endpoint}/{variant}/yyyy/mm/dd/hh/{yyyymmddTHHMMSS}-[{node}-]{16 hex}.jsonl``
(UTC; the folder is the hour of the records' inference time, the name the time of the file's first
record; ``{node}``: the writer's ``node_tag``, the data-plane node's id, so nodes sharing one store
never write the same name, and the 64-bit tag is keyed by the spool segment's random id, so
several serving workers flushing in the same second do not collide either — a spool segment keeps the tag of the node that wrote it).
Every flush writes one file per (endpoint, variant, hour) with ``ArtifactStore.put_bytes``
(atomic: a reader never sees half a file).

Hot path: ``CaptureWriter.record()`` runs on the serving event loop. It only appends a tuple to a
list under a lock held for a few bytecodes — no serialization, no I/O. A daemon thread flushes
every ``flush_interval_s`` (sooner when half of either bound is reached). Memory is bounded by
``max_pending_records`` / ``max_pending_bytes`` (body sizes + a fixed overhead per record),
counting records not yet written, including a failed batch waiting for its retry: over either
bound ``record()`` drops the record (returns False, counted in ``stats()["dropped"]``, a warning
at most every 10 s). A failed write is retried as is (same key, same bytes) at the next flush.

Write-ahead spool (``spool_dir``; the serving process uses ``LOOPML_HOME/spool/capture``), so a
``kill -9`` loses nothing answered: ``record()`` also appends the record as one frame to this
process's current spool segment with one ``os.writev`` (a few µs; no fsync: it survives the
process's death, not the machine's), and the data plane records before it sends the answer. A
flush moves on to a fresh segment and unlinks the old one once all of its files are in the store.
At start (on the writer's thread) a new writer uploads the segments whose owner is gone (each
holds an ``flock`` while its process lives) and unlinks them. Files and event ids are derived
from the segment (its random id and the record's position in it), so a segment uploaded again —
the owner was killed between its upload and the unlink — rewrites the same keys with the same
bytes: no duplicates. Loss bound: 0 answered records on a process kill; what the OS has not
written back on a machine crash; records the writer drops over its bounds (counted) are never
spooled.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import struct
import threading
import time
import uuid
from pathlib import Path
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
    segment: "_Segment | None"  # the spool segment holding its records until written


_TAG = re.compile(r"[A-Za-z0-9_-]{1,100}")  # a node tag: in object and spool file names as is
_FRAME = struct.Struct("<III")  # spool frame: header, input and output body lengths
_SPOOL_SUFFIX = ".spool"


_CREATE_ATTEMPTS = 10  # a fresh name each time another writer's recovery takes the new file


class _Segment:
    """One spool file: this writer's records of one flush, appended frame by frame."""

    __slots__ = ("path", "fd", "id", "broken", "tag")

    def __init__(self, path: Path | None, fd: int, seg_id: bytes, tag: str = "") -> None:
        self.path, self.fd, self.id = path, fd, seg_id
        self.tag = tag  # the writer's node tag, kept in the name: a recovered segment keeps its keys
        self.broken = False  # a failed write: nothing more is appended (frames stay whole)

    @classmethod
    def memory_only(cls, tag: str = "") -> "_Segment":
        return cls(None, -1, os.urandom(10), tag)

    @classmethod
    def create(cls, folder: Path, tag: str = "") -> "_Segment":
        """A new locked segment (locked before it gets its final name: a recovering writer
        only ever sees segments whose owner holds, or held, the lock)."""
        for _ in range(_CREATE_ATTEMPTS):
            seg_id = os.urandom(10)
            final = folder / f"{os.getpid()}-{seg_id.hex()}{'.' + tag if tag else ''}{_SPOOL_SUFFIX}"
            tmp = final.with_suffix(".new")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.rename(tmp, final)
            except (BlockingIOError, FileNotFoundError):
                # another writer's recovery (e.g. a second worker starting at the same moment) took
                # this file, between its creation and its lock, for a killed writer's leftover and
                # unlinks it: nothing was written to it yet, so take a fresh name
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            return cls(final, fd, seg_id, tag)
        raise OSError(f"data capture: could not create a spool segment in {folder}")

    def discard(self) -> None:
        """Unlink, then unlock (a recovering writer that got the lock sees st_nlink == 0)."""
        if self.path is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _event_id(seg_id: bytes, seq: int) -> str:
    """A uuid4-shaped event id: the segment's 10 random bytes + the record's position in it."""
    return str(uuid.UUID(bytes=seg_id + seq.to_bytes(6, "big"), version=4))


def _read_frames(data: bytes) -> list[tuple]:
    """A segment's frames → record tuples (a frame cut short by the kill ends it)."""
    items, pos, end = [], 0, len(data)
    view = memoryview(data)
    while pos + _FRAME.size <= end:
        h, i, o = _FRAME.unpack_from(data, pos)
        start = pos + _FRAME.size
        stop = start + h + i + o
        if stop > end:
            break
        try:
            (event_time, endpoint, variant, in_type, out_type, inference_id, model, version,
             latency, shadow) = orjson.loads(view[start:start + h])
        except ValueError:  # not a frame this version wrote: nothing after it can be trusted
            log.error("data capture: unreadable spool frame at byte %d; the rest is skipped", pos)
            break
        in_body = bytes(view[start + h:start + h + i])
        out_body = bytes(view[start + h + i:stop])
        items.append((event_time, endpoint, variant, in_body, in_type, out_body, out_type,
                      inference_id, model, version, latency, shadow,
                      i + o + _RECORD_OVERHEAD_BYTES))
        pos = stop
    return items


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
                 max_pending_records: int = 50_000, max_pending_bytes: int = 256 * 2**20,
                 spool_dir: str | Path | None = None, node_tag: str = "") -> None:
        validate_key(prefix)
        if node_tag and not _TAG.fullmatch(node_tag):
            raise ValueError(f"node_tag must be letters, digits, '-' and '_' (at most 100), got {node_tag!r}")
        self.node_tag = node_tag
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
        # write-ahead spool: the segment record() appends to, a spare for the next flush, and
        # the flushed segments some of whose files are not written yet
        self._spool_dir = None if spool_dir is None else Path(spool_dir)
        if self._spool_dir is not None:
            self._spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._segment = _Segment.create(self._spool_dir, node_tag)
        else:
            self._segment = _Segment.memory_only(node_tag)
        self._spare: _Segment | None = None
        self._flushed_segments: list[_Segment] = []
        self._last_spool_log = -_DROP_LOG_INTERVAL_S * 2

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
        if event_time is None:
            event_time = time.time()
        item = (event_time, endpoint, variant, input_body, input_content_type, output_body,
                output_content_type, inference_id, model, model_version, latency_ms, shadow, size)
        frame = None
        if self._spool_dir is not None:  # built outside the lock
            try:
                header = orjson.dumps((event_time, endpoint, variant, input_content_type,
                                       output_content_type, inference_id, model, model_version,
                                       latency_ms, shadow))
            except TypeError:
                pass  # not JSON (a caller's odd model_version): kept in memory only
            else:
                frame = (_FRAME.pack(len(header), len(input_body), len(output_body)), header,
                         input_body, output_body)
        with self._lock:
            if (self._closed or self._pending_records >= self.max_pending_records
                    or self._pending_bytes + size > self.max_pending_bytes):
                self._n_dropped += 1
                closed = self._closed
                accepted = False
            else:
                seg = self._segment
                if frame is not None and seg.fd >= 0 and not seg.broken:
                    self._spool(seg, frame, size)  # write-ahead: survives a kill -9 from here
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

    def _spool(self, seg: _Segment, frame: tuple, size: int) -> None:
        """Append one frame (under ``_lock``: the flusher swaps segments under it)."""
        try:
            if os.writev(seg.fd, frame) != size - _RECORD_OVERHEAD_BYTES + _FRAME.size + \
                    len(frame[1]):
                raise OSError("short write")
        except Exception as exc:  # noqa: BLE001 - the record stays in memory; flushed as usual
            seg.broken = True
            self._n_errors += 1
            now = time.monotonic()
            if now - self._last_spool_log >= _DROP_LOG_INTERVAL_S:
                self._last_spool_log = now
                log.warning("data capture: appending to the spool %s failed (%s: %s); records "
                            "until the next flush are kept in memory only", seg.path,
                            type(exc).__name__, exc)

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
            if self._spool_dir is not None and self._spare is None and not self._closed:
                try:  # opened here, not under _lock: record() waits for no file creation
                    self._spare = _Segment.create(self._spool_dir, self.node_tag)
                except OSError as exc:
                    log.warning("data capture: cannot create a spool segment in %s: %s",
                                self._spool_dir, exc)
            with self._lock:
                buf, self._buf = self._buf, []
                self._buf_bytes = 0
                seg = self._segment
                if buf:  # the buffer's records are exactly its segment's frames
                    if self._spare is not None:
                        self._segment, self._spare = self._spare, None
                    else:
                        self._segment = _Segment.memory_only(self.node_tag)
            if buf:
                self._flushed_segments.append(seg)
            files = self._retry
            self._retry = []
            if buf:
                try:
                    files.extend(self._serialize(buf, seg))
                except Exception:  # noqa: BLE001 - a bug here must not leak the pending counts
                    self._give_up(len(buf), sum(item[_SIZE] for item in buf))
                    log.exception("data capture: could not serialize %d records; they are dropped", len(buf))
            try:
                for i, f in enumerate(files):
                    if not self._write(f):
                        self._retry = files[i + 1:] + [f]
                        return
            finally:
                self._discard_written_segments()

    def _discard_written_segments(self) -> None:
        """Unlink the flushed segments none of whose files waits for a retry."""
        waiting = {id(f.segment) for f in self._retry}
        keep = []
        for seg in self._flushed_segments:
            if id(seg) in waiting:
                keep.append(seg)
            else:
                seg.discard()
        self._flushed_segments = keep

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

    def _serialize(self, buf: list[tuple], seg: _Segment) -> list[_File]:
        """Group by (endpoint, variant, UTC hour), in arrival order; one file per group.

        Keys and event ids come from the segment's id and each record's position in it: the
        same segment serialized again (recovered after a kill) gives the same files."""
        groups: dict[tuple[str, str, int], list[tuple[int, _Pending]]] = {}
        now = time.time()
        for seq, item in enumerate(map(_Pending._make, buf)):
            t = item.event_time
            if not (isinstance(t, (int, float)) and 0 <= t < _MAX_EPOCH_S):  # also False for NaN
                item = item._replace(event_time=now)
            groups.setdefault((item.endpoint, item.variant, int(item.event_time // 3600)),
                              []).append((seq, item))
        files = []
        stamps: dict[int, str] = {}
        for (endpoint, variant, hour), numbered in groups.items():
            items = [item for _, item in numbered]
            first = min(item.event_time for item in items)
            tm = time.gmtime(first)
            tag = hashlib.blake2b(f"{endpoint}\0{variant}\0{hour}".encode("utf-8", "replace"),
                                  key=seg.id, digest_size=8).hexdigest()
            node = f"{seg.tag}-" if seg.tag else ""  # nodes sharing a store never collide
            name = f"{time.strftime('%Y%m%dT%H%M%S', tm)}-{node}{tag}.jsonl"
            size = sum(item.size for item in items)
            try:
                key = validate_key(join(self.prefix, endpoint, variant, time.strftime("%Y/%m/%d/%H", tm), name))
                if "/" in endpoint or "/" in variant or not endpoint or not variant:
                    raise InvalidInput(f"endpoint {endpoint!r} / variant {variant!r} is not a single "
                                       "non-empty path segment")
                lines = [orjson.dumps(self._to_record(item, stamps, _event_id(seg.id, seq)))
                         for seq, item in numbered]
            except Exception as exc:  # noqa: BLE001 - never retry what can never be written
                self._give_up(len(items), size)
                log.error("data capture: dropping %d records of endpoint %r variant %r: %s: %s",
                          len(items), endpoint, variant, type(exc).__name__, exc)
                continue
            lines.append(b"")
            files.append(_File(key, b"\n".join(lines), len(items), size, seg))
        return files

    @staticmethod
    def _to_record(item: _Pending, stamps: dict[int, str], event_id: str) -> dict[str, Any]:
        second = int(item.event_time)
        stamp = stamps.get(second)
        if stamp is None:
            stamp = stamps[second] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        in_data, in_encoding = _encode(item.input_body, item.input_content_type)
        out_data, out_encoding = _encode(item.output_body, item.output_content_type)
        meta: dict[str, Any] = {"eventId": event_id, "inferenceTime": stamp}
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
        if self._spool_dir is not None:
            try:
                self._recover()
            except Exception:  # noqa: BLE001 - the capture thread must not die
                log.exception("data capture: recovering the spool in %s failed", self._spool_dir)
        while not self._stop:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop:
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the capture thread must not die
                log.exception("data capture: flush failed unexpectedly")

    def _recover(self) -> None:
        """Upload the segments left by writers that are gone (killed), then unlink them."""
        for path in self._spool_dir.glob("*.new"):  # killed between creating and naming one
            self._unlink_if_unlocked(path)
        for path in sorted(self._spool_dir.glob(f"*{_SPOOL_SUFFIX}")):  # all, even if closing
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # its owner flushed it meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # a live writer's (another serving process, or this one)
            try:  # {pid}-{id hex}[.{node tag}].spool
                seg_hex, _, seg_tag = path.name.split("-", 1)[1][:-len(_SPOOL_SUFFIX)].partition(".")
                seg_id = bytes.fromhex(seg_hex)
            except (IndexError, ValueError):
                seg_id, seg_tag = b"", ""
            seg = _Segment(path, fd, seg_id, seg_tag if _TAG.fullmatch(seg_tag or "-") else "")
            if os.fstat(fd).st_nlink == 0:  # its owner unlinked it (all written) meanwhile
                seg.close()
                continue
            if len(seg_id) != 10:
                log.warning("data capture: ignoring %s (not a spool segment's name)", path)
                seg.close()
                continue
            with open(fd, "rb", closefd=False) as f:
                items = _read_frames(f.read())
            if not items:
                seg.discard()
                continue
            size = sum(item[_SIZE] for item in items)
            with self._lock:
                self._pending_records += len(items)
                self._pending_bytes += size
            log.warning("data capture: uploading %d records a previous serving process left in %s",
                        len(items), path)
            with self._flush_lock:
                self._flushed_segments.append(seg)
                try:
                    files = self._serialize(items, seg)
                except Exception:  # noqa: BLE001 - as in flush()
                    self._give_up(len(items), size)
                    log.exception("data capture: could not serialize %d recovered records", len(items))
                    files = []
                for i, f in enumerate(files):
                    if not self._write(f):
                        self._retry.extend(files[i:])
                        break
                self._discard_written_segments()

    @staticmethod
    def _unlink_if_unlocked(path: Path) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            path.unlink()
        except (BlockingIOError, FileNotFoundError):
            pass  # a live writer's, about to be named
        finally:
            os.close(fd)

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
        try:
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
            if self._spool_dir is not None:
                log.error("data capture: closing with %d records that could not be written to %s; "
                          "they stay in the spool %s for the next start", lost, self.store.uri,
                          self._spool_dir)
            else:
                log.error("data capture: closing with %d records that could not be written to %s; "
                          "they are lost", lost, self.store.uri)
        finally:
            with self._flush_lock:
                for seg in self._flushed_segments:  # unwritten ones: kept for the next start
                    seg.close()
                self._flushed_segments = []
                self._segment.discard()  # empty: record() refuses once closed
                if self._spare is not None:
                    self._spare.discard()
                    self._spare = None

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
