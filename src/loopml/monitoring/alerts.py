"""Alerts from a monitor run: open / bump / resolve (one transaction), then tell the world.

A violation opens an alert, or bumps the open alert of the same key (deduplicated while it stays
open); a key this run checked and found fine resolves its open alert. Only a NEWLY opened alert
notifies: every webhook of the monitor gets an HTTP POST with a JSON body (5 s timeout, 2 tries,
redirects not followed, the URL policy of core.urlpolicy checked again with the host's current
addresses; failures are recorded on the alert — the URL without credentials or query — never raised), and every active alert trigger on the monitor
fires once per run that opened alerts (``loopml.triggers.service.fire_alert`` with the first
opened alert, deduplicated on its id; the others are listed in ``opened_with``) — which can
start the retraining workflow once, however many features drifted together.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from loopml.core.timeutil import iso, utcnow
from loopml.core.urlpolicy import URLPolicy, URLRefused, redact_url, resolve_host
from loopml.platform import Platform
from loopml.store.monitors_repo import INSUFFICIENT

log = logging.getLogger("loopml.monitoring.alerts")
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_TRIES = 2
RETRY_DELAY_S = 0.5


def alert_payload(monitor: dict[str, Any], run: dict[str, Any], alert: dict[str, Any],
                  api_url: str | None = None) -> dict[str, Any]:
    """The JSON body webhooks receive."""
    body: dict[str, Any] = {"alert": alert, "monitor": monitor["name"], "endpoint": monitor["endpoint"],
                            "variant": monitor.get("variant"), "run": run["id"],
                            "report_key": run.get("report_key")}
    if api_url and run.get("report_key"):
        body["report_url"] = f"{api_url.rstrip('/')}/monitors/{monitor['name']}/runs/{run['id']}/report.html"
    return body


def post_webhook(url: str, body: dict[str, Any], *, policy: URLPolicy | None = None, tries: int = WEBHOOK_TRIES,
                 timeout: float = WEBHOOK_TIMEOUT_S, sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """POST ``body`` when ``policy`` (default: public hosts only) allows ``url``; a 2xx is
    success, a redirect is not followed. Returns what happened, ``url`` redacted (never raises)."""
    import httpx

    shown = redact_url(url)
    outcome: dict[str, Any] = {"url": shown, "ok": False, "attempts": 0}
    try:
        (policy or URLPolicy()).check(url, resolve=resolve_host)
    except URLRefused as exc:
        outcome.update(error=f"refused: {exc}"[:300], at=iso(utcnow()))
        return outcome
    for attempt in range(1, tries + 1):
        outcome["attempts"] = attempt
        try:
            resp = httpx.post(url, json=body, timeout=timeout, follow_redirects=False,
                              headers={"User-Agent": "loopml-monitor"})
            outcome["status"] = resp.status_code
            if 200 <= resp.status_code < 300:
                outcome.update(ok=True, error=None)
                break
            outcome["error"] = f"HTTP {resp.status_code}" + (" (redirects are not followed)"
                                                             if resp.is_redirect else "")
        except Exception as exc:  # noqa: BLE001 - a webhook failing must never fail the run
            outcome["error"] = f"{type(exc).__name__}: {exc}".replace(url, shown)[:300]
        if attempt < tries:
            sleep(RETRY_DELAY_S)
    outcome["at"] = iso(utcnow())
    return outcome


def _notify(platform: Platform, monitor: dict[str, Any], run: dict[str, Any], alert: dict[str, Any],
            *, fire: bool = True, together: list[dict[str, Any]] | None = None) -> None:
    notifications = []
    body = alert_payload(monitor, run, alert, platform.settings.resolved_api_url)
    policy = URLPolicy.from_settings(platform.settings)
    for url in monitor.get("webhooks") or []:
        outcome = post_webhook(url, body, policy=policy)
        if not outcome["ok"]:
            log.warning("alert %s: webhook %s failed: %s", alert["id"], outcome["url"], outcome.get("error"))
        notifications.append(outcome)
    if fire:
        notifications += _fire_triggers(platform, monitor, run, alert, together or [])
    if notifications:
        platform.monitors.set_notifications(alert["id"], notifications)
        alert["notifications"] = notifications


def _fire_triggers(platform: Platform, monitor: dict[str, Any], run: dict[str, Any], alert: dict[str, Any],
                   together: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fire the monitor's alert triggers with ``alert`` (+ the other alerts its run opened)."""
    try:
        from loopml.triggers.service import fire_alert

        event = {**alert, "endpoint": monitor["endpoint"], "variant": monitor.get("variant"),
                 "report_key": run.get("report_key")}
        if together:
            event["opened_with"] = [{"id": a["id"], "key": a["key"]} for a in together]
        return [{"trigger": firing["trigger"], "ok": firing["status"] == "started",
                 "started_id": firing.get("started_id"), "error": firing.get("error"), "at": firing.get("at")}
                for firing in fire_alert(platform, monitor["name"], event)]
    except Exception as exc:  # noqa: BLE001 - recorded on the alert, never raised
        log.exception("alert %s: firing alert triggers failed", alert["id"])
        return [{"trigger": "*", "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}]


def violation_entries(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's violations as alert entries {key, severity, statistic, message}."""
    entries = []
    for v in run.get("violations") or []:
        key = v.get("key") or v.get("name")
        if not key:
            continue
        entries.append({"key": key, "severity": v.get("severity") or "warning",
                        "statistic": {k: v.get(k) for k in ("statistics", "thresholds", "n_baseline",
                                                            "n_current", "type") if k in v},
                        "message": v.get("message") or f"{key} violated its thresholds"})
    return entries


def process_run(platform: Platform, monitor: dict[str, Any], run: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Open / bump / resolve the monitor's alerts for a finished run and notify the new ones.

    A run without enough samples changes nothing (no evidence either way). Only keys this run
    checked (``summary["checked"]``; every key when absent) can resolve.
    """
    if run.get("status") == INSUFFICIENT:
        return {"opened": [], "updated": [], "resolved": []}
    checked = (run.get("summary") or {}).get("checked")
    changes = platform.monitors.record_alerts(monitor["name"], run["id"], violation_entries(run), checked=checked)
    # One drift event usually opens several alerts at once (pixels, classes, embeddings…): each
    # notifies its webhooks, but alert triggers fire once per run — one retraining, not one per key.
    opened = changes["opened"]
    for k, alert in enumerate(opened):
        try:
            _notify(platform, monitor, run, alert, fire=k == 0, together=opened[1:] if k == 0 else None)
        except Exception:  # noqa: BLE001 - one alert's notification never stops the others
            log.exception("alert %s: notifying failed", alert["id"])
    return changes
