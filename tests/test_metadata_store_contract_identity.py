"""The identity repositories' contract (users, API tokens, audit log; a function's permissions),
run unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from loopml.core.errors import Conflict, NotFound
from loopml.core.timeutil import parse_iso, utcnow
from loopml.identity import tokens
from loopml.store import tables as t
from loopml.store.functions_repo import FunctionRepo
from loopml.store.identity_repo import AuditRepo, IdentityRepo
from tests.store_support import assert_utc_iso, count

pytest_plugins = ("tests.backends",)


def test_users_round_trip_and_are_unique(metadata_store) -> None:
    repo = IdentityRepo(metadata_store)
    assert repo.users() == [] and repo.any_user() is False
    rec = repo.create_user("bob", "viewer", created_by="bootstrap")
    assert (rec["name"], rec["role"], rec["created_by"]) == ("bob", "viewer", "bootstrap")
    assert_utc_iso(rec["created_at"])
    repo.create_user("alice", "admin")
    assert [u["name"] for u in repo.users()] == ["alice", "bob"] and repo.any_user() is True
    with pytest.raises(Conflict, match="user 'bob' already exists"):
        repo.create_user("bob", "editor")
    assert repo.user("bob")["role"] == "viewer"  # untouched
    with pytest.raises(NotFound, match="did you mean 'bob'"):
        repo.user("bobb")


def test_tokens_keep_only_the_hash_and_cascade_with_their_user(metadata_store) -> None:
    repo = IdentityRepo(metadata_store)
    repo.create_user("alice", "editor")
    token_id, token, secret_hash = tokens.mint()
    expires = utcnow() + timedelta(days=30)
    rec = repo.create_token(token_id, secret_hash, user="alice", name="ci", role="viewer",
                            scopes=["endpoints:mnist:invoke"], created_by="alice", expires_at=expires)
    assert (rec["id"], rec["user"], rec["role"], rec["scopes"], rec["revoked_at"]) == (
        token_id, "alice", "viewer", ["endpoints:mnist:invoke"], None)
    assert abs((parse_iso(rec["expires_at"]) - expires).total_seconds()) < 1
    assert "secret_hash" not in rec and token not in str(rec)
    found, stored_hash, owner = repo.credentials(token_id)
    assert found == rec and stored_hash == secret_hash and owner["role"] == "editor"
    with metadata_store.session() as s:  # the secret itself is nowhere in the row
        row = s.get(t.ApiToken, token_id)
        assert token.split("_")[2] not in " ".join(str(getattr(row, c.name)) for c in t.ApiToken.__table__.columns)
    assert repo.credentials("000000000000") is None
    with pytest.raises(Conflict):
        repo.create_token(token_id, secret_hash, user="alice")
    with pytest.raises(NotFound, match="user 'nobody' not found"):
        repo.create_token("aaaaaaaaaaaa", secret_hash, user="nobody")
    # revoke: kept (lists still name it), idempotent
    first = repo.revoke_token(token_id)
    assert_utc_iso(first["revoked_at"])
    assert repo.revoke_token(token_id)["revoked_at"] == first["revoked_at"]
    with pytest.raises(NotFound):
        repo.revoke_token("ffffffffffff")
    # a function invocation's token belongs to no user; lists of users' tokens skip it
    repo.create_token("bbbbbbbbbbbb", secret_hash, subject="function:f", expires_at=utcnow() - timedelta(seconds=1))
    repo.create_token("cccccccccccc", secret_hash, subject="function:g", expires_at=utcnow() + timedelta(hours=1))
    assert [k["id"] for k in repo.tokens()] == [token_id]
    assert {k["id"] for k in repo.tokens(users_only=False)} == {token_id, "bbbbbbbbbbbb", "cccccccccccc"}
    assert repo.delete_expired_subject_tokens() == 1  # only the expired one, only user-less
    assert repo.delete_token("cccccccccccc") is True and repo.delete_token("cccccccccccc") is False
    # deleting a user deletes their tokens
    repo.delete_user("alice")
    assert count(metadata_store, t.ApiToken) == 0 and repo.users() == []
    with pytest.raises(NotFound):
        repo.delete_user("alice")


def test_audit_records_filter_and_list_newest_first(metadata_store) -> None:
    repo = AuditRepo(metadata_store)
    a = repo.record(actor="alice", action="POST /datasets", object="/datasets", status=201, token_id="abc",
                    request_id="r-1")
    assert (a["actor"], a["action"], a["object"], a["status"], a["outcome"], a["token_id"], a["request_id"]) == (
        "alice", "POST /datasets", "/datasets", 201, "ok", "abc", "r-1")
    assert_utc_iso(a["at"])
    repo.record(actor="bob", action="DELETE /models/{name}", object="/models/m", status=403, outcome="denied")
    repo.record(actor="workflow:retrain-1", action="PUT /models/{name}/aliases/{alias}",
                object="/models/m/aliases/production", status=200)
    assert [e["actor"] for e in repo.list()] == ["workflow:retrain-1", "bob", "alice"]
    assert [e["outcome"] for e in repo.list(actor="bob")] == ["denied"]
    assert repo.list(since=utcnow() + timedelta(minutes=1)) == []
    assert len(repo.list(since=utcnow() - timedelta(minutes=1))) == 3
    assert [e["actor"] for e in repo.list(action="POST /datasets")] == ["alice"]
    assert len(repo.list(limit=2)) == 2


def test_function_permissions_round_trip(metadata_store) -> None:
    repo = FunctionRepo(metadata_store)
    rec = repo.create("f", handler="h.handler", code_key="functions/f/x/h.py", code_sha256="0" * 64, timeout_s=5,
                      memory_mb=128, permissions=["datasets:write", "workflows:retrain-mnist:start"])
    assert rec["permissions"] == ["datasets:write", "workflows:retrain-mnist:start"]
    assert repo.update("f", {"permissions": []}, {})["permissions"] == []
    assert repo.create("g", handler="h.handler", code_key="k", code_sha256="0" * 64, timeout_s=5,
                       memory_mb=128)["permissions"] == []
