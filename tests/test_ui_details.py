"""What a new user met on the dashboard (the issue 16 audit), in a real browser against the shared
control plane (tests/ui_support.py): the overview's endpoint traffic stays live, its cards fit a
laptop screen, an execution that ends in a Fail state shows that state failed (not running
forever), table rows show data values as they are, a chart of one point is not years wide, and
the endpoint page links the version each variant serves."""

from __future__ import annotations

import re
import time
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from tests.ui_support import LAPTOP, PHONE, goto  # fixtures browser, page, ui_server: tests/conftest.py

pytestmark = pytest.mark.ui

ROW = "tr[data-endpoint='digits'] td"
POSITIVE = re.compile(r"^(?!0$)(?!0\.0*$)\d[\d,]*(\.\d+)?$")  # a number above 0


def _digit() -> list:
    return [[[float((r * 8 + c) % 17)] for c in range(8)] for r in range(8)]


def test_overview_endpoint_traffic_stays_live(page, ui_server):
    goto(page, ui_server.url, "overview")
    # the page asks /endpoints again by itself: req/s and p99 are measured between two lists
    with page.expect_request(lambda r: urlparse(r.url).path == "/endpoints", timeout=30_000):
        pass
    for _ in range(5):
        resp = ui_server.api.post("/endpoints/digits/invocations", json={"instances": [_digit()]})
        assert resp.status_code == 200, resp.text
    # both from one list, the poll after these requests (a later one may count none)
    page.wait_for_function(
        "([a, b, re]) => [a, b].every(s => new RegExp(re).test(document.querySelector(s).textContent))",
        arg=[ROW + "[data-label='req/s']", ROW + "[data-label='p99 ms']", POSITIVE.pattern], timeout=30_000)


def test_overview_cards_fit_a_laptop_screen(page, ui_server):
    assert page.viewport_size == LAPTOP
    goto(page, ui_server.url, "overview")
    overflowing = page.eval_on_selector_all(
        ".cards .table-wrap", "els => els.filter(e => e.scrollWidth > e.clientWidth + 1)"
                              ".map(e => e.closest('.card').querySelector('h2').textContent)")
    assert overflowing == []


def test_an_execution_ending_in_a_fail_state_shows_it_failed(page, ui_server):
    api = ui_server.api
    definition = {"StartAt": "Check", "States": {
        "Check": {"Type": "Pass", "Next": "Stop"},
        "Stop": {"Type": "Fail", "Error": "Refused", "Cause": "by design"}}}
    resp = api.post("/workflows", json={"name": "ends-in-fail", "definition": definition, "replace": True})
    assert resp.status_code == 201, resp.text
    resp = api.post("/workflows/ends-in-fail/executions", json={"input": {}})
    assert resp.status_code == 201, resp.text
    execution_id = resp.json()["id"]
    deadline = time.monotonic() + 120
    while (ex := api.get(f"/executions/{execution_id}").json())["status"] in ("PENDING", "RUNNING"):
        assert time.monotonic() < deadline, ex
        time.sleep(0.3)
    assert ex["status"] == "FAILED" and ex["error"] == "Refused", ex

    goto(page, ui_server.url, f"workflows/ends-in-fail/{execution_id}", "workflows")
    page.wait_for_selector(".graph-box[data-status=FAILED] svg.asl-graph")
    outcome = dict(page.eval_on_selector_all(
        "svg.asl-graph g.node[data-state]", "els => els.map(e => [e.dataset.state, e.dataset.outcome])"))
    assert outcome["Check"] == "succeeded" and outcome["Stop"] == "failed", outcome
    steps = page.locator(".card", has=page.get_by_role("heading", name="Steps: input and output"))
    stop = steps.locator("tbody tr", has=page.get_by_text("Stop", exact=True))
    expect(stop.locator(".badge")).to_have_text("failed")


def test_table_rows_and_schema_show_values_as_they_are(page, ui_server):
    rows = ui_server.api.get("/datasets/penguins/versions/1/rows", params={"split": "train", "limit": 24}).json()
    years = [str(r["values"]["year"]) for r in rows["rows"]]
    assert years and all(re.fullmatch(r"20\d\d", y) for y in years), years
    goto(page, ui_server.url, "datasets/penguins/1")
    page.wait_for_selector("#page td[data-label='year']")
    assert page.locator("#page td[data-label='year']").all_inner_texts() == years  # 2007, not 2,007
    schema = page.locator(".card", has=page.get_by_role("heading", name="Schema"))
    year = schema.locator("tbody tr", has=page.get_by_text("year", exact=True))
    assert (year.locator("td[data-label='min']").inner_text(), year.locator("td[data-label='max']").inner_text()) \
        == ("2007", "2009")


def test_a_time_chart_of_one_point_spans_hours_not_years(page, ui_server):
    goto(page, ui_server.url, "overview")
    span = page.evaluate("""async () => {
        const { lineChart } = await import('./app.js');
        const box = document.createElement('div');
        document.getElementById('page').append(box);
        const chart = lineChart(box, [{ label: 'shift', points: [[1796400000, 0.3]] }], { time: true });
        await new Promise((done) => requestAnimationFrame(() => done()));  // uPlot sets its scales in a batch
        const { min, max } = chart.plot.scales.x;
        return [min, max];
    }""")
    assert span[0] < 1796400000 < span[1] and span[1] - span[0] <= 2 * 3600, span


def test_endpoint_page_links_the_version_each_variant_serves(page, ui_server):
    record = ui_server.api.get("/endpoints/digits").json()
    served = record["resolved"]["variants"][0]
    goto(page, ui_server.url, "endpoints/digits")
    variants = page.locator(".card", has=page.get_by_role("heading", name="Variants"))
    expect(variants.locator(f"a[href='#/models/{served['model']}/{served['version']}']")).to_have_count(1)
    capture = page.locator(".card", has=page.get_by_role("heading", name="Capture and batching"))
    keys = capture.locator("dt", has_text="API keys").locator("xpath=following-sibling::dd[1]")
    assert keys.inner_text() == "none"


def test_triggers_list_says_when_each_kind_fires(page, ui_server, tmp_path):
    api = ui_server.api
    _noop_workflow(api)
    for body in ({"name": "yearly", "kind": "cron", "cron": "0 3 1 1 *", "workflow": "noop"},
                 {"name": "drops", "kind": "objects", "objects_uri": f"{tmp_path}/", "suffix": ".zip", "workflow": "noop"}):
        resp = api.post("/triggers", json=body)
        assert resp.status_code == 201, resp.text
    try:
        goto(page, ui_server.url, "triggers")
        when = {name: page.locator("tr", has=page.locator(f"a[href='#/triggers/{name}']")).locator("td[data-label='When']")
                for name in ("yearly", "drops")}
        assert when["yearly"].inner_text().startswith("0 3 1 1 * (UTC), next ")
        assert when["drops"].inner_text() == f"new objects under {api.get('/triggers/drops').json()['spec']['uri']} ending .zip"
        goto(page, ui_server.url, "triggers?kind=objects")  # the kind the API names
        names = page.locator("#page table tbody td[data-label='Trigger'] a").all_inner_texts()
        assert "drops" in names and "yearly" not in names
    finally:
        for name in ("yearly", "drops"):
            api.delete(f"/triggers/{name}")


def _noop_workflow(api) -> str:
    resp = api.post("/workflows", json={"name": "noop", "replace": True, "definition": {
        "StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}})
    assert resp.status_code == 201, resp.text
    return "noop"


def test_executions_and_firings_page_on_the_server(page, ui_server):
    api = ui_server.api
    workflow = _noop_workflow(api)
    resp = api.post("/triggers", json={"name": "paged", "kind": "webhook", "workflow": workflow})
    assert resp.status_code == 201, resp.text
    try:
        for i in range(3):
            resp = api.post("/triggers/paged/fire", json={"event": {"i": i}})
            assert resp.status_code in (200, 202), resp.text
        firings = api.get("/triggers/paged/history").json()
        executions = api.get("/executions", params={"workflow": workflow}).json()
        assert len(firings) == 3 and len(executions) >= 3
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))

        goto(page, ui_server.url, f"workflows/{workflow}?offset=1", "workflows")
        assert any(urlparse(u).path == "/executions" and "offset=1" in u for u in requested), requested
        shown = page.locator(".card", has=page.get_by_role("heading", name="Executions", exact=True))
        links = shown.locator("tbody td[data-label='Execution'] a").all_inner_texts()
        assert links == [e["id"] for e in executions[1:]]
        expect(shown.get_by_role("button", name="‹ newer")).to_be_enabled()
        shown.get_by_role("button", name="‹ newer").click()
        expect(shown.locator("tbody td[data-label='Execution'] a").first).to_have_text(executions[0]["id"])

        goto(page, ui_server.url, "triggers/paged?offset=2", "triggers")
        history = page.locator(".card", has=page.get_by_role("heading", name="Firing history"))
        started = history.locator("tbody td[data-label='Started'] a").all_inner_texts()
        assert started == [firings[2]["started_id"]]
    finally:
        api.delete("/triggers/paged")


def test_overview_rows_stay_one_line_on_a_phone(browser, ui_server):
    context = browser.new_context(viewport=PHONE, is_mobile=True)
    try:
        pg = context.new_page()
        goto(pg, ui_server.url, "overview")
        heights = pg.eval_on_selector_all(".overview-cards tbody tr", "rows => rows.map(r => r.getBoundingClientRect().height)")
        line = pg.evaluate("parseFloat(getComputedStyle(document.querySelector('.overview-cards td')).lineHeight) || 20")
        assert heights and max(heights) < 2 * line + 12, (heights, line)  # one line and its padding, not a column of words
        assert pg.evaluate("document.documentElement.scrollWidth") <= PHONE["width"] + 1  # the tables scroll, not the page
    finally:
        context.close()
