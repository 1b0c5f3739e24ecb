"""The dashboard's browser tests: one real control plane with real data, and a real browser.

``ui_server`` (session-scoped) starts ``create_app`` under uvicorn with its control loop and fills
it through the public API, as a user would: the ``digits`` sample, a small text dataset
``headlines`` (uploaded CSV), two digits CNNs trained by
real jobs (``digits-cnn`` v1 and v2, alias ``prod`` → v2 moved by "alice"), an endpoint
``digits`` serving ``digits-cnn@prod`` on the data plane, an imported model (``digits-imported``,
the .keras file of v1) and the ``penguins`` table. ``UIServer.api`` is an httpx client on it.

``browser`` is Playwright driving Debian's chromium (never a downloaded browser);
``open_page(browser, url)`` opens a page that records console errors, ``goto(page, route)``
loads a route and waits for it to render, ``shoot(page, name)`` saves docs/screenshots/NAME.png.
"""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.asgi_server import bound_socket, serve_asgi
from tests.process_support import drop_loopml_vars

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


@dataclass
class UIServer:
    url: str
    api: httpx.Client
    platform: Any
    settings: Any
    jobs: list[dict[str, Any]] = field(default_factory=list)  # the two training jobs, v1's first
    app: Any = None  # the FastAPI app (its state.control runs the data plane)


def wait_job(api: httpx.Client, job_id: str, timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.3)


def wait_ended(api: httpx.Client, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    """The job's record once it has ended, whatever the outcome (a cancelled one included)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get(f"/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.3)


def wait_endpoint(api: httpx.Client, name: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        record = api.get(f"/endpoints/{name}").json()
        if record.get("ready"):
            return record
        assert record["status"] != "Failed", record
        assert time.monotonic() < deadline, f"endpoint {name} not ready: {record}"
        time.sleep(0.3)


def train(api: httpx.Client, **body: Any) -> dict[str, Any]:
    resp = api.post("/jobs/train", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def _keras_file(api: httpx.Client, name: str, version: int) -> bytes:
    resp = api.get(f"/models/{name}/versions/{version}/download")
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        return zf.read("model.keras")


def headlines_csv(rows: int = 60) -> bytes:
    """A small text dataset: two topics told apart by their words."""
    words = {"sport": "match goal team win coach league score season player".split(),
             "tech": "chip software data cloud phone network code server robot".split()}
    lines = ["text,label"]
    for i in range(rows):
        topic = "sport" if i % 2 else "tech"
        vocab = words[topic]
        lines.append(" ".join(vocab[(i * 7 + j * 3) % len(vocab)] for j in range(12)) + f",{topic}")
    return ("\n".join(lines) + "\n").encode()


def populate(api: httpx.Client) -> list[dict[str, Any]]:
    """The data every page shows, made through the public API."""
    for name in ("digits", "penguins"):
        resp = api.post("/datasets", json={"name": name, "source": f"sample:{name}"})
        assert resp.status_code in (200, 201), resp.text
    resp = api.post("/datasets/upload", data={"name": "headlines", "format": "csv", "text": "text", "label": "label"},
                    files={"file": ("headlines.csv", headlines_csv())})
    assert resp.status_code == 201, resp.text
    # two versions that differ in their hyperparameters (compare), trained one after the other
    first = wait_job(api, train(api, dataset="digits", model="cnn", register_as="digits-cnn",
                                params={"epochs": 3, "filters": 8, "dense_units": 32})["id"])
    second = wait_job(api, train(api, dataset="digits", model="cnn", register_as="digits-cnn",
                                 params={"epochs": 4, "filters": 16, "dense_units": 64,
                                         "learning_rate": 0.002})["id"])
    resp = api.put("/models/digits-cnn/aliases/prod", json={"version": 1}, headers={"X-LoopML-Actor": "alice"})
    assert resp.status_code == 200, resp.text
    resp = api.put("/models/digits-cnn/aliases/prod", json={"version": 2}, headers={"X-LoopML-Actor": "alice"})
    assert resp.status_code == 200, resp.text
    resp = api.post("/endpoints", json={"name": "digits", "model": "digits-cnn@prod"})
    assert resp.status_code == 201, resp.text
    resp = api.post("/models/import", data={"name": "digits-imported", "labels": ",".join(map(str, range(10)))},
                    files={"file": ("model.keras", _keras_file(api, "digits-cnn", 1))})
    assert resp.status_code == 201, resp.text
    wait_endpoint(api, "digits")
    return [first, second]


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory) -> Iterator[UIServer]:
    from loopml.api.app import create_app
    from loopml.core.settings import Settings

    home = tmp_path_factory.mktemp("ui-home")
    with pytest.MonkeyPatch.context() as mp:
        drop_loopml_vars(mp)
        mp.setenv("LOOPML_CONFIG", str(home / "no-such-loopml.toml"))
        sock = bound_socket()
        settings = Settings(home=home / "loopml", port=0, serving_port=0, token=None, reconcile_interval_s=0.2,
                            api_url=f"http://127.0.0.1:{sock.getsockname()[1]}")
        app = create_app(settings)
        with sock, serve_asgi(app, name="ui-control-plane", sock=sock) as url, \
                httpx.Client(base_url=url, timeout=120) as api:
            jobs = populate(api)
            yield UIServer(url=url, api=api, platform=app.state.platform, settings=settings, jobs=jobs, app=app)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM)
        yield chromium
        chromium.close()


class Console:
    """Console errors and uncaught exceptions of one page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def assert_clean(self) -> None:
        assert self.errors == [], self.errors


@pytest.fixture
def page(browser, ui_server) -> Iterator[Any]:
    """A fresh browser page (laptop size) whose console errors fail the test."""
    context = browser.new_context(viewport=LAPTOP)
    pg = context.new_page()
    pg.console = Console(pg)
    yield pg
    context.close()
    pg.console.assert_clean()


def goto(page: Any, base_url: str, route: str, ready: str | None = None, timeout_ms: float = 30_000) -> Any:
    """Load ``/ui/#/<route>`` and wait until the page named ``ready`` (default: the route's first
    segment) has rendered."""
    name = ready or route.strip("/").split("/")[0].split("?")[0] or "overview"
    fragment = f"#/{route.lstrip('/')}"
    page.goto(f"{base_url}/ui/{fragment}")
    page.wait_for_function("([f, n]) => { const p = document.getElementById('page');"
                           " return p && p.dataset.route === f && p.dataset.ready === n; }",
                           arg=[fragment, name], timeout=timeout_ms)
    return page


def shoot(page: Any, name: str) -> Path:
    """docs/screenshots/<name>.png of the whole page (the README links them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # from the top: a page scrolled by an action (try-it) would draw its sticky top bar mid-page
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True)
    return path
