"""Invoking a keyed endpoint through the control plane (the dashboard's try-it, `POST
/endpoints/NAME/invocations` on port 8080) with a LoopML token that may invoke it: the control
plane checks the token, then the data plane must see it too — it used to get no credentials and
answer 401 to an invoker whom the control plane had let in."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")

from fastapi.testclient import TestClient  # noqa: E402

from loopml.api.app import create_app  # noqa: E402
from tests.serving_support import register  # noqa: E402
from tests.test_endpoints import control_plane, create, images_body, wait_ready  # noqa: E402

pytest_plugins = ("tests.serving_support",)
BOOT = "bootstrap-secret"


def test_an_invoker_reaches_a_keyed_endpoint_through_the_control_plane(tmp_path, digit_bundles, digits_data):
    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[1])
        key = create(platform, loop, "locked", model="digits:1", new_key=True)["api_key"]
        wait_ready(platform, "locked")
        app = create_app(platform.settings.model_copy(update={"token": BOOT}), platform=platform, start_loop=False)
        with TestClient(app, raise_server_exceptions=False) as api:
            app.state.control = loop  # the API finds the data plane through the running loop
            def invoke(token: str):
                return api.post("/endpoints/locked/invocations", content=images_body(digits_data[0][:1]),
                                headers={"content-type": "application/json", "authorization": f"Bearer {token}"})

            scoped = api.post("/users", json={"name": "app", "role": "invoker"},
                              headers={"authorization": f"Bearer {BOOT}"}).json()["token"]
            viewer = api.post("/users", json={"name": "val", "role": "viewer"},
                              headers={"authorization": f"Bearer {BOOT}"}).json()["token"]
            answer = invoke(scoped)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"]) == 1
            assert invoke(viewer).status_code == 403  # the control plane still checks first
            # the bootstrap token is the control plane's only: the keyed data plane refuses it
            assert invoke(BOOT).status_code == 401
            # an endpoint key is not a control-plane token: refused before anything is forwarded
            assert invoke(key).status_code == 401
