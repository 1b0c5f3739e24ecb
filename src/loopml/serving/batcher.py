"""Adaptive micro-batching for real-time endpoints: one ``Batcher`` per loaded model version.

Concurrent ``submit(rows)`` calls are coalesced into batches counted in ROWS (not requests),
bounded by ``max_batch_size`` rows and by ``max_delay_ms`` measured from the arrival of the
batch's first request (no wait at all when the batch is already full, or when the first
request already waited that long because the worker was busy — under load, batches fill from
the backlog). Whole requests are kept together and in FIFO order; a request larger than
``max_batch_size`` rows is queued as pieces of at most ``max_batch_size`` rows whose results
are concatenated in order. Requests whose trailing shape / dtype differ from the batch's first
request are not coalesced with it (they start the next batch).

The batch is padded to the smallest bucket size ≥ its rows (default: powers of two up to
``max_batch_size`` plus ``max_batch_size``) by repeating its last row, so a compiled predict
path sees only a few shapes; the padding rows' outputs are dropped. ``predict`` runs in ONE
dedicated worker thread owned by the batcher (Keras ``predict`` is not thread-safe; ONNX
Runtime releases the GIL, so the event loop keeps accepting requests meanwhile).

Failure isolation: when ``predict`` raises for a batch of several requests, each request is
retried alone (sequentially, same worker thread) and only those that still fail get the
exception — the exception ``predict`` raised, unchanged, so the HTTP layer can map it (e.g.
``InvalidInput`` → 400). Output with too few rows fails every request of that batch with a
``BatcherError`` naming the counts.

The loop cannot die or jam: every dequeued request is resolved in a ``finally`` (result, its
exception, or ``BatcherError("batch loop failed: …")``), cancelled requests (the client went
away) are skipped, an unexpected error ends only the current iteration, and if the loop task
itself ever ends unexpectedly it is restarted (with a small back-off) and picks up the queue.
If the loop task is *cancelled* (event-loop shutdown) the batcher closes: queued requests get
``BatcherClosed``. (cf. ray#66140: one exception in a batch loop hung every later request.)

Constraints: numpy + stdlib only (the model runtime is injected as a callable). A batcher is
bound to the event loop of its first ``submit``; call it only from that loop. Inputs are not
copied except by the one ``np.concatenate`` per multi-request or padded batch (a single,
bucket-sized request is passed to ``predict`` as is); results are views of the batch output.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from loopml.core.errors import InvalidInput, LoopMLError

__all__ = ["Batcher", "BatcherError", "QueueFull", "BatcherClosed", "default_buckets"]

log = logging.getLogger(__name__)

_MAX_BACKOFF_S = 1.0
_INLINE_MAX_ROWS = 4


class BatcherError(LoopMLError):
    """The batcher could not produce a result (bad model output, internal failure)."""

    code = "batcher_error"
    status = 500


class QueueFull(BatcherError):
    """Backpressure: accepting the request would exceed ``max_queue_rows`` (retry later)."""

    code = "queue_full"
    status = 503


class BatcherClosed(BatcherError):
    """The batcher is closed (endpoint shutting down or model version unloaded)."""

    code = "batcher_closed"
    status = 503


def default_buckets(max_batch_size: int) -> tuple[int, ...]:
    """Powers of two below ``max_batch_size``, plus ``max_batch_size`` itself."""
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _compatible(a: np.ndarray, b: np.ndarray) -> bool:
    """Can ``b`` be concatenated onto ``a`` without changing the batch's dtype or shape?"""
    if a.shape[1:] != b.shape[1:]:
        return False
    if a.dtype == b.dtype:
        return True
    # fixed-width strings of different widths concatenate to the wider one: fine for text models
    return a.dtype.kind == b.dtype.kind and a.dtype.kind in "US"


class _Request:
    __slots__ = ("rows", "n", "future", "arrival")

    def __init__(self, rows: np.ndarray, future: asyncio.Future, arrival: float) -> None:
        self.rows = rows
        self.n = rows.shape[0]
        self.future = future
        self.arrival = arrival


def _set_result(req: _Request, value: Any) -> None:
    if not req.future.done():
        req.future.set_result(value)


def _set_exception(req: _Request, exc: BaseException) -> None:
    if not req.future.done():
        req.future.set_exception(exc)


class Batcher:
    """Coalesce concurrent prediction requests into padded, bucket-sized batches.

    ``predict(x)`` gets an array of shape ``(bucket, ...)`` and must return an array with at least
    ``bucket`` rows along axis 0; row ``i`` of the output belongs to row ``i`` of the input.
    """

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch_size: int = 64,
        max_delay_ms: float = 2.0,
        buckets: Sequence[int] | None = None,
        max_queue_rows: int = 10_000,
        name: str = "",
        wait_only_for_announced: bool = False,
        inline_when_idle: bool = False,
        pipeline: bool = False,
    ) -> None:
        if not callable(predict):
            raise ValueError(f"predict must be callable, got {type(predict).__name__}")
        if not _is_int(max_batch_size) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        max_batch_size = int(max_batch_size)
        if (isinstance(max_delay_ms, bool) or not isinstance(max_delay_ms, (int, float, np.number))
                or not math.isfinite(max_delay_ms) or max_delay_ms < 0):
            raise ValueError(f"max_delay_ms must be a finite number >= 0, got {max_delay_ms!r}")
        if buckets is None:
            bucket_sizes = default_buckets(max_batch_size)
        else:
            bucket_sizes = tuple(buckets)
            if not bucket_sizes:
                raise ValueError("buckets must not be empty")
            for b in bucket_sizes:
                if not _is_int(b) or b < 1:
                    raise ValueError(f"buckets must be positive integers, got {b!r} in {list(buckets)!r}")
            bucket_sizes = tuple(int(b) for b in bucket_sizes)
            if any(x >= y for x, y in zip(bucket_sizes, bucket_sizes[1:])):
                raise ValueError(f"buckets must be strictly increasing, got {list(bucket_sizes)!r}")
            if bucket_sizes[-1] < max_batch_size:
                raise ValueError(f"the largest bucket ({bucket_sizes[-1]}) must be >= "
                                 f"max_batch_size ({max_batch_size}), got buckets {list(bucket_sizes)!r}")
        if not _is_int(max_queue_rows) or max_queue_rows < max_batch_size:
            raise ValueError(f"max_queue_rows must be an integer >= max_batch_size ({max_batch_size}), "
                             f"got {max_queue_rows!r}")
        if not isinstance(name, str):
            raise ValueError(f"name must be a string, got {name!r}")

        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_delay_s = float(max_delay_ms) / 1000.0
        self._buckets = bucket_sizes
        self._max_queue_rows = int(max_queue_rows)
        self._name = name
        # With this, a batch waits (up to max_delay) only while requests are known to be on
        # their way (``announce``d: headers read, body still arriving) — never for requests
        # that may not come, so a lone request runs at once (HTTP layer sets it).
        self._wait_announced = bool(wait_only_for_announced)
        self._announced = 0
        # A lone request with nothing queued or arriving runs on the event loop itself: the
        # hop to the worker thread and back (two wake-ups) costs more than a small predict,
        # and the loop has nothing else to do meanwhile.
        self._inline_when_idle = bool(inline_when_idle)
        self._n_inline = 0
        # pipeline: a batch takes at most half of the rows in the system (queued, announced,
        # awaited), so the event loop decodes and answers one half while the model runs the
        # other. Measured: seed CNN at 32 clients, 1,589 → 2,441 req/s (bench/serving.py).
        self._pipeline = bool(pipeline)
        self._unresolved_rows = 0

        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix=f"loopml-batcher-{name or 'model'}")
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._restart_handle: asyncio.TimerHandle | None = None
        self._closing = False
        self._restarts_in_row = 0
        self._errors_in_row = 0

        # counters (touched only on the event loop: no locks)
        self._queue_rows = 0
        self._n_requests = 0
        self._n_rows = 0
        self._n_batches = 0
        self._n_failed = 0
        self._n_rejected = 0
        self._n_isolation_retries = 0
        self._n_loop_errors = 0
        self._n_loop_restarts = 0
        self._histogram: dict[int, int] = {}

    # ----------------------------------------------------------------------------- public API
    @property
    def name(self) -> str:
        return self._name

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def max_delay_ms(self) -> float:
        return self._max_delay_s * 1000.0

    @property
    def buckets(self) -> tuple[int, ...]:
        return self._buckets

    @property
    def closed(self) -> bool:
        return self._closing

    def allow_inline(self, allowed: bool) -> None:
        """Whether lone small requests may run on the event loop (the host decides from the
        predict time it measured at warm-up: only a fast model may block the loop)."""
        self._inline_when_idle = bool(allowed)

    def announce(self) -> None:
        """A request for this batcher has started arriving (pair with ``submit(announced=True)``
        or ``withdraw()``)."""
        self._announced += 1

    def withdraw(self) -> None:
        """An announced request will not be submitted (bad input, client gone)."""
        self._announced -= 1

    async def submit(self, rows: np.ndarray, *, announced: bool = False) -> np.ndarray:
        """Predict ``rows`` (shape ``(n, ...)``, n ≥ 1); returns exactly n output rows, in order."""
        if announced:
            self._announced -= 1
        if self._closing:
            raise BatcherClosed(f"batcher {self._name!r} is closed", batcher=self._name)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            raise BatcherError(f"batcher {self._name!r} is bound to another event loop")
        if not isinstance(rows, np.ndarray):
            rows = np.asarray(rows)
        if rows.ndim < 1 or rows.shape[0] < 1:
            raise InvalidInput(f"a request needs at least one row (shape (n, ...), n >= 1), "
                               f"got shape {rows.shape}", shape=list(rows.shape))
        n = rows.shape[0]
        if n > self._max_queue_rows:
            raise InvalidInput(f"a request of {n} rows exceeds the batcher's queue capacity "
                               f"({self._max_queue_rows} rows)", rows=n, max_queue_rows=self._max_queue_rows)
        if self._queue_rows + n > self._max_queue_rows:
            self._n_rejected += 1
            raise QueueFull(f"batcher {self._name!r} queue is full ({self._queue_rows} rows waiting, "
                            f"max {self._max_queue_rows}); retry later",
                            queue_rows=self._queue_rows, max_queue_rows=self._max_queue_rows)
        if self._task is None and self._restart_handle is None:
            self._start_task()

        now = loop.time()
        self._n_requests += 1
        self._n_rows += n
        self._queue_rows += n
        self._unresolved_rows += n
        try:
            return await self._enqueue(rows, n, loop, now)
        finally:
            self._unresolved_rows -= n

    async def _enqueue(self, rows: np.ndarray, n: int, loop: asyncio.AbstractEventLoop,
                       now: float) -> np.ndarray:
        step = self._max_batch_size
        if n <= step:
            fut = loop.create_future()
            self._queue.append(_Request(rows, fut, now))
            self._wakeup.set()
            try:
                return await fut
            except asyncio.CancelledError:
                raise
            except BaseException:
                self._n_failed += 1
                raise

        # larger than a batch: queue pieces (views) back to back, concatenate their results
        futures = []
        for start in range(0, n, step):
            fut = loop.create_future()
            self._queue.append(_Request(rows[start:start + step], fut, now))
            futures.append(fut)
        self._wakeup.set()
        try:
            parts = await asyncio.gather(*futures)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._n_failed += 1
            for fut in futures:
                fut.cancel()  # pieces still queued are skipped by the loop
            raise
        return np.concatenate(parts)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics; ``batch_rows_histogram`` maps real rows per batch → count."""
        return {
            "name": self._name,
            "requests": self._n_requests,
            "rows": self._n_rows,
            "batches": self._n_batches,
            "failed_requests": self._n_failed,
            "rejected_requests": self._n_rejected,
            "queue_rows": self._queue_rows,
            "announced": self._announced,
            "inline_batches": self._n_inline,
            "unresolved_rows": self._unresolved_rows,
            "isolation_retries": self._n_isolation_retries,
            "loop_errors": self._n_loop_errors,
            "loop_restarts": self._n_loop_restarts,
            "batch_rows_histogram": dict(sorted(self._histogram.items())),
        }

    async def close(self, drain: bool = True) -> None:
        """Stop accepting requests; with ``drain`` finish the queue, else fail it with BatcherClosed.

        Idempotent. A batch already running in the worker always completes.
        """
        self._closing = True
        if not drain:
            self._fail_queued(f"batcher {self._name!r} was closed before this request ran")
        self._wakeup.set()
        if self._task is not None or self._restart_handle is not None:
            await self._stopped.wait()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> "Batcher":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return (f"Batcher(name={self._name!r}, max_batch_size={self._max_batch_size}, "
                f"max_delay_ms={self._max_delay_s * 1000:g}, buckets={self._buckets})")

    # ----------------------------------------------------------------------- loop supervision
    def _start_task(self) -> None:
        self._restart_handle = None
        assert self._loop is not None
        if self._task is not None:
            return
        task = self._loop.create_task(self._run(), name=f"loopml-batcher-{self._name or 'model'}")
        self._task = task
        task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task) -> None:
        if self._task is task:
            self._task = None
        if task.cancelled():
            # the event loop is shutting down (or someone cancelled us): nobody will run the
            # queue any more, so close and fail what waits rather than leave it hanging
            self._closing = True
            self._fail_queued(f"batcher {self._name!r} stopped: its loop task was cancelled")
            self._stopped.set()
            return
        exc = task.exception()  # also marks it retrieved
        if exc is None and self._closing and not self._queue:
            self._stopped.set()  # the normal end: closed and drained
            return
        # unexpected end: restart (the queue is intact; the batch in hand was resolved in `finally`)
        self._n_loop_restarts += 1
        log.error("batcher %r: batch loop ended unexpectedly; restarting", self._name,
                  exc_info=exc if exc is not None else None)
        assert self._loop is not None
        if self._loop.is_closed():
            return
        delay = 0.0 if self._restarts_in_row == 0 else min(0.01 * 2 ** self._restarts_in_row, _MAX_BACKOFF_S)
        self._restarts_in_row += 1
        self._restart_handle = self._loop.call_later(delay, self._start_task)

    def _fail_queued(self, message: str) -> None:
        queue = self._queue
        while queue:
            req = queue.popleft()
            self._queue_rows -= req.n
            _set_exception(req, BatcherClosed(message, batcher=self._name))

    # ------------------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        while True:
            batch: list[_Request] = []
            failure: BaseException | None = None
            try:
                if not await self._collect(batch):
                    return  # closing and nothing left
                await self._process(batch)
                self._restarts_in_row = 0
                self._errors_in_row = 0
            except asyncio.CancelledError:
                failure = BatcherClosed(f"batcher {self._name!r} stopped: its loop task was cancelled")
                raise
            except Exception as exc:
                self._n_loop_errors += 1
                self._errors_in_row += 1
                log.error("batcher %r: batch loop failed; resolving the batch and going on",
                          self._name, exc_info=exc)
                failure = BatcherError(f"batch loop failed: {type(exc).__name__}: {exc}",
                                       batcher=self._name)
                failure.__cause__ = exc
            finally:
                # nothing dequeued is ever left waiting
                for req in batch:
                    if not req.future.done():
                        _set_exception(req, failure if failure is not None else BatcherError(
                            "batch loop failed: request left unresolved", batcher=self._name))
            if self._errors_in_row:
                # back off only when failing repeatedly (a persistent bug must not spin the CPU)
                await asyncio.sleep(min(0.001 * 2 ** (self._errors_in_row - 1), _MAX_BACKOFF_S))

    async def _collect(self, batch: list[_Request]) -> bool:
        """Fill ``batch`` (in place, so the caller can resolve it whatever happens).

        Returns False when closing and the queue is empty.
        """
        queue = self._queue
        while True:
            while not queue:
                if self._closing:
                    return False
                self._wakeup.clear()
                await self._wakeup.wait()
            first = queue.popleft()
            self._queue_rows -= first.n
            if not first.future.done():  # skip requests whose client went away
                break
        batch.append(first)
        rows = first.n
        max_rows = self._max_batch_size
        if self._pipeline:
            max_rows = min(max_rows, max(first.n, (self._unresolved_rows + self._announced + 1) // 2))
        deadline = first.arrival + self._max_delay_s
        loop = self._loop
        assert loop is not None
        while True:
            while queue and rows < max_rows:
                nxt = queue[0]
                if nxt.future.done():
                    queue.popleft()
                    self._queue_rows -= nxt.n
                    continue
                if rows + nxt.n > max_rows or not _compatible(first.rows, nxt.rows):
                    return True  # the next request does not fit: the batch is as full as FIFO allows
                queue.popleft()
                self._queue_rows -= nxt.n
                batch.append(nxt)
                rows += nxt.n
            if rows >= max_rows or self._closing or loop.time() >= deadline:
                return True
            if self._wait_announced and self._announced <= 0:
                return True  # nobody else is on the way: waiting would only add latency
            self._wakeup.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wakeup.wait()
            except TimeoutError:
                pass  # one more pass takes whatever arrived, then the deadline check ends the batch

    async def _process(self, batch: list[_Request]) -> None:
        live = [req for req in batch if not req.future.done()]
        if not live:
            return
        total = 0
        for req in live:
            total += req.n
        x, padded = self._assemble(live, total)
        self._n_batches += 1
        self._histogram[total] = self._histogram.get(total, 0) + 1
        try:
            if (self._inline_when_idle and len(live) == 1 and total <= _INLINE_MAX_ROWS
                    and not self._queue and self._announced <= 0):
                self._n_inline += 1
                out = self._call_predict(x)
            else:
                out = await self._loop.run_in_executor(self._executor, self._call_predict, x)
        except Exception as exc:
            if len(live) == 1:
                _set_exception(live[0], exc)
            else:
                await self._isolate(live)
            return
        problem = self._check_output(out, padded, total)
        if problem is not None:
            for req in live:
                _set_exception(req, BatcherError(problem, batcher=self._name))
            return
        self._slice_results(live, out)

    async def _isolate(self, batch: list[_Request]) -> None:
        """The batch failed: run each request alone; only those that still fail get the error."""
        for req in batch:
            if req.future.done():
                continue
            self._n_isolation_retries += 1
            x, padded = self._assemble([req], req.n)
            try:
                out = await self._loop.run_in_executor(self._executor, self._call_predict, x)
            except Exception as exc:
                _set_exception(req, exc)
                continue
            problem = self._check_output(out, padded, req.n)
            if problem is not None:
                _set_exception(req, BatcherError(problem, batcher=self._name))
            else:
                _set_result(req, out[:req.n])

    # ------------------------------------------------------------------------------ helpers
    def _assemble(self, batch: list[_Request], total: int) -> tuple[np.ndarray, int]:
        """One array of the smallest bucket size ≥ total: concatenate once, pad with the last row."""
        padded = self._buckets[bisect.bisect_left(self._buckets, total)]
        pad = padded - total
        if len(batch) == 1 and pad == 0:
            return batch[0].rows, padded
        parts = [req.rows for req in batch]
        if pad:
            last = parts[-1][-1:]
            parts.append(np.broadcast_to(last, (pad,) + last.shape[1:]))
        return np.concatenate(parts), padded

    def _call_predict(self, x: np.ndarray) -> np.ndarray:
        """Runs in the worker thread. Anything not a plain Exception becomes a BatcherError, so it
        cannot escape into the event loop (SystemExit, KeyboardInterrupt, CancelledError) or break
        future bookkeeping (StopIteration)."""
        try:
            out = self._predict(x)
        except StopIteration as exc:
            raise BatcherError(f"predict raised StopIteration: {exc}") from exc
        except Exception:
            raise
        except BaseException as exc:
            raise BatcherError(f"predict raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(out, np.ndarray):
            out = np.asarray(out)
        return out

    def _check_output(self, out: np.ndarray, padded: int, real: int) -> str | None:
        if out.ndim < 1 or out.shape[0] < padded:
            got = "a scalar" if out.ndim < 1 else f"{out.shape[0]} rows"
            return (f"model {self._name!r}: predict returned {got} (shape {out.shape}) for a batch of "
                    f"{padded} rows ({real} real, {padded - real} padding); expected at least {padded}")
        return None

    def _slice_results(self, batch: list[_Request], out: np.ndarray) -> None:
        offset = 0
        for req in batch:
            end = offset + req.n
            _set_result(req, out[offset:end])
            offset = end
