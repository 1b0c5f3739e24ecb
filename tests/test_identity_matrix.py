"""THE permission table against the real app: every route /openapi.json lists has an entry, and
every role gets exactly its matrix (401 without a token, 403 naming the permission otherwise).

The app is built in-process against a real store (SQLite); users are made through the API, each
route is called for real with placeholder path values, so the check is the middleware's, not a
reimplementation of it. A new route without a table entry fails the first test.
"""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from loopml.api.app import create_app
from loopml.identity.permissions import (AUTHENTICATED, NOT_IN_SCHEMA, PUBLIC, ROLES, ROUTES, allows, match,
                                         role_matrix)
from tests.surface_support import assert_error

BOOT = "bootstrap-secret"


def _schema_routes(client: TestClient) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {BOOT}"}).json()
    return {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}


@pytest.fixture
def secured(settings, platform):
    app = create_app(settings.model_copy(update={"token": BOOT}), platform=platform, start_loop=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def test_every_route_in_openapi_has_exactly_one_table_entry(secured) -> None:
    routes = _schema_routes(secured)
    table = [(r.method, r.path) for r in ROUTES]
    assert len(table) == len(set(table)), "a route is listed twice in identity.permissions.ROUTES"
    missing = routes - set(table)
    assert not missing, f"routes without a permission entry in identity/permissions.py: {sorted(missing)}"
    assert set(table) - routes == NOT_IN_SCHEMA, "table entries for routes the app no longer has"
    for method, path in routes:  # the matcher finds each route as itself
        found, _ = match(method, re.sub(r"\{(\w+)\}", "zz-none", path))
        assert found is not None and found.path == path, (method, path)


def _tokens(client: TestClient) -> dict[str, str]:
    boot = {"Authorization": f"Bearer {BOOT}"}
    out = {}
    for role in ROLES:
        answer = client.post("/users", json={"name": f"u-{role}", "role": role}, headers=boot)
        assert answer.status_code == 201, answer.text
        out[role] = answer.json()["token"]
    return out


def test_each_role_gets_exactly_its_matrix_on_every_route(secured) -> None:
    tokens = _tokens(secured)
    routes = sorted(_schema_routes(secured))
    checked = 0
    for method, path in routes:
        entry, params = match(method, re.sub(r"\{(\w+)\}", "zz-none", path))
        assert entry is not None and entry.path == path, (method, path)
        needed = entry.required(params)
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}
        url = re.sub(r"\{(\w+)\}", "zz-none", path)
        anonymous = secured.request(method, url, **body)
        if needed == PUBLIC:
            assert anonymous.status_code not in (401, 403), (method, path, anonymous.text)
        else:
            assert_error(anonymous, 401, "unauthorized", "missing API token")
            assert anonymous.headers["www-authenticate"].startswith("Bearer")
            bad = secured.request(method, url, headers={"Authorization": "Bearer lml_000000000000_" + "0" * 48},
                                  **body)
            assert_error(bad, 401, "unauthorized", "invalid")
        for role, token in tokens.items():
            resp = secured.request(method, url, headers={"Authorization": f"Bearer {token}"}, **body)
            allowed = needed in (PUBLIC, AUTHENTICATED) or allows(ROLES[role], needed)
            if allowed:
                assert resp.status_code not in (401, 403), (role, method, path, resp.status_code, resp.text)
            else:
                assert_error(resp, 403, "forbidden", needed, f"role {role}")
            checked += 1
    assert checked == len(routes) * len(ROLES)


def test_the_roles_say_what_the_issue_says() -> None:
    """Spot checks of the matrix in words (docs/security.md prints the whole table)."""
    m = role_matrix()
    # viewer: reads everything, changes nothing, no users/tokens of others/audit
    assert all(m[k]["viewer"] for k in m if k.startswith("GET ") and not k.startswith(("GET /users", "GET /audit")))
    assert not any(m[k]["viewer"] for k in m if k.split()[0] != "GET" and not k.endswith(("/hooks/{name}", "/tokens",
                                                                                       "/tokens/{token_id}")))
    # editor: creates and changes the ML objects, never users or the audit log
    for key in ("POST /datasets", "POST /jobs/train", "PUT /models/{name}/aliases/{alias}", "POST /endpoints",
                "POST /workflows", "POST /functions", "POST /triggers", "POST /monitors", "POST /tuning"):
        assert m[key]["editor"] and not m[key]["viewer"] and not m[key]["invoker"], key
    for key in ("POST /users", "DELETE /users/{name}", "GET /audit", "GET /users"):
        assert m[key] == {"admin": True, "viewer": False, "editor": False, "invoker": False}, key
    # invoker: starts workflows, reads nothing
    assert m["POST /workflows/{name}/executions"]["invoker"]
    assert not any(v["invoker"] for k, v in m.items() if k.startswith("GET ") and k not in (
        "GET /health", "GET /healthz", "GET /openapi.json", "GET /docs", "GET /docs/oauth2-redirect", "GET /redoc",
        "GET /static-offline-docs/{path:path}", "GET /whoami", "GET /tokens",
            "GET /", "GET /ui", "GET /ui/{path:path}"))  # the dashboard's static files: no data


def test_scoped_grants_reach_one_named_object_only(secured) -> None:
    boot = {"Authorization": f"Bearer {BOOT}"}
    secured.post("/users", json={"name": "app", "role": "editor"}, headers=boot)
    made = secured.post("/tokens", json={"user": "app", "scopes": ["workflows:retrain-mnist:start",
                                                                  "endpoints:mnist:read"]}, headers=boot)
    assert made.status_code == 201, made.text
    h = {"Authorization": f"Bearer {made.json()['token']}"}
    # the named workflow: past the check (404: it does not exist yet); another one: 403 naming it
    assert_error(secured.post("/workflows/retrain-mnist/executions", json={}, headers=h), 404, "not_found")
    assert_error(secured.post("/workflows/other/executions", json={}, headers=h), 403, "forbidden",
                 "workflows:other:start")
    assert_error(secured.get("/endpoints/mnist", headers=h), 404, "not_found")
    assert_error(secured.get("/endpoints/other", headers=h), 403, "forbidden", "endpoints:other:read")
    assert_error(secured.get("/endpoints", headers=h), 403, "forbidden", "endpoints:read")  # a list is unscoped
    assert_error(secured.post("/datasets", json={}, headers=h), 403, "forbidden", "datasets:write")
