"""SDK methods for triggers: objects, cron, webhook and alert sources; history and redrive."""

from __future__ import annotations

from typing import Any

from loopml.core.errors import InvalidInput
from loopml.sdk.http import Connection, segment


class TriggersAPI(Connection):
    def create_trigger(self, name: str, *, objects: str | None = None, cron: str | None = None,
                       tz: str | None = None, missed: str = "skip", webhook: bool = False,
                       alert: str | None = None, suffix: str | None = None, function: str | None = None,
                       workflow: str | None = None) -> dict[str, Any]:
        """Create a trigger that starts ``function`` or ``workflow`` (exactly one).

        Args:
            name: Trigger name (letters, digits, ``-``, ``_``).
            objects: New objects under ``s3://bucket/prefix/``, ``file:///abs/dir/``, ``/abs/dir``
                or a key prefix in LoopML's artifact store fire it, once each (``suffix`` filters).
            cron: A cron expression (``"*/5 * * * *"``) in time zone ``tz`` (default UTC);
                ``missed``: ``skip`` or ``catch-up`` for runs missed while the server was down.
            webhook: ``POST /hooks/{name}`` with the secret fires it; the record's ``secret`` is
                shown only in this answer.
            alert: The model monitor whose alerts fire it.

        Example::

            c.create_trigger("new-images", objects="s3://data/incoming/", suffix=".png",
                             function="thumbnail")
        """
        sources = {"objects": objects is not None, "cron": cron is not None, "webhook": bool(webhook),
                   "alert": alert is not None}
        chosen = [k for k, on in sources.items() if on]
        if len(chosen) != 1:
            raise InvalidInput("give exactly one of objects, cron, webhook or alert")
        kind = chosen[0]
        body: dict[str, Any] = {"name": name, "kind": kind, "function": function, "workflow": workflow}
        if kind == "objects":
            body.update(objects_uri=objects, suffix=suffix)
        elif kind == "cron":
            body.update(cron=cron, tz=tz, missed=missed)
        elif kind == "alert":
            body.update(monitor=alert)
        return self._json("POST", "/triggers", json={k: v for k, v in body.items() if v is not None})

    def triggers(self) -> list[dict[str, Any]]:
        """Every trigger, by name, with its last firing."""
        return self._json("GET", "/triggers")

    def trigger(self, name: str) -> dict[str, Any]:
        """One trigger: spec, target, status, last firing (and ``next_run`` for cron)."""
        return self._json("GET", f"/triggers/{segment(name)}")

    def update_trigger(self, name: str, *, function: str | None = None, workflow: str | None = None,
                       suffix: str | None = None, cron: str | None = None, tz: str | None = None,
                       missed: str | None = None) -> dict[str, Any]:
        """Change a trigger; what is not given is kept. ``function``/``workflow``: a new target;
        ``suffix`` (objects; ``""`` removes it); ``cron``/``tz``/``missed`` (cron: a new schedule
        starts from now).

        Example::

            c.update_trigger("nightly", cron="0 4 * * *", tz="Europe/Paris")
        """
        body = {"function": function, "workflow": workflow, "suffix": suffix, "cron": cron, "tz": tz,
                "missed": missed}
        return self._json("PATCH", f"/triggers/{segment(name)}", json={k: v for k, v in body.items() if v is not None})

    def pause_trigger(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/triggers/{segment(name)}/pause")

    def resume_trigger(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/triggers/{segment(name)}/resume")

    def delete_trigger(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/triggers/{segment(name)}")

    def trigger_history(self, name: str, limit: int = 100) -> list[dict[str, Any]]:
        """Every firing, newest first: ``{id, at, status, dedupe_key, started_id, error, event}``."""
        return self._json("GET", f"/triggers/{segment(name)}/history", params={"limit": limit})

    def redrive_trigger(self, name: str, firing: int | None = None) -> list[dict[str, Any]]:
        """Start the target again for failed firing ``firing`` (Conflict if it was already
        redriven), or for every failed firing not redriven yet. Each redrive is recorded in the
        history as a firing with ``redrive_of``.

        Returns:
            ``[{"firing": new id, "redrive_of": id, "status", "started": {"kind", "id"}}]``
        """
        return self._json("POST", f"/triggers/{segment(name)}/redrive", json={"firing": firing})

    def fire_trigger(self, name: str, event: Any = None) -> dict[str, Any]:
        """Test fire: start the target now with ``event`` (default: a sample of the trigger's shape).

        Returns:
            ``{"firing": id, "status": "started"|"failed", "started": {"kind", "id"}}``
        """
        return self._json("POST", f"/triggers/{segment(name)}/fire", json={"event": event})
