"""The endpoints, monitors, workflows, triggers and functions pages in a real browser (Playwright
driving Debian's chromium) against a real control plane and data plane holding real data
(tests/ui_pages_world.py: a trained digits CNN served with capture, two monitor runs with an
alert, a workflow execution started by a trigger, function invocations) — plus the JSON routes
those pages added to the API (/endpoints/NAME/{invocations,stats,captured}).

Every page: the numbers shown are the API's, no console errors, a screenshot in docs/screenshots/.
"""

from __future__ import annotations

import io
import json
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from tests.ui_pages_world import ALERT_TRIGGER, build_world
from tests.ui_support import SCREENSHOTS, goto, shoot  # fixtures browser, page, ui_server: tests/conftest.py


@pytest.fixture(scope="module")
def world(ui_server, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """ui_support's control plane (its trained digits CNNs) plus this module's data, added through
    the SDK: endpoint digits-ui with capture, a monitor's runs and alerts, a workflow execution, …"""
    from loopml.sdk.client import Client

    client = Client(ui_server.url)
    built = build_world(client, tmp_path_factory.mktemp("ui-pages"))
    built.update(url=ui_server.url, client=client, data_plane=client.endpoint(built["endpoint"])["url"])
    yield built
    client.close()


def api(world, path: str, **params) -> Any:
    r = httpx.get(world["url"] + path, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------ the JSON routes (no browser)


# no browser, but it needs the module's UI world (a trained model behind a data plane)
@pytest.mark.ui
def test_invocations_route_forwards_to_the_data_plane_unchanged(world):
    images = world["images"]
    body = json.dumps({"instances": images[100:104, :, :, None].tolist()}).encode()
    headers = {"Content-Type": "application/json"}
    via_control = httpx.post(f"{world['url']}/endpoints/{world['endpoint']}/invocations", content=body,
                             headers=headers, timeout=30)
    direct = httpx.post(world["data_plane"], content=body, headers=headers, timeout=30)
    assert via_control.status_code == direct.status_code == 200
    assert via_control.json() == direct.json()
    assert via_control.headers["x-amzn-invoked-production-variant"] == "primary"
    # the data plane's own errors come back as they are (status, x-amzn-ErrorType, message)
    bad = httpx.post(f"{world['url']}/endpoints/{world['endpoint']}/invocations", content=b'{"instances": "x"}',
                     headers=headers, timeout=30)
    assert bad.status_code == 400 and bad.headers["x-amzn-errortype"] == "ValidationError"
    assert bad.json()["message"]
    missing = httpx.post(f"{world['url']}/endpoints/nope/invocations", content=body, headers=headers, timeout=30)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


@pytest.mark.ui
def test_stats_route_counts_what_the_data_plane_served(world):
    name = world["endpoint"]
    before = api(world, f"/endpoints/{name}/stats")
    images = world["images"]
    for i in range(5):
        world["client"].invoke(name, instances=images[i:i + 1, :, :, None].tolist())
    httpx.post(world["data_plane"], content=b"not json", headers={"Content-Type": "application/json"}, timeout=30)
    after = api(world, f"/endpoints/{name}/stats")
    primary, was = after["variants"]["primary"], before["variants"]["primary"]
    assert primary["requests"] - was["requests"] == 6
    assert primary["errors"] - was["errors"] == 1
    assert primary["codes"]["200"] - was["codes"]["200"] == 5
    assert primary["latency"]["count"] == primary["requests"]
    buckets = primary["latency"]["buckets"]
    assert buckets[-1][0] is None and buckets[-1][1] == primary["requests"]  # +Inf is null in JSON
    assert after["at"] > before["at"]
    # batch numbers are the data plane's own (a model host shared by two endpoints serving one
    # version has one batcher, counted under the first endpoint): the same as its /metrics says
    from prometheus_client.parser import text_string_to_metric_families

    metrics = httpx.get(world["data_plane"].split("/endpoints/")[0] + "/metrics", timeout=30).text
    direct = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples
              if s.labels.get("endpoint") == name and s.labels.get("variant") == "primary"}
    again = api(world, f"/endpoints/{name}/stats")["variants"]["primary"]
    assert again["batch_rows"] == direct.get("loopml_batch_rows_total", 0)
    assert again["batches"] == direct.get("loopml_batches_total", 0)
    assert again["latency"]["sum"] == pytest.approx(direct["loopml_request_latency_seconds_sum"])
    r = httpx.get(f"{world['url']}/endpoints/nope/stats", timeout=30)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


@pytest.mark.ui
def test_endpoint_list_carries_live_traffic_for_the_overview(world):
    name = world["endpoint"]
    first = {e["name"]: e for e in api(world, "/endpoints")}[name]["traffic"]
    for i in range(4):
        world["client"].invoke(name, instances=world["images"][i:i + 1, :, :, None].tolist())
    second = {e["name"]: e for e in api(world, "/endpoints")}[name]["traffic"]
    assert second["requests"] - first["requests"] == 4
    assert second["window_s"] > 0
    assert second["rps"] == pytest.approx(4 / second["window_s"], rel=0.01)
    assert second["p99_ms"] > 0
    third = {e["name"]: e for e in api(world, "/endpoints")}[name]["traffic"]
    assert third["rps"] == 0 and third["p99_ms"] is None  # nothing served since the previous list


@pytest.mark.ui
def test_captured_route_returns_the_newest_requests_first(world):
    rows = api(world, f"/endpoints/{world['endpoint']}/captured", limit=5)
    assert len(rows) == 5
    times = [r["inferenceTime"] for r in rows]
    assert times == sorted(times, reverse=True)
    first = rows[0]
    assert first["endpoint"] == world["endpoint"] and first["variant"] == "primary"
    assert json.loads(first["output"]["data"])["predictions"]
    ids = {r.get("inferenceId") for r in api(world, f"/endpoints/{world['endpoint']}/captured", limit=200)}
    assert {"ui-0", "ui-drift-39"} <= ids
    r = httpx.get(f"{world['url']}/endpoints/{world['endpoint']}/captured", params={"limit": 0}, timeout=30)
    assert r.status_code in (400, 422) and "limit" in r.text


# ------------------------------------------------------------------ the pages, in a real browser


def open_page(pg, world, route: str, ready: str) -> None:
    goto(pg, world["url"], route, ready)


@pytest.mark.ui
def test_endpoints_page_shows_variants_and_live_traffic(page, world):
    name = world["endpoint"]
    record = api(world, f"/endpoints/{name}")
    open_page(page, world, "endpoints", "endpoints")
    assert page.get_by_role("link", name=name).count() == 1
    open_page(page, world, f"endpoints/{name}", "endpoints")
    resolved = record["resolved"]["variants"][0]
    assert page.get_by_text(f"{resolved['model']}:{resolved['version']}", exact=True).count() >= 1
    assert page.get_by_text(record["url"]).count() == 1
    assert page.get_by_text("100 % of requests").count() == 1
    # live totals: the data plane's own counters, read through /stats
    totals = page.locator(".live-totals tbody tr").first
    totals.wait_for()
    shown = int(totals.locator("td").nth(1).inner_text().replace(",", ""))
    assert shown <= api(world, f"/endpoints/{name}/stats")["variants"]["primary"]["requests"]
    for i in range(6):  # traffic while the page is open: a new point on the req/s chart
        world["client"].invoke(name, instances=world["images"][i:i + 2, :, :, None].tolist())
    page.wait_for_function(
        """n => { const r = document.querySelector('.live-totals tbody tr td:nth-child(2)');
                   return r && Number(r.textContent.replace(/,/g, '')) >= n; }""",
        arg=shown + 6, timeout=20_000)
    assert page.locator(".live-charts .uplot").count() == 4
    # at least 3 points (a new one every 2 s, never "exactly 3 or 4": a slow machine is past them
    # before this line runs, and Playwright samples a selector only every 500 ms)
    page.wait_for_function("() => +document.querySelector('.live-charts').dataset.points >= 3", timeout=20_000)
    # the captured requests table holds what the capture route answers
    newest = api(world, f"/endpoints/{name}/captured", limit=20)
    with_id = [r["inferenceId"] for r in newest if r.get("inferenceId")]
    assert with_id and page.get_by_text(with_id[-1], exact=True).count() >= 1
    shoot(page, "endpoints")


def _predict_in_page(page) -> tuple[str, bytes]:
    """Click Predict; the label the page shows and the exact bytes it sent."""
    with page.expect_request(lambda r: r.url.endswith("/invocations") and r.method == "POST") as sent:
        page.get_by_role("button", name="Predict").click()
    page.locator(".predicted-label").wait_for()
    body = sent.value.post_data_buffer
    return page.locator(".predicted-label").inner_text().strip(), body


@pytest.mark.ui
def test_try_it_on_a_drawn_digit_matches_a_direct_api_call(page, world):
    name = world["endpoint"]
    open_page(page, world, f"endpoints/{name}", "endpoints")
    pad = page.locator("canvas.draw-pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    # a "7" drawn with the mouse: the top bar, then the diagonal
    x0, y0, w = box["x"], box["y"], box["width"]
    page.mouse.move(x0 + 0.25 * w, y0 + 0.2 * w)
    page.mouse.down()
    for x in np.linspace(0.25, 0.75, 8):
        page.mouse.move(x0 + x * w, y0 + 0.2 * w)
    for t in np.linspace(0, 1, 10):
        page.mouse.move(x0 + (0.75 - 0.35 * t) * w, y0 + (0.2 + 0.65 * t) * w)
    page.mouse.up()
    label, png = _predict_in_page(page)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert pixels.shape == (28, 28) and pixels.max() > 200  # the stroke is in the image sent
    direct = httpx.post(world["data_plane"], content=png, headers={"Content-Type": "image/png"}, timeout=30)
    assert direct.status_code == 200, direct.text
    assert direct.json()["predictions"][0]["label"] == label
    bars = page.locator(".conf-bars .bar-row")
    assert bars.count() == len(direct.json()["predictions"][0]["probabilities"])
    assert bars.first.locator(".bar-label").inner_text() == label
    shoot(page, "endpoints-try-it")


@pytest.mark.ui
def test_try_it_on_an_uploaded_digit_matches_a_direct_api_call(page, world, tmp_path):
    from PIL import Image

    image = world["images"][5]  # sklearn digits: 8x8, 0-16
    path = tmp_path / "digit.png"
    Image.fromarray((image * 255 / 16).astype(np.uint8), mode="L").save(path)
    open_page(page, world, f"endpoints/{world['endpoint']}", "endpoints")
    with page.expect_request(lambda r: r.url.endswith("/invocations") and r.method == "POST") as sent:
        page.locator("input[type=file][name=image]").set_input_files(str(path))
    page.locator(".predicted-label").wait_for()
    assert sent.value.post_data_buffer == path.read_bytes()
    direct = httpx.post(world["data_plane"], content=path.read_bytes(), headers={"Content-Type": "image/png"},
                        timeout=30)
    assert page.locator(".predicted-label").inner_text().strip() == direct.json()["predictions"][0]["label"]


@pytest.mark.ui
def test_monitors_page_shows_drift_over_runs_report_and_alerts(page, world):
    name = world["monitor"]
    runs = api(world, f"/monitors/{name}/runs")
    alerts = api(world, "/alerts", monitor=name)
    assert len(runs) >= 2 and alerts, "the world's second run (inverted digits) opens alerts"
    open_page(page, world, "monitors", "monitors")
    row = page.locator(".card:has(h2:text-is('Monitors')) tbody tr", has=page.get_by_role("link", name=name, exact=True))
    assert row.locator("td").last.inner_text().strip() == str(len([a for a in alerts if a["status"] == "open"]))
    open_page(page, world, f"monitors/{name}", "monitors")
    latest = next(r for r in runs if r["report_key"])
    judged = [f for f in latest["summary"]["features"] if f.get("thresholds")]
    # one chart per judged feature (at most 9), each: the statistic and its threshold over the runs
    assert page.locator(".drift-charts .chart-slot").count() == min(9, len(judged))
    assert page.locator(".drift-charts .uplot").count() == min(9, len(judged))
    feature_rows = page.locator("tr", has=page.get_by_text("mean_intensity", exact=True))
    first = next(f for f in latest["summary"]["features"] if f["name"] == "mean_intensity")
    key, limit = next(iter(first["thresholds"].items()))
    cells = feature_rows.first.locator("td").all_inner_texts()
    assert cells[2] == key and float(cells[4]) == pytest.approx(limit)
    assert float(cells[3]) == pytest.approx(first["statistics"][key], rel=1e-3, abs=1e-9)
    assert cells[5] == ("drift" if first["violated"] else "ok")
    # quality from the uploaded labels, next to the estimate from confidences
    measured = latest["summary"]["quality"]
    assert measured and measured["n"] == 40
    quality = page.locator(".quality-chart")
    assert quality.locator(".uplot").count() == 1
    assert quality.get_by_text("accuracy (from labels)").count() == 1
    # the report, embedded: the run's own HTML (sandboxed)
    frame = page.frame_locator("iframe.report-frame")
    frame.get_by_text(f"LoopML monitor {name}").wait_for()
    report = page.locator(".card:has(iframe.report-frame)")
    report.scroll_into_view_if_needed()  # a full-page shot leaves the (opaque-origin) frame blank
    report.screenshot(path=str(SCREENSHOTS / "monitors-report.png"))
    # alerts and what each triggered: the alert trigger started the function
    for alert in alerts:
        assert page.get_by_text(alert["message"], exact=True).count() >= 1
    fired = [n for a in alerts for n in a["notifications"] if n.get("trigger") == ALERT_TRIGGER]
    assert fired and page.get_by_role("link", name=ALERT_TRIGGER).count() >= 1
    shoot(page, "monitors")


@pytest.mark.ui
def test_workflow_graph_shows_the_executed_path(page, world):
    execution = world["execution"]
    history = api(world, f"/executions/{execution['id']}/history")
    entered = {e["state"] for e in history if e["type"] == "StateEntered"}
    assert execution["status"] == "SUCCEEDED" and {"Double", "FanOut", "Left"} <= entered
    open_page(page, world, f"workflows/{world['workflow']}", "workflows")
    definition = api(world, f"/workflows/{world['workflow']}")["definition"]
    page.locator("svg.asl-graph").wait_for()
    for state in definition["States"]:
        assert page.locator(f"svg.asl-graph g.node[data-state='{state}']").count() == 1
    open_page(page, world, f"workflows/{world['workflow']}/{execution['id']}", "workflows")
    page.locator("svg.asl-graph g.node").first.wait_for()
    outcome = dict(page.eval_on_selector_all(
        "svg.asl-graph g.node[data-state]", "els => els.map(e => [e.dataset.state, e.dataset.outcome])"))
    for state in ("Prepare", "Double", "IsBig", "FanOut", "Left", "Right", "Done"):
        assert outcome[state] == "succeeded", (state, outcome)
    assert outcome["Small"] == outcome["Failed"] == "not-run"  # the branches not taken
    assert page.locator("svg.asl-graph .edge.taken").count() >= 8
    # the event history as the API answers it, and each step's input/output
    assert page.locator("tr", has=page.get_by_text("ExecutionSucceeded", exact=True)).count() == 1
    assert page.get_by_text("loopml:function:double").count() >= 1
    page.locator("svg.asl-graph g.node[data-state='Double']").click()
    steps = page.locator(".card", has=page.get_by_role("heading", name="Steps: input and output"))
    assert steps.locator("tbody tr").count() == 1
    steps.get_by_text("output", exact=True).click()
    assert '"n": 14' in steps.locator("pre.json").last.inner_text()
    shoot(page, "workflows")
    # start one from the page: it opens the new execution, which follows it to its end
    before = len(api(world, "/executions", workflow=world["workflow"]))
    open_page(page, world, f"workflows/{world['workflow']}", "workflows")
    page.locator("textarea[name=input]").fill('{"from": "the dashboard"}')
    page.get_by_role("button", name="Start").click()
    page.wait_for_selector(".graph-box[data-status=SUCCEEDED]", timeout=120_000)
    executions = api(world, "/executions", workflow=world["workflow"])
    assert len(executions) == before + 1 and executions[0]["input"] == {"from": "the dashboard"}
    assert executions[0]["id"] in page.locator("h1").inner_text()


@pytest.mark.ui
def test_triggers_page_shows_firings_and_what_they_started(page, world):
    name = world["trigger"]
    history = api(world, f"/triggers/{name}/history")
    open_page(page, world, f"triggers/{name}", "triggers")
    rows = page.locator(".card", has=page.get_by_role("heading", name="Firing history")).locator("tbody tr")
    assert rows.count() == len(history)
    link = page.get_by_role("link", name=world["execution"]["id"])
    assert link.count() == 1
    link.click()
    page.wait_for_selector("#page[data-ready=workflows]")
    assert world["execution"]["id"] in page.locator("h1").inner_text()
    open_page(page, world, f"triggers/{name}", "triggers")
    shoot(page, "triggers")


@pytest.mark.ui
def test_functions_page_shows_invocations_with_logs(page, world):
    name = world["function"]
    invocations = api(world, f"/functions/{name}/invocations")
    open_page(page, world, f"functions/{name}?invocation={world['invocation']['id']}", "functions")
    shown = page.locator(f"[data-invocation='{world['invocation']['id']}']")
    assert "doubling 3" in shown.locator("pre.logs").inner_text()
    assert '"n": 6' in shown.locator("pre.json").last.inner_text()
    rows = page.locator(".card", has=page.get_by_role("heading", name="Invocations")).locator("tbody tr")
    assert rows.count() == len(invocations)
    # invoke from the page: a new invocation, shown with its logs
    page.locator("textarea[name=event]").fill('{"n": 21}')
    page.get_by_role("button", name="Invoke").click()
    page.wait_for_function("() => document.querySelector('pre.logs') && document.querySelector('pre.logs').textContent.includes('doubling 21')",
                           timeout=60_000)
    assert len(api(world, f"/functions/{name}/invocations")) == len(invocations) + 1
    shoot(page, "functions")
