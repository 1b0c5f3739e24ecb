"""SDK methods for functions, mixed into loopml.sdk.client.Client."""

from __future__ import annotations

from typing import Any


class FunctionsAPI:
    """Mixin: relies on the Client's ``_json`` / ``_send`` plumbing."""

    _json: Any
    _send: Any
