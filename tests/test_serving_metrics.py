"""ServingMetrics: scrape-time Prometheus families from plain-Python counters."""

from __future__ import annotations

import inspect

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loopml.serving.metrics import LATENCY_BUCKETS_S, EndpointStats, ServingMetrics


def scrape(metrics: ServingMetrics) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} from the rendered text."""
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def L(**labels: str) -> tuple:
    return tuple(sorted(labels.items()))


def test_requests_errors_and_latency_histogram():
    m = ServingMetrics()
    blue = m.stats_for("churn", "blue")
    assert m.stats_for("churn", "blue") is blue  # cached
    for status, lat in [(200, 0.0004), (200, 0.003), (200, 0.003), (400, 0.02), (503, 12.0)]:
        blue.observe(status, lat)
    m.stats_for("churn", "green").observe(200, 0.2)
    s = scrape(m)

    req = s["loopml_requests_total"]
    assert req[L(endpoint="churn", variant="blue", code="200")] == 3
    assert req[L(endpoint="churn", variant="blue", code="400")] == 1
    assert req[L(endpoint="churn", variant="blue", code="503")] == 1
    assert req[L(endpoint="churn", variant="green", code="200")] == 1
    assert s["loopml_request_errors_total"] == {L(endpoint="churn", variant="blue"): 2,
                                                L(endpoint="churn", variant="green"): 0}

    buckets = {dict(k)["le"]: v for k, v in s["loopml_request_latency_seconds_bucket"].items()
               if dict(k)["variant"] == "blue"}
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
    assert buckets["0.0005"] == 1
    assert buckets["0.001"] == 1
    assert buckets["0.0025"] == 1
    assert buckets["0.005"] == 3
    assert buckets["0.025"] == 4
    assert buckets["10.0"] == 4       # 12 s is above every bucket
    assert buckets["+Inf"] == 5
    values = [buckets[k] for k in sorted(buckets, key=float)]
    assert values == sorted(values)   # cumulative
    key = L(endpoint="churn", variant="blue")
    assert s["loopml_request_latency_seconds_count"][key] == 5
    assert s["loopml_request_latency_seconds_sum"][key] == pytest.approx(0.0004 + 0.006 + 0.02 + 12.0)


def test_latency_on_a_bucket_boundary_counts_in_that_bucket():
    m = ServingMetrics()
    m.stats_for("e", "v").observe(200, 0.001)  # le="0.001" means <= 0.001
    b = {dict(k)["le"]: v for k, v in scrape(m)["loopml_request_latency_seconds_bucket"].items()}
    assert b["0.0005"] == 0 and b["0.001"] == 1


def test_batcher_source_histogram_gauge_and_counters():
    m = ServingMetrics()
    stats = {"name": "churn-v3", "requests": 30, "rows": 61, "batches": 9, "failed_requests": 0,
             "rejected_requests": 2, "queue_rows": 17, "isolation_retries": 0, "loop_errors": 0,
             "loop_restarts": 0, "batch_rows_histogram": {1: 4, 3: 2, 8: 1, 16: 2}}
    m.add_source(lambda: [("churn", "blue", {**stats, "max_batch_size": 16})])
    s = scrape(m)
    key = L(endpoint="churn", variant="blue")
    b = {dict(k)["le"]: v for k, v in s["loopml_batch_size_rows_bucket"].items()}
    assert b == {"1.0": 4, "2.0": 4, "4.0": 6, "8.0": 7, "16.0": 9, "+Inf": 9}
    assert s["loopml_batch_size_rows_count"][key] == 9
    assert s["loopml_batch_size_rows_sum"][key] == 4 * 1 + 2 * 3 + 8 + 2 * 16
    assert s["loopml_queue_depth_rows"][key] == 17
    assert s["loopml_batches_total"][key] == 9
    assert s["loopml_batch_rows_total"][key] == 61
    assert s["loopml_batcher_rejected_total"][key] == 2


def test_batcher_sources_are_read_at_scrape_time_and_merged():
    m = ServingMetrics()
    live = {"batches": 1, "rows": 1, "queue_rows": 0, "batch_rows_histogram": {1: 1}}
    m.add_source(lambda: [("e", "v", live)])
    m.add_source(lambda: [("e", "v", {"batches": 2, "rows": 5, "queue_rows": 3,
                                      "batch_rows_histogram": {2: 1, 3: 1}})])
    key = L(endpoint="e", variant="v")
    assert scrape(m)["loopml_batches_total"][key] == 3
    live.update(batches=10, queue_rows=4, batch_rows_histogram={1: 5, 2000: 1})
    s = scrape(m)
    assert s["loopml_batches_total"][key] == 12
    assert s["loopml_queue_depth_rows"][key] == 7
    b = {dict(k)["le"]: v for k, v in s["loopml_batch_size_rows_bucket"].items()}
    # default buckets (no max_batch_size): powers of two to 1024; 2000 rows only in +Inf
    assert b["1.0"] == 5 and b["2.0"] == 6 and b["4.0"] == 7 and b["1024.0"] == 7 and b["+Inf"] == 8


def test_a_failing_source_does_not_break_the_scrape(caplog: pytest.LogCaptureFixture):
    m = ServingMetrics()

    def broken():
        raise RuntimeError("boom")

    m.add_source(broken)
    m.set_capture_source(broken)
    m.stats_for("e", "v").observe(200, 0.01)
    s = scrape(m)
    assert s["loopml_requests_total"][L(endpoint="e", variant="v", code="200")] == 1
    assert "loopml_batches_total" not in s
    assert any(r.exc_info and "boom" in str(r.exc_info[1]) for r in caplog.records)
    m.remove_source(broken)
    m.remove_source(broken)  # idempotent


def test_remove_endpoint_drops_its_series():
    m = ServingMetrics()
    m.stats_for("a", "blue").observe(200, 0.01)
    m.stats_for("a", "green").observe(500, 0.01)
    m.stats_for("b", "blue").observe(200, 0.01)
    m.count_shadow("a", True)
    m.count_shadow("b", False)
    m.remove_endpoint("a")
    s = scrape(m)
    endpoints = {dict(k)["endpoint"] for name, series in s.items() for k in series if k}
    assert endpoints == {"b"}
    assert s["loopml_shadow_comparisons_total"] == {L(endpoint="b", result="agree"): 0,
                                                    L(endpoint="b", result="disagree"): 1}
    # a new stats object starts from zero
    m.stats_for("a", "blue").observe(200, 0.01)
    assert scrape(m)["loopml_requests_total"][L(endpoint="a", variant="blue", code="200")] == 1


def test_shadow_and_capture_counters():
    m = ServingMetrics()
    for agree in (True, True, False):
        m.count_shadow("churn", agree)
    m.set_capture_source(lambda: {"captured": 40, "dropped": 3, "pending": 5, "files": 2, "errors": 1})
    s = scrape(m)
    assert s["loopml_shadow_comparisons_total"] == {L(endpoint="churn", result="agree"): 2,
                                                    L(endpoint="churn", result="disagree"): 1}
    assert s["loopml_capture_records_total"][()] == 40
    assert s["loopml_capture_dropped_total"][()] == 3
    assert s["loopml_capture_errors_total"][()] == 1
    assert s["loopml_capture_pending_records"][()] == 5
    m.set_capture_source(None)
    assert "loopml_capture_records_total" not in scrape(m)


def test_capture_writer_as_source(tmp_path):
    from loopml.artifacts.store import ArtifactStore
    from loopml.serving.capture import CaptureWriter

    writer = CaptureWriter(ArtifactStore(str(tmp_path)), flush_interval_s=60)
    m = ServingMetrics()
    m.set_capture_source(writer.stats)
    writer.record("e", "v", input_body=b"{}", input_content_type="application/json", output_body=b"{}")
    writer.close()
    assert scrape(m)["loopml_capture_records_total"][()] == 1


def test_private_registry_and_label_escaping():
    m = ServingMetrics()
    m.stats_for('we"ird\\name', "v").observe(200, 0.01)
    assert m.registry is not prometheus_client.REGISTRY
    assert b"loopml_" not in prometheus_client.generate_latest(prometheus_client.REGISTRY)
    s = scrape(m)
    assert s["loopml_requests_total"][L(endpoint='we"ird\\name', variant="v", code="200")] == 1
    # two instances are independent (no global state)
    assert "loopml_requests_total" not in scrape(ServingMetrics())


def test_observe_is_plain_python():
    st = EndpointStats("e", "v")
    # no lock, no prometheus objects: only ints, a dict of ints and a list of ints
    assert not hasattr(st, "__dict__")
    for name in EndpointStats.__slots__:
        assert type(getattr(st, name)) in (str, int, float, dict, list, type(None)), name
    src = inspect.getsource(EndpointStats.observe)
    assert "lock" not in src.lower() and ".labels(" not in src
    n = 200_000
    for _ in range(n):
        st.observe(200, 0.002)
    assert st.codes == {200: n} and st.requests == n


def test_workers_shared_histogram_has_every_bucket_and_inf(tmp_path):
    """Multiprocess files only hold buckets some worker wrote: a new series declares them all, so
    the merged histogram is complete (+Inf last, equal to the count) however few requests came."""
    from loopml.serving.metrics import SharedMetrics

    a = ServingMetrics(SharedMetrics(tmp_path, pid=1001))
    b = ServingMetrics(SharedMetrics(tmp_path, pid=1002))
    a.stats_for("e", "primary").observe(200, 0.001)
    b.stats_for("e", "primary").observe(500, 0.3)
    text = a.render()[0].decode()
    buckets = [(s.labels["le"], s.value) for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "loopml_request_latency_seconds_bucket"]
    assert [le for le, _ in buckets] == [*(repr(float(x)) for x in LATENCY_BUCKETS_S), "+Inf"]
    assert buckets[-1][1] == 2 and dict(buckets)["0.001"] == 1
