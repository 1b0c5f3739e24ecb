"""The lease repository's contract, run unchanged on SQLite and PostgreSQL.

A lease is taken only when free or expired (by the database's clock), every new holder gets a
higher epoch, only the current epoch renews, and a transaction fenced on a stale epoch commits
nothing (the control plane's leader election, controlplane/leadership.py).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from loopml.store import tables as t
from loopml.store.leases_repo import Fenced, LeaseRepo

pytest_plugins = ("tests.backends",)


def _datasets(store) -> list[str]:
    with store.session() as s:
        return list(s.execute(select(t.Dataset.name).order_by(t.Dataset.name)).scalars())


def _write(store, name: str) -> None:
    with store.session() as s:
        s.add(t.Dataset(name=name))


def test_a_held_lease_is_taken_by_nobody_else_and_renewed_only_by_its_epoch(metadata_store) -> None:
    repo = LeaseRepo(metadata_store)
    assert repo.get("control") is None
    assert repo.acquire("control", "a", 30) == 1
    assert repo.acquire("control", "b", 30) is None
    assert repo.acquire("control", "a", 30) is None  # even its holder: a new epoch only after expiry
    lease = repo.get("control")
    assert (lease["holder"], lease["epoch"], lease["held"]) == ("a", 1, True)
    assert 25 < lease["expires_in_s"] <= 30
    assert repo.renew("control", "a", 1, 30)
    assert not repo.renew("control", "a", 2, 30)
    assert not repo.renew("control", "b", 1, 30)


def test_an_expired_lease_goes_to_the_next_holder_with_a_higher_epoch(metadata_store) -> None:
    repo = LeaseRepo(metadata_store)
    assert repo.acquire("control", "a", 0.2) == 1
    time.sleep(0.4)  # expiry by the database's clock
    assert repo.get("control")["held"] is False
    assert repo.acquire("control", "b", 30) == 2
    assert not repo.renew("control", "a", 1, 30)  # the ex-holder cannot extend it back
    assert repo.get("control")["holder"] == "b"


def test_release_hands_the_lease_over_at_once(metadata_store) -> None:
    repo = LeaseRepo(metadata_store)
    assert repo.acquire("control", "a", 30) == 1
    assert not repo.release("control", "b", 1)
    assert repo.release("control", "a", 1)
    assert repo.acquire("control", "b", 30) == 2


def test_a_fenced_write_commits_only_while_its_epoch_holds(metadata_store) -> None:
    repo = LeaseRepo(metadata_store)
    assert repo.acquire("control", "a", 3) == 1  # 3 s: room for the write below on a loaded machine
    with repo.fenced("control", "a", 1):
        _write(metadata_store, "while-leading")
    deadline = time.monotonic() + 60
    while repo.get("control")["held"]:  # expiry by the database's clock
        assert time.monotonic() < deadline, "the lease never expired"
        time.sleep(0.1)
    with repo.fenced("control", "a", 1), pytest.raises(Fenced, match="expired"):
        _write(metadata_store, "after-expiry")  # expired, nobody took over yet: still refused
    assert repo.acquire("control", "b", 30) == 2
    with repo.fenced("control", "a", 1), pytest.raises(Fenced, match="stale"):
        _write(metadata_store, "stale-epoch")
    with repo.fenced("control", "b", 2):
        _write(metadata_store, "new-leader")
    _write(metadata_store, "unfenced")  # outside the block: no check (the API's writes)
    assert _datasets(metadata_store) == ["new-leader", "unfenced", "while-leading"]


def test_the_fence_is_per_thread(metadata_store) -> None:
    repo = LeaseRepo(metadata_store)
    assert repo.acquire("control", "b", 30) == 1
    errors: list[BaseException] = []

    def other_thread() -> None:
        try:
            _write(metadata_store, "api-write")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    with repo.fenced("control", "a", 7):  # a stale fence on this thread only
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        with pytest.raises(Fenced):
            _write(metadata_store, "stale")
    assert errors == []
    assert _datasets(metadata_store) == ["api-write"]
