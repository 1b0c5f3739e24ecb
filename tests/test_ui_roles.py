"""Roles in the dashboard (issue 16): a viewer sees the data but no mutating controls, an editor
sees them, and the API refuses the viewer anyway (the page is never the only guard).

A second control plane with a bootstrap token serves the shared ``ui_server``'s platform; the users
made here turn auth on for that platform too, so they are deleted again at the end (auth off)."""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest

from tests.asgi_server import serve_asgi
from tests.ui_support import LAPTOP, Console, goto, shoot, train, wait_ended

pytestmark = pytest.mark.ui

BOOTSTRAP = "boot-s3cret"
WORKFLOW = {"StartAt": "Hello", "States": {"Hello": {"Type": "Pass", "Result": {"hi": 1}, "End": True}}}


@pytest.fixture
def roles(ui_server) -> Iterator[dict[str, Any]]:
    from loopml.api.app import create_app

    guarded = create_app(ui_server.settings.model_copy(update={"token": BOOTSTRAP}),
                         platform=ui_server.platform, start_loop=False)
    with serve_asgi(guarded, name="ui-roles-server") as url, \
            httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {BOOTSTRAP}"}) as admin:
        guarded.state.control = ui_server.app.state.control  # its data plane: stats and try-it
        resp = admin.post("/workflows", json={"name": "roles-hello", "definition": WORKFLOW, "replace": True})
        assert resp.status_code == 201, resp.text
        # a job that is still queued or running, so its page offers Cancel (to those who may): minutes
        # of epochs, so it cannot finish while the pages are looked at (it is cancelled at the end)
        job = train(ui_server.api, dataset="digits", model="cnn", params={"epochs": 1000, "filters": 4, "dense_units": 16})
        tokens = {}
        try:
            for name, role in (("vera-viewer", "viewer"), ("ed-editor", "editor")):
                resp = admin.post("/users", json={"name": name, "role": role})
                assert resp.status_code == 201, resp.text
                tokens[role] = resp.json()["token"]
            yield {"url": url, "admin": admin, "job": job, "tokens": tokens}
        finally:
            for name in ("vera-viewer", "ed-editor"):
                admin.delete(f"/users/{name}")
            admin.post(f"/jobs/{job['id']}/cancel")
            wait_ended(ui_server.api, job["id"])  # not left training (or holding the only job slot)
            admin.delete("/workflows/roles-hello")
        assert ui_server.api.get("/whoami").json()["auth"] is False  # the shared server is open again


def _as(browser: Any, url: str, token: str) -> Any:
    context = browser.new_context(viewport=LAPTOP)
    context.add_init_script(f"localStorage.setItem('loopml.token', {token!r})")
    pg = context.new_page()
    pg.console = Console(pg)
    return pg


def _open_all(pg: Any, roles: dict[str, Any]) -> dict[str, int]:
    """Open the job, workflow and endpoint pages; count their mutating controls (data must show)."""
    url, job = roles["url"], roles["job"]
    found = {}
    goto(pg, url, f"jobs/{job['id']}")
    assert job["id"] in pg.inner_text("#page h1")
    pg.wait_for_selector("#page .page[data-status]")
    found["Cancel"] = pg.locator("#page button:has-text('Cancel')").count()
    goto(pg, url, "workflows/roles-hello", ready="workflows")
    pg.wait_for_selector(".card:has(h2:text('State machine'))")
    found["Start"] = pg.locator("#page button:text-is('Start')").count()
    goto(pg, url, "endpoints/digits", ready="endpoints")
    pg.wait_for_selector(".card:has(h2:text('Try it'))")
    assert "digits-cnn" in pg.inner_text("#page")
    found["Predict"] = pg.locator("#page .try-it button:has-text('Predict')").count()
    return found


def test_a_viewer_sees_the_data_but_no_mutating_controls_and_the_api_refuses_it(browser, roles):
    url, tokens, job = roles["url"], roles["tokens"], roles["job"]
    viewer = _as(browser, url, tokens["viewer"])
    try:
        assert _open_all(viewer, roles) == {"Cancel": 0, "Start": 0, "Predict": 0}
        assert viewer.inner_text("#auth .whoami").strip() == "vera-viewer (viewer)"
        assert "endpoints:digits:invoke" in viewer.inner_text(".try-denied")
        shoot(viewer, "viewer")
        viewer.console.assert_clean()
    finally:
        viewer.context.close()

    # the page is not the only guard: the API answers the viewer's calls 403 with a message
    as_viewer = {"Authorization": f"Bearer {tokens['viewer']}"}
    for path in (f"/jobs/{job['id']}/cancel", "/workflows/roles-hello/executions", "/endpoints/digits/invocations"):
        resp = httpx.post(f"{url}{path}", json={"input": {}}, headers=as_viewer)
        assert resp.status_code == 403, (path, resp.text)
        assert "lacks the permission" in resp.json()["message"]

    editor = _as(browser, url, tokens["editor"])
    try:
        assert _open_all(editor, roles) == {"Cancel": 1, "Start": 1, "Predict": 1}
        # the editor becomes a viewer while the page is open: the API's 403 message is shown, the page stays
        goto(editor, url, "workflows/roles-hello", ready="workflows")
        resp = roles["admin"].patch("/users/ed-editor", json={"role": "viewer"})
        assert resp.status_code == 200, resp.text
        editor.click("#page button:text-is('Start')")
        alert = editor.wait_for_selector(".action-result [role=alert]")
        assert "lacks the permission workflows:roles-hello:start" in alert.inner_text()
        assert editor.locator(".card:has(h2:text('State machine'))").count() == 1
        # chromium logs the refused request itself; nothing else may have gone wrong
        assert [e for e in editor.console.errors if "status of 403" not in e] == []
    finally:
        editor.context.close()


def test_with_auth_off_every_control_shows(page, ui_server):
    resp = ui_server.api.post("/workflows", json={"name": "open-hello", "definition": WORKFLOW, "replace": True})
    assert resp.status_code == 201, resp.text
    assert ui_server.api.get("/whoami").json() | {"grants": None} == {
        "name": "anonymous", "kind": "anonymous", "role": "admin", "token_id": None, "grants": None, "auth": False}
    goto(page, ui_server.url, "workflows/open-hello", ready="workflows")
    assert page.locator("#page button:text-is('Start')").count() == 1
    goto(page, ui_server.url, "endpoints/digits", ready="endpoints")
    page.wait_for_selector(".try-it button:has-text('Predict')")
    assert page.locator(".try-denied").count() == 0
    ui_server.api.delete("/workflows/open-hello")
