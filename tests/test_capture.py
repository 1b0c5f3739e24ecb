"""CaptureWriter: SageMaker-format data capture, hour partitioning, bounds, retries, close()."""

from __future__ import annotations

import base64
import calendar
import io
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest

from loopml.artifacts.store import ArtifactStore
from loopml.monitoring.capture_reader import read_captured
from loopml.serving.capture import CaptureWriter

pytest_plugins = ("tests.backends",)

KEY_RE = re.compile(r"^capture/ep/(?P<variant>[^/]+)/(?P<y>\d{4})/(?P<m>\d\d)/(?P<d>\d\d)/(?P<h>\d\d)/"
                    r"(?P<stamp>\d{8}T\d{6})-[0-9a-f]{16}\.jsonl$")


def _ts(text: str) -> float:
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


def _record(writer: CaptureWriter, i: int = 0, *, endpoint: str = "ep", variant: str = "blue", **kw) -> bool:
    args = dict(input_body=orjson.dumps({"instances": [[i, 1.5]]}), input_content_type="application/json",
                output_body=orjson.dumps({"predictions": [i]}), model="m", model_version=3, latency_ms=1.25)
    args.update(kw)
    return writer.record(endpoint, variant, **args)


def _no_early_flush(writer: CaptureWriter) -> CaptureWriter:
    """Only explicit flush() calls write (the thread would wake early at half of a bound)."""
    writer._wake_records = writer._wake_bytes = 2**62
    return writer


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def test_record_format_json(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=60)
    t = _ts("2026-11-27T10:00:00Z") + 0.25
    assert _record(writer, 7, event_time=t, inference_id="req-42")
    assert _record(writer, 8, event_time=t + 1)
    writer.flush()
    assert writer.stats() == {"captured": 2, "dropped": 0, "pending": 0, "files": 1, "errors": 0}
    keys = store.list("capture")
    assert len(keys) == 1
    m = KEY_RE.match(keys[0])
    assert m, keys[0]
    assert (m["variant"], m["y"], m["m"], m["d"], m["h"], m["stamp"]) == (
        "blue", "2026", "11", "27", "10", "20261127T100000")

    first, second = list(read_captured(store, "capture", "ep"))
    assert first["eventVersion"] == "0"
    assert first["captureData"] == {
        "endpointInput": {"observedContentType": "application/json", "mode": "INPUT",
                          "data": '{"instances":[[7,1.5]]}', "encoding": "JSON"},
        "endpointOutput": {"observedContentType": "application/json", "mode": "OUTPUT",
                           "data": '{"predictions":[7]}', "encoding": "JSON"},
    }
    meta = dict(first["eventMetadata"])
    uuid.UUID(meta.pop("eventId"))
    assert meta == {"inferenceTime": "2026-11-27T10:00:00Z", "inferenceId": "req-42", "endpoint": "ep",
                    "variant": "blue", "model": "m", "modelVersion": 3, "latencyMs": 1.25}
    assert "inferenceId" not in second["eventMetadata"]  # only when the client sent one
    assert "shadow" not in second["eventMetadata"]
    assert second["eventMetadata"]["inferenceTime"] == "2026-11-27T10:00:01Z"
    assert first["eventMetadata"]["eventId"] != second["eventMetadata"]["eventId"]
    # the raw file is JSON Lines: one object per line, newline-terminated
    raw = store.get_bytes(keys[0])
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    writer.close()


def test_encodings_npy_csv_binary_and_shadow(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=60)
    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.float32).reshape(2, 3))
    npy = buf.getvalue()
    _record(writer, input_body=npy, input_content_type="application/x-npy", shadow=True)
    _record(writer, input_body=b"1,2,3\n4,5,6\n", input_content_type="text/csv; charset=utf-8",
            output_body=b"0\n1\n", output_content_type="text/csv")
    _record(writer, input_body=b"\xff\xfe not utf-8", input_content_type="application/json")
    _record(writer, input_body=b"raw", input_content_type=None)
    writer.close()
    npy_rec, csv_rec, bad_rec, none_rec = read_captured(store, "capture", "ep", "blue")

    inp = npy_rec["captureData"]["endpointInput"]
    assert inp["encoding"] == "BASE64" and inp["observedContentType"] == "application/x-npy"
    restored = np.load(io.BytesIO(base64.b64decode(inp["data"])))
    np.testing.assert_array_equal(restored, np.arange(6, dtype=np.float32).reshape(2, 3))
    assert npy_rec["captureData"]["endpointOutput"]["encoding"] == "JSON"
    assert npy_rec["eventMetadata"]["shadow"] is True

    assert csv_rec["captureData"]["endpointInput"] == {
        "observedContentType": "text/csv; charset=utf-8", "mode": "INPUT", "data": "1,2,3\n4,5,6\n",
        "encoding": "CSV"}
    assert csv_rec["captureData"]["endpointOutput"]["encoding"] == "CSV"

    inp = bad_rec["captureData"]["endpointInput"]
    assert inp["encoding"] == "BASE64" and base64.b64decode(inp["data"]) == b"\xff\xfe not utf-8"
    inp = none_rec["captureData"]["endpointInput"]
    assert inp["encoding"] == "BASE64" and inp["observedContentType"] == "application/octet-stream"


def test_hour_partitioning_and_variants(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=60)
    t0 = _ts("2026-11-27T10:59:58Z")
    for i, dt in enumerate([0, 1, 2, 3, 3605]):  # 10:59:58, 10:59:59, 11:00:00, 11:00:01, 12:00:03
        _record(writer, i, event_time=t0 + dt)
    _record(writer, 99, event_time=t0, variant="green")
    writer.flush()
    keys = store.list("capture")
    parsed = [KEY_RE.match(k) for k in keys]
    assert all(parsed), keys
    assert sorted((m["variant"], m["h"], m["stamp"]) for m in parsed) == [
        ("blue", "10", "20261127T105958"), ("blue", "11", "20261127T110000"),
        ("blue", "12", "20261127T120003"), ("green", "10", "20261127T105958")]
    assert writer.stats()["files"] == 4

    blue = [r["eventMetadata"]["inferenceTime"] for r in read_captured(store, "capture", "ep", "blue")]
    assert blue == ["2026-11-27T10:59:58Z", "2026-11-27T10:59:59Z", "2026-11-27T11:00:00Z",
                    "2026-11-27T11:00:01Z", "2026-11-27T12:00:03Z"]
    every = list(read_captured(store, "capture", "ep"))  # all variants, in time order
    assert len(every) == 6
    hours = [r["eventMetadata"]["inferenceTime"][:13] for r in every]
    assert hours == sorted(hours)  # files in time order: the green 10:00 file comes before 11:00
    assert [r["eventMetadata"]["variant"] for r in every].index("green") in (0, 2)
    # a record's own file is in its own hour folder
    for key in keys:
        hour = KEY_RE.match(key)["h"]
        for line in store.get_bytes(key).splitlines():
            assert orjson.loads(line)["eventMetadata"]["inferenceTime"][11:13] == hour
    writer.close()


def test_concurrent_record_counts_and_close_flushes_everything(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=0.005)  # the thread flushes while we record
    n_threads, per_thread = 8, 500
    start = threading.Barrier(n_threads)

    def work(tid: int) -> None:
        start.wait()
        for i in range(per_thread):
            assert _record(writer, tid * per_thread + i, variant=f"v{tid % 2}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    total = n_threads * per_thread
    stats = writer.stats()
    assert stats["captured"] == total and stats["pending"] == 0 and stats["dropped"] == 0
    assert stats["files"] == len(store.list("capture"))
    lines = sum(store.get_bytes(k).count(b"\n") for k in store.list("capture"))
    assert lines == total
    seen = sorted(orjson.loads(r["captureData"]["endpointOutput"]["data"])["predictions"][0]
                  for r in read_captured(store, "capture", "ep"))
    assert seen == list(range(total))
    # closed: idempotent, later records are refused
    writer.close()
    assert _record(writer) is False
    assert writer.stats()["dropped"] == 1
    assert not writer._thread.is_alive()


def test_bounded_drop(store: ArtifactStore, caplog: pytest.LogCaptureFixture):
    writer = _no_early_flush(CaptureWriter(store, flush_interval_s=60, max_pending_records=10))
    with caplog.at_level("WARNING", logger="loopml.serving.capture"):
        results = [_record(writer, i) for i in range(25)]
    assert results == [True] * 10 + [False] * 15
    assert writer.stats() == {"captured": 0, "dropped": 15, "pending": 10, "files": 0, "errors": 0}
    drop_logs = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drop_logs) == 1  # rate-limited
    writer.flush()
    assert _record(writer, 100) is True  # room again once written
    writer.close()
    assert writer.stats()["captured"] == 11
    assert len(list(read_captured(store, "capture", "ep"))) == 11

    by_bytes = _no_early_flush(CaptureWriter(store, "bytes", flush_interval_s=60, max_pending_bytes=2000))
    big = b"x" * 700
    assert [by_bytes.record("ep", "blue", input_body=big, input_content_type="text/csv",
                            output_body=b"[]") for _ in range(4)] == [True, True, False, False]
    by_bytes.close()
    assert by_bytes.stats()["captured"] == 2 and by_bytes.stats()["dropped"] == 2


class FlakyStore(ArtifactStore):
    """put_bytes fails the first ``failures`` times."""

    def __init__(self, uri: str, failures: int) -> None:
        super().__init__(uri)
        self.failures = failures
        self.calls = 0

    def put_bytes(self, key: str, data: bytes) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise OSError("store unavailable")
        super().put_bytes(key, data)


def test_store_failure_is_retried(tmp_path: Path):
    store = FlakyStore(str(tmp_path / "flaky"), failures=2)
    writer = _no_early_flush(CaptureWriter(store, flush_interval_s=60, max_pending_records=5))
    for i in range(3):
        _record(writer, i)
    writer.flush()
    assert writer.stats() == {"captured": 0, "dropped": 0, "pending": 3, "files": 0, "errors": 1}
    assert store.list("capture") == []
    # the failed batch still counts against the bounds
    assert [_record(writer, i) for i in range(3, 6)] == [True, True, False]
    writer.flush()  # the retry fails again: the flush stops there (the new file waits too)
    assert writer.stats() == {"captured": 0, "dropped": 1, "pending": 5, "files": 0, "errors": 2}
    assert store.calls == 2
    writer.flush()  # both written; the failed file (same key, same bytes) went last
    assert writer.stats() == {"captured": 5, "dropped": 1, "pending": 0, "files": 2, "errors": 2}
    assert store.calls == 4
    got = sorted(orjson.loads(r["captureData"]["endpointOutput"]["data"])["predictions"][0]
                 for r in read_captured(store, "capture", "ep"))
    assert got == [0, 1, 2, 3, 4]
    writer.close()


def test_background_thread_survives_failures_and_flushes(tmp_path: Path):
    store = FlakyStore(str(tmp_path / "flaky"), failures=3)
    writer = CaptureWriter(store, flush_interval_s=0.01)
    for i in range(4):
        _record(writer, i)
    deadline = time.monotonic() + 10
    while writer.stats()["captured"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = writer.stats()
    assert stats["captured"] == 4 and stats["errors"] == 3 and stats["pending"] == 0
    assert writer._thread.is_alive()
    writer.close()


def test_thread_wakes_early_when_half_full(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=60, max_pending_records=8)
    for i in range(4):
        _record(writer, i)
    deadline = time.monotonic() + 10
    while writer.stats()["captured"] < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.stats()["captured"] == 4
    writer.close()


def test_close_gives_up_on_a_dead_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("loopml.serving.capture._CLOSE_RETRY_DELAY_S", 0.0)
    store = FlakyStore(str(tmp_path / "dead"), failures=10**9)
    writer = CaptureWriter(store, flush_interval_s=60)
    _record(writer)
    _record(writer)
    writer.close()
    stats = writer.stats()
    assert stats["pending"] == 0 and stats["dropped"] == 2 and stats["captured"] == 0
    assert stats["errors"] == 3


def test_invalid_names_are_dropped_not_retried_forever(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=60)
    writer.record("a/b", "blue", input_body=b"{}", input_content_type="application/json", output_body=b"{}")
    writer.record("..", "blue", input_body=b"{}", input_content_type="application/json", output_body=b"{}")
    _record(writer, event_time=float("nan"))  # a bad time becomes "now" rather than a lost batch
    writer.flush()
    assert writer.stats() == {"captured": 1, "dropped": 2, "pending": 0, "files": 1, "errors": 2}
    (rec,) = read_captured(store, "capture", "ep")
    assert rec["eventMetadata"]["inferenceTime"][:4] == time.strftime("%Y", time.gmtime())
    writer.close()


def test_many_records_are_all_written_on_close(store: ArtifactStore):
    writer = CaptureWriter(store, flush_interval_s=60, max_pending_records=200_000)
    body, out = b'{"instances":[[1,2,3]]}', b'{"predictions":[1]}'
    n = 20_000
    for _ in range(n):
        writer.record("ep", "blue", input_body=body, input_content_type="application/json", output_body=out)
    writer.close()
    assert writer.stats()["captured"] == n


def test_platform_artifacts_store(platform):
    writer = CaptureWriter(platform.artifacts, "capture", flush_interval_s=60)
    _record(writer, 1, endpoint="churn", variant="canary")
    writer.close()
    (rec,) = read_captured(platform.artifacts, "capture", "churn")
    assert rec["eventMetadata"]["endpoint"] == "churn" and rec["eventMetadata"]["variant"] == "canary"


def test_s3_moto(moto_endpoint: str, s3_bucket: str):
    store = ArtifactStore(f"s3://{s3_bucket}/root", s3_endpoint_url=moto_endpoint)
    writer = CaptureWriter(store, "capture", flush_interval_s=0.05)
    t = _ts("2026-11-27T10:30:00Z")
    for i in range(20):
        _record(writer, i, event_time=t + i * 200)  # spans 10:30 .. 11:33
    writer.close()
    keys = store.list("capture")
    assert keys and all(KEY_RE.match(k) for k in keys)
    assert {KEY_RE.match(k)["h"] for k in keys} == {"10", "11"}
    got = [orjson.loads(r["captureData"]["endpointOutput"]["data"])["predictions"][0]
           for r in read_captured(store, "capture", "ep", "blue")]
    assert sorted(got) == list(range(20))


# --------------------------------------------------------------------------- write-ahead spool


def _killed(writer: CaptureWriter) -> None:
    """What a kill -9 leaves: the thread gone, nothing flushed, the spool files as they are."""
    writer._stop = True
    writer._wake.set()
    writer._thread.join()
    for seg in [writer._segment, writer._spare, *writer._flushed_segments]:
        if seg is not None:
            seg.close()  # the process's death releases its locks


def _spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.spool"))


def test_spool_of_a_killed_writer_is_uploaded_by_the_next(store: ArtifactStore, tmp_path: Path):
    spool = tmp_path / "spool"
    first = _no_early_flush(CaptureWriter(store, flush_interval_s=60, spool_dir=spool))
    for i in range(5):
        assert _record(first, i, inference_id=f"id-{i}")
    _killed(first)
    assert store.list("capture") == [] and len(_spooled(spool)) == 1
    second = CaptureWriter(store, flush_interval_s=0.05, spool_dir=spool)
    try:
        wait = time.monotonic() + 30
        while len(list(read_captured(store, "capture", "ep", "blue"))) < 5 and time.monotonic() < wait:
            time.sleep(0.05)
        records = list(read_captured(store, "capture", "ep", "blue"))
        assert sorted(r["eventMetadata"]["inferenceId"] for r in records) == \
            [f"id-{i}" for i in range(5)]
        assert records[0]["captureData"]["endpointInput"]["data"] == '{"instances":[[0,1.5]]}'
        assert records[0]["eventMetadata"]["modelVersion"] == 3
        assert second.stats()["captured"] == 5
    finally:
        second.close()
    assert _spooled(spool) == []  # uploaded, then unlinked; a closed writer leaves none


def test_spool_uploaded_twice_writes_no_duplicate(store: ArtifactStore, tmp_path: Path):
    """Killed between its upload and its unlink: the next writer rewrites the same files."""
    spool = tmp_path / "spool"
    first = _no_early_flush(CaptureWriter(store, flush_interval_s=60, spool_dir=spool))
    for i in range(4):
        _record(first, i)
    (segment,) = _spooled(spool)
    saved = segment.read_bytes()
    first.flush()  # uploaded and unlinked ...
    _killed(first)
    segment.write_bytes(saved)  # ... as if the kill came just before the unlink
    before = {k: store.get_bytes(k) for k in store.list("capture")}
    CaptureWriter(store, flush_interval_s=60, spool_dir=spool).close()
    assert {k: store.get_bytes(k) for k in store.list("capture")} == before
    assert len(list(read_captured(store, "capture", "ep", "blue"))) == 4
    assert _spooled(spool) == []


def test_node_tag_names_the_files_and_survives_recovery_by_another_node(store: ArtifactStore,
                                                                        tmp_path: Path):
    """Data-plane nodes sharing a store: each file name carries its writer's node tag; a spool
    recovered (twice) by a writer with another tag keeps the original tag: the same keys."""
    spool = tmp_path / "spool"
    first = _no_early_flush(CaptureWriter(store, flush_interval_s=60, spool_dir=spool, node_tag="host-1-abc"))
    for i in range(3):
        _record(first, i)
    (segment,) = _spooled(spool)
    assert segment.name.endswith(".host-1-abc.spool")
    saved = segment.read_bytes()
    first.flush()
    _killed(first)
    segment.write_bytes(saved)  # killed before the unlink: recovered again below
    before = {k: store.get_bytes(k) for k in store.list("capture")}
    assert before and all("-host-1-abc-" in k.rsplit("/", 1)[1] for k in before)
    other = CaptureWriter(store, flush_interval_s=60, spool_dir=spool, node_tag="host-2-def")
    _record(other, 9)
    other.close()
    after = {k: store.get_bytes(k) for k in store.list("capture")}
    assert {k: v for k, v in after.items() if k in before} == before  # same keys, same bytes
    assert sum("-host-2-def-" in k for k in after) == 1 and len(after) == len(before) + 1
    assert _spooled(spool) == []
    with pytest.raises(ValueError, match="node_tag"):
        CaptureWriter(store, node_tag="a/b")


def test_spool_frame_cut_by_the_kill_is_ignored(store: ArtifactStore, tmp_path: Path):
    spool = tmp_path / "spool"
    first = _no_early_flush(CaptureWriter(store, flush_interval_s=60, spool_dir=spool))
    for i in range(3):
        _record(first, i)
    _killed(first)
    (segment,) = _spooled(spool)
    segment.write_bytes(segment.read_bytes()[:-10])
    CaptureWriter(store, flush_interval_s=60, spool_dir=spool).close()
    assert len(list(read_captured(store, "capture", "ep", "blue"))) == 2


def test_live_writers_spool_is_left_alone(store: ArtifactStore, tmp_path: Path):
    spool = tmp_path / "spool"
    live = _no_early_flush(CaptureWriter(store, flush_interval_s=60, spool_dir=spool))
    _record(live, 1)
    CaptureWriter(store, flush_interval_s=60, spool_dir=spool).close()  # recovers nothing
    assert store.list("capture") == []
    live.close()
    assert len(list(read_captured(store, "capture", "ep", "blue"))) == 1
    assert _spooled(spool) == []


def test_unwritable_store_keeps_the_spool_for_the_next_start(tmp_path: Path, monkeypatch):
    spool = tmp_path / "spool"
    dead = FlakyStore(str(tmp_path / "artifacts"), failures=10**6)
    monkeypatch.setattr("loopml.serving.capture._CLOSE_RETRY_DELAY_S", 0.0)
    writer = CaptureWriter(dead, flush_interval_s=60, spool_dir=spool)
    _record(writer, 1)
    writer.close()
    assert writer.stats()["dropped"] == 1 and len(_spooled(spool)) == 1
    good = ArtifactStore(str(tmp_path / "artifacts"))
    CaptureWriter(good, flush_interval_s=60, spool_dir=spool).close()
    assert len(list(read_captured(good, "capture", "ep", "blue"))) == 1


def test_spool_leftovers_that_are_no_segments_do_not_stop_recovery(store: ArtifactStore, tmp_path: Path):
    import struct

    spool = tmp_path / "spool"
    first = _no_early_flush(CaptureWriter(store, flush_interval_s=60, spool_dir=spool))
    _record(first, 1)
    _killed(first)
    (segment,) = _spooled(spool)
    with open(segment, "ab") as f:  # a frame whose header is not one this version wrote
        f.write(struct.pack("<III", 2, 0, 0) + b"{}")
    (spool / "123-00.new").write_bytes(b"")  # killed between creating and naming a segment
    CaptureWriter(store, flush_interval_s=60, spool_dir=spool).close()
    assert len(list(read_captured(store, "capture", "ep", "blue"))) == 1
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("taken", ["unlinked", "locked"])
def test_a_new_segment_taken_by_another_writers_recovery_gets_a_fresh_name(
        store: ArtifactStore, tmp_path: Path, monkeypatch, taken: str):
    """Two workers start at once: one's recovery may take the other's brand-new segment (created,
    not yet locked) for a killed writer's leftover and unlink it. The new writer starts anyway."""
    import fcntl

    import loopml.serving.capture as capture

    spool = tmp_path / "spool"
    spool.mkdir()
    real_flock, hits = fcntl.flock, []

    def recovery_in_the_window(fd, op):
        if not hits:  # the first segment's file is taken before its creator locks it
            (new,) = spool.glob("*.new")
            hits.append(new.name)
            new.unlink()  # what _unlink_if_unlocked does to it
            if taken == "locked":  # ... while still holding its lock
                raise BlockingIOError(11, "Resource temporarily unavailable")
        return real_flock(fd, op)

    monkeypatch.setattr(capture.fcntl, "flock", recovery_in_the_window)
    writer = CaptureWriter(store, flush_interval_s=60, spool_dir=spool)
    monkeypatch.setattr(capture.fcntl, "flock", real_flock)
    assert hits and not (spool / hits[0]).exists()
    _record(writer, 1)
    writer.close()
    assert len(list(read_captured(store, "capture", "ep", "blue"))) == 1
    assert _spooled(spool) == [] and not list(spool.glob("*.new"))
