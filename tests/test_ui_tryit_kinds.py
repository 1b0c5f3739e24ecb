"""The try-it panel for text and tabular models in a real browser: a text model trained on the
shared world's ``headlines`` and a tabular one on ``penguins`` (tests/ui_support.py), each behind
its own endpoint; what the page predicts is what a direct call to the data plane answers."""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from tests.ui_support import goto, shoot  # fixtures browser, page, ui_server: tests/conftest.py

pytestmark = pytest.mark.ui

MODELS = {"text": ("headlines", "rnn", "headlines-rnn", "headlines-ui"),
          "tabular": ("penguins", "mlp", "penguins-mlp", "penguins-ui")}


@pytest.fixture(scope="module")
def served(ui_server) -> Iterator[dict[str, Any]]:
    """kind → {"endpoint", "url" (its data-plane invocation URL)}: trained by real jobs, served."""
    from loopml.sdk.client import Client

    client = Client(ui_server.url)
    out = {}
    for kind, (dataset, template, model, endpoint) in MODELS.items():
        if not any(m["name"] == model for m in client.models(name=model)):
            job = client.train(dataset, template, {"epochs": 2}, register_as=model)
            done = client.wait(job["id"], timeout=600)
            assert done["status"] == "succeeded", done
        if not any(e["name"] == endpoint for e in client.endpoints()):
            client.create_endpoint(endpoint, model=f"{model}:1")
    for kind, (*_, endpoint) in MODELS.items():
        client.wait_endpoint(endpoint, timeout=300)
        out[kind] = {"endpoint": endpoint, "url": client.endpoint(endpoint)["url"]}
    yield out
    client.close()


def _predict(page) -> tuple[str, dict[str, Any]]:
    """Click Predict; the label shown and the JSON body the page sent."""
    with page.expect_request(lambda r: r.url.endswith("/invocations") and r.method == "POST") as sent:
        page.get_by_role("button", name="Predict").click()
    page.locator(".predicted-label").wait_for()
    return page.locator(".predicted-label").inner_text().strip(), json.loads(sent.value.post_data)


def _direct(url: str, body: dict[str, Any]) -> dict[str, Any]:
    resp = httpx.post(url, json=body, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()["predictions"][0]


def test_try_it_on_pasted_text_matches_a_direct_api_call(page, ui_server, served):
    text = ui_server.api.get("/datasets/headlines/versions/1/rows", params={"limit": 1}).json()["rows"][0]
    sample = text.get("text") or next(v for v in (text.get("values") or {}).values() if isinstance(v, str))
    goto(page, ui_server.url, f"endpoints/{served['text']['endpoint']}", "endpoints")
    page.locator(".try-it textarea[name=text]").fill(sample)
    label, body = _predict(page)
    assert body == {"instances": [sample]}
    direct = _direct(served["text"]["url"], body)
    assert label == str(direct["label"])
    bars = page.locator(".conf-bars .bar-row")
    assert bars.count() == len(direct["probabilities"])
    shoot(page, "endpoints-try-it-text")


def test_try_it_on_filled_fields_matches_a_direct_api_call(page, ui_server, served):
    table = ui_server.api.get("/datasets/penguins/versions/1/rows", params={"limit": 1}).json()
    row = table["rows"][0]["values"]
    goto(page, ui_server.url, f"endpoints/{served['tabular']['endpoint']}", "endpoints")
    fields = page.locator(".try-it .fields input")
    names = [fields.nth(i).get_attribute("name") for i in range(fields.count())]
    assert names and set(names) <= set(row), names  # the dataset's columns, the label left out
    # each field says what it holds, from the training data's schema: its categories or its range
    assert "Biscoe" in fields.and_(page.locator("[name='island']")).get_attribute("placeholder")
    assert fields.and_(page.locator("[name='year']")).get_attribute("placeholder") == "2007 – 2009"
    for name in names:
        page.locator(f".try-it .fields input[name='{name}']").fill("" if row[name] is None else str(row[name]))
    label, body = _predict(page)
    sent = body["instances"][0]
    assert set(sent) == set(names)
    assert all(sent[n] == row[n] or str(sent[n]) == str(row[n]) for n in names if row[n] is not None)
    direct = _direct(served["tabular"]["url"], body)
    assert label == str(direct["label"])
    shoot(page, "endpoints-try-it-tabular")
