"""The control loop as routes see it: wake it so new work is dispatched now, not at the next tick."""

from __future__ import annotations

from fastapi import Request


def wake_control(request: Request) -> None:
    """Optional: only a server that runs a control loop (app.state.control) has one to wake."""
    wake = getattr(getattr(request.app.state, "control", None), "wake", None)
    if callable(wake):
        wake()
