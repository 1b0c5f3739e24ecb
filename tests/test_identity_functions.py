"""A function's execution role, observed from inside a real invocation (a real control plane
with its FunctionDispatcher, the child process calling the API back): its LOOPML_TOKEN is its own,
holds exactly the function's permissions, is never the admin token, and dies with the invocation."""

from __future__ import annotations

import pytest

from loopml.sdk.client import Client

BOOT = "bootstrap-secret"
HANDLER = b'''
import os
import httpx

def handler(event, context):
    token = os.environ.get("LOOPML_TOKEN")
    url = os.environ["LOOPML_API_URL"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"} if token else {},
                      trust_env=False, timeout=30) as http:
        return {"token": token, "env_names": sorted(os.environ),
                "whoami": http.get("/whoami").json(),
                "list_datasets": http.get("/datasets").status_code,
                "create_dataset": http.post("/datasets", json={}).status_code,
                "start_named": http.post("/workflows/retrain-mnist/executions", json={}).status_code,
                "start_other": http.post("/workflows/other/executions", json={}).json(),
                "make_token": http.post("/tokens", json={}).status_code}
'''


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"token": BOOT})


def test_each_invocation_gets_its_own_token_limited_to_the_functions_permissions(live_server, tmp_path) -> None:
    code = tmp_path / "probe.py"
    code.write_bytes(HANDLER)
    with Client(live_server, token=BOOT) as admin:
        admin.create_function("probe", code, timeout_s=60, permissions=["datasets:read",
                                                                       "workflows:retrain-mnist:start"])
        run = admin.invoke_function("probe", {})
        assert run["status"] == "succeeded", run.get("error_message") or run.get("logs")
        seen = run["result"]
        token = seen["token"]
        assert token and token != BOOT and token.startswith("lml_")
        assert seen["whoami"]["kind"] == "invocation" and seen["whoami"]["name"] == "function:probe"
        assert sorted(seen["whoami"]["grants"]) == ["datasets:read", "workflows:retrain-mnist:start"]
        assert seen["list_datasets"] == 200 and seen["create_dataset"] == 403
        assert seen["start_named"] == 404  # allowed: the workflow just does not exist
        assert seen["start_other"]["code"] == "forbidden" and "workflows:other:start" in seen["start_other"]["message"]
        assert seen["make_token"] == 403  # it cannot mint itself a longer-lived token
        assert not any(name.startswith(("LOOPML_DATABASE", "LOOPML_ARTIFACT", "LOOPML_HOME"))
                       for name in seen["env_names"])
        # the token died with the invocation
        with Client(live_server, token=token) as after:
            with pytest.raises(Exception, match="invalid API token"):
                after.whoami()
        assert not [t for t in admin.list_tokens() if t.get("subject")]
        # the audit log names the function as the actor of what it tried
        tried = admin.audit(user="function:probe")
        assert {(e["action"], e["status"]) for e in tried} >= {("POST /datasets", 403),
                                                               ("POST /workflows/{name}/executions", 403)}
        # no permissions at all: its token may do nothing
        admin.update_function("probe", permissions=[])
        bare = admin.invoke_function("probe", {})["result"]
        assert bare["whoami"]["grants"] == [] and bare["list_datasets"] == 403
