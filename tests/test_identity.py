"""Users, roles and tokens through the REST API (in-process, real SQLite store): auth off until
configured, the bootstrap token, tokens hashed/shown once/revocable/expiring, never more than
their user and their creator, viewers see no secrets."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from loopml.api.app import create_app
from loopml.core.timeutil import utcnow
from loopml.identity import tokens
from loopml.identity.service import resolve
from loopml.store import tables as t
from tests.surface_support import assert_error

BOOT = "bootstrap-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(settings, platform):
    with TestClient(create_app(settings, platform=platform, start_loop=False), raise_server_exceptions=False) as c:
        yield c


def test_open_until_the_first_user_then_every_call_needs_a_token(api, platform) -> None:
    me = api.get("/whoami").json()
    assert (me["name"], me["role"], me["auth"]) == ("anonymous", "admin", False)  # a laptop, as installed
    assert api.get("/datasets").status_code == 200
    made = api.post("/users", json={"name": "alice", "role": "admin"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    assert tokens.split(token) is not None and token.startswith("lml_" + made.json()["token_record"]["id"] + "_")
    assert_error(api.get("/datasets"), 401, "unauthorized", "missing API token", "loopml login")
    assert api.get("/datasets", headers=bearer(token)).status_code == 200
    assert api.get("/whoami", headers=bearer(token)).json() | {"token_id": None} == {
        "name": "alice", "kind": "user", "role": "admin", "token_id": None, "grants": ["*"], "auth": True}
    assert api.get("/health").status_code == 200  # health stays open
    # hashed at rest, shown once: only sha256(secret) is stored, lists never carry it
    token_id, secret = tokens.split(token)
    with platform.meta.session() as s:
        row = s.get(t.ApiToken, token_id)
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    listed = api.get("/tokens", headers=bearer(token)).json()
    assert [k["id"] for k in listed] == [token_id] and secret not in str(listed)


def test_bootstrap_token_is_admin_and_keeps_working_next_to_users(settings, platform) -> None:
    app = create_app(settings.model_copy(update={"token": BOOT}), platform=platform, start_loop=False)
    with TestClient(app) as api:
        assert_error(api.get("/datasets"), 401, "unauthorized")
        assert api.get("/whoami", headers=bearer(BOOT)).json()["kind"] == "bootstrap"
        viewer = api.post("/users", json={"name": "val", "role": "viewer"}, headers=bearer(BOOT)).json()["token"]
        assert api.get("/users", headers=bearer(BOOT)).status_code == 200
        assert_error(api.get("/users", headers=bearer(viewer)), 403, "forbidden", "users:read", "role viewer")
        # the bootstrap admin has no user: a token of its own needs --user
        assert_error(api.post("/tokens", json={}, headers=bearer(BOOT)), 400, "invalid_input", "--user")
        assert api.post("/tokens", json={"user": "val"}, headers=bearer(BOOT)).status_code == 201


def test_tokens_never_grant_more_than_their_user_or_their_creator(api) -> None:
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    editor = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(admin)).json()["token"]
    viewer = api.post("/users", json={"name": "vi", "role": "viewer"}, headers=bearer(admin)).json()["token"]
    # a viewer cannot mint itself an editor token, nor a write scope
    assert_error(api.post("/tokens", json={"role": "editor"}, headers=bearer(viewer)), 400, "invalid_input",
                 "datasets:write", "role viewer")
    assert_error(api.post("/tokens", json={"scopes": ["datasets:write"]}, headers=bearer(viewer)), 400,
                 "invalid_input", "datasets:write")
    assert_error(api.post("/tokens", json={"scopes": ["nonsense"]}, headers=bearer(viewer)), 400,
                 "invalid_input", "nonsense")
    # nor a token for someone else
    assert_error(api.post("/tokens", json={"user": "ed"}, headers=bearer(viewer)), 403, "forbidden", "admin")
    # a narrowed token of an admin cannot create a wider one (not even through "its user's role")
    narrow = api.post("/tokens", json={"role": "viewer"}, headers=bearer(admin)).json()["token"]
    assert_error(api.post("/tokens", json={}, headers=bearer(narrow)), 403, "forbidden")
    assert_error(api.post("/datasets", json={}, headers=bearer(narrow)), 403, "forbidden", "datasets:write")
    # an editor's viewer token reads but cannot write
    ro = api.post("/tokens", json={"role": "viewer", "name": "ro"}, headers=bearer(editor)).json()
    assert ro["record"]["user"] == "ed" and ro["record"]["role"] == "viewer"
    assert api.get("/datasets", headers=bearer(ro["token"])).status_code == 200
    assert_error(api.post("/datasets", json={}, headers=bearer(ro["token"])), 403, "forbidden", "datasets:write")
    # users see only their own tokens; an admin sees all; others' tokens are not even named
    assert {k["user"] for k in api.get("/tokens", headers=bearer(editor)).json()} == {"ed"}
    assert {k["user"] for k in api.get("/tokens", headers=bearer(admin)).json()} == {"root", "ed", "vi"}
    vi_id = tokens.split(viewer)[0]
    assert_error(api.delete(f"/tokens/{vi_id}", headers=bearer(editor)), 404, "not_found")


def test_revoked_expired_and_deleted_users_tokens_are_refused(api, platform) -> None:
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    made = api.post("/tokens", json={"name": "ci", "expires": "30d"}, headers=bearer(admin)).json()
    token, record = made["token"], made["record"]
    assert 29 * 86400 < (parse(record["expires_at"]) - utcnow()).total_seconds() <= 30 * 86400
    assert api.get("/datasets", headers=bearer(token)).status_code == 200
    assert api.delete(f"/tokens/{record['id']}", headers=bearer(admin)).json()["revoked_at"]
    assert_error(api.get("/datasets", headers=bearer(token)), 401, "unauthorized", "revoked")
    # expiry: a token whose time is up is refused
    later = api.post("/tokens", json={"expires": "1h"}, headers=bearer(admin)).json()["token"]
    assert resolve(platform, later) is not None
    assert resolve(platform, later, now=utcnow() + timedelta(hours=1, seconds=1)) is None
    token_id, token2, h = tokens.mint()
    platform.identity.create_token(token_id, h, user="root", expires_at=utcnow() - timedelta(seconds=1))
    assert_error(api.get("/datasets", headers=bearer(token2)), 401, "unauthorized")
    # a wrong secret for a real id, and a bad expiry
    assert_error(api.get("/datasets", headers=bearer(token2[:-4] + "0000")), 401, "unauthorized")
    assert_error(api.post("/tokens", json={"expires": "soon"}, headers=bearer(admin)), 400, "invalid_input", "30d")
    # demoting a user narrows their tokens at once
    ed0 = api.post("/users", json={"name": "ed0", "role": "editor"}, headers=bearer(admin)).json()["token"]
    assert api.patch("/users/ed0", json={"role": "viewer"}, headers=bearer(admin)).json()["role"] == "viewer"
    assert_error(api.post("/datasets", json={}, headers=bearer(ed0)), 403, "forbidden", "datasets:write")
    assert api.get("/datasets", headers=bearer(ed0)).status_code == 200
    assert_error(api.patch("/users/ed0", json={"role": "boss"}, headers=bearer(admin)), 400, "invalid_input")
    # deleting a user ends their tokens at once
    ed = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(admin)).json()["token"]
    assert api.delete("/users/ed", headers=bearer(admin)).status_code == 200
    assert_error(api.get("/datasets", headers=bearer(ed)), 401, "unauthorized")


def parse(value: str):
    from loopml.core.timeutil import parse_iso

    return parse_iso(value)


def test_user_input_mistakes_are_400_not_500(api) -> None:
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    assert_error(api.post("/users", json={"name": "Bad Name", "role": "viewer"}, headers=bearer(admin)), 400,
                 "invalid_input", "user name")
    assert_error(api.post("/users", json={"name": "x\n", "role": "viewer"}, headers=bearer(admin)), 400,
                 "invalid_input")
    assert_error(api.post("/users", json={"name": "x", "role": "boss"}, headers=bearer(admin)), 400,
                 "invalid_input", "role")
    assert_error(api.post("/users", json={"name": "root", "role": "viewer"}, headers=bearer(admin)), 409,
                 "conflict", "already exists")
    assert_error(api.post("/users", json={"name": "bootstrap", "role": "viewer"}, headers=bearer(admin)), 400,
                 "invalid_input", "reserved")
    assert_error(api.delete("/users/nobody", headers=bearer(admin)), 404, "not_found")


def test_viewers_see_function_variable_names_but_not_their_values(api) -> None:
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    viewer = api.post("/users", json={"name": "vi", "role": "viewer"}, headers=bearer(admin)).json()["token"]
    editor = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(admin)).json()["token"]
    code = b"def handler(event, context):\n    return 1\n"
    made = api.post("/functions", data={"name": "f", "environment": '{"API_KEY": "hunter2"}'},
                    files={"code": ("h.py", code, "text/x-python")}, headers=bearer(editor))
    assert made.status_code == 201, made.text
    assert api.get("/functions/f", headers=bearer(editor)).json()["environment"] == {"API_KEY": "hunter2"}
    for resp in (api.get("/functions/f", headers=bearer(viewer)), api.get("/functions", headers=bearer(viewer))):
        assert "hunter2" not in resp.text and "API_KEY" in resp.text, resp.text


def test_function_permissions_are_checked_and_cannot_exceed_their_giver(api) -> None:
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    editor = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(admin)).json()["token"]
    code = ("h.py", b"def handler(event, context):\n    return 1\n", "text/x-python")

    def create(perms: str, who: str):
        return api.post("/functions", data={"name": "f", "permissions": perms, "replace": "true"},
                        files={"code": code}, headers=bearer(who))
    ok = create('["datasets:write", "workflows:retrain-mnist:start"]', editor)
    assert ok.status_code == 201 and ok.json()["permissions"] == ["datasets:write", "workflows:retrain-mnist:start"]
    assert_error(create('["users:write"]', admin), 400, "invalid_input", "cannot be given to a function")
    assert_error(create('["audit:read"]', editor), 400, "invalid_input")
    assert_error(create('["datasets:fly"]', editor), 400, "invalid_input", "datasets has the actions")
    assert_error(create('"datasets:write"', editor), 400, "invalid_input", "JSON list")
    # like IAM's PassRole: a token that may only write functions cannot hand a function datasets:write
    narrow = api.post("/tokens", json={"scopes": ["functions:write"]}, headers=bearer(editor)).json()["token"]
    assert_error(create('["datasets:write"]', narrow), 403, "forbidden", "datasets:write")
    assert create('[]', narrow).status_code == 201
    changed = api.patch("/functions/f", data={"permissions": "[]"}, headers=bearer(editor))
    assert changed.status_code == 200 and changed.json()["permissions"] == []
    assert api.get("/functions/f", headers=bearer(editor)).json()["permissions"] == []


def test_a_token_or_function_holds_at_most_100_grants(api) -> None:
    """Every request re-reads a token's grants: 20,000 scopes on one token (accepted before) made each
    of its calls parse them all. Duplicates count once."""
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    many = [f"endpoints:e{i}:invoke" for i in range(101)]
    assert_error(api.post("/tokens", json={"scopes": many}, headers=bearer(admin)), 400, "invalid_input",
                 "101 scopes given", "at most 100")
    ok = api.post("/tokens", json={"scopes": many[:100] + many[:100]}, headers=bearer(admin))
    assert ok.status_code == 201 and len(ok.json()["record"]["scopes"]) == 100, ok.text
    code = ("h.py", b"def handler(event, context):\n    return 1\n", "text/x-python")
    perms = str([f"datasets:d{i}:read" for i in range(101)]).replace("'", '"')
    assert_error(api.post("/functions", data={"name": "f", "permissions": perms}, files={"code": code},
                          headers=bearer(admin)), 400, "invalid_input", "at most 100")


def test_new_code_under_a_kept_execution_role_needs_that_role(api) -> None:
    """A token that may only write one function cannot swap in code that runs with the function's
    datasets:write at its next invocation (it could not have given that permission either)."""
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    code = ("h.py", b"def handler(event, context):\n    return 1\n", "text/x-python")
    made = api.post("/functions", data={"name": "ingest", "permissions": '["datasets:write"]'},
                    files={"code": code}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    narrow = api.post("/tokens", json={"scopes": ["functions:ingest:write"]}, headers=bearer(admin)).json()["token"]
    evil = ("h.py", b"def handler(event, context):\n    return context.client.list_datasets()\n", "text/x-python")
    assert_error(api.patch("/functions/ingest", files={"code": evil}, headers=bearer(narrow)), 403, "forbidden",
                 "datasets:write", "'ingest'")
    assert_error(api.patch("/functions/ingest", data={"handler": "h.other"}, headers=bearer(narrow)), 403,
                 "forbidden", "datasets:write")
    assert api.get("/functions/ingest", headers=bearer(admin)).json()["code_sha256"] == made.json()["code_sha256"]
    # what does not change the code is still theirs to change; new code with an empty role too
    assert api.patch("/functions/ingest", data={"timeout_s": "30"}, headers=bearer(narrow)).status_code == 200
    emptied = api.patch("/functions/ingest", data={"permissions": "[]"}, files={"code": evil}, headers=bearer(narrow))
    assert emptied.status_code == 200 and emptied.json()["permissions"] == [], emptied.text
    # a holder of the role may change the code under it
    assert api.patch("/functions/ingest", data={"permissions": '["datasets:write"]'}, files={"code": code},
                     headers=bearer(admin)).status_code == 200
    assert api.patch("/functions/ingest", files={"code": evil}, headers=bearer(admin)).status_code == 200


def test_a_trigger_starts_only_what_its_maker_may_start(api) -> None:
    """triggers:write alone made a webhook (or fired one) that invoked any function with its execution
    role, or started any workflow: pointing a trigger at a target, or firing it, needs the target's
    own permission."""
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    code = ("h.py", b"def handler(event, context):\n    return 1\n", "text/x-python")
    assert api.post("/functions", data={"name": "ingest", "permissions": '["datasets:write"]'},
                    files={"code": code}, headers=bearer(admin)).status_code == 201
    narrow = api.post("/tokens", json={"scopes": ["triggers:write", "triggers:read"]},
                      headers=bearer(admin)).json()["token"]
    assert_error(api.post("/triggers", json={"name": "sneak", "kind": "webhook", "function": "ingest"},
                          headers=bearer(narrow)), 403, "forbidden", "functions:ingest:invoke")
    assert_error(api.post("/triggers", json={"name": "sneak", "kind": "cron", "cron": "* * * * *",
                                             "workflow": "retrain"}, headers=bearer(narrow)),
                 403, "forbidden", "workflows:retrain:start")
    assert api.get("/triggers/sneak", headers=bearer(admin)).status_code == 404  # nothing was made
    made = api.post("/triggers", json={"name": "hook", "kind": "webhook", "function": "ingest"}, headers=bearer(admin))
    assert made.status_code == 201, made.text
    assert_error(api.post("/triggers/hook/fire", json={"event": {"x": 1}}, headers=bearer(narrow)),
                 403, "forbidden", "functions:ingest:invoke")
    assert_error(api.post("/triggers/hook/redrive", json={}, headers=bearer(narrow)), 403, "forbidden")
    assert_error(api.patch("/triggers/hook", json={"function": "other"}, headers=bearer(narrow)),
                 403, "forbidden", "functions:other:invoke")
    # holding the target's permission is enough (an editor holds every functions:invoke)
    scoped = api.post("/tokens", json={"scopes": ["triggers:write", "functions:ingest:invoke"]},
                      headers=bearer(admin)).json()["token"]
    ok = api.post("/triggers", json={"name": "mine", "kind": "webhook", "function": "ingest"}, headers=bearer(scoped))
    assert ok.status_code == 201, ok.text
    assert_error(api.post("/triggers", json={"name": "bad", "kind": "webhook", "function": "a:b"},
                          headers=bearer(admin)), 400, "invalid_input")


def test_every_workflow_action_names_the_permission_its_maker_needs() -> None:
    """A new action without a permission would let any workflows:write token do it."""
    from loopml.identity.permissions import check_permission
    from loopml.workflows.actions import ACTIONS, action_for

    for resource, action in [*ACTIONS.items(), ("loopml:function:f", action_for("loopml:function:f"))]:
        assert action.permission, resource
        check_permission(action.permission)
    assert action_for("loopml:function:f").permission == "functions:f:invoke"


def test_a_workflow_may_do_only_what_its_maker_may_do(api) -> None:
    """A workflow's Tasks run with the control plane's rights: a token holding only workflows:write
    and workflows:w:start could deploy, move aliases or invoke any function through one."""
    admin = api.post("/users", json={"name": "root", "role": "admin"}).json()["token"]
    narrow = api.post("/tokens", json={"scopes": ["workflows:write", "workflows:w:start"]},
                      headers=bearer(admin)).json()["token"]

    def flow(resource: str) -> dict:
        return {"StartAt": "S", "States": {"S": {"Type": "Task", "Resource": resource, "End": True}}}

    for resource, needed in (("loopml:deploy", "endpoints:write"), ("loopml:set-alias", "models:write"),
                             ("loopml:train", "jobs:write"), ("loopml:function:ingest", "functions:ingest:invoke")):
        assert_error(api.post("/workflows", json={"name": "w", "definition": flow(resource)}, headers=bearer(narrow)),
                     403, "forbidden", needed, "'S'")
    # nested too (a Parallel branch)
    nested = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [flow("loopml:deploy")]}}}
    assert_error(api.post("/workflows", json={"name": "w", "definition": nested}, headers=bearer(narrow)),
                 403, "forbidden", "endpoints:write")
    assert api.get("/workflows/w", headers=bearer(admin)).status_code == 404  # nothing was stored
    # a Pass-only flow needs nothing more; a holder of the Task's permission may write it
    ok = api.post("/workflows", json={"name": "w", "definition": {"StartAt": "P", "States": {
        "P": {"Type": "Pass", "End": True}}}}, headers=bearer(narrow))
    assert ok.status_code == 201, ok.text
    scoped = api.post("/tokens", json={"scopes": ["workflows:write", "functions:ingest:invoke"]},
                      headers=bearer(admin)).json()["token"]
    assert api.post("/workflows", json={"name": "w", "definition": flow("loopml:function:ingest"), "replace": True},
                    headers=bearer(scoped)).status_code == 201
