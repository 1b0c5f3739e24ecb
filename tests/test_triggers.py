"""Triggers: object prefixes (real local folders and the moto S3 server), cron schedules with a
fake clock, webhooks, monitor alerts; exactly once across restarts; the REST/SDK/CLI surface.

Targets are function / workflow rows written straight into the metadata store: these tests count
the queued invocations / pending executions a firing creates, they never wait for them to run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from sqlalchemy import func, select

from loopml.controlplane.triggers import TriggerPoller
from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.sdk.client import Client
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.triggers_repo import Firing, TriggerRepo
from loopml.triggers import service
from tests.test_cli import ok_json, one_line_error
from tests.surface_support import assert_error, cli_runner

pytest_plugins = ("tests.backends",)

PASS_DEFINITION = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}


def make_bucket(endpoint: str) -> str:
    from tests.backends import make_bucket as make

    return make(endpoint)


def s3_client(endpoint: str):
    from tests.backends import s3_client as client

    return client(endpoint)


# -- helpers --------------------------------------------------------------------------------------

def add_function(store: MetadataStore, name: str = "echo") -> None:
    with store.session() as s:
        s.add(t.Function(name=name, handler="handler.main", code_key=f"functions/{name}/code.py",
                         code_sha256="0" * 64, timeout_s=30.0, memory_mb=128, environment={}))


def add_workflow(store: MetadataStore, name: str = "flow") -> None:
    with store.session() as s:
        s.add(t.Workflow(name=name, definition=PASS_DEFINITION, source=json.dumps(PASS_DEFINITION)))


def add_monitor(plat: Platform, name: str) -> None:
    """A model monitor record (alert triggers name one); never run here."""
    plat.monitors.create(name, endpoint="digits", variant=None, schedule=None, tz="UTC", window_s=3600,
                         min_samples=10, thresholds={}, webhooks=[], next_run_at=None)


def remove_function(store: MetadataStore, name: str) -> None:
    with store.session() as s:
        s.delete(s.get(t.Function, name))


def count(store: MetadataStore, table: Any, **where: Any) -> int:
    with store.session() as s:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(getattr(table, column) == value)
        return s.execute(query).scalar_one()


def poll_until(poller: TriggerPoller, done: Callable[[], bool], timeout: float = 60) -> None:
    """Poll (local files fire once 0.2 s old) until ``done``; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        poller.poll_once()
        if done():
            return
        if time.monotonic() > deadline:
            pytest.fail("condition not reached before the deadline")
        time.sleep(0.05)


def write(path: Path, data: bytes = b"x", *, age_s: float = 5.0) -> Path:
    """A file whose mtime is ``age_s`` in the past (settled: it may fire at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    past = time.time() - age_s
    os.utime(path, (past, past))
    return path


@pytest.fixture
def plat(settings: Settings):
    p = Platform(settings)
    add_function(p.meta, "echo")
    add_workflow(p.meta, "flow")
    yield p
    p.close()


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at

    def advance(self, **delta: float) -> None:
        self.at += timedelta(**delta)


# -- repository contract: SQLite and PostgreSQL ------------------------------------------------------

def test_repo_contract(metadata_store: MetadataStore):
    repo = TriggerRepo(metadata_store)
    add_function(metadata_store, "echo")
    add_workflow(metadata_store, "flow")
    with pytest.raises(InvalidInput, match="function 'nope' not found"):
        repo.create("t1", "objects", {}, "function", "nope")
    rec = repo.create("t1", "objects", {"x": 1}, "function", "echo", seen=[("a.txt", "e1"), ("b.txt", "e2")])
    assert rec["objects_seen"] == 2 and rec["status"] == "active" and rec["target"] == {"kind": "function", "name": "echo"}
    with pytest.raises(Conflict):
        repo.create("t1", "webhook", {}, "function", "echo")
    assert repo.seen("t1") == {"a.txt": "e1", "b.txt": "e2"}

    # seen with the same etag: nothing; new key and changed etag: fire, in one transaction
    written = repo.fire("t1", [Firing({"k": "a"}, "a.txt#e1", seen=("a.txt", "e1")),
                               Firing({"k": "c"}, "c.txt#e3", seen=("c.txt", "e3")),
                               Firing({"k": "b"}, "b.txt#e9", seen=("b.txt", "e9"))])
    assert [f["dedupe_key"] for f in written] == ["c.txt#e3", "b.txt#e9"]
    assert all(f["status"] == "started" and f["started_id"].startswith("inv-") for f in written)
    assert count(metadata_store, t.FunctionInvocation, source="trigger:t1", status="queued") == 2
    assert repo.seen("t1")["b.txt"] == "e9"
    # the same again: already fired, skipped silently
    assert repo.fire("t1", [Firing({"k": "c"}, "c.txt#e3", seen=("c.txt", "e3"))]) == []
    # a dedupe key written by someone else meanwhile (no seen row): the batch still fires the rest
    assert len(repo.fire("t1", [Firing({}, "dup"), Firing({}, "other")])) == 2
    assert len(repo.fire("t1", [Firing({}, "dup"), Firing({}, "third")])) == 1

    # workflow target: a PENDING execution with the event as input
    repo.create("t2", "webhook", {}, "workflow", "flow", secret_hash="f" * 64)
    [f] = repo.fire("t2", [Firing({"hello": 1})])
    with metadata_store.session() as s:
        execution = s.get(t.WorkflowExecution, f["started_id"])
        assert execution.status == "PENDING" and execution.input == {"hello": 1}
        assert execution.source == "trigger:t2" and execution.definition == PASS_DEFINITION

    # paused: fires nothing (unless explicitly asked, like a test fire)
    repo.set_status("t2", "paused")
    assert repo.fire("t2", [Firing({})]) == []
    assert len(repo.fire("t2", [Firing({})], require_active=False)) == 1

    # the target removed later: a recorded, explained failure; the object is still seen
    remove_function(metadata_store, "echo")
    [failed] = repo.fire("t1", [Firing({"k": "d"}, "d.txt#e4", seen=("d.txt", "e4"))])
    assert failed["status"] == "failed" and failed["error"] == "function 'echo' not found"
    assert failed["started_id"] is None and repo.seen("t1")["d.txt"] == "e4"

    rows = {r["name"]: r for r in repo.list()}
    assert rows["t1"]["last_firing"]["id"] == failed["id"] and rows["t2"]["url"] == "/hooks/t2"
    history = repo.firings("t1", limit=3)
    assert [h["id"] for h in history] == sorted((h["id"] for h in history), reverse=True) and len(history) == 3
    # a firing or trigger that is not there: NotFound (a 404), not a server error
    with pytest.raises(NotFound, match="trigger 't1' has no firing 99999"):
        repo.firing("t1", 99999)
    with pytest.raises(NotFound, match="trigger 't1x' not found; did you mean 't1'"):
        repo.update("t1x", spec={})
    repo.delete("t1")
    with pytest.raises(NotFound):
        repo.get("t1")
    assert repo.fire("t1", [Firing({})]) == [] and count(metadata_store, t.TriggerObject) == 0
    assert count(metadata_store, t.TriggerFiring, trigger="t1") == 0


def test_concurrent_pollers_fire_each_object_once(metadata_store: MetadataStore):
    """Two writers racing over the same 200 objects: every object fires exactly once."""
    repo_a, repo_b = TriggerRepo(metadata_store), TriggerRepo(metadata_store)
    add_function(metadata_store, "echo")
    repo_a.create("race", "objects", {}, "function", "echo")
    batch = [Firing({"n": i}, f"k{i}#e", seen=(f"k{i}", "e")) for i in range(200)]
    results: list[int] = []
    errors: list[BaseException] = []

    def run(repo: TriggerRepo, order: list[Firing]) -> None:
        try:
            for start in range(0, len(order), 50):
                results.append(len(repo.fire("race", order[start:start + 50])))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(repo_a, batch)),
               threading.Thread(target=run, args=(repo_b, list(reversed(batch))))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sum(results) == 200
    assert count(metadata_store, t.TriggerFiring, trigger="race") == 200
    assert count(metadata_store, t.FunctionInvocation, source="trigger:race") == 200


# -- object triggers: a real local folder -----------------------------------------------------------

def test_local_folder_fires_new_and_rewritten_files_once(plat: Platform, tmp_path: Path):
    inbox = tmp_path / "inbox"
    write(inbox / "old.csv")
    rec = service.create_trigger(plat, "inbox", "objects", objects_uri=str(inbox), function="echo")
    assert rec["objects_seen"] == 1 and rec["spec"]["uri"] == f"file://{inbox}/"
    poller = TriggerPoller(plat)
    assert poller.poll_once() == []  # existing objects never fire

    write(inbox / "sub" / "new.csv", b"hello")
    write(inbox / ".hidden")
    write(inbox / "upload.part")
    write(inbox / "data.tmp")
    write(inbox / "x.csv.tmp-0123abcd")  # the artifact store's atomic temp files
    [fired] = poller.poll_once()
    event = fired["event"]
    record = event["Records"][0]
    assert record["eventName"] == "ObjectCreated:Put" and record["eventSource"] == "loopml:objects"
    assert record["s3"]["bucket"]["name"] == str(inbox)
    assert record["s3"]["object"]["key"] == "sub/new.csv" and record["s3"]["object"]["size"] == 5
    assert event["uri"] == f"file://{inbox}/sub/new.csv" and event["trigger"] == "inbox"
    with plat.meta.session() as s:
        inv = s.get(t.FunctionInvocation, fired["started_id"])
        assert inv.status == "queued" and inv.event == event and inv.source == "trigger:inbox"
    assert poller.poll_once() == []

    # a rewrite (new size/mtime → new etag) is an overwrite: it fires again, once
    write(inbox / "sub" / "new.csv", b"hello again", age_s=3)
    [again] = poller.poll_once()
    assert again["dedupe_key"].startswith("sub/new.csv#11-")
    assert poller.poll_once() == []

    # a file still being written (fresh mtime) waits until it has settled
    fresh = inbox / "fresh.csv"
    fresh.write_bytes(b"part")
    future = time.time() + 3600
    os.utime(fresh, (future, future))
    assert poller.poll_once() == []
    write(fresh, b"complete")
    [settled] = poller.poll_once()
    assert settled["event"]["Records"][0]["s3"]["object"]["size"] == 8

    # paused: held; resume fires what arrived meanwhile
    service.pause_trigger(plat, "inbox")
    write(inbox / "while-paused.csv")
    assert poller.poll_once() == []
    service.resume_trigger(plat, "inbox")
    assert [f["event"]["Records"][0]["s3"]["object"]["key"] for f in poller.poll_once()] == ["while-paused.csv"]
    assert plat.triggers.count_firings("inbox") == 4


def test_suffix_filter_and_artifact_store_prefix(plat: Platform):
    root = Path(plat.settings.resolved_artifact_uri)
    service.create_trigger(plat, "zips", "objects", objects_uri="incoming/", suffix=".zip", workflow="flow")
    poller = TriggerPoller(plat)
    write(root / "incoming" / "a.zip")
    write(root / "incoming" / "a.txt")
    write(root / "elsewhere" / "b.zip")
    [fired] = poller.poll_once()
    assert fired["event"]["Records"][0]["s3"]["object"]["key"] == "incoming/a.zip"
    assert fired["event"]["uri"] == f"file://{root}/incoming/a.zip"
    assert fired["started_id"].startswith("flow-")


def test_burst_of_1000_local_files_exactly_once_across_restart(plat: Platform, tmp_path: Path):
    drop = tmp_path / "drop"
    drop.mkdir()
    service.create_trigger(plat, "burst", "objects", objects_uri=f"file://{drop}/", function="echo")
    for i in range(1000):
        write(drop / f"d{i // 100}" / f"obj-{i:04d}.bin", str(i).encode())
    poller = TriggerPoller(plat)
    poll_until(poller, lambda: plat.triggers.count_firings("burst") >= 1000)
    assert_burst(plat, "burst", invocations=True)
    # a restart: a new poller on the same database fires nothing more
    restarted = TriggerPoller(Platform(plat.settings))
    try:
        assert restarted.poll_once() == [] and restarted.poll_once() == []
    finally:
        restarted.platform.close()
    assert plat.triggers.count_firings("burst") == 1000


def assert_burst(plat: Platform, name: str, *, invocations: bool) -> None:
    with plat.meta.session() as s:
        firings = s.execute(select(func.count(), func.count(func.distinct(t.TriggerFiring.dedupe_key)),
                                   func.count(func.distinct(t.TriggerFiring.started_id)))
                            .where(t.TriggerFiring.trigger == name, t.TriggerFiring.status == "started")).one()
    assert tuple(firings) == (1000, 1000, 1000)
    assert count(plat.meta, t.TriggerObject, trigger=name) == 1000
    table = t.FunctionInvocation if invocations else t.WorkflowExecution
    assert count(plat.meta, table, source=f"trigger:{name}") == 1000


# -- object triggers: the S3 test server ------------------------------------------------------------

@pytest.fixture
def s3_settings(settings: Settings, moto_endpoint: str, s3_env: None) -> Settings:
    return settings.model_copy(update={"s3_endpoint_url": moto_endpoint})


def test_s3_prefix_fires_new_and_overwritten_objects_once(s3_settings: Settings, moto_endpoint: str):
    s3 = s3_client(moto_endpoint)
    bucket = make_bucket(moto_endpoint)
    s3.put_object(Bucket=bucket, Key="in/existing.json", Body=b"{}")
    plat = Platform(s3_settings)
    try:
        add_function(plat.meta, "echo")
        rec = service.create_trigger(plat, "s3in", "objects", objects_uri=f"s3://{bucket}/in/", function="echo")
        assert rec["objects_seen"] == 1
        poller = TriggerPoller(plat)
        assert poller.poll_once() == []
        put = s3.put_object(Bucket=bucket, Key="in/new/one.json", Body=b'{"a": 1}')
        s3.put_object(Bucket=bucket, Key="out/ignored.json", Body=b"{}")
        [fired] = poller.poll_once()  # listing cache invalidated: the new object is seen at once
        record = fired["event"]["Records"][0]
        assert record["s3"] == {"bucket": {"name": bucket},
                                "object": {"key": "in/new/one.json", "size": 8, "eTag": put["ETag"].strip('"')}}
        assert fired["event"]["uri"] == f"s3://{bucket}/in/new/one.json"
        assert poller.poll_once() == []
        s3.put_object(Bucket=bucket, Key="in/new/one.json", Body=b'{"a": 2, "b": 3}')  # overwrite
        assert len(poller.poll_once()) == 1
        assert poller.poll_once() == []

        # the function deleted later: a recorded, explained failure, not retried every poll
        remove_function(plat.meta, "echo")
        s3.put_object(Bucket=bucket, Key="in/orphan.json", Body=b"{}")
        [failed] = poller.poll_once()
        assert failed["status"] == "failed" and failed["error"] == "function 'echo' not found"
        assert poller.poll_once() == []
    finally:
        plat.close()


def test_s3_artifact_store_prefix(settings: Settings, moto_endpoint: str, s3_env: None):
    bucket = make_bucket(moto_endpoint)
    plat = Platform(settings.model_copy(update={"s3_endpoint_url": moto_endpoint,
                                                "artifact_uri": f"s3://{bucket}/root"}))
    try:
        add_function(plat.meta, "echo")
        rec = service.create_trigger(plat, "art", "objects", objects_uri="uploads/", function="echo")
        assert rec["spec"]["uri"] == f"s3://{bucket}/root/uploads/"
        plat.artifacts.put_bytes("uploads/x.csv", b"a,b\n")
        [fired] = TriggerPoller(plat).poll_once()
        assert fired["event"]["Records"][0]["s3"]["object"]["key"] == "root/uploads/x.csv"
    finally:
        plat.close()


def test_burst_of_1000_s3_objects_on_postgres_exactly_once(settings: Settings, moto_endpoint: str,
                                                           s3_env: None, postgres_url: str):
    bucket = make_bucket(moto_endpoint)
    plat = Platform(settings.model_copy(update={"s3_endpoint_url": moto_endpoint, "database_url": postgres_url}))
    try:
        add_workflow(plat.meta, "flow")
        service.create_trigger(plat, "s3burst", "objects", objects_uri=f"s3://{bucket}/burst/", workflow="flow")
        s3 = s3_client(moto_endpoint)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"burst/{i % 7}/o-{i:04d}", Body=b"x"),
                          range(1000)))
        poller = TriggerPoller(plat)
        poll_until(poller, lambda: plat.triggers.count_firings("s3burst") >= 1000)
        assert_burst(plat, "s3burst", invocations=False)
        restarted = Platform(plat.settings)
        try:
            assert TriggerPoller(restarted).poll_once() == []
        finally:
            restarted.close()
        assert plat.triggers.count_firings("s3burst") == 1000
    finally:
        plat.close()


def test_unreachable_listing_is_isolated(plat: Platform, tmp_path: Path, caplog):
    """A trigger whose listing fails is logged; the other triggers keep firing."""
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    service.create_trigger(plat, "good", "objects", objects_uri=str(good), function="echo")
    service.create_trigger(plat, "bad", "objects", objects_uri=str(bad), function="echo")
    poller = TriggerPoller(plat)
    poller._lister({"name": "bad", "spec": plat.triggers.get("bad")["spec"]}).list = _boom  # type: ignore[method-assign]
    write(good / "a")
    assert len(poller.poll_once()) == 1
    assert "bad" in poller.errors()


def _boom(**_kw: Any) -> dict:
    raise OSError("disk gone")


# -- cron triggers: a fake clock -------------------------------------------------------------------

def test_every_minute_schedule_fires_each_time_once(plat: Platform):
    clock = Clock(datetime(2025, 1, 6, 9, 0, 30, tzinfo=timezone.utc))
    service.create_trigger(plat, "minutely", "cron", cron="* * * * *", function="echo", now=clock)
    poller = TriggerPoller(plat, now=clock)
    assert poller.poll_once() == []
    clock.advance(seconds=30)  # 09:01:00
    [first] = poller.poll_once()
    assert first["event"] == {"source": "loopml.schedule", "detail-type": "Scheduled Event",
                              "time": "2025-01-06T09:01:00Z", "trigger": "minutely", "missed": 0}
    assert first["dedupe_key"] == "cron:2025-01-06T09:01:00Z"
    assert poller.poll_once() == []
    for _ in range(3):
        clock.advance(seconds=20)
        poller.poll_once()
    clock.advance(seconds=5)  # 09:02:05
    assert poller.poll_once() == []
    assert [f["event"]["time"] for f in plat.triggers.firings("minutely")] == [
        "2025-01-06T09:02:00Z", "2025-01-06T09:01:00Z"]
    assert plat.triggers.get("minutely")["cursor"] == {"last": "2025-01-06T09:02:00Z"}
    assert service.get_trigger(plat, "minutely")["next_run"] == "2025-01-06T09:03:00Z"


def test_time_zone_and_dst(plat: Platform):
    """09:30 in Paris is 08:30 UTC before the spring change (2025-03-30) and 07:30 UTC after."""
    clock = Clock(datetime(2025, 3, 28, 12, 0, tzinfo=timezone.utc))
    service.create_trigger(plat, "paris", "cron", cron="30 9 * * *", tz="Europe/Paris", function="echo", now=clock)
    poller = TriggerPoller(plat, now=clock)
    times = []
    for _ in range(4 * 24 * 2):  # four days, every half hour
        clock.advance(minutes=30)
        times += [f["event"]["time"] for f in poller.poll_once()]
    assert times == ["2025-03-29T08:30:00Z", "2025-03-30T07:30:00Z", "2025-03-31T07:30:00Z",
                     "2025-04-01T07:30:00Z"]
    assert all(f["status"] == "started" for f in plat.triggers.firings("paris"))


@pytest.mark.parametrize("policy", ["skip", "catch-up"])
def test_missed_runs_across_a_restart(plat: Platform, policy: str):
    clock = Clock(datetime(2025, 1, 6, 9, 0, 30, tzinfo=timezone.utc))
    service.create_trigger(plat, f"m-{policy}", "cron", cron="*/5 * * * *", missed=policy, function="echo", now=clock)
    clock.advance(minutes=5)  # 09:05:30
    assert len(TriggerPoller(plat, now=clock).poll_once()) == 1  # 09:05, on time
    # the control plane is down from 09:06 to 09:33:20: 09:10 … 09:30 were missed (5 times)
    clock.at = datetime(2025, 1, 6, 9, 33, 20, tzinfo=timezone.utc)
    restarted = Platform(plat.settings)
    try:
        [fired] = TriggerPoller(restarted, now=clock).poll_once()
    finally:
        restarted.close()
    assert fired["event"]["time"] == "2025-01-06T09:30:00Z" and fired["event"]["missed"] == 5
    if policy == "skip":
        assert fired["status"] == "skipped" and fired["started_id"] is None
        assert "5 scheduled run(s) missed" in fired["error"] and "policy skip" in fired["error"]
        assert count(plat.meta, t.FunctionInvocation, source=f"trigger:m-{policy}") == 1
    else:
        assert fired["status"] == "started" and fired["started_id"]
        assert count(plat.meta, t.FunctionInvocation, source=f"trigger:m-{policy}") == 2
    # back to normal: the next on-time run fires, nothing is repeated
    poller = TriggerPoller(plat, now=clock)
    assert poller.poll_once() == []
    clock.advance(minutes=2)  # 09:35:20
    [normal] = poller.poll_once()
    assert normal["event"]["time"] == "2025-01-06T09:35:00Z" and normal["event"]["missed"] == 0
    assert plat.triggers.count_firings(f"m-{policy}") == 3


def test_cron_validation(plat: Platform):
    with pytest.raises(InvalidInput, match="^cron: '61 \\* \\* \\* \\*' is not a valid"):
        service.create_trigger(plat, "bad", "cron", cron="61 * * * *", function="echo")
    with pytest.raises(InvalidInput, match="^tz: unknown time zone 'Mars/Base'"):
        service.create_trigger(plat, "bad", "cron", cron="* * * * *", tz="Mars/Base", function="echo")
    with pytest.raises(InvalidInput, match="^missed: 'twice'"):
        service.create_trigger(plat, "bad", "cron", cron="* * * * *", missed="twice", function="echo")
    with pytest.raises(InvalidInput, match="^tz: only for cron"):
        service.create_trigger(plat, "bad", "webhook", tz="UTC", function="echo")
    with pytest.raises(InvalidInput, match="workflow 'ghost' not found"):
        service.create_trigger(plat, "bad", "cron", cron="* * * * *", workflow="ghost")
    # a folder of the zone database and an overlong name used to escape as OSError (HTTP 500)
    for zone in ("Europe", "x" * 300):
        with pytest.raises(InvalidInput, match="^tz: unknown time zone"):
            service.create_trigger(plat, "bad", "cron", cron="* * * * *", tz=zone, function="echo")
    # valid syntax, but no such date: refused, instead of a trigger whose list/show answer 500
    with pytest.raises(InvalidInput, match="^cron: '0 0 31 2 \\*' never fires"):
        service.create_trigger(plat, "bad", "cron", cron="0 0 31 2 *", function="echo")
    assert plat.triggers.list() == []
    # one written before this check (or by an older LoopML) still lists, with no next run
    plat.triggers.create("feb31", "cron", {"cron": "0 0 31 2 *", "tz": "UTC", "missed": "skip"}, "function",
                         "echo", cursor={"last": "2026-01-01T00:00:00Z"})
    assert [r["next_run"] for r in service.list_triggers(plat)] == [None]
    assert service.get_trigger(plat, "feb31")["next_run"] is None


# -- alerts ----------------------------------------------------------------------------------------

def test_fire_alert_once_per_alert_id(plat: Platform):
    add_monitor(plat, "digits-monitor")
    add_monitor(plat, "another-monitor")
    service.create_trigger(plat, "drift", "alert", monitor="digits-monitor", function="echo")
    service.create_trigger(plat, "other", "alert", monitor="another-monitor", function="echo")
    alert = {"id": "alert-1", "metric": "psi", "value": 0.4}
    [fired] = service.fire_alert(plat, "digits-monitor", alert)
    assert fired["trigger"] == "drift" and fired["event"] == {
        "source": "loopml.monitor", "trigger": "drift", "monitor": "digits-monitor", "alert": alert}
    assert service.fire_alert(plat, "digits-monitor", alert) == []
    assert len(service.fire_alert(plat, "digits-monitor", {**alert, "id": "alert-2"})) == 1
    assert plat.triggers.count_firings("other") == 0


# -- the surface: REST, webhooks, SDK, CLI, against a real control plane ----------------------------

@pytest.fixture
def targets(live_server: str, settings: Settings):
    plat = Platform(settings)
    add_function(plat.meta, "echo")
    add_workflow(plat.meta, "flow")
    yield plat
    plat.close()


@pytest.fixture
def api(live_server: str, targets: Platform):
    with httpx.Client(base_url=live_server, timeout=30) as http:
        yield http


def test_webhook_over_http(api: httpx.Client, targets: Platform):
    created = api.post("/triggers", json={"name": "deploy", "kind": "webhook", "workflow": "flow"})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert created.json()["url"] == "/hooks/deploy"
    assert "secret" not in api.get("/triggers/deploy").json()
    with targets.meta.session() as s:
        assert s.get(t.Trigger, "deploy").secret_hash == service.hash_secret(secret)  # only the hash is kept

    assert_error(api.post("/hooks/deploy", json={}), 401, "unauthorized", "needs its secret")
    assert_error(api.post("/hooks/deploy", json={}, headers={"Authorization": "Bearer wrong"}), 401,
                 "unauthorized", "wrong secret")
    assert_error(api.post("/hooks/nobody", json={}, headers={"Authorization": "Bearer x"}), 404, "not_found")
    assert targets.triggers.count_firings("deploy") == 0  # unauthenticated calls are not recorded

    ok = api.post("/hooks/deploy", json={"ref": "main"},
                  headers={"X-LoopML-Hook-Secret": secret, "Idempotency-Key": "build-7", "User-Agent": "ci/1"})
    assert ok.status_code == 202, ok.text
    answer = ok.json()
    assert answer["status"] == "started" and answer["started"]["kind"] == "workflow"
    with targets.meta.session() as s:
        execution = s.get(t.WorkflowExecution, answer["started"]["id"])
        assert execution.input["body"] == {"ref": "main"} and execution.input["source"] == "loopml.webhook"
        assert execution.input["headers"] == {"content-type": "application/json", "user-agent": "ci/1",
                                              "idempotency-key": "build-7"}
    again = api.post("/hooks/deploy", json={"ref": "main"},
                     headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "build-7"})
    assert again.status_code == 202 and again.json()["firing"] == answer["firing"] and again.json()["duplicate"]
    empty = api.post("/hooks/deploy", headers={"Authorization": f"Bearer {secret}"})
    assert empty.status_code == 202 and empty.json()["status"] == "started"

    bad = api.post("/hooks/deploy", content=b'{"ref": ', headers={"Authorization": f"Bearer {secret}",
                                                                  "Content-Type": "application/json"})
    assert_error(bad, 400, "invalid_input", "body: not valid JSON")
    [last] = api.get("/triggers/deploy/history", params={"limit": 1}).json()
    assert last["status"] == "failed" and "not valid JSON" in last["error"] and last["started_id"] is None

    for body in (b"NaN", b"[1e999]"):  # not JSON numbers (PostgreSQL's json type refuses them)
        assert_error(api.post("/hooks/deploy", content=body, headers={"Authorization": f"Bearer {secret}"}),
                     400, "invalid_input", "body: not valid JSON")
    # the body is read only up to the limit (the route is open: no API token), then refused
    huge = b"[" + b"1," * service.MAX_WEBHOOK_BODY + b"1]"
    assert_error(api.post("/hooks/deploy", content=huge, headers={"Authorization": f"Bearer {secret}"}),
                 400, "invalid_input", "more than the 1048576 bytes allowed")

    assert api.post("/triggers/deploy/pause").json()["status"] == "paused"
    assert_error(api.post("/hooks/deploy", json={}, headers={"Authorization": f"Bearer {secret}"}),
                 409, "conflict", "paused")
    assert api.post("/triggers/deploy/resume").json()["status"] == "active"
    assert api.get("/health").status_code == 200  # the control plane keeps running


def test_webhook_ignores_the_api_token(settings: Settings):
    """With an API token configured, /hooks/ authenticates with the hook's secret alone."""
    from fastapi.testclient import TestClient

    from loopml.api.app import create_app

    secured = settings.model_copy(update={"token": "api-token"})
    plat = Platform(secured)
    add_function(plat.meta, "echo")
    secret = service.create_trigger(plat, "hook", "webhook", function="echo")["secret"]
    try:
        with TestClient(create_app(secured, platform=plat, start_loop=False)) as http:
            assert http.get("/triggers").status_code == 401
            assert http.post("/hooks/hook", json={"a": 1}, headers={"Authorization": f"Bearer {secret}"}).status_code == 202
            assert http.post("/hooks/hook", json={"a": 1}).status_code == 401
    finally:
        plat.close()


def test_rest_errors_and_objects_fired_by_the_running_poller(api: httpx.Client, targets: Platform, tmp_path: Path):
    assert_error(api.post("/triggers", json={"name": "x", "kind": "cron", "cron": "* * * * *",
                                             "function": "missing"}), 400, "invalid_input", "function 'missing' not found")
    assert_error(api.post("/triggers", json={"name": "x", "kind": "cron", "cron": "* * * * *", "tz": "Nowhere/City",
                                             "function": "echo"}), 400, "invalid_input", "tz:")
    assert_error(api.post("/triggers", json={"name": "x", "kind": "rss", "function": "echo"}), 400, "invalid_input", "kind:")
    assert_error(api.post("/triggers", json={"name": "x", "kind": "webhook", "function": "echo", "workflow": "flow"}),
                 400, "invalid_input", "exactly one of function or workflow")
    assert_error(api.post("/triggers", json={"name": "x y", "kind": "webhook", "function": "echo"}), 400, "invalid_input", "name:")
    assert_error(api.post("/triggers", json={"name": "x", "kind": "objects", "objects_uri": "ftp://h/x",
                                             "function": "echo"}), 400, "invalid_input", "objects_uri:")
    assert_error(api.get("/triggers/none"), 404, "not_found", "trigger 'none' not found")
    assert_error(api.post("/triggers/none/fire", json={}), 404, "not_found")

    drop = tmp_path / "api-drop"
    assert_error(api.post("/triggers", json={"name": "drop", "kind": "objects", "objects_uri": str(drop),
                                             "function": "echo"}), 400, "invalid_input", "does not exist")
    drop.mkdir()
    created = api.post("/triggers", json={"name": "drop", "kind": "objects", "objects_uri": str(drop), "function": "echo"})
    assert created.status_code == 201, created.text
    write(drop / "a.csv")
    deadline = time.monotonic() + 60  # the control loop's poller thread fires it
    while not api.get("/triggers/drop").json().get("last_firing"):
        assert time.monotonic() < deadline, "the running poller never fired"
        time.sleep(0.2)
    last = api.get("/triggers/drop").json()["last_firing"]
    assert last["status"] == "started" and last["event"]["Records"][0]["s3"]["object"]["key"] == "a.csv"
    time.sleep(1.5)  # a few more polls: still one firing
    assert len(api.get("/triggers/drop/history").json()) == 1

    # a missing target at fire time: recorded and explained; the server keeps answering
    remove_function(targets.meta, "echo")
    fired = api.post("/triggers/drop/fire", json={"event": {"manual": True}})
    assert fired.status_code == 202 and fired.json()["status"] == "failed"
    assert fired.json()["error"] == "function 'echo' not found"
    assert api.get("/health").status_code == 200
    assert api.delete("/triggers/drop").json() == {"deleted": "drop"}
    assert_error(api.get("/triggers/drop"), 404, "not_found")


def test_sdk_round_trip(live_server: str, targets: Platform):
    with Client(live_server, token="") as c:
        created = c.create_trigger("nightly", cron="0 3 * * *", tz="Europe/Paris", missed="catch-up", workflow="flow")
        assert created["spec"] == {"cron": "0 3 * * *", "tz": "Europe/Paris", "missed": "catch-up"}
        assert c.trigger("nightly")["next_run"].endswith(":00:00Z")
        assert c.create_trigger("hook", webhook=True, function="echo")["secret"]
        add_monitor(targets, "digits-monitor")
        c.create_trigger("alarm", alert="digits-monitor", function="echo")
        assert [r["name"] for r in c.triggers()] == ["alarm", "hook", "nightly"]
        fired = c.fire_trigger("nightly")
        assert fired["status"] == "started" and fired["started"]["kind"] == "workflow"
        [h] = c.trigger_history("nightly")
        assert h["event"]["test"] is True and h["event"]["detail-type"] == "Scheduled Event"
        assert c.fire_trigger("alarm", {"custom": 1})["started"]["kind"] == "function"
        assert c.pause_trigger("nightly")["status"] == "paused"
        assert c.resume_trigger("nightly")["status"] == "active"
        with pytest.raises(InvalidInput, match="exactly one of objects, cron, webhook or alert"):
            c.create_trigger("two", cron="* * * * *", webhook=True, function="echo")
        with pytest.raises(Conflict):
            c.create_trigger("hook", webhook=True, function="echo")
        c.delete_trigger("alarm")
        with pytest.raises(NotFound):
            c.trigger("alarm")


def test_cli(live_server: str, targets: Platform, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    run = cli_runner(live_server, monkeypatch)

    one_line_error(run("triggers", "create", "x", "--function", "echo"), 2, "exactly one of --objects")
    one_line_error(run("triggers", "create", "x", "--webhook", "--cron", "* * * * *", "--function", "echo"), 2,
                   "--webhook", "--cron")
    one_line_error(run("triggers", "create", "x", "--webhook"), 2, "--function or --workflow")
    one_line_error(run("triggers", "create", "x", "--cron", "nope", "--function", "echo"), 2, "cron:")
    one_line_error(run("triggers", "show", "ghost"), 2, "trigger 'ghost' not found")

    created = ok_json(run("triggers", "create", "every5", "--cron", "*/5 * * * *", "--tz", "Asia/Tokyo",
                          "--workflow", "flow", "--json"))
    assert created["spec"]["tz"] == "Asia/Tokyo"
    out = run("triggers", "create", "gh", "--webhook", "--function", "echo")
    assert out.exit_code == 0 and "shown once" in out.stdout and "/hooks/gh" in out.stdout
    (tmp_path / "in").mkdir()
    assert run("triggers", "create", "files", "--objects", str(tmp_path / "in"), "--suffix", ".csv",
               "--function", "echo").exit_code == 0

    listing = run("triggers", "list")
    assert listing.exit_code == 0 and "every5" in listing.stdout and "webhook" in listing.stdout
    assert {r["name"] for r in ok_json(run("triggers", "list", "--json"))} == {"every5", "gh", "files"}
    show = run("triggers", "show", "every5")
    assert show.exit_code == 0 and "next run" in show.stdout

    fired = ok_json(run("triggers", "fire", "gh", "--event", '{"x": 1}', "--json"))
    assert fired["status"] == "started"
    one_line_error(run("triggers", "fire", "gh", "--event", "{oops"), 2, "--event: not valid JSON")
    history = run("triggers", "history", "gh")
    assert history.exit_code == 0 and fired["started"]["id"] in history.stdout
    assert ok_json(run("triggers", "history", "gh", "--json"))[0]["event"] == {"x": 1}

    assert ok_json(run("triggers", "pause", "every5", "--json"))["status"] == "paused"
    assert "resumed" in run("triggers", "resume", "every5").stdout
    assert ok_json(run("triggers", "delete", "files", "--json")) == {"deleted": "files"}
    one_line_error(run("triggers", "delete", "files"), 2, "not found")
