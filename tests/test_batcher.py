"""The adaptive batcher (loopml.serving.batcher): coalescing, padding, failure isolation, a loop
that never dies, backpressure and shutdown. No timing assertions and no sleeps for correctness:
a predict that blocks on a threading.Event forces requests to queue up behind a running batch."""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loopml.core.errors import InvalidInput
from loopml.serving.batcher import (
    Batcher,
    BatcherClosed,
    BatcherError,
    QueueFull,
    default_buckets,
)

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------------------------ helpers
def run(coro):
    return asyncio.run(coro)


def ids(start: int, n: int, width: int = 2) -> np.ndarray:
    """n rows whose first column is a unique row id (so mixed-up results are detected)."""
    rows = np.zeros((n, width), dtype=np.float64)
    rows[:, 0] = np.arange(start, start + n)
    rows[:, 1:] = 0.5
    return rows


def double(x: np.ndarray) -> np.ndarray:
    return x * 2


class Recorder:
    """predict wrapper: records every input shape, the thread it ran on, and can block."""

    def __init__(self, fn: Callable[[np.ndarray], Any] = double, *, blocking: bool = False) -> None:
        self.fn = fn
        self.shapes: list[tuple[int, ...]] = []
        self.inputs: list[np.ndarray] = []
        self.threads: set[int] = set()
        self.entered = threading.Event()
        self.release = threading.Event()
        if not blocking:
            self.release.set()

    def __call__(self, x: np.ndarray) -> Any:
        self.shapes.append(x.shape)
        self.inputs.append(np.array(x, copy=True))
        self.threads.add(threading.get_ident())
        self.entered.set()
        if not self.release.wait(20):
            raise RuntimeError("test predict was never released")
        return self.fn(x)


async def wait_entered(rec: Recorder) -> None:
    assert await asyncio.to_thread(rec.entered.wait, 20)


async def wait_queued(batcher: Batcher, rows: int) -> None:
    while batcher.stats()["queue_rows"] < rows:
        await asyncio.sleep(0)


async def pile_up(batcher: Batcher, rec: Recorder, requests: list[np.ndarray]):
    """Block the worker on a 1-row request, queue `requests` behind it, release.

    Returns (first_task, tasks) — the batch after the blocker is built from the piled-up queue."""
    first = asyncio.create_task(batcher.submit(ids(10_000, 1)))
    await wait_entered(rec)
    tasks = [asyncio.create_task(batcher.submit(r)) for r in requests]
    await wait_queued(batcher, sum(len(r) for r in requests))
    return first, tasks


# ------------------------------------------------------------------------------- coalescing
def test_many_concurrent_single_rows_each_get_their_own_row():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch_size=16, max_delay_ms=1)
        reqs = [ids(i, 1) for i in range(200)]
        outs = await asyncio.gather(*(b.submit(r) for r in reqs))
        for r, out in zip(reqs, outs):
            np.testing.assert_array_equal(out, r * 2)
        stats = b.stats()
        await b.close()
        return stats

    stats = run(main())
    hist = stats["batch_rows_histogram"]
    assert max(hist) <= 16
    assert sum(size * count for size, count in hist.items()) == 200
    assert stats["requests"] == 200 and stats["rows"] == 200 and stats["failed_requests"] == 0
    assert stats["batches"] == sum(hist.values()) < 200  # gather queues them together: coalesced
    assert all(shape[0] in default_buckets(16) for shape in rec.shapes)


def test_requests_queued_behind_a_busy_worker_are_coalesced():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=64, max_delay_ms=0)
        reqs = [ids(100 * i, 1) for i in range(10)]
        first, tasks = await pile_up(b, rec, reqs)
        rec.release.set()
        await first
        for r, out in zip(reqs, await asyncio.gather(*tasks)):
            np.testing.assert_array_equal(out, r * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["batch_rows_histogram"] == {1: 1, 10: 1}
    assert stats["batches"] == 2
    assert rec.shapes == [(1, 2), (16, 2)]  # 10 real rows padded to the bucket 16


def test_batches_never_exceed_max_batch_size_rows():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=8, max_delay_ms=0)
        reqs = [ids(100 * i, 3) for i in range(6)]  # 18 rows: 3+3 per batch (a third would be 9)
        first, tasks = await pile_up(b, rec, reqs)
        rec.release.set()
        await first
        for r, out in zip(reqs, await asyncio.gather(*tasks)):
            np.testing.assert_array_equal(out, r * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["batch_rows_histogram"] == {1: 1, 6: 3}


def test_multi_row_requests_are_kept_whole_and_in_order():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch_size=64, max_delay_ms=1)
        sizes = [1, 5, 17, 64, 3, 150, 2, 129]
        reqs, start = [], 0
        for n in sizes:
            reqs.append(ids(start, n, width=3))
            start += n
        outs = await asyncio.gather(*(b.submit(r) for r in reqs))
        for r, out in zip(reqs, outs):
            assert out.shape == r.shape
            np.testing.assert_array_equal(out, r * 2)
        big = ids(0, 150)
        np.testing.assert_array_equal(await b.submit(big), big * 2)  # 64 + 64 + 22 rows, in order
        await b.close()
        return b.stats()

    stats = run(main())
    assert max(stats["batch_rows_histogram"]) <= 64
    assert all(shape[0] in default_buckets(64) for shape in rec.shapes)
    assert stats["requests"] == 9 and stats["rows"] == sum([1, 5, 17, 64, 3, 150, 2, 129, 150])


def test_requests_with_other_trailing_shape_start_a_new_batch():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=64, max_delay_ms=0)
        reqs = [ids(0, 2, width=2), ids(10, 2, width=3), ids(20, 1, width=3),
                np.ones((1, 2), dtype=np.float32)]
        first, tasks = await pile_up(b, rec, reqs)
        rec.release.set()
        await first
        for r, out in zip(reqs, await asyncio.gather(*tasks)):
            assert out.dtype == r.dtype
            np.testing.assert_array_equal(out, r * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["batch_rows_histogram"] == {1: 2, 2: 1, 3: 1}
    assert [s[1] for s in rec.shapes] == [2, 2, 3, 2]


# ---------------------------------------------------------------------------------- padding
def test_predict_sees_only_bucket_sizes_padded_with_the_last_row():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch_size=10, max_delay_ms=0, buckets=[4, 10])
        for n in (1, 3, 4, 5, 10, 23):
            r = ids(0, n)
            np.testing.assert_array_equal(await b.submit(r), r * 2)
        await b.close()

    run(main())
    assert [s[0] for s in rec.shapes] == [4, 4, 4, 10, 10, 10, 10, 4]  # 23 = 10 + 10 + 3
    padded = rec.inputs[1]  # the 3-row request padded to 4
    np.testing.assert_array_equal(padded[:3], ids(0, 3))
    np.testing.assert_array_equal(padded[3], padded[2])


def test_default_buckets():
    assert default_buckets(1) == (1,)
    assert default_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    assert default_buckets(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert Batcher(double, max_batch_size=100).buckets == default_buckets(100)


def test_predict_runs_in_one_dedicated_worker_thread():
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch_size=4, max_delay_ms=0)
        await asyncio.gather(*(b.submit(ids(i, 1 + i % 3)) for i in range(40)))
        await b.close()

    run(main())
    assert len(rec.threads) == 1 and threading.get_ident() not in rec.threads


# --------------------------------------------------------------------------------- failures
class Poisoned(ValueError):
    pass


def poison_aware(x: np.ndarray) -> np.ndarray:
    if (x[:, 0] < 0).any():
        raise Poisoned("poison row in the batch")
    return x * 2


def test_only_the_poisoned_request_fails_with_the_original_exception():
    rec = Recorder(poison_aware, blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=64, max_delay_ms=0)
        reqs = [ids(0, 2), ids(10, 1), ids(-5, 1), ids(20, 3)]
        first, tasks = await pile_up(b, rec, reqs)
        rec.release.set()
        await first
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[2], Poisoned)
        for i in (0, 1, 3):
            np.testing.assert_array_equal(results[i], reqs[i] * 2)
        # a single-request batch gets its exception directly, and the next batch is fine
        with pytest.raises(Poisoned):
            await b.submit(ids(-1, 1))
        np.testing.assert_array_equal(await b.submit(ids(7, 1)), ids(7, 1) * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["batch_rows_histogram"][7] == 1  # the four requests were one batch
    assert stats["isolation_retries"] == 4
    assert stats["failed_requests"] == 2
    assert stats["loop_errors"] == 0


def test_wrong_number_of_output_rows_fails_that_batch_only():
    calls = {"n": 0}

    def short_once(x: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        return x[:-1] * 2 if calls["n"] == 2 else x * 2

    rec = Recorder(short_once, blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=64, max_delay_ms=0)
        reqs = [ids(0, 1), ids(10, 2), ids(20, 1)]
        first, tasks = await pile_up(b, rec, reqs)
        rec.release.set()
        await first
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for res in results:
            assert type(res) is BatcherError
            assert "predict returned 3 rows" in str(res) and "at least 4" in str(res)
        np.testing.assert_array_equal(await b.submit(ids(5, 3)), ids(5, 3) * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["failed_requests"] == 3 and stats["loop_errors"] == 0


def test_predict_returning_a_scalar_or_raising_base_exceptions_does_not_kill_the_loop():
    def weird(x: np.ndarray) -> Any:
        tag = x[0, 0]
        if tag == 1:
            return 3.0
        if tag == 2:
            raise KeyboardInterrupt("in the worker")
        if tag == 3:
            raise StopIteration
        return x * 2

    async def main():
        b = Batcher(weird, max_batch_size=4, max_delay_ms=0)
        for tag, needle in ((1, "a scalar"), (2, "KeyboardInterrupt"), (3, "StopIteration")):
            with pytest.raises(BatcherError, match=needle):
                await b.submit(ids(tag, 1))
        np.testing.assert_array_equal(await b.submit(ids(5, 2)), ids(5, 2) * 2)
        await b.close()

    run(main())


# ------------------------------------------------------------------- the loop never dies
def test_loop_survives_a_failure_in_its_own_slicing_code():
    async def main():
        b = Batcher(double, max_batch_size=8, max_delay_ms=0)
        original = b._slice_results
        state = {"failed": False}

        def broken_once(batch, out):
            if not state["failed"]:
                state["failed"] = True
                raise IndexError("injected")
            return original(batch, out)

        b._slice_results = broken_once
        with pytest.raises(BatcherError, match="batch loop failed: IndexError: injected"):
            await b.submit(ids(0, 2))
        outs = await asyncio.gather(*(b.submit(ids(i, 1)) for i in range(20)))
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, ids(i, 1) * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["loop_errors"] == 1 and stats["loop_restarts"] == 0


def test_loop_survives_a_failure_while_collecting():
    async def main():
        b = Batcher(double, max_batch_size=8, max_delay_ms=0)
        original = b._collect
        state = {"failed": False}

        async def broken_once(batch):
            ok = await original(batch)
            if not state["failed"]:
                state["failed"] = True
                raise RuntimeError("injected after dequeue")
            return ok

        b._collect = broken_once
        with pytest.raises(BatcherError, match="batch loop failed"):
            await b.submit(ids(0, 1))
        np.testing.assert_array_equal(await b.submit(ids(1, 1)), ids(1, 1) * 2)
        await b.close()

    run(main())


def test_loop_task_is_restarted_if_it_ever_exits():
    async def main():
        b = Batcher(double, max_batch_size=8, max_delay_ms=0)
        original = b._run
        state = {"calls": 0}

        async def dies_once():
            state["calls"] += 1
            if state["calls"] == 1:
                raise RuntimeError("injected: the loop task dies")
            await original()

        b._run = dies_once
        outs = await asyncio.gather(*(b.submit(ids(i, 1)) for i in range(5)))
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, ids(i, 1) * 2)
        await b.close()
        return b.stats(), state["calls"]

    stats, calls = run(main())
    assert calls == 2 and stats["loop_restarts"] == 1


def test_cancelled_loop_task_fails_waiting_requests_instead_of_hanging():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=4, max_delay_ms=0)
        first, tasks = await pile_up(b, rec, [ids(0, 1), ids(1, 1)])
        b._task.cancel()
        for t in [first, *tasks]:
            with pytest.raises(BatcherClosed):
                await t
        with pytest.raises(BatcherClosed):
            await b.submit(ids(2, 1))
        rec.release.set()
        await b.close()

    run(main())


# ----------------------------------------------------------------- backpressure, shutdown
def test_queue_full_when_max_queue_rows_would_be_exceeded():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=2, max_delay_ms=0, max_queue_rows=4)
        first, tasks = await pile_up(b, rec, [ids(0, 2), ids(2, 2)])  # the blocker is in flight
        assert b.stats()["queue_rows"] == 4
        with pytest.raises(QueueFull, match="queue is full") as info:
            await b.submit(ids(9, 1))
        assert isinstance(info.value, BatcherError) and info.value.status == 503
        with pytest.raises(InvalidInput, match="exceeds the batcher's queue capacity"):
            await b.submit(ids(0, 5))
        rec.release.set()
        await first
        await asyncio.gather(*tasks)
        np.testing.assert_array_equal(await b.submit(ids(0, 3)), ids(0, 3) * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["rejected_requests"] == 1 and stats["queue_rows"] == 0


def test_submit_rejects_requests_without_rows():
    async def main():
        b = Batcher(double)
        for bad in (np.float64(1.0), np.zeros((0, 3))):
            with pytest.raises(InvalidInput, match="at least one row"):
                await b.submit(bad)
        np.testing.assert_array_equal(await b.submit([[1.0, 2.0]]), [[2.0, 4.0]])  # array-like ok
        await b.close()

    run(main())


def test_closed_batcher_refuses_and_close_is_idempotent():
    async def main():
        b = Batcher(double)
        await b.submit(ids(0, 1))
        await b.close()
        await b.close()
        await b.close(drain=False)
        with pytest.raises(BatcherClosed):
            await b.submit(ids(0, 1))
        assert b.closed
        never_used = Batcher(double)
        await never_used.close()
        with pytest.raises(BatcherClosed):
            await never_used.submit(ids(0, 1))

    run(main())


def test_close_with_drain_completes_queued_work():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=2, max_delay_ms=0)
        reqs = [ids(10 * i, 1 + i % 2) for i in range(6)]
        first, tasks = await pile_up(b, rec, reqs)
        closing = asyncio.create_task(b.close(drain=True))
        while not b.closed:
            await asyncio.sleep(0)
        with pytest.raises(BatcherClosed):
            await b.submit(ids(0, 1))
        rec.release.set()
        await closing
        await first
        for r, out in zip(reqs, await asyncio.gather(*tasks)):
            np.testing.assert_array_equal(out, r * 2)

    run(main())


def test_close_without_drain_fails_queued_work():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=2, max_delay_ms=0)
        first, tasks = await pile_up(b, rec, [ids(0, 1), ids(1, 2), ids(3, 1)])
        closing = asyncio.create_task(b.close(drain=False))
        for t in tasks:
            with pytest.raises(BatcherClosed, match="closed before this request ran"):
                await t
        rec.release.set()
        await closing
        np.testing.assert_array_equal(await first, ids(10_000, 1) * 2)  # in flight: completes
        return b.stats()

    stats = run(main())
    assert stats["failed_requests"] == 3 and stats["queue_rows"] == 0


def test_a_cancelled_client_does_not_break_the_others():
    rec = Recorder(blocking=True)

    async def main():
        b = Batcher(rec, max_batch_size=64, max_delay_ms=0)
        reqs = [ids(0, 1), ids(10, 2), ids(20, 1), ids(30, 150)]
        first, tasks = await pile_up(b, rec, reqs)
        first.cancel()  # in flight
        tasks[1].cancel()  # queued
        tasks[3].cancel()  # queued, split into pieces
        rec.release.set()
        results = await asyncio.gather(first, *tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert isinstance(results[2], asyncio.CancelledError)
        assert isinstance(results[4], asyncio.CancelledError)
        np.testing.assert_array_equal(results[1], reqs[0] * 2)
        np.testing.assert_array_equal(results[3], reqs[2] * 2)
        np.testing.assert_array_equal(await b.submit(ids(5, 1)), ids(5, 1) * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    assert stats["queue_rows"] == 0 and stats["failed_requests"] == 0
    # the cancelled requests never reached predict: the blocker, then the two live 1-row requests
    assert stats["batch_rows_histogram"] == {1: 2, 2: 1}


def test_async_context_manager_closes():
    async def main():
        async with Batcher(double, name="m:1") as b:
            np.testing.assert_array_equal(await b.submit(ids(0, 1)), ids(0, 1) * 2)
        assert b.closed and b.stats()["name"] == "m:1"

    run(main())


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1, got 0"),
        ({"max_batch_size": 2.5}, "max_batch_size .* got 2.5"),
        ({"max_batch_size": True}, "max_batch_size .* got True"),
        ({"max_delay_ms": -1}, "max_delay_ms must be a finite number >= 0, got -1"),
        ({"max_delay_ms": float("nan")}, "max_delay_ms .* got nan"),
        ({"max_delay_ms": float("inf")}, "max_delay_ms .* got inf"),
        ({"buckets": []}, "buckets must not be empty"),
        ({"buckets": [0, 64]}, r"positive integers, got 0 in \[0, 64\]"),
        ({"buckets": [8, 4, 64]}, r"strictly increasing, got \[8, 4, 64\]"),
        ({"buckets": [8, 8, 64]}, "strictly increasing"),
        ({"buckets": [1.5, 64]}, "positive integers, got 1.5"),
        ({"buckets": [8, 32]}, r"largest bucket \(32\) must be >= max_batch_size \(64\)"),
        ({"max_queue_rows": 10}, r"max_queue_rows must be an integer >= max_batch_size \(64\), got 10"),
        ({"name": 3}, "name must be a string"),
    ],
)
def test_argument_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Batcher(double, **kwargs)


def test_predict_must_be_callable():
    with pytest.raises(ValueError, match="predict must be callable"):
        Batcher("model.onnx")  # type: ignore[arg-type]


def test_the_module_imports_no_model_runtime():
    import subprocess
    import sys

    code = ("import sys, loopml.serving.batcher; "
            "bad = [m for m in ('keras', 'tensorflow', 'onnxruntime') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# ------------------------------------------------------------------------------ property test
@st.composite
def configs(draw):
    max_batch = draw(st.integers(1, 24))
    if draw(st.booleans()):
        buckets = None
        allowed = default_buckets(max_batch)
    else:
        small = draw(st.sets(st.integers(1, max_batch), max_size=4))
        top = draw(st.integers(max_batch, max_batch + 8))
        allowed = tuple(sorted(small | {top}))
        buckets = list(allowed)
    sizes = draw(st.lists(st.integers(1, max_batch), min_size=1, max_size=30))
    extra = draw(st.one_of(st.none(), st.integers(max_batch + 1, 3 * max_batch + 1)))
    if extra is not None:
        sizes.append(extra)  # one request larger than a batch
    delay = draw(st.sampled_from([0.0, 0.5]))
    return max_batch, buckets, allowed, sizes, delay


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_property_every_request_gets_exactly_its_rows(config):
    max_batch, buckets, allowed, sizes, delay = config
    rec = Recorder()

    async def main():
        b = Batcher(rec, max_batch_size=max_batch, max_delay_ms=delay, buckets=buckets)
        reqs, start = [], 0
        for n in sizes:
            reqs.append(ids(start, n))
            start += n
        outs = await asyncio.gather(*(b.submit(r) for r in reqs))
        for r, out in zip(reqs, outs):
            assert out.shape == r.shape
            np.testing.assert_array_equal(out, r * 2)
        await b.close()
        return b.stats()

    stats = run(main())
    hist = stats["batch_rows_histogram"]
    assert max(hist) <= max_batch
    assert sum(size * count for size, count in hist.items()) == sum(sizes)
    assert len(rec.shapes) == stats["batches"] == sum(hist.values())
    for shape in rec.shapes:
        assert shape[0] in allowed and shape[0] <= allowed[-1]
    # per call: real rows = distinct row ids (padding repeats the last row); the bucket is the
    # smallest allowed size >= the real rows
    for x in rec.inputs:
        real = len(np.unique(x[:, 0]))
        assert real <= max_batch
        assert x.shape[0] == min(size for size in allowed if size >= real)
        assert (x[real:] == x[real - 1]).all()


def test_pipeline_batches_take_at_most_half_of_the_rows_in_flight():
    """With ``pipeline`` a batch never swallows every waiting request: the event loop decodes
    and answers one half while the model runs the other."""
    sizes: list[int] = []

    def predict(x: np.ndarray) -> np.ndarray:
        sizes.append(len(x))
        return np.zeros((len(x), 2), dtype=np.float32)

    async def run() -> None:
        batcher = Batcher(predict, max_batch_size=64, max_delay_ms=50, buckets=range(1, 65),
                          pipeline=True)
        rows = np.ones((1, 3), dtype=np.float32)
        out = await asyncio.gather(*[batcher.submit(rows) for _ in range(32)])
        assert len(out) == 32
        await batcher.close()

    asyncio.run(run())
    assert sum(sizes) == 32 and max(sizes) <= 16, sizes
