"""The datasets and models list pages ask the server for one filtered page (no whole-list download
filtered in the browser), in a real browser against the shared control plane (tests/ui_support.py)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from tests.ui_support import goto  # fixtures browser, page, ui_server: tests/conftest.py

pytestmark = pytest.mark.ui


def _list_requests(page, path: str) -> list[dict[str, list[str]]]:
    return [parse_qs(urlparse(u).query) for u in page.requested if urlparse(u).path == path]


def _watch(page) -> None:
    page.requested = []
    page.on("request", lambda r: page.requested.append(r.url))


def test_datasets_list_filters_and_pages_on_the_server(page, ui_server):
    _watch(page)
    goto(page, ui_server.url, "datasets?name=PENG")
    asked = _list_requests(page, "/datasets")
    assert len(asked) == 1 and asked[0]["name"] == ["PENG"] and asked[0]["limit"] == ["50"], asked
    names = page.locator("#page table tbody tr td:first-child a").all_inner_texts()
    assert names == [d["name"] for d in ui_server.api.get("/datasets", params={"name": "PENG"}).json()] == ["penguins"]

    goto(page, ui_server.url, "datasets?kind=text")
    assert page.locator("#page table tbody tr td:first-child a").all_inner_texts() == ["headlines"]
    assert page.locator(".pager button", has_text="next").is_disabled()


def test_models_list_pages_on_the_server(page, ui_server):
    _watch(page)
    goto(page, ui_server.url, "models")
    asked = _list_requests(page, "/models")
    assert asked and all(q.get("limit") == ["50"] for q in asked), asked
    shown = page.locator("#page table tbody tr td:first-child a").all_inner_texts()
    assert shown == [m["name"] for m in ui_server.api.get("/models", params={"limit": 50}).json()]
    goto(page, ui_server.url, "models?name=zz-no-such")
    assert page.get_by_text("no model matches").count() == 1
