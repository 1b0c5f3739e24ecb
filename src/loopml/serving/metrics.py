"""Prometheus ``/metrics`` for the data plane.

The request path only touches plain Python objects: ``EndpointStats.observe()`` increments a
dict entry and a list slot (no ``Counter.labels()`` lookup, no lock; it runs on the event loop).
Everything is turned into Prometheus metric families at scrape time by one custom collector in a
private ``CollectorRegistry`` (never the global one):

    loopml_requests_total{endpoint,variant,code}               counter
    loopml_request_errors_total{endpoint,variant}              counter   (status >= 400)
    loopml_request_latency_seconds{endpoint,variant}           histogram (LATENCY_BUCKETS_S)
    loopml_batch_size_rows{endpoint,variant}                   histogram (real rows per batch)
    loopml_batches_total{endpoint,variant}                     counter
    loopml_batch_rows_total{endpoint,variant}                  counter
    loopml_batcher_rejected_total{endpoint,variant}            counter   (queue full)
    loopml_queue_depth_rows{endpoint,variant}                  gauge
    loopml_capture_records_total / _dropped_total / _errors_total   counters
    loopml_capture_pending_records                             gauge
    loopml_shadow_comparisons_total{endpoint,result}           counter   (result: agree|disagree)

Batcher numbers come from sources registered with ``add_source(fn)``: ``fn()`` yields
``(endpoint, variant, batcher.stats())`` at scrape time (several batchers of one endpoint and
variant — e.g. two model versions during a rollout — are summed). A ``max_batch_size`` entry in
that dict sets the batch-size buckets to 1, 2, 4, …, max_batch_size; without it they are the
powers of two up to 1024.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from loopml.serving.batcher import default_buckets

__all__ = ["EndpointStats", "ServingMetrics", "LATENCY_BUCKETS_S"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
_DEFAULT_BATCH_BUCKETS: tuple[int, ...] = tuple(2**i for i in range(11))  # 1 … 1024

BatcherSource = Callable[[], Iterable[tuple[str, str, dict[str, Any]]]]
CaptureSource = Callable[[], dict[str, int]]


class EndpointStats:
    """Request counters of one (endpoint, variant). Plain Python; touch it only on the event loop."""

    __slots__ = ("endpoint", "variant", "codes", "errors", "latency_counts", "latency_sum")

    def __init__(self, endpoint: str, variant: str) -> None:
        self.endpoint = endpoint
        self.variant = variant
        self.codes: dict[int, int] = {}
        self.errors = 0
        # latency_counts[i]: observations in (bucket[i-1], bucket[i]]; the last slot is > the last bucket
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0

    def observe(self, status: int, latency_s: float) -> None:
        codes = self.codes
        codes[status] = codes.get(status, 0) + 1
        if status >= 400:
            self.errors += 1
        self.latency_counts[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
        self.latency_sum += latency_s

    @property
    def requests(self) -> int:
        return sum(self.codes.values())

    def __repr__(self) -> str:
        return f"EndpointStats({self.endpoint!r}, {self.variant!r}, requests={self.requests})"


def _cumulative(bounds: Iterable[float], counts: list[int]) -> list[tuple[str, float]]:
    """[(le, cumulative count), …, ("+Inf", total)] from per-bucket counts (len(bounds) + 1)."""
    out = []
    running = 0
    for bound, n in zip(bounds, counts):
        running += n
        out.append((_le(bound), running))
    running += counts[-1]
    out.append(("+Inf", running))
    return out


def _le(bound: float) -> str:
    return repr(float(bound))


class ServingMetrics:
    """All data-plane metrics of one serving process; ``render()`` is the ``/metrics`` body."""

    def __init__(self) -> None:
        self._stats: dict[tuple[str, str], EndpointStats] = {}
        self._sources: list[BatcherSource] = []
        self._capture_source: CaptureSource | None = None
        self._shadow: dict[str, list[int]] = {}  # endpoint -> [agree, disagree]
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    # ---------------------------------------------------------------------- request path
    def stats_for(self, endpoint: str, variant: str) -> EndpointStats:
        """The (cached) stats of one endpoint variant; keep the object, call ``observe`` on it."""
        stats = self._stats.get((endpoint, variant))
        if stats is None:
            stats = self._stats[(endpoint, variant)] = EndpointStats(endpoint, variant)
        return stats

    def totals(self) -> dict[str, tuple[int, float]]:
        """endpoint → (requests, latency seconds summed) over its variants: a node's load report
        (serving/node.py) takes differences of two of these. Off the request path."""
        out: dict[str, tuple[int, float]] = {}
        for (endpoint, _), stats in list(self._stats.items()):
            n, total = out.get(endpoint, (0, 0.0))
            out[endpoint] = (n + stats.requests, total + stats.latency_sum)
        return out

    def count_shadow(self, endpoint: str, agree: bool) -> None:
        counts = self._shadow.get(endpoint)
        if counts is None:
            counts = self._shadow[endpoint] = [0, 0]
        counts[0 if agree else 1] += 1

    # ------------------------------------------------------------------------- lifecycle
    def remove_endpoint(self, endpoint: str) -> None:
        """Forget an endpoint's request and shadow series (its batcher source is the caller's)."""
        for key in [k for k in list(self._stats) if k[0] == endpoint]:
            self._stats.pop(key, None)
        self._shadow.pop(endpoint, None)

    def add_source(self, fn: BatcherSource) -> None:
        """``fn()`` yields ``(endpoint, variant, batcher.stats())`` at every scrape."""
        self._sources.append(fn)

    def remove_source(self, fn: BatcherSource) -> None:
        try:
            self._sources.remove(fn)
        except ValueError:
            pass

    def set_capture_source(self, fn: CaptureSource | None) -> None:
        """``fn()`` returns ``CaptureWriter.stats()`` (captured, dropped, pending, errors); None unsets."""
        self._capture_source = fn

    # ---------------------------------------------------------------------------- scrape
    def render(self) -> tuple[bytes, str]:
        """(Prometheus text exposition, its content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def collect(self) -> Iterator[Metric]:
        labels = ["endpoint", "variant"]
        requests = CounterMetricFamily("loopml_requests", "Requests answered, by HTTP status code.",
                                       labels=["endpoint", "variant", "code"])
        errors = CounterMetricFamily("loopml_request_errors", "Requests answered with a status >= 400.",
                                     labels=labels)
        latency = HistogramMetricFamily("loopml_request_latency_seconds",
                                        "Request latency in seconds, as seen by the server.", labels=labels)
        for (endpoint, variant), st in sorted(list(self._stats.items())):
            codes = dict(st.codes)
            counts = list(st.latency_counts)
            for code, n in sorted(codes.items()):
                requests.add_metric([endpoint, variant, str(code)], n)
            errors.add_metric([endpoint, variant], st.errors)
            latency.add_metric([endpoint, variant], _cumulative(LATENCY_BUCKETS_S, counts), st.latency_sum)
        yield requests
        yield errors
        yield latency
        yield from self._collect_batchers(labels)
        yield from self._collect_capture()
        shadow = CounterMetricFamily("loopml_shadow_comparisons",
                                     "Shadow predictions compared with the live ones.",
                                     labels=["endpoint", "result"])
        for endpoint, (agree, disagree) in sorted(list(self._shadow.items())):
            shadow.add_metric([endpoint, "agree"], agree)
            shadow.add_metric([endpoint, "disagree"], disagree)
        yield shadow

    def _collect_batchers(self, labels: list[str]) -> Iterator[Metric]:
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for fn in list(self._sources):
            try:
                for endpoint, variant, st in fn():
                    acc = merged.setdefault((endpoint, variant), {
                        "batches": 0, "rows": 0, "rejected": 0, "queue_rows": 0, "hist": {},
                        "max_batch_size": 0})
                    acc["batches"] += int(st.get("batches", 0))
                    acc["rows"] += int(st.get("rows", 0))
                    acc["rejected"] += int(st.get("rejected_requests", 0))
                    acc["queue_rows"] += int(st.get("queue_rows", 0))
                    acc["max_batch_size"] = max(acc["max_batch_size"], int(st.get("max_batch_size") or 0))
                    hist = acc["hist"]
                    for rows, n in (st.get("batch_rows_histogram") or {}).items():
                        hist[int(rows)] = hist.get(int(rows), 0) + int(n)
            except Exception:  # noqa: BLE001 - a broken source must not break the scrape
                log.exception("metrics: batcher stats source %r failed", fn)
        size = HistogramMetricFamily("loopml_batch_size_rows", "Real (unpadded) rows per predict batch.",
                                     labels=labels)
        batches = CounterMetricFamily("loopml_batches", "Predict batches run.", labels=labels)
        rows_total = CounterMetricFamily("loopml_batch_rows", "Rows submitted to the batcher.", labels=labels)
        rejected = CounterMetricFamily("loopml_batcher_rejected",
                                       "Requests refused because the batch queue was full.", labels=labels)
        depth = GaugeMetricFamily("loopml_queue_depth_rows", "Rows waiting in the batch queue.", labels=labels)
        for (endpoint, variant), acc in sorted(merged.items()):
            lv = [endpoint, variant]
            bounds = _batch_buckets(acc["max_batch_size"])
            counts = [0] * (len(bounds) + 1)
            total_rows = 0
            for rows, n in acc["hist"].items():
                counts[bisect.bisect_left(bounds, rows)] += n
                total_rows += rows * n
            size.add_metric(lv, _cumulative(bounds, counts), total_rows)
            batches.add_metric(lv, acc["batches"])
            rows_total.add_metric(lv, acc["rows"])
            rejected.add_metric(lv, acc["rejected"])
            depth.add_metric(lv, acc["queue_rows"])
        yield from (size, batches, rows_total, rejected, depth)

    def _collect_capture(self) -> Iterator[Metric]:
        fn = self._capture_source
        if fn is None:
            return
        try:
            st = fn()
        except Exception:  # noqa: BLE001
            log.exception("metrics: capture stats source %r failed", fn)
            return
        for name, key, text in (("loopml_capture_records", "captured", "Captured records written."),
                                ("loopml_capture_dropped", "dropped", "Captured records dropped."),
                                ("loopml_capture_errors", "errors", "Failed capture writes (retried).")):
            yield CounterMetricFamily(name, text, value=int(st.get(key, 0)))
        yield GaugeMetricFamily("loopml_capture_pending_records", "Captured records not yet written.",
                                value=int(st.get("pending", 0)))


def _batch_buckets(max_batch_size: int) -> tuple[int, ...]:
    # the batcher's own bucket sizes: each histogram bucket is a padded batch shape
    return default_buckets(max_batch_size) if max_batch_size > 0 else _DEFAULT_BATCH_BUCKETS


class _Collector:
    def __init__(self, metrics: ServingMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return self._metrics.collect()
