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

Several serving workers (``SharedMetrics``, the supervisor's ``--metrics-dir``): each worker also
keeps its numbers in prometheus_client's multiprocess files in that folder (``counter_PID.db``,
``histogram_PID.db``, ``gauge_livesum_PID.db``), and ``/metrics`` — whichever worker answers it —
is ``MultiProcessCollector``'s merge of every file: counters and histograms summed over all
workers, alive or dead (a worker's totals outlive it), gauges summed over the live ones (the
supervisor calls ``mark_process_dead`` when it reaps a worker). Request and shadow counters are
written to the worker's file on the request path (a few mmap slot writes, no lookup beyond a
cached key), so a ``kill -9`` loses none of them; batcher and capture-writer numbers are copied
from the in-process sources every second and at each scrape (a killed worker's last second of
them can be missing). Values are absolute per worker; a series that disappears in one worker
(an unloaded version's batcher, a deleted endpoint) is written as 0 there.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_dead
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from loopml.serving.batcher import default_buckets

__all__ = ["EndpointStats", "ServingMetrics", "SharedMetrics", "LATENCY_BUCKETS_S", "mark_process_dead"]

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)
_DEFAULT_BATCH_BUCKETS: tuple[int, ...] = tuple(2**i for i in range(11))  # 1 … 1024

BatcherSource = Callable[[], Iterable[tuple[str, str, dict[str, Any]]]]
CaptureSource = Callable[[], dict[str, int]]

_REQUESTS_HELP = "Requests answered, by HTTP status code."
_ERRORS_HELP = "Requests answered with a status >= 400."
_LATENCY_HELP = "Request latency in seconds, as seen by the server."
_SHADOW_HELP = "Shadow predictions compared with the live ones."
_LATENCY_LE = [_le_ for _le_ in (*(repr(float(b)) for b in LATENCY_BUCKETS_S), "+Inf")]


class EndpointStats:
    """Request counters of one (endpoint, variant). Plain Python; touch it only on the event loop."""

    __slots__ = ("endpoint", "variant", "codes", "errors", "latency_counts", "latency_sum", "shared",
                 "keys")

    def __init__(self, endpoint: str, variant: str, shared: "SharedMetrics | None" = None) -> None:
        self.endpoint = endpoint
        self.variant = variant
        self.codes: dict[int, int] = {}
        self.errors = 0
        # latency_counts[i]: observations in (bucket[i-1], bucket[i]]; the last slot is > the last bucket
        self.latency_counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum = 0.0
        self.shared = shared
        self.keys = shared.request_keys(endpoint, variant) if shared is not None else None
        if shared is not None:
            shared.declare(self)

    def observe(self, status: int, latency_s: float) -> None:
        codes = self.codes
        n = codes[status] = codes.get(status, 0) + 1
        if status >= 400:
            self.errors += 1
        i = bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)
        self.latency_counts[i] += 1
        self.latency_sum += latency_s
        if self.shared is not None:
            self.shared.observed(self, status, n, i)

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

    def __init__(self, shared: "SharedMetrics | None" = None) -> None:
        self._stats: dict[tuple[str, str], EndpointStats] = {}
        self._sources: list[BatcherSource] = []
        self._capture_source: CaptureSource | None = None
        self._shadow: dict[str, list[int]] = {}  # endpoint -> [agree, disagree]
        self.shared = shared
        self.registry = CollectorRegistry(auto_describe=False)
        if shared is None:
            self.registry.register(_Collector(self))
        else:  # every worker's files, merged (this one's included)
            MultiProcessCollector(self.registry, path=str(shared.path))

    # ---------------------------------------------------------------------- request path
    def stats_for(self, endpoint: str, variant: str) -> EndpointStats:
        """The (cached) stats of one endpoint variant; keep the object, call ``observe`` on it."""
        stats = self._stats.get((endpoint, variant))
        if stats is None:
            stats = self._stats[(endpoint, variant)] = EndpointStats(endpoint, variant, self.shared)
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
        i = 0 if agree else 1
        counts[i] += 1
        if self.shared is not None:
            self.shared.shadow(endpoint, i, counts[i])

    # ------------------------------------------------------------------------- lifecycle
    def remove_endpoint(self, endpoint: str) -> None:
        """Forget an endpoint's request and shadow series (its batcher source is the caller's)."""
        for key in [k for k in list(self._stats) if k[0] == endpoint]:
            stats = self._stats.pop(key, None)
            if stats is not None and self.shared is not None:
                self.shared.forget(stats)
        if self._shadow.pop(endpoint, None) is not None and self.shared is not None:
            self.shared.shadow(endpoint, 0, 0)
            self.shared.shadow(endpoint, 1, 0)

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
        if self.shared is not None:
            self.publish()  # this worker's batcher/capture numbers as of now
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def publish(self) -> None:
        """Copy the batcher and capture-writer numbers into this worker's shared files (call
        it on the event loop, where the sources live; the server does every second)."""
        if self.shared is not None:
            self.shared.publish([*self._collect_batchers(["endpoint", "variant"]),
                                 *self._collect_capture()])

    def collect(self) -> Iterator[Metric]:
        labels = ["endpoint", "variant"]
        requests = CounterMetricFamily("loopml_requests", _REQUESTS_HELP,
                                       labels=["endpoint", "variant", "code"])
        errors = CounterMetricFamily("loopml_request_errors", _ERRORS_HELP, labels=labels)
        latency = HistogramMetricFamily("loopml_request_latency_seconds", _LATENCY_HELP, labels=labels)
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
        shadow = CounterMetricFamily("loopml_shadow_comparisons", _SHADOW_HELP,
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


class SharedMetrics:
    """This worker's multiprocess files in ``path`` (see the module docstring).

    Writes hold one lock (uncontended: the request path and the publisher both run on the event
    loop; the lock only guards against a caller on another thread)."""

    def __init__(self, path: str | Path, pid: int | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        pid = os.getpid() if pid is None else pid
        self._lock = threading.Lock()
        self._files = {"counter": MmapedDict(str(self.path / f"counter_{pid}.db")),
                       "histogram": MmapedDict(str(self.path / f"histogram_{pid}.db")),
                       "gauge": MmapedDict(str(self.path / f"gauge_livesum_{pid}.db"))}
        self._counter = self._files["counter"]
        self._histogram = self._files["histogram"]
        self._published: dict[str, set[str]] = {typ: set() for typ in self._files}

    # ---------------------------------------------------------------------- request path
    @staticmethod
    def request_keys(endpoint: str, variant: str) -> dict[Any, Any]:
        """The mmap keys of one (endpoint, variant), built once (codes added as they come)."""
        lv = [endpoint, variant]
        names = ["endpoint", "variant"]
        return {
            "labels": lv,
            "errors": mmap_key("loopml_request_errors", "loopml_request_errors_total", names, lv,
                               _ERRORS_HELP),
            "buckets": [mmap_key("loopml_request_latency_seconds",
                                 "loopml_request_latency_seconds_bucket", [*names, "le"], [*lv, le],
                                 _LATENCY_HELP) for le in _LATENCY_LE],
            "sum": mmap_key("loopml_request_latency_seconds", "loopml_request_latency_seconds_sum",
                            names, lv, _LATENCY_HELP),
        }

    @staticmethod
    def _code_key(keys: dict[Any, Any], status: int) -> str:
        key = keys.get(status)
        if key is None:
            key = keys[status] = mmap_key("loopml_requests", "loopml_requests_total",
                                          ["endpoint", "variant", "code"],
                                          [*keys["labels"], str(status)], _REQUESTS_HELP)
        return key

    def declare(self, st: EndpointStats) -> None:
        """Every latency bucket of a new series, at 0: the collector only accumulates buckets it
        finds in some file, and a histogram without its +Inf bucket (or a gap) is malformed."""
        with self._lock:
            for key in st.keys["buckets"]:
                self._histogram.write_value(key, 0, 0.0)
            self._histogram.write_value(st.keys["sum"], 0.0, 0.0)

    def observed(self, st: EndpointStats, status: int, n: int, bucket: int) -> None:
        keys = st.keys
        code_key = keys.get(status) or self._code_key(keys, status)
        with self._lock:
            self._counter.write_value(code_key, n, 0.0)
            if status >= 400:
                self._counter.write_value(keys["errors"], st.errors, 0.0)
            self._histogram.write_value(keys["buckets"][bucket], st.latency_counts[bucket], 0.0)
            self._histogram.write_value(keys["sum"], st.latency_sum, 0.0)

    def shadow(self, endpoint: str, index: int, value: int) -> None:
        key = mmap_key("loopml_shadow_comparisons", "loopml_shadow_comparisons_total",
                       ["endpoint", "result"], [endpoint, ("agree", "disagree")[index]], _SHADOW_HELP)
        with self._lock:
            self._counter.write_value(key, value, 0.0)

    def forget(self, st: EndpointStats) -> None:
        """A removed endpoint's series: 0 in this worker's files."""
        keys = st.keys
        with self._lock:
            for status in list(st.codes):
                self._counter.write_value(self._code_key(keys, status), 0, 0.0)
            self._counter.write_value(keys["errors"], 0, 0.0)
            for key in keys["buckets"]:
                self._histogram.write_value(key, 0, 0.0)
            self._histogram.write_value(keys["sum"], 0, 0.0)

    # ------------------------------------------------------------------------- publisher
    def publish(self, families: Iterable[Metric]) -> None:
        """Write these (in-process, absolute) families; series written last time and missing
        now become 0. Histogram buckets go in as per-bucket counts (the collector accumulates)."""
        values: dict[str, dict[str, float]] = {typ: {} for typ in self._files}
        for family in families:
            typ = family.type
            if typ not in values:
                continue
            out = values[typ]
            previous: dict[tuple, float] = {}  # histogram: cumulative count so far, per series
            for sample in family.samples:
                labels = dict(sample.labels)
                if typ == "histogram":
                    if sample.name.endswith("_count"):
                        continue  # the collector derives it from the buckets
                    if sample.name.endswith("_bucket"):
                        series = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                        cumulative = sample.value
                        value = cumulative - previous.get(series, 0.0)
                        previous[series] = cumulative
                    else:
                        value = sample.value
                else:
                    value = sample.value
                names = sorted(labels)
                key = mmap_key(family.name, sample.name, names, [labels[k] for k in names],
                               family.documentation)
                out[key] = value
        with self._lock:
            for typ, out in values.items():
                f = self._files[typ]
                for key in self._published[typ] - out.keys():
                    f.write_value(key, 0.0, 0.0)
                for key, value in out.items():
                    f.write_value(key, value, 0.0)
                self._published[typ] = set(out)

    def close(self) -> None:
        with self._lock:
            for f in self._files.values():
                f.close()


def mark_process_dead(pid: int, path: str | Path) -> None:
    """A worker is gone: its live gauges leave the sums (its counters stay in the totals)."""
    try:
        _mark_dead(pid, str(path))
    except OSError:  # already removed
        pass


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
