"""The control loop as routes see it: wake it so new work is dispatched now, not at the next tick.

With two servers on one PostgreSQL the route may run on a follower: ``ControlLoop.wake`` then
wakes the leader through the database (``NOTIFY``); the queued row the route wrote is what the
leader acts on, so a lost wake only costs one reconcile interval."""

from __future__ import annotations

from fastapi import Request


def wake_control(request: Request) -> None:
    """Optional: only a server that runs a control loop (app.state.control) has one to wake."""
    wake = getattr(getattr(request.app.state, "control", None), "wake", None)
    if callable(wake):
        wake()
