"""The serving-nodes repository's contract, run unchanged on SQLite and PostgreSQL.

A node registers (a restart under the same id resets its row), heartbeats what it has loaded and
its load, marks itself gone on a clean stop; readers see its heartbeat age by the database's clock,
call a silent node lost after a TTL, and collect rows of nodes long gone or silent.
"""

from __future__ import annotations

import time

import pytest

from loopml.core.errors import InvalidInput
from loopml.store.nodes_repo import NodeRepo
from tests.store_support import ODD_JSON, assert_utc_iso

pytest_plugins = ("tests.backends",)


def test_register_heartbeat_and_list(metadata_store) -> None:
    repo = NodeRepo(metadata_store)
    rec = repo.register("h-1-a", "http://127.0.0.1:9001", "node", version="0.1")
    assert (rec["state"], rec["kind"], rec["endpoint"], rec["lost"]) == ("starting", "node", None, False)
    assert rec["endpoints_loaded"] == [] and rec["load"] == {}
    assert_utc_iso(rec["started_at"])
    repo.register("h-2-b", "http://127.0.0.1:9002", "replica", endpoint="mnist", state="ready")
    assert repo.heartbeat("h-1-a", endpoints_loaded=["mnist", "iris"], load=ODD_JSON, state="ready")
    got = repo.get("h-1-a")
    assert (got["state"], got["endpoints_loaded"], got["load"]) == ("ready", ["mnist", "iris"], ODD_JSON)
    assert 0 <= got["heartbeat_age_s"] < 60
    assert repo.heartbeat("h-1-a")  # a bare heartbeat keeps what was reported
    assert repo.get("h-1-a")["endpoints_loaded"] == ["mnist", "iris"]
    assert [r["id"] for r in repo.list()] == ["h-1-a", "h-2-b"]
    assert [r["id"] for r in repo.list(kind="replica")] == ["h-2-b"]
    assert [r["id"] for r in repo.list(endpoint="mnist")] == ["h-2-b"]
    assert [r["id"] for r in repo.list(serving="iris")] == ["h-1-a"]
    assert not repo.heartbeat("nobody")
    assert repo.get("nobody") is None


def test_a_restart_under_the_same_id_resets_the_row(metadata_store) -> None:
    repo = NodeRepo(metadata_store)
    repo.register("n", "http://a:1", "node")
    repo.heartbeat("n", endpoints_loaded=["x"], load={"in_flight": 3}, state="ready")
    rec = repo.register("n", "http://a:2", "node")
    assert (rec["address"], rec["state"], rec["endpoints_loaded"], rec["load"]) == ("http://a:2", "starting", [], {})
    assert len(repo.list()) == 1


def test_gone_lost_live_and_gc(metadata_store) -> None:
    repo = NodeRepo(metadata_store)
    for node in ("a", "b", "c"):
        repo.register(node, f"http://h:{ord(node)}", "node", state="ready")
    assert repo.set_state("a", "gone")
    assert not repo.set_state("nobody", "gone")
    assert [r["id"] for r in repo.list(live_within_s=30)] == ["b", "c"]  # gone is never live
    time.sleep(2.2)  # a and b age past 2 s by the database's clock
    repo.heartbeat("c")  # c stays fresh for 2 s: room for the three reads below on a loaded machine
    assert [r["id"] for r in repo.list(live_within_s=2)] == ["c"]
    states = {r["id"]: (r["state"], r["lost"]) for r in repo.list(lost_after_s=2)}
    assert states == {"a": ("gone", False), "b": ("ready", True), "c": ("ready", False)}
    assert repo.gc(2) == 2  # a (gone) and b (silent); c heartbeat just now
    assert [r["id"] for r in repo.list()] == ["c"]
    assert not repo.heartbeat("b")  # collected: the node must register again
    assert repo.remove("c") and not repo.remove("c")


def test_unknown_kind_or_state_is_refused(metadata_store) -> None:
    repo = NodeRepo(metadata_store)
    with pytest.raises(InvalidInput, match="node kind 'pod'"):
        repo.register("n", "http://h:1", "pod")
    repo.register("n", "http://h:1", "embedded")
    with pytest.raises(InvalidInput, match="node state 'dead'"):
        repo.set_state("n", "dead")
    with pytest.raises(InvalidInput, match="node state 'dead'"):
        repo.heartbeat("n", state="dead")
