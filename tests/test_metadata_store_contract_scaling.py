"""The autoscaling repository's contract, run unchanged on SQLite and PostgreSQL: a policy per
endpoint, the leader's state and decisions (newest kept), all gone with the endpoint (cascade)."""

from __future__ import annotations

import pytest

from loopml.store import scaling_repo
from loopml.store.endpoints_repo import EndpointRepo
from loopml.store.scaling_repo import ScalingRepo

pytest_plugins = ("tests.backends",)

POLICY = {"min_replicas": 1, "max_replicas": 4, "metric": "queue", "target": 8.0,
          "scale_out_cooldown_s": 60.0, "scale_in_cooldown_s": 300.0}
STATE = {"desired": 3, "last_scale_out_at": 1000.5, "last_scale_in_at": None, "below_since": None}


def test_policy_state_decisions_and_cascade(metadata_store, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints, repo = EndpointRepo(metadata_store), ScalingRepo(metadata_store)
    endpoints.create("ep", {"variants": []}, {"variants": []})
    assert repo.get("ep") is None and repo.desired("ep") is None and repo.all() == []
    repo.put("ep", POLICY, desired=2)
    assert repo.desired("ep") == 2 and repo.get("ep")["target"] == 8.0
    repo.put("ep", {**POLICY, "max_replicas": 6}, desired=1)  # a change keeps the count
    assert repo.desired("ep") == 2 and repo.get("ep")["max_replicas"] == 6
    monkeypatch.setattr(scaling_repo, "KEEP", 3)
    for i in range(5):
        decision = {"at": 1000.0 + i, "from_replicas": i, "to_replicas": i + 1, "metric": "queue",
                    "value": 9.5 * i, "target": 8.0, "reason": f"step {i}"}
        assert repo.evaluated("ep", STATE, at=1000.0 + i, reason=f"step {i}", value=9.5 * i, decision=decision)
    got = repo.get("ep")
    assert (got["desired"], got["last_scale_out_at"], got["last_reason"], got["last_value"]) == (3, 1000.5, "step 4", 38.0)
    shown = repo.decisions("ep")
    assert [d["reason"] for d in shown] == ["step 4", "step 3", "step 2"]  # newest KEEP, newest first
    assert shown[0]["at"].startswith("1970-01-01T00:16:44") and shown[0]["to_replicas"] == 5
    assert repo.remove("ep") and repo.desired("ep") is None and len(repo.decisions("ep")) == 3
    assert not repo.evaluated("ep", STATE, at=2000.0, reason="x", value=None)  # turned off meanwhile
    repo.put("ep", POLICY, desired=1)
    endpoints.delete("ep")
    assert repo.all() == [] and repo.decisions("ep") == []
