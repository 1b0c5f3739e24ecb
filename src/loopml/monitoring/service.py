"""Model monitors: create / read / pause / resume / delete, runs, ground-truth labels, alerts.

What the API calls (and the scheduler, through ``submit_run``). Everything a run needs is
validated here, at creation, so a run only meets problems of the data itself: the endpoint and
its variant exist, the endpoint captures traffic (a monitor on an endpoint without capture would
never see anything — issue point 6: say so at creation), the schedule, window, thresholds and
webhooks parse.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.names import monitor_name as validate_name
from loopml.core.timeutil import utcnow
from loopml.platform import Platform
from loopml.store.monitors_repo import ACTIVE, PAUSED
from loopml.triggers import cron as cron_mod

_WINDOW_RE = re.compile(r"^\s*(\d+)\s*([smhdw]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MIN_WINDOW_S, MAX_WINDOW_S = 60, 90 * 86400
MAX_MIN_SAMPLES = 10_000_000
MAX_WEBHOOKS = 10
# the keys users may set with --threshold KEY=VALUE (m_common: M1's compare() reads them)
P_VALUE_KEYS = ("ks_pvalue", "chi2_pvalue", "mmd_pvalue")
EFFECT_KEYS = ("psi", "js_distance", "mmd")
THRESHOLD_KEYS = ("psi", "ks_pvalue", "js_distance", "chi2_pvalue", "mmd_pvalue", "accuracy", "min_samples")
LABEL_LOOKBACK = timedelta(days=30)
MAX_LABEL_BYTES = 64 << 20
MAX_ID_LEN = MAX_LABEL_LEN = 255
UNKNOWN_SHOWN = 20


def allowed_threshold_keys() -> tuple[str, ...]:
    """The documented keys plus any M1's DEFAULT_THRESHOLDS adds (when it is importable)."""
    try:
        from loopml.monitoring.drift import DEFAULT_THRESHOLDS
    except ImportError:  # pragma: no cover - only while the statistics module is missing
        return THRESHOLD_KEYS
    return tuple(dict.fromkeys([*THRESHOLD_KEYS, *DEFAULT_THRESHOLDS]))


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


def parse_thresholds(raw: Any) -> dict[str, float]:
    """``{"psi": 0.3}`` or ``["psi=0.3", …]`` → validated thresholds; unknown keys name the allowed ones."""
    if raw is None:
        return {}
    items: list[tuple[str, Any]]
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, (list, tuple)):
        items = []
        for text in raw:
            key, sep, value = str(text).partition("=")
            if not sep or not key.strip() or not value.strip():
                raise InvalidInput(f"threshold {text!r}: use KEY=VALUE, e.g. psi=0.25")
            items.append((key.strip(), value.strip()))
    else:
        raise InvalidInput("thresholds: give an object {key: value} or a list of KEY=VALUE")
    allowed = allowed_threshold_keys()
    out: dict[str, float] = {}
    for key, value in items:
        if key not in allowed:
            raise InvalidInput(f"threshold {key!r} is not known; use one of {', '.join(allowed)}")
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise InvalidInput(f"threshold {key}: {value!r} is not a number")
        if key in P_VALUE_KEYS and not 0 < number <= 1:
            raise InvalidInput(f"threshold {key}: a p-value must be in (0, 1], got {value!r}")
        if key == "accuracy" and not 0 <= number <= 1:
            raise InvalidInput(f"threshold accuracy: must be between 0 and 1, got {value!r}")
        if key == "min_samples":
            if number < 1 or int(number) != number:
                raise InvalidInput(f"threshold min_samples: must be a whole number >= 1, got {value!r}")
            number = int(number)
        elif number < 0:
            raise InvalidInput(f"threshold {key}: must be >= 0, got {value!r}")
        out[key] = number
    return out


def parse_webhooks(raw: Any) -> list[str]:
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
            raise InvalidInput(f"webhook {url!r}: must be an http:// or https:// URL")
        urls.append(url)
    if len(urls) > MAX_WEBHOOKS:
        raise InvalidInput(f"webhooks: at most {MAX_WEBHOOKS}")
    return list(dict.fromkeys(urls))


def _min_samples(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value or not 1 <= value <= MAX_MIN_SAMPLES:
        raise InvalidInput(f"min_samples: must be a whole number between 1 and {MAX_MIN_SAMPLES}, got {value!r}",
                           field="min_samples")
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
    samples = _min_samples(200 if min_samples is None else min_samples)
    limits = parse_thresholds(thresholds)
    hooks = parse_webhooks(webhooks)
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


def report_key(monitor: str, run_id: str, fmt: str) -> str:
    return f"monitoring/{monitor}/{run_id}/report.{fmt}"


def get_report(platform: Platform, monitor: str, run_id: str, fmt: str = "json") -> bytes:
    if fmt not in ("json", "html"):
        raise InvalidInput(f"format: {fmt!r} must be json or html")
    run = platform.monitors.get_run(monitor, run_id)
    key = report_key(monitor, run_id, fmt)
    if not run.get("report_key") or not platform.artifacts.exists(key):
        raise NotFound(f"run {run_id} of monitor {monitor} has no report ({run['status']}"
                       + (f": {run['error']}" if run.get("error") else "") + ")")
    return platform.artifacts.get_bytes(key)


# -- labels ---------------------------------------------------------------------------------------

def _label_rows_from_file(data: bytes, fmt: str | None, filename: str | None) -> tuple[list[Any], int]:
    """(row candidates, invalid lines) of a csv / jsonl file."""
    if len(data) > MAX_LABEL_BYTES:
        raise InvalidInput(f"labels file: more than {MAX_LABEL_BYTES >> 20} MiB; split it")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput("labels file: not UTF-8 text; upload csv (inference_id,label) or jsonl") from None
    if fmt is None:
        suffix = (filename or "").lower().rsplit(".", 1)[-1] if filename and "." in filename else ""
        fmt = {"csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl", "json": "jsonl"}.get(suffix)
        if fmt is None:
            fmt = "jsonl" if text.lstrip().startswith("{") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise InvalidInput(f"labels format: {fmt!r} must be csv or jsonl")
    rows: list[Any] = []
    invalid = 0
    if fmt == "jsonl":
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                invalid += 1
        return rows, invalid
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return [], 0
    header = [h.strip().lower() for h in next(csv.reader([lines[0]]))]
    if "inference_id" not in header or "label" not in header:
        raise InvalidInput("labels csv: the first line must be a header naming the columns inference_id "
                           f"and label (got {lines[0][:100]!r})")
    id_col, label_col = header.index("inference_id"), header.index("label")
    for fields in csv.reader(lines[1:]):
        if len(fields) != len(header):
            invalid += 1
            continue
        rows.append({"inference_id": fields[id_col], "label": fields[label_col]})
    return rows, invalid


def _valid_label(row: Any) -> tuple[str, str] | None:
    if not isinstance(row, dict):
        return None
    ident, label = row.get("inference_id", row.get("inferenceId")), row.get("label")
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        return None
    ident, label = (str(ident).strip() if isinstance(ident, (str, int)) and not isinstance(ident, bool) else ""), \
        str(label).strip()
    if not ident or not label or len(ident) > MAX_ID_LEN or len(label) > MAX_LABEL_LEN \
            or "\x00" in ident or "\x00" in label:  # PostgreSQL text refuses NUL (a 500, not a count)
        return None
    return ident, label


def upload_labels(platform: Platform, monitor: str, *, rows: Iterable[Any] | None = None,
                  data: bytes | None = None, format: str | None = None, filename: str | None = None,
                  now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """True labels keyed by inference id (a re-upload replaces them). Bad lines are counted, ids
    never seen in the endpoint's capture of the last 30 days are reported (and stored: capture
    may still be on its way)."""
    record = platform.monitors.get(monitor)
    if (rows is None) == (data is None):
        raise InvalidInput("labels: give a file (csv or jsonl) or a list of {inference_id, label}")
    invalid = 0
    if data is not None:
        candidates, invalid = _label_rows_from_file(data, format, filename)
    else:
        if not isinstance(rows, (list, tuple)):
            raise InvalidInput("labels: must be a list of {inference_id, label}")
        candidates = list(rows)
    pairs = []
    for row in candidates:
        pair = _valid_label(row)
        if pair is None:
            invalid += 1
        else:
            pairs.append(pair)
    if not pairs:
        raise InvalidInput(f"labels: no valid rows (each needs an inference_id and a label; {invalid} invalid)")
    stored = platform.monitors.upsert_labels(monitor, pairs)
    known = captured_inference_ids(platform, record, since=now() - LABEL_LOOKBACK, until=now())
    unknown = [i for i in dict.fromkeys(i for i, _label in pairs) if i not in known]
    return {"monitor": monitor, "received": len(pairs) + invalid, "stored": stored, "invalid": invalid,
            "unknown_ids": {"count": len(unknown), "first": unknown[:UNKNOWN_SHOWN]},
            "labels": platform.monitors.count_labels(monitor)}


def captured_inference_ids(platform: Platform, monitor: dict[str, Any], *, since: datetime,
                           until: datetime) -> set[str]:
    """Inference ids in the endpoint's capture (every variant) between since and until."""
    from loopml.monitoring.capture_reader import read_window

    window = read_window(platform.artifacts, platform.settings.capture_prefix, monitor["endpoint"], None,
                         since=since, until=until, columns=("inference_ids",))
    return {str(i) for i in window.inference_ids if i}


# -- labelled traffic → a dataset version (the closed loop's training data) ----------------------

MAX_MIN_LABELS = 10_000_000


class NotEnoughLabels(Conflict):
    """Too few labelled captured requests yet (HTTP 409); the workflow action reports it as the
    ASL error ``Monitor.NotEnoughLabels`` so a Retry can wait for labels to arrive."""

    asl_error = "Monitor.NotEnoughLabels"


def labelled_dataset(platform: Platform, monitor: str, dataset: str, *, extend: bool = True,
                     min_labels: int = 100, since: datetime | None = None,
                     now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """The monitor's captured requests that have a true label, as a new version of ``dataset``.

    Single-instance requests only (a label is keyed by the request's inference id), decoded to
    the model's raw inputs, with their uploaded labels; labels that are not one of the served
    model's classes are counted and left out. Rows already in the newest version (same input,
    same label) are not added again when extending. Fewer than ``min_labels`` rows →
    ``NotEnoughLabels``. Returns the dataset version record + {"labelled", "skipped"}.
    """
    import dataclasses

    import numpy as np

    from loopml.datasets.service import register_content, validate_name as validate_dataset
    from loopml.monitoring.capture_reader import read_window
    from loopml.monitoring.decode import decode_window
    from loopml.monitoring.run import model_context, served_variant

    record = platform.monitors.get(monitor)
    if not isinstance(dataset, str) or not dataset.strip():
        raise InvalidInput("dataset: name the dataset the labelled requests go to")
    dataset = validate_dataset(dataset.strip())
    needed = _min_labels_value(min_labels)
    until = now()
    since = since or until - LABEL_LOOKBACK
    endpoint = platform.endpoints.get(record["endpoint"])
    variant, _shadow = served_variant(endpoint, record["variant"])
    prefix, variant_name = platform.settings.capture_prefix, variant["name"]

    # ids first (one narrow column): the common "not yet" answer costs no decoding
    ids_only = read_window(platform.artifacts, prefix, record["endpoint"], variant_name, since=since,
                           until=until, columns=("inference_ids",))
    labels = platform.monitors.labels_for(monitor, [str(i) for i in ids_only.inference_ids if i])
    if len(labels) < needed:
        raise NotEnoughLabels(f"{len(labels)} labelled requests, {needed} needed", labelled=len(labels),
                              needed=needed)

    version = platform.models.get(variant["model"], variant["version"])
    context = model_context(platform, version)
    window = read_window(platform.artifacts, prefix, record["endpoint"], variant_name, since=since, until=until)
    ids = window.inference_ids.to_list()
    first: dict[str, int] = {}
    for k, ident in enumerate(ids):
        if ident and str(ident) in labels:
            first.setdefault(str(ident), k)  # a request sent twice with one id counts once
    picked = sorted(first.values())
    window = dataclasses.replace(window, **{f.name: getattr(window, f.name).take(picked)
                                            for f in dataclasses.fields(window)
                                            if hasattr(getattr(window, f.name), "take")})
    decoded = decode_window(window, kind=context["kind"], schema=context["schema"],
                            class_names=context["class_names"])
    keep = np.asarray(decoded.keep, dtype=np.int64)
    _values, inverse, counts = np.unique(keep, return_inverse=True, return_counts=True)
    single = counts[inverse] == 1 if keep.size else np.zeros(0, dtype=bool)
    classes = set(context["class_names"])
    rows, y, unknown_class = [], [], 0
    for j in np.flatnonzero(single):
        label = labels[str(window.inference_ids[int(keep[j])])]
        if label not in classes:
            unknown_class += 1
            continue
        rows.append(int(j))
        y.append(label)
    skipped = {"multi_instance": int((~single).sum()), "undecodable": int(decoded.undecodable),
               "unknown_class": unknown_class}
    content = _content_of(context["kind"], decoded.raw, rows, y, context["schema"])
    base = None
    if extend:
        try:
            base = platform.datasets.get(dataset)
        except NotFound:
            base = None
    if base is not None and len(content):
        content, skipped["already_in_dataset"] = _new_rows_only(platform, base, content)
    if len(content) < needed:
        raise NotEnoughLabels(f"{len(content)} labelled requests, {needed} needed"
                              + _skipped_text(skipped), labelled=len(content), needed=needed, skipped=skipped)
    registered = register_content(
        platform, dataset, content, extend=extend,
        source_label=f"monitor {monitor}: {len(content)} labelled requests of endpoint {record['endpoint']}")
    return {**registered, "labelled": len(content), "skipped": skipped}


def _min_labels_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value or not 1 <= value <= MAX_MIN_LABELS:
        raise InvalidInput(f"min_labels: must be a whole number between 1 and {MAX_MIN_LABELS}, got {value!r}",
                           field="min_labels")
    return int(value)


def _skipped_text(skipped: dict[str, int]) -> str:
    parts = [f"{n} {what.replace('_', ' ')}" for what, n in skipped.items() if n]
    return f" ({', '.join(parts)} left out)" if parts else ""


def _content_of(kind: str, raw: Any, rows: list[int], labels: list[str], schema: dict[str, Any]) -> Any:
    """Decoded rows → a DatasetContent (images back in the dataset's integer dtype when they fit)."""
    import numpy as np
    import pandas as pd

    from loopml.datasets.content import DatasetContent
    from loopml.monitoring.decode import decode_hints

    y = np.asarray(labels, dtype=object)
    idx = np.asarray(rows, dtype=np.int64)
    if kind == "image":
        images = np.asarray(raw)[idx] if len(idx) else np.zeros((0, 1, 1, 1), dtype=np.float32)
        dtype = next((f.get("dtype") for f in schema.get("features") or [] if isinstance(f, dict)), None)
        if dtype == "uint8" and images.size and np.all(images == np.rint(images)) \
                and images.min() >= 0 and images.max() <= 255:
            images = images.astype(np.uint8)
        return DatasetContent(kind="image", labels=y, images=images)
    if kind == "text":
        column = decode_hints(kind, schema).get("text_column") or "text"
        texts = [raw[int(i)] for i in idx]
        return DatasetContent(kind="text", labels=y, frame=pd.DataFrame({column: pd.Series(texts, dtype=object)}),
                              text_column=column)
    frame = raw.iloc[idx].reset_index(drop=True) if len(idx) else raw.iloc[:0]
    return DatasetContent(kind="tabular", labels=y, frame=frame)


def _row_keys(content: Any) -> list[bytes]:
    """One digest per row (input + label): what "the same row" means when extending."""
    import hashlib

    import numpy as np

    labels = [str(v).encode() for v in content.labels]
    if content.kind == "image":
        pixels = np.asarray(content.images, dtype=np.float32).reshape(len(content), -1)
        return [hashlib.sha1(p.tobytes() + b"\0" + lab).digest() for p, lab in zip(pixels, labels)]
    frame = content.frame
    cells = frame.astype(str).agg("\x1f".join, axis=1).tolist() if len(frame.columns) else [""] * len(content)
    return [hashlib.sha1(c.encode() + b"\0" + lab).digest() for c, lab in zip(cells, labels)]


def _new_rows_only(platform: Platform, base: dict[str, Any], content: Any) -> tuple[Any, int]:
    """The rows of ``content`` not already in dataset version ``base`` (and how many were)."""
    import numpy as np

    from loopml.datasets.service import load_version

    if base["kind"] != content.kind:
        return content, 0  # append_rows names the mismatch
    base_content, _splits = load_version(platform, base)
    seen = set(_row_keys(base_content))
    fresh = [k for k, key in enumerate(_row_keys(content)) if key not in seen]
    if len(fresh) == len(content):
        return content, 0
    return content.take(np.asarray(fresh, dtype=np.int64)), len(content) - len(fresh)
