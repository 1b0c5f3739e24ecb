"""The web dashboard: a single-page app in plain JavaScript (ES modules, no build step) plus
vendored, version-pinned libraries, served as static files by the control plane at /ui.

It is a client of the public REST API (the routes the CLI uses), so it holds no Python logic:
this package only says where its files are.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
