"""Real data for the endpoints/monitors/workflows/triggers/functions pages, made through the public
API (the SDK) against a running control plane: a trained digits CNN served by an endpoint with
full capture and traffic, a monitor run (drift report, alerts), a function and its invocations,
a workflow (Pass → Task(function) → Choice → Parallel → Succeed) with a finished execution,
and a webhook trigger fired at it.

``build_world(client)`` adds whatever is missing (ui_support's world may already hold the model);
``python -m tests.ui_pages_world`` runs a server with this world for looking at the pages by hand.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

ENDPOINT, MONITOR, FUNCTION, WORKFLOW, TRIGGER = "digits-ui", "digits-drift", "double", "score-and-branch", "nightly-hook"
ALERT_TRIGGER = "on-drift"

HANDLER = textwrap.dedent('''
    def handler(event, context):
        n = int((event or {}).get("n", 1))
        print(f"doubling {n}")
        return {"n": n * 2, "big": n * 2 > 10}
''')

DEFINITION: dict[str, Any] = {
    "Comment": "double a number, branch on its size, fan out",
    "StartAt": "Prepare",
    "States": {
        "Prepare": {"Type": "Pass", "Result": {"n": 7}, "Next": "Double"},
        "Double": {"Type": "Task", "Resource": f"loopml:function:{FUNCTION}", "Next": "IsBig",
                   "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Failed"}]},
        "IsBig": {"Type": "Choice", "Choices": [{"Variable": "$.big", "BooleanEquals": True, "Next": "FanOut"}],
                  "Default": "Small"},
        "Small": {"Type": "Pass", "End": True},
        "FanOut": {"Type": "Parallel", "Next": "Done", "Branches": [
            {"StartAt": "Left", "States": {"Left": {"Type": "Pass", "End": True}}},
            {"StartAt": "Right", "States": {"Right": {"Type": "Pass", "End": True}}}]},
        "Done": {"Type": "Succeed"},
        "Failed": {"Type": "Fail", "Error": "DoubleFailed"},
    },
}


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32), data.target


def _wait(what: str, fn, timeout: float = 600, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


MODEL = "digits-ops"


def _wait_captured(client, inference_ids: list[str]) -> None:
    """Until every one of these requests is in the capture files (flushed about once a second; a
    loaded machine may take longer) and older than a monitor run's settle margin: a run before
    that would not see them."""
    wanted = set(inference_ids)

    def seen() -> bool:
        rows = client._http.get(f"/endpoints/{ENDPOINT}/captured", params={"limit": 200}).json()
        return wanted <= {row.get("inferenceId") for row in rows}

    _wait(f"{len(wanted)} captured requests", seen, timeout=120, poll=0.5)
    # a monitor run reads up to (now − CAPTURE_SETTLE_S): records newer than that are the next
    # run's, so they must be that old before the run starts
    from loopml.monitoring.run import CAPTURE_SETTLE_S

    time.sleep(CAPTURE_SETTLE_S + 1.0)


def ensure_model(client) -> str:
    """A digits CNN of this world's own (``digits-ops``, trained by a real job, with its baseline),
    so what other browser suites register on the shared server never changes what it monitors;
    its MODEL:VERSION."""
    if not any(m["name"] == MODEL for m in client.models()):
        if not any(d["name"] == "digits" for d in client.list_datasets()):
            client.add_dataset("digits", "sample:digits")
        job = client.train("digits", "cnn", {"epochs": 3, "filters": 8, "dense_units": 32}, register_as=MODEL)
        done = client.wait(job["id"], timeout=600)
        assert done["status"] == "succeeded", done
    return f"{MODEL}:{client.model_version(MODEL)['version']}"


def build_world(client, tmp: Path) -> dict[str, Any]:
    model = ensure_model(client)
    images, target = digits_images()
    if not any(e["name"] == ENDPOINT for e in client.endpoints()):
        client.create_endpoint(ENDPOINT, model=model, capture_percent=100)
    client.wait_endpoint(ENDPOINT, timeout=300)
    for i in range(0, 60, 3):  # real traffic through the data plane: counted, captured
        client.invoke(ENDPOINT, instances=images[i:i + 3, :, :, None].tolist(), inference_id=f"ui-{i}")

    code = tmp / "double.py"
    code.write_text(HANDLER)
    if not any(f["name"] == FUNCTION for f in client.functions()):
        client.create_function(FUNCTION, code, handler="double.handler", timeout_s=60)

    if not any(m["name"] == MONITOR for m in client.monitors()):
        client.create_monitor(MONITOR, ENDPOINT, window="1d", min_samples=20, thresholds={"shift": 0.01})
    if not any(t["name"] == ALERT_TRIGGER for t in client.triggers()):
        client.create_trigger(ALERT_TRIGGER, alert=MONITOR, function=FUNCTION)
    _wait_captured(client, [f"ui-{i}" for i in range(0, 60, 3)])
    runs = [client.run_monitor(MONITOR, wait=True, timeout=600)]
    inverted = 16.0 - images[:40]  # drifted traffic, one row per request: ink and background swapped
    for i in range(40):
        client.invoke(ENDPOINT, instances=inverted[i:i + 1, :, :, None].tolist(), inference_id=f"ui-drift-{i}")
    _wait_captured(client, [f"ui-drift-{i}" for i in range(40)])
    # their true labels (joined by inference id): the second run measures quality too
    client.upload_labels(MONITOR, [{"inference_id": f"ui-drift-{i}", "label": str(target[i])} for i in range(40)])
    runs.append(client.run_monitor(MONITOR, wait=True, timeout=600))
    invocation = client.invoke_function(FUNCTION, {"n": 3})

    if not any(w["name"] == WORKFLOW for w in client.workflows()):
        client.create_workflow(WORKFLOW, DEFINITION)
    if not any(t["name"] == TRIGGER for t in client.triggers()):
        client.create_trigger(TRIGGER, webhook=True, workflow=WORKFLOW)
    fired = client.fire_trigger(TRIGGER, {"from": "ui-test"})
    execution_id = fired["started"]["id"]
    execution = client.wait_execution(execution_id, timeout=300)
    return {"model": model, "endpoint": ENDPOINT, "monitor": MONITOR, "runs": runs, "function": FUNCTION,
            "invocation": invocation, "workflow": WORKFLOW, "execution": execution, "trigger": TRIGGER,
            "images": images, "target": target}


if __name__ == "__main__":  # a server with this world, to look at the pages by hand
    import sys
    import tempfile

    from loopml.api.app import create_app
    from loopml.core.settings import Settings
    from loopml.sdk.client import Client
    from tests.asgi_server import bound_socket, serve_asgi

    home = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="loopml-ui-"))
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = Settings(home=home, port=0, serving_port=0, token=None, reconcile_interval_s=0.2, api_url=url)
    with sock, serve_asgi(create_app(settings), sock=sock) as url:
        client = Client(url)
        world = build_world(client, home)
        print(json.dumps({k: v for k, v in world.items() if k not in ("images", "target")}, default=str)[:2000])
        print(f"READY {url}/ui/", flush=True)
        while True:
            time.sleep(3600)
