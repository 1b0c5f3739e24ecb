"""Model monitors: create / read / pause / resume / delete, runs and their reports.

What the API calls (and the scheduler, through ``submit_run``). Everything a run needs is
validated here, at creation, so a run only meets problems of the data itself: the endpoint and
its variant exist, the endpoint captures traffic (a monitor on an endpoint without capture would
never see anything — say so at creation), the schedule, window, thresholds and webhooks parse.
Ground-truth labels are ``labels.py``'s; a dataset of labelled traffic is ``labelled_data.py``'s.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any, Callable
from urllib.parse import urlsplit

from loopml.core.errors import InvalidInput, NotFound
from loopml.core.names import monitor_name as validate_name
from loopml.core.timeutil import utcnow
from loopml.core.urlpolicy import URLPolicy, URLRefused, redact_url
from loopml.monitoring.report import report_key
from loopml.platform import Platform
from loopml.store.monitors_repo import ACTIVE, PAUSED
from loopml.triggers import cron as cron_mod

_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MIN_WINDOW_S, MAX_WINDOW_S = 60, 90 * 86400
MAX_MIN_SAMPLES = 10_000_000
MAX_WEBHOOKS = 10
# -- validation ----------------------------------------------------------------------------------

def parse_window(value: Any) -> int:
    """'1h', '30m', '2d', '90s', '1w' or whole seconds → seconds (1 minute .. 90 days)."""
    if isinstance(value, bool):
        raise InvalidInput(f"window: {value!r} is not a duration; use e.g. 30m, 1h or 2d", field="window")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or int(value) != value:
            raise InvalidInput(f"window: {value!r} is not a whole number of seconds", field="window")
        seconds = int(value)
    else:
        match = _WINDOW_RE.match(str(value)) if isinstance(value, str) else None
        if not match:
            raise InvalidInput(f"window: {value!r} is not a duration; use e.g. 30m, 1h or 2d", field="window")
        seconds = int(match.group(1)) * _UNITS[match.group(2)]
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise InvalidInput(f"window: {value!r} must be between 1m and 90d", field="window")
    return seconds


def window_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_thresholds(raw: Any) -> dict[str, Any]:
    """``{"shift": 0.2}`` or ``["shift=0.2", …]`` → thresholds validated by the drift rule
    (drift.validate_thresholds: one place knows the keys and their ranges)."""
    from loopml.monitoring.drift import DEFAULT_THRESHOLDS, validate_thresholds

    if raw is None:
        return {}
    if isinstance(raw, dict):
        items = dict(raw)
    elif isinstance(raw, (list, tuple)):
        items = {}
        for text in raw:
            key, sep, value = str(text).partition("=")
            if not sep or not key.strip() or not value.strip():
                raise InvalidInput(f"threshold {text!r}: use KEY=VALUE, e.g. shift=0.2")
            items[key.strip()] = value.strip()
    else:
        raise InvalidInput("thresholds: give an object {key: value} or a list of KEY=VALUE")
    for key in items:
        if key not in DEFAULT_THRESHOLDS:
            raise InvalidInput(f"threshold {key!r} is not known; use one of {', '.join(DEFAULT_THRESHOLDS)}")
    return validate_thresholds(items)


def parse_webhooks(raw: Any, policy: URLPolicy | None = None) -> list[str]:
    """The webhook URLs, each allowed by ``policy`` (core.urlpolicy; default: public hosts only)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise InvalidInput("webhooks: give a list of http(s) URLs")
    urls = []
    for url in raw:
        try:  # urlsplit / .port raise ValueError on e.g. "http://[::1" or a port out of range
            parts = urlsplit(url) if isinstance(url, str) else None
            valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname) \
                and len(url) <= 2000 and (parts.port is None or parts.port > 0)
        except ValueError:
            valid = False
        if not valid:
            shown = redact_url(url) if isinstance(url, str) and "@" in url else url  # no credentials
            raise InvalidInput(f"webhook {shown!r}: must be an http:// or https:// URL")
        try:
            (policy or URLPolicy()).check(url)
        except URLRefused as exc:
            raise InvalidInput(f"webhook {redact_url(url)!r}: {exc}") from None
        urls.append(url)
    if len(urls) > MAX_WEBHOOKS:
        raise InvalidInput(f"webhooks: at most {MAX_WEBHOOKS}")
    return list(dict.fromkeys(urls))


def whole_number(value: Any, field: str, maximum: int) -> int:
    """A count a user sets (min_samples, min_labels): a whole number in 1..maximum."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value or not 1 <= value <= maximum:
        raise InvalidInput(f"{field}: must be a whole number between 1 and {maximum}, got {value!r}", field=field)
    return int(value)


def endpoint_variants(endpoint: dict[str, Any]) -> list[str]:
    spec = endpoint.get("spec") or {}
    names = [v["name"] for v in spec.get("variants") or []]
    if spec.get("shadow"):
        names.append(spec["shadow"].get("name") or "shadow")
    return names


def check_endpoint(platform: Platform, endpoint: Any, variant: str | None) -> dict[str, Any]:
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise InvalidInput("endpoint: name the endpoint to monitor (--endpoint NAME)")
    record = platform.endpoints.get(endpoint)  # NotFound names it
    if variant is not None:
        names = endpoint_variants(record)
        if variant not in names:
            raise InvalidInput(f"variant: endpoint {endpoint!r} has no variant {variant!r} (it has "
                               f"{', '.join(names)})", field="variant")
    if not float((record.get("spec") or {}).get("capture_percent") or 0) > 0:
        raise InvalidInput(f"endpoint {endpoint} captures no traffic: `loopml endpoints update {endpoint} "
                           "--capture 100` first")
    return record


# -- monitors --------------------------------------------------------------------------------------

def create_monitor(platform: Platform, name: str, endpoint: str, *, variant: str | None = None,
                   schedule: str | None = None, tz: str | None = None, window: Any = "1h",
                   min_samples: Any = 200, thresholds: Any = None, webhooks: Any = None,
                   now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    validate_name(name)
    variant = variant or None
    check_endpoint(platform, endpoint, variant)
    window_s = parse_window(window if window is not None else "1h")
    samples = whole_number(200 if min_samples is None else min_samples, "min_samples", MAX_MIN_SAMPLES)
    limits = parse_thresholds(thresholds)
    hooks = parse_webhooks(webhooks, URLPolicy.from_settings(platform.settings))
    next_run = None
    if schedule is not None and str(schedule).strip():
        spec = cron_mod.validate(str(schedule), tz, None)
        schedule, tz = spec["cron"], spec["tz"]
        next_run = cron_mod.next_time(schedule, tz, now())
    else:
        if tz:
            cron_mod.zone(tz)
        schedule = None
    return with_window_text(platform.monitors.create(
        name, endpoint=endpoint, variant=variant, schedule=schedule, tz=tz or "UTC", window_s=window_s,
        min_samples=samples, thresholds=limits, webhooks=hooks, next_run_at=next_run))


def with_window_text(record: dict[str, Any]) -> dict[str, Any]:
    record["window"] = window_text(int(record["window_s"]))
    return record


def list_monitors(platform: Platform) -> list[dict[str, Any]]:
    out = []
    for record in platform.monitors.list():
        runs = platform.monitors.runs(record["name"], limit=1)
        record["last_run"] = runs[0] if runs else None
        record["open_alerts"] = len(platform.monitors.alerts(open=True, monitor=record["name"]))
        out.append(with_window_text(record))
    return out


def get_monitor(platform: Platform, name: str) -> dict[str, Any]:
    """The monitor with its last runs, open alerts and label count."""
    record = with_window_text(platform.monitors.get(name))
    record["runs"] = platform.monitors.runs(name, limit=10)
    record["alerts"] = platform.monitors.alerts(open=True, monitor=name)
    record["labels"] = platform.monitors.count_labels(name)
    return record


def pause_monitor(platform: Platform, name: str) -> dict[str, Any]:
    return with_window_text(platform.monitors.set_status(name, PAUSED, next_run_at=None))


def resume_monitor(platform: Platform, name: str, *, now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """Scheduled times that passed while paused are not owed: the schedule restarts from now."""
    record = platform.monitors.get(name)
    nxt = cron_mod.next_time(record["schedule"], record["tz"], now()) if record["schedule"] else None
    return with_window_text(platform.monitors.set_status(name, ACTIVE, next_run_at=nxt))


def delete_monitor(platform: Platform, name: str) -> None:
    platform.monitors.delete(name)


# -- runs ----------------------------------------------------------------------------------------

def submit_run(platform: Platform, monitor: str, *, source: str = "manual") -> tuple[dict[str, Any], dict[str, Any]]:
    """A queued run and its job (kind "monitor", spec {"monitor", "run_id"}); Conflict while one runs."""
    platform.monitors.get(monitor)
    return platform.monitors.create_run(monitor, source=source)


def submit_baseline(platform: Platform, model_ref: str, dataset: str | None = None) -> dict[str, Any]:
    """The baseline backfill job of a model version (M3's)."""
    from loopml.monitoring.baseline_job import submit_baseline as submit

    return submit(platform, model_ref, dataset)


def get_report(platform: Platform, monitor: str, run_id: str, fmt: str = "json") -> bytes:
    if fmt not in ("json", "html"):
        raise InvalidInput(f"format: {fmt!r} must be json or html")
    run = platform.monitors.get_run(monitor, run_id)
    key = report_key(monitor, run_id, fmt)
    if not run.get("report_key") or not platform.artifacts.exists(key):
        raise NotFound(f"run {run_id} of monitor {monitor} has no report ({run['status']}"
                       + (f": {run['error']}" if run.get("error") else "") + ")")
    return platform.artifacts.get_bytes(key)
