"""Invocation outcomes survive control-plane restarts: what finished while it was down keeps its
result, what was still running is waited for, what was cut off is retried (async: up to 3
attempts, then dead-lettered and redrivable) — and, end to end, a real server killed with
``kill -9`` in the middle of a burst of new objects does every object's work exactly once."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from loopml.core.timeutil import parse_iso, utcnow
from loopml.sdk.client import Client
from tests.process_support import free_port, start_server, wait_for

FIXTURES = Path(__file__).parent / "fixtures" / "functions"
DEADLINE_S = 240

pytest_plugins = ("tests.backends",)


def test_dead_letter_contract(metadata_store):
    """Store contract (SQLite + PostgreSQL): the firing that started an invocation is marked failed."""
    from loopml.store.functions_repo import FunctionRepo
    from loopml.store.triggers_repo import FAILED, Firing, TriggerRepo

    functions, triggers = FunctionRepo(metadata_store), TriggerRepo(metadata_store)
    functions.create("fn", handler="h.handler", code_key="k", code_sha256="a" * 64, timeout_s=1, memory_mb=64)
    triggers.create("hook", "webhook", {}, "function", "fn")
    [fired] = triggers.fire("hook", [Firing({"n": 1})])
    assert triggers.dead_letter("inv-nobody-started", "x") is None
    marked = triggers.dead_letter(fired["started_id"], "dead letter: cut off 3 times")
    assert (marked["id"], marked["status"], marked["error"]) == (fired["id"], FAILED, "dead letter: cut off 3 times")
    assert [f["id"] for f in triggers.failed_firings("hook")] == [fired["id"]]


def _stored(platform, name: str, fixture: str, **config) -> dict:
    from loopml.functions import service

    return service.create_function(platform, name, filename=fixture, data=(FIXTURES / fixture).read_bytes(),
                                   **config)


def _as_if_cut_off(platform, inv_id: str, pid: int | None) -> None:
    """What a control plane killed right after starting ``inv_id`` leaves: running, maybe a pid."""
    from loopml.functions.runtime import HOST
    from loopml.store.functions_repo import QUEUED, RUNNING

    assert platform.functions.transition(inv_id, RUNNING, expect=[QUEUED], worker_host=HOST, worker_pid=pid)


def _dead_pid() -> int:
    proc = psutil.Popen(["true"])
    proc.wait()
    return proc.pid


def test_outcome_spooled_while_down_is_recorded_and_a_running_one_is_waited_for(platform):
    from loopml.controlplane.functions import FunctionDispatcher
    from loopml.functions.runtime import launch, supervisor_alive, spool_dir

    hello = _stored(platform, "hello", "hello.py")
    sleepy = _stored(platform, "sleepy", "sleepy.py", timeout_s=120)
    done = platform.functions.enqueue("hello", {"n": 1}, source="trigger:t")
    running = platform.functions.enqueue("sleepy", None, source="trigger:t")
    # a control plane started both supervisors, then died (nothing recorded their end)
    for inv, fn in ((done, hello), (running, sleepy)):
        _as_if_cut_off(platform, inv["id"], None)
        pid = launch(platform.settings, platform.artifacts, fn, platform.functions.invocation(inv["id"]), token=None)
        platform.functions.set_fields(inv["id"], worker_pid=pid)
    wait_for(lambda: (spool_dir(platform.settings) / f"{done['id']}.json").exists(), DEADLINE_S,
             what="hello's outcome in the spool")
    sleepy_pid = platform.functions.invocation(running["id"])["worker_pid"]
    assert supervisor_alive(sleepy_pid, running["id"])

    dispatcher = FunctionDispatcher(platform)  # the next control plane
    try:
        dispatcher.tick()
        record = platform.functions.invocation(done["id"])
        # hello calls the API, which is not running here: the handler's own failure is kept as is
        assert record["status"] == "failed" and record["error_type"] == "LoopMLError", record
        assert "hello from the logger" in record["logs"] and record["attempt"] == 1
        assert not (spool_dir(platform.settings) / f"{done['id']}.json").exists()
        final = dispatcher.wait(running["id"], DEADLINE_S)
    finally:
        dispatcher.stop()
    assert (final["status"], final["result"], final["attempt"]) == ("succeeded", "woke up", 1), final


def test_cut_off_async_invocation_is_retried_then_dead_lettered_and_redriven(platform, monkeypatch):
    from loopml.controlplane import functions as cp
    from loopml.store.functions_repo import QUEUED
    from loopml.triggers import service

    monkeypatch.setattr(cp, "RETRY_BACKOFF_S", (0.2, 0.2))
    _stored(platform, "hello", "hello.py")
    service.create_trigger(platform, "hook", "webhook", function="hello")
    fired = service.fire_manual(platform, "hook", {"n": 1})
    inv_id = fired["started"]["id"]
    for attempt in (1, 2, 3):
        record = platform.functions.invocation(inv_id)
        assert (record["status"], record["attempt"]) == (QUEUED, attempt), record
        _as_if_cut_off(platform, inv_id, _dead_pid())  # its supervisor died with the machine, say
        dispatcher = cp.FunctionDispatcher(platform)
        dispatcher._stop.set()  # recover only: start nothing
        dispatcher._recover()
        dispatcher.stop()
    record = platform.functions.invocation(inv_id)
    assert (record["status"], record["error_type"], record["attempt"]) == ("failed", "Function.Interrupted", 3)
    assert "no retries left" in record["error_message"]
    firing = platform.triggers.firing("hook", fired["firing"])
    assert firing["status"] == "failed" and firing["error"].startswith("dead letter: invocation " + inv_id)

    redriven = service.redrive(platform, "hook")
    assert [r["redrive_of"] for r in redriven] == [fired["firing"]]
    again = platform.functions.invocation(redriven[0]["started"]["id"])
    assert (again["status"], again["attempt"], again["event"]["n"]) == (QUEUED, 1, 1)


def test_sync_invocation_cut_off_is_interrupted_not_retried(platform):
    from loopml.controlplane.functions import FunctionDispatcher

    _stored(platform, "hello", "hello.py")
    inv = platform.functions.enqueue("hello", {}, source="api")
    _as_if_cut_off(platform, inv["id"], None)
    dispatcher = FunctionDispatcher(platform)
    dispatcher._stop.set()
    dispatcher._recover()
    dispatcher.stop()
    record = platform.functions.invocation(inv["id"])
    assert (record["status"], record["error_type"], record["attempt"]) == ("failed", "Function.Interrupted", 1)


# -- end to end: a real server, a burst of objects, kill -9 --------------------------------------

@pytest.fixture
def markers() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """A loopback service the function reports each object's work to (outside the sandbox)."""
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                seen.append((body["key"], body["request_id"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/done", seen
    finally:
        server.shutdown()
        server.server_close()


def test_kill_9_mid_burst_every_object_done_exactly_once(tmp_path, markers):
    url, seen = markers
    count = 120
    home, inbox, log = tmp_path / "home", tmp_path / "inbox", tmp_path / "server.log"
    inbox.mkdir()
    port = free_port()
    extra = {"LOOPML_TRIGGER_POLL_INTERVAL_S": "0.2"}
    server = start_server(home, port, log, **extra)
    client = Client(f"http://127.0.0.1:{port}", token="")
    try:
        client.create_function("marker", FIXTURES / "marker.py", timeout_s=60,
                               environment={"MARKER_URL": url, "WORK_S": "0.5"})
        client.create_trigger("inbox", objects=str(inbox), function="marker")

        def burst() -> None:
            for i in range(count):
                (inbox / f"obj-{i:04d}.txt").write_text(f"object {i}")
                time.sleep(0.02)

        writer = threading.Thread(target=burst)
        writer.start()
        wait_for(lambda: len(seen) >= 8, DEADLINE_S, what="the first objects' work")
        killed_at = utcnow()
        server.send_signal(signal.SIGKILL)  # mid-burst: invocations running, queued, not yet fired
        server.wait(30)
        writer.join()
        server = start_server(home, port, log, **extra)

        keys = {f"obj-{i:04d}.txt" for i in range(count)}

        def all_done():
            invocations = client.function_invocations("marker", limit=1000)
            ended = [i for i in invocations if i["status"] in ("succeeded", "failed")]
            return invocations if len(ended) == len(invocations) == count and \
                {k for k, _ in seen} >= keys else None

        invocations = wait_for(all_done, DEADLINE_S, poll=0.5, what="every object's work")
        done = Counter(k for k, _ in seen)
        twice = {rid for k, rid in seen if done[k] > 1}
        assert set(done) == keys and max(done.values()) == 1, (
            [(k, rid) for k, rid in seen if done[k] > 1],
            [(i["id"], i["attempt"], i["started_at"], i["ended_at"], i["error_message"], str(killed_at))
             for i in invocations if i["id"] in twice])
        assert all(i["status"] == "succeeded" for i in invocations), \
            [(i["id"], i["error_type"], i["error_message"]) for i in invocations if i["status"] != "succeeded"]
        assert len({i["event"]["Records"][0]["s3"]["object"]["key"] for i in invocations}) == count
        assert client.trigger("inbox")["objects_seen"] == count
        # some ran through the kill: started before it, their outcome recorded by the next server
        across = [i for i in invocations if parse_iso(i["started_at"]) < killed_at < parse_iso(i["ended_at"])]
        assert across, "no invocation was running at the kill"
    finally:
        server.terminate()
        server.wait(60)

    def leftovers():
        found = []
        for p in psutil.process_iter():
            try:
                if any(str(home) in a for a in p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
            except psutil.Error:
                continue
        return found
    assert wait_for(lambda: not leftovers(), 60, what="no supervisor left running")
