"""The dashboard's static files at /ui (``/`` redirects there); the pages call the public API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from loopml.ui import STATIC_DIR


def mount_dashboard(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    @app.get("/ui", include_in_schema=False)
    def to_dashboard() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)

    # html=True: /ui/ answers index.html; the app routes by the URL's #fragment
    app.mount("/ui", StaticFiles(directory=STATIC_DIR, html=True), name="ui")
