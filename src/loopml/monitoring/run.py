"""One monitor run (a job of kind "monitor", spec {"monitor", "run_id"}), in the worker.

    monitor + run row (→ running) → what the endpoint's variant serves now (model version)
    → its baseline (missing: the run fails, saying how to backfill)
    → captured traffic in (cursor or now − window, now − settle] (streaming, columnar)
    → decoded rows of the served version → current profile on the baseline's binning
    → drift (+ embeddings for image/text models); below min_samples an early look that judges only
      decisive shifts (nothing decisive: insufficient, no alerts, the cursor stays so data
      accumulates) → accuracy estimated from the confidences (monitoring.estimate, calibrated on
      the baseline's held-out rows) → quality with uploaded labels (+ per hour), the estimate on
      the same labelled rows beside it
    → shadow comparison → report JSON + HTML in the artifact store
    → the run's outcome and the monitor's cursor (one transaction) → alerts (never fail the run)

Printed lines are the job's logs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import tempfile
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import numpy as np

from loopml.core.errors import InvalidInput, LoopMLError, NotFound
from loopml.core.timeutil import iso, parse_iso, utcnow
from loopml.monitoring.served import ModelContext, model_context, served_variant
from loopml.platform import Platform
from loopml.core.jobstatus import RUNNING as JOB_RUNNING
from loopml.core.jobstatus import SUCCEEDED as JOB_SUCCEEDED
from loopml.store.monitors_repo import FAILED, INSUFFICIENT, SUCCEEDED
from loopml.registry.resolve import lookup

log = logging.getLogger("loopml.monitoring.run")
CAPTURE_SETTLE_S = 5.0  # capture lands about once a second: leave the newest seconds to the next run
MIN_LABELLED = 50  # labelled rows needed before accuracy can raise (or resolve) an alert
MAX_EMBED_ROWS = 2000
QUALITY_WINDOW = timedelta(hours=1)


def _say(text: str) -> None:
    print(text, flush=True)


def run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None] = lambda: None, *,
        now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """Run the job's monitor run; returns the finished run record. A failure is recorded on the run
    (and re-raised, so the worker fails the job with the same reason)."""
    spec = job.get("spec") or {}
    name, run_id = spec.get("monitor"), spec.get("run_id")
    if not name or not run_id:
        raise InvalidInput(f"monitor job {job.get('id')}: spec needs monitor and run_id, got {spec}")
    try:
        finished = _execute(platform, name, run_id, now())
    except BaseException as exc:
        reason = _one_line(exc)
        try:
            platform.monitors.finish_run(run_id, FAILED, error=reason)
        except NotFound:
            pass  # the monitor (and its runs) was deleted meanwhile
        _say(f"run {run_id} failed: {reason}")
        raise
    if job.get("id"):
        platform.jobs.transition(job["id"], JOB_SUCCEEDED, expect=[JOB_RUNNING],
                                 result={"run_id": run_id, "status": finished["status"],
                                         "violations": len(finished["violations"]),
                                         "report_key": finished.get("report_key")})
    return finished


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, LoopMLError):
        return exc.message.strip().splitlines()[0][:500] if exc.message.strip() else type(exc).__name__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def only_version(window: Any, version: int) -> tuple[Any, int]:
    """The records the served version answered (an alias may have moved inside the window)."""
    versions = window.model_versions.to_list() if hasattr(window.model_versions, "to_list") \
        else list(window.model_versions)
    keep = [i for i, v in enumerate(versions) if v is None or int(v) == int(version)]
    if len(keep) == len(versions):
        return window, 0
    taken = {f.name: getattr(window, f.name).take(keep) for f in dataclasses.fields(window)
             if hasattr(getattr(window, f.name), "take")}
    return dataclasses.replace(window, **taken), len(versions) - len(keep)


FILES_PER_CHUNK = 8  # capture files read and decoded at a time: their text is freed before the next


@dataclasses.dataclass
class _Lists:
    """Per-chunk Arrow columns of a window read in chunks, flattened only when asked."""

    parts: list[Any]

    def to_list(self) -> list[Any]:
        out: list[Any] = []
        for part in self.parts:
            out += part.to_list()
        return out

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)


@dataclasses.dataclass
class DecodedWindow:
    """What a run keeps of its window once decoded: ids and times (for labels), counts, cursor."""

    inference_ids: _Lists
    inference_times: _Lists
    malformed: int = 0
    files: int = 0
    last_time: datetime | None = None

    def __len__(self) -> int:
        return len(self.inference_times)


def read_and_decode(platform: Platform, endpoint: str, variant: str, version: int, context: ModelContext, *,
                    since: datetime, until: datetime) -> tuple[DecodedWindow, Any, int]:
    """Read the window a few files at a time and decode each chunk before reading the next, so
    the captured text of the whole window is never in memory at once (a million tabular records:
    ~0.8 GB of JSON) — only the decoded rows are. Returns (window, decoded rows, records of other
    versions left out)."""
    from loopml.monitoring.capture_reader import capture_files, read_window
    from loopml.monitoring.decode import decode_window

    prefix = platform.settings.capture_prefix
    keys = capture_files(platform.artifacts, prefix, endpoint, variant, since=since, until=until)
    out = DecodedWindow(_Lists([]), _Lists([]))
    parts: list[Any] = []
    other_versions, offset = 0, 0
    for start in range(0, max(len(keys), 1), FILES_PER_CHUNK):
        chunk = read_window(platform.artifacts, prefix, endpoint, variant, since=since, until=until,
                            keys=keys[start:start + FILES_PER_CHUNK])
        out.malformed += chunk.malformed
        out.files += chunk.files
        if chunk.last_time is not None and (out.last_time is None or chunk.last_time > out.last_time):
            out.last_time = chunk.last_time
        chunk, other = only_version(chunk, version)
        other_versions += other
        decoded = decode_window(chunk, context.signature)
        out.inference_ids.parts.append(chunk.inference_ids)
        out.inference_times.parts.append(chunk.inference_times)
        parts.append((decoded, offset))
        offset += len(chunk)
        del chunk
    return out, _merge_decoded(parts), other_versions


def _merge_decoded(parts: list[tuple[Any, int]]) -> Any:
    import pandas as pd

    full = [(d, off) for d, off in parts if d.rows] or parts[-1:]
    if len(full) == 1 and full[0][1] == 0:
        return full[0][0]
    first = full[0][0]
    if isinstance(first.raw, pd.DataFrame):
        raw: Any = pd.concat([d.raw for d, _ in full], ignore_index=True)
    elif isinstance(first.raw, np.ndarray):
        raw = np.concatenate([d.raw for d, _ in full])
    else:
        raw = [x for d, _ in full for x in d.raw]
    probas = [d.proba for d, _ in full]
    return dataclasses.replace(
        first, raw=raw,
        proba=np.concatenate(probas) if all(p is not None for p in probas) else None,
        predicted=[p for d, _ in full for p in d.predicted],
        confidence=np.concatenate([np.asarray(d.confidence, dtype=np.float64) for d, _ in full]),
        keep=np.concatenate([np.asarray(d.keep, dtype=np.int64) + off for d, off in full]),
        undecodable=sum(d.undecodable for d, _ in parts))


def _rows_of(values: Any, keep: Any) -> list[Any]:
    values = values.to_list() if hasattr(values, "to_list") else list(values)
    return [values[int(k)] for k in np.asarray(keep, dtype=np.int64)]


def _times(values: list[Any]) -> list[datetime]:
    return [v if isinstance(v, datetime) else parse_iso(str(v)) for v in values]


# -- the run ------------------------------------------------------------------------------------

def _execute(platform: Platform, name: str, run_id: str, started: datetime) -> dict[str, Any]:
    from loopml.monitoring.baseline_job import load_baseline

    monitors = platform.monitors
    monitor = monitors.get(name)
    run = monitors.get_run(name, run_id)
    until = started - timedelta(seconds=CAPTURE_SETTLE_S)
    since = parse_iso(monitor["cursor"]) if monitor["cursor"] else until - timedelta(seconds=monitor["window_s"])
    if since >= until:
        since = until - timedelta(seconds=1)
    monitors.start_run(run_id, since=since, until=until)
    _say(f"monitor {name} run {run_id}: endpoint {monitor['endpoint']}, window {iso(since)} .. {iso(until)}")

    endpoint = platform.endpoints.get(monitor["endpoint"])
    variant, is_shadow = served_variant(endpoint, monitor["variant"])
    version = lookup(platform, variant["model"], variant["version"])
    context = model_context(platform, version)
    _say(f"variant {variant['name']} serves {version['ref']} ({context.kind}, "
         f"{len(context.class_names)} classes)")
    baseline, baseline_embeddings = load_baseline(platform, version)

    window, decoded, other_versions = read_and_decode(platform, monitor["endpoint"], variant["name"],
                                                      version["version"], context, since=since, until=until)
    _say(f"read {len(window) + other_versions} captured records from {window.files} files "
         f"({window.malformed} malformed lines skipped)")
    if window.malformed:
        log.warning("monitor %s: %d malformed capture lines skipped", name, window.malformed)
    if other_versions:
        _say(f"{other_versions} records answered by other versions of {variant['model']} are left out")
    rows = len(decoded.predicted)
    base_summary = {"records": len(window), "rows": rows, "malformed": window.malformed,
                    "undecodable": decoded.undecodable, "files": window.files, "other_versions": other_versions,
                    "model": {"name": version["name"], "version": version["version"]},
                    "variant": variant["name"], "kind": context.kind}
    if decoded.undecodable:
        _say(f"{decoded.undecodable} records could not be decoded and are skipped")
    thresholds = {**(monitor["thresholds"] or {})}
    min_samples = int(thresholds.get("min_samples") or monitor["min_samples"])

    from loopml.monitoring.drift import compare
    from loopml.monitoring.profile import build_profile

    # below min_samples the window is still judged, early: only what is already decisive counts
    early = rows < min_samples
    current = build_profile(kind=context.kind, raw=decoded.raw, proba=decoded.proba,
                            class_names=context.class_names, schema=context.schema, vocab=context.vocab,
                            reference=baseline, predicted=list(decoded.predicted), confidence=decoded.confidence) \
        if rows else None
    current_embeddings = None
    if not early and baseline_embeddings is not None and context.kind in ("image", "text"):
        current_embeddings = _embed(platform, version, decoded.raw)
    drift = compare(baseline, current, thresholds={**thresholds, "min_samples": min_samples},
                    baseline_embeddings=baseline_embeddings, current_embeddings=current_embeddings) \
        if rows else None
    if drift is None or drift["insufficient"]:
        _say(f"insufficient data: {rows} rows < min samples {min_samples} and no feature's shift is decisive "
             "yet; the window keeps accumulating")
        return monitors.finish_run(
            run_id, INSUFFICIENT, rows=rows, malformed=window.malformed, violations=[],
            summary=_json_safe({**base_summary, "min_samples": min_samples, "checked": [], "early": True,
                                "features": [_feature_summary(f) for f in (drift or {}).get("features") or []]}),
            cursor=since if monitor["cursor"] is None else None)
    if early:
        _say(f"early verdict: {rows} rows < min samples {min_samples}, but {len(drift['violations'])} feature(s) "
             "already shifted decisively")
    violations = [_drift_violation(v) for v in drift.get("violations") or []]
    checked = [str(f["name"]) for f in drift.get("features") or []]
    _say(f"drift: {len(drift.get('features') or [])} checks, {len(violations)} violated")
    for f in drift.get("features") or []:
        _say("  " + _feature_line(f))

    # per-row ids and times only when something joins on them: building them for a million rows
    # of unlabelled traffic cost more than the drift itself
    resolved_shadow = (endpoint.get("resolved") or {}).get("shadow")
    has_labels = monitors.count_labels(name) > 0
    quality_part: dict[str, Any] = {"labels": {"joined": 0}}
    if has_labels or (resolved_shadow and not is_shadow):
        record_ids = window.inference_ids.to_list()
        row_records = np.asarray(decoded.keep, dtype=np.int64)
        row_ids = [record_ids[int(k)] for k in row_records]
        single = _single_row_records(row_records)
        predicted = [str(p) for p in decoded.predicted]
    calibration = baseline.get("calibration")
    if has_labels:
        quality_part = _quality(platform, name, row_ids, single, predicted,
                                _rows_of(window.inference_times, row_records), context.class_names, thresholds,
                                confidence=np.asarray(decoded.confidence, dtype=np.float64), calibration=calibration)
    if quality_part.get("evaluated"):
        checked.append("quality.accuracy")
    if quality_part.get("violation"):
        violations.append(quality_part.pop("violation"))
    quality_part.pop("violation", None)
    estimate = _estimate(baseline, decoded.confidence, version["ref"], thresholds.get("accuracy"), quality_part)
    if "check" in estimate:
        checked.append("quality.estimated_accuracy")
        if estimate["check"]["violated"]:
            violations.append(_estimate_violation(estimate["check"]))

    shadow_part = None
    if resolved_shadow and not is_shadow:
        production = {i: p for i, p, one in zip(row_ids, predicted, single) if one and i}
        shadow_part = _shadow(platform, monitor, name, variant["name"], resolved_shadow, since, until, production)

    report = {"monitor": name, "run_id": run_id, "endpoint": monitor["endpoint"], "variant": variant["name"],
              "model": {"name": version["name"], "version": version["version"], "kind": context.kind},
              "class_names": context.class_names,
              "window": {"since": iso(since), "until": iso(until), "last_time": iso(window.last_time)},
              **{k: base_summary[k] for k in ("records", "rows", "malformed", "undecodable", "files",
                                              "other_versions")},
              "thresholds": drift.get("thresholds"), "min_samples": min_samples,
              "drift": drift, "baseline": baseline, "current": current, "estimate": estimate,
              "quality": quality_part.get("quality"), "quality_windows": quality_part.get("over_time"),
              "labels": quality_part.get("labels"), "shadow": shadow_part,
              "violations": violations, "created_at": iso(utcnow())}
    key = _write_report(platform, name, run_id, report)
    _say(f"report: {key}")
    summary = {**base_summary, "min_samples": min_samples, "checked": checked,
               "features": [_feature_summary(f) for f in drift.get("features") or []],
               "estimate": _estimate_summary(estimate),
               "quality": _quality_summary(quality_part), "shadow": _shadow_summary(shadow_part),
               "report_html": key[:-len("json")] + "html"}
    finished = monitors.finish_run(run_id, SUCCEEDED, rows=rows, malformed=window.malformed,
                                   violations=_json_safe(violations), summary=_json_safe(summary), report_key=key,
                                   cursor=window.last_time or until)
    finished = _alerts(platform, monitor, finished)
    _say(f"run {run_id} succeeded: {rows} rows, {len(violations)} violations")
    return finished


def _embed(platform: Platform, version: dict[str, Any], raw: Any) -> np.ndarray | None:
    from loopml.models.embeddings import embed

    try:
        with tempfile.TemporaryDirectory(prefix="loopml-monitor-") as tmp:
            folder = platform.artifacts.download_dir(version["artifact_prefix"], tmp)
            return embed(folder, raw, max_rows=MAX_EMBED_ROWS, seed=0)
    except Exception as exc:  # noqa: BLE001 - the embedding test is skipped, the rest of the run stands
        _say(f"embeddings not computed ({_one_line(exc)}); the embedding drift test is skipped")
        return None


def _single_row_records(row_records: np.ndarray) -> np.ndarray:
    """Row mask: rows that are their record's only row (a label keyed by inference id is theirs)."""
    if row_records.size == 0:
        return np.zeros(0, dtype=bool)
    _values, inverse, counts = np.unique(row_records, return_inverse=True, return_counts=True)
    return counts[inverse] == 1


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)


def _feature_line(f: dict[str, Any]) -> str:
    stats = ", ".join(f"{k} {_fmt(v)}" for k, v in (f.get("statistics") or {}).items())
    limits = ", ".join(f"{k} {_fmt(v)}" for k, v in (f.get("thresholds") or {}).items())
    flag = ("VIOLATED (early)" if f.get("early") else "VIOLATED") if f.get("violated") else "ok"
    return (f"{f.get('name')}: {stats} (thresholds {limits}; n {f.get('n_baseline')} vs {f.get('n_current')}) "
            f"{flag}")


def _drift_violation(f: dict[str, Any]) -> dict[str, Any]:
    return {**f, "key": str(f.get("name")), "severity": "warning",
            "message": f"drift in {f.get('name')}: " + _feature_line(f).split(": ", 1)[-1]}


def _feature_summary(f: dict[str, Any]) -> dict[str, Any]:
    return {k: f.get(k) for k in ("name", "type", "statistics", "thresholds", "violated", "early", "n_baseline",
                                  "n_current") if k != "early" or f.get("early")}


def _estimate(baseline: dict[str, Any], confidence: Any, model_ref: str, floor: Any,
              quality_part: dict[str, Any]) -> dict[str, Any]:
    """The window's accuracy estimate (or {"reason"} why none) and, with an accuracy floor, its
    check (estimate.check_estimate: labels that judged the window and passed it overrule it)."""
    from loopml.monitoring.estimate import check_estimate, estimate_accuracy, why_no_estimate

    conf = np.asarray(confidence, dtype=np.float64)
    reason = why_no_estimate(baseline, int(np.isfinite(conf).sum()), model_ref)
    found = None if reason else estimate_accuracy(baseline["calibration"], conf)
    if found is None:
        _say(f"no accuracy estimate: {reason}")
        return {"reason": reason}
    out: dict[str, Any] = {**found, "calibrated_rows": baseline["calibration"].get("n")}
    _say(f"accuracy estimate {found['accuracy']:.3f} [{found['low']:.3f}, {found['high']:.3f}] "
         f"({found['level']:.0%}) on {found['n']} rows, calibrated on {out['calibrated_rows']} held-out rows")
    if floor is not None:
        labels_passed = bool(quality_part.get("evaluated")) and not (quality_part.get("check") or {}).get("violated")
        out["check"] = check_estimate(found, float(floor), labels_passed=labels_passed)
        if out["check"]["overruled"]:
            _say(f"estimate below the accuracy floor {float(floor):g}, but the labelled rows passed it: no alert")
    return out


def _estimate_violation(item: dict[str, Any]) -> dict[str, Any]:
    stats = item["statistics"]
    return {**item, "key": "quality.estimated_accuracy", "severity": "warning",
            "message": f"estimated accuracy {stats['accuracy']:.3f} [{stats['low']:.3f}, {stats['high']:.3f}] < "
                       f"{item['thresholds']['accuracy']:g} on {item['n_current']} rows (no labels needed: "
                       "from the model's confidences)"}


def _estimate_summary(estimate: dict[str, Any]) -> dict[str, Any]:
    out = {k: estimate[k] for k in ("accuracy", "low", "high", "level", "n", "reason") if k in estimate}
    if "check" in estimate:
        out.update(floor=estimate["check"]["thresholds"]["accuracy"], violated=estimate["check"]["violated"],
                   overruled=estimate["check"]["overruled"])
    return out


def _quality(platform: Platform, name: str, row_ids: list[Any], single: np.ndarray, predicted: list[str],
             times: list[Any], class_names: list[str], thresholds: dict[str, Any], *,
             confidence: np.ndarray, calibration: dict[str, Any] | None) -> dict[str, Any]:
    """Join uploaded labels by inference id → quality, quality per hour and the accuracy floor
    (M1's check_quality: below the floor AND a one-sided binomial test agrees), each beside the
    accuracy estimated on the same rows (apples to apples: how far the estimate is off here)."""
    ids = [i for i, one in zip(row_ids, single) if i and one]
    labels = platform.monitors.labels_for(name, ids) if ids else {}
    if not labels:
        return {"labels": {"joined": 0}}
    from loopml.monitoring.drift import check_quality
    from loopml.monitoring.estimate import estimate_accuracy
    from loopml.monitoring.quality import quality, quality_over_windows

    pick = [k for k, (i, one) in enumerate(zip(row_ids, single)) if one and i in labels]
    y_true = [labels[row_ids[k]] for k in pick]
    y_pred = [predicted[k] for k in pick]
    q = quality(y_true, y_pred, class_names)
    picked_times = _times([times[k] for k in pick])
    over = quality_over_windows(picked_times, y_true, y_pred, class_names, QUALITY_WINDOW)
    conf = confidence[np.asarray(pick, dtype=np.int64)]
    q["estimate"] = estimate_accuracy(calibration, conf)
    stamps = np.asarray([(t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() for t in picked_times])
    for w in over:  # the same hour buckets as quality_over_windows
        inside = (stamps >= parse_iso(w["start"]).timestamp()) & (stamps < parse_iso(w["end"]).timestamp())
        w["estimate"] = estimate_accuracy(calibration, conf[inside])
    out: dict[str, Any] = {"quality": q, "over_time": over, "labels": {"joined": len(pick)}}
    beside = q["estimate"]
    _say(f"quality: accuracy {_fmt(q.get('accuracy'))} on {len(pick)} labelled rows"
         + (f" (estimated on the same rows: {beside['accuracy']:.3f} [{beside['low']:.3f}, {beside['high']:.3f}])"
            if beside else ""))
    floor = thresholds.get("accuracy")
    if floor is None:
        return out
    item = check_quality(q, {"accuracy": floor})
    out["check"] = item
    if item["violated"]:
        accuracy = item["statistics"]["accuracy"]
        out["violation"] = {**item, "key": "quality.accuracy", "severity": "critical",
                            "message": f"accuracy {accuracy:.3f} < {floor:g} on {len(pick)} labelled rows "
                                       f"(binomial p {_fmt(item['statistics'].get('accuracy_pvalue'))})"}
    if item["violated"] or len(pick) >= MIN_LABELLED:
        out["evaluated"] = True  # enough evidence to raise, or to resolve, the accuracy alert
    else:
        _say(f"accuracy not judged: {len(pick)} labelled rows < {MIN_LABELLED}")
    return out


def _quality_summary(part: dict[str, Any]) -> dict[str, Any] | None:
    q = part.get("quality")
    if not q:
        return None
    beside = q.get("estimate") or {}
    return {"accuracy": q.get("accuracy"), "n": q.get("n"), "evaluated": bool(part.get("evaluated")),
            "estimate": {k: beside[k] for k in ("accuracy", "low", "high")} if beside else None}


def _shadow(platform: Platform, monitor: dict[str, Any], name: str, production_variant: str,
            shadow: dict[str, Any], since: datetime, until: datetime, prod_pred: dict[str, str]) -> dict[str, Any]:
    """The shadow variant's predictions on the same requests (joined by inference id): agreement
    with production and, with labels, both qualities side by side (M1's shadow_comparison)."""
    from loopml.monitoring.capture_reader import read_window
    from loopml.monitoring.decode import decode_window
    from loopml.monitoring.quality import shadow_comparison

    part: dict[str, Any] = {"production_variant": production_variant, "shadow_variant": shadow["name"],
                            "model": {"name": shadow["model"], "version": shadow["version"]}}
    try:
        version = lookup(platform, shadow["model"], shadow["version"])
        context = model_context(platform, version)
        window = read_window(platform.artifacts, platform.settings.capture_prefix, monitor["endpoint"],
                             shadow["name"], since=since, until=until)
        decoded = decode_window(window, context.signature)
        rec = np.asarray(decoded.keep, dtype=np.int64)
        ids = window.inference_ids.to_list()
        shadow_pred = {ids[int(k)]: str(p) for k, p, one in zip(rec, decoded.predicted, _single_row_records(rec))
                       if one and ids[int(k)]}
        common = [i for i in prod_pred if i in shadow_pred]
        labels = platform.monitors.labels_for(name, common) if common else {}
        part.update(shadow_comparison([labels.get(i) for i in common], [prod_pred[i] for i in common],
                                      [shadow_pred[i] for i in common], context.class_names))
        part["shadow_rows"] = len(decoded.predicted)
        _say(f"shadow {shadow['name']} ({shadow['model']}:{shadow['version']}): {len(common)} joined requests, "
             f"agreement {_fmt(part.get('agreement'))}")
    except Exception as exc:  # noqa: BLE001 - the comparison is extra; the monitored variant's run stands
        part["error"] = _one_line(exc)
        _say(f"shadow comparison skipped: {part['error']}")
    return part


def _shadow_summary(part: dict[str, Any] | None) -> dict[str, Any] | None:
    if not part:
        return None
    out = {k: part.get(k) for k in ("shadow_variant", "model", "n", "labelled", "agreement", "accuracy_delta", "error")
           if part.get(k) is not None}
    if part.get("labelled"):
        out["accuracy"] = {k: (part.get(k) or {}).get("accuracy") for k in ("production", "shadow")}
    return out


def _json_safe(value: Any) -> Any:
    """numpy scalars/arrays → Python; NaN/inf → None (strict JSON for the report and PostgreSQL)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return iso(value)
    return value


def _write_report(platform: Platform, name: str, run_id: str, report: dict[str, Any]) -> str:
    from loopml.monitoring.report import render_html
    from loopml.monitoring.report import report_key

    safe = _json_safe(report)
    html_key, json_key = report_key(name, run_id, "html"), report_key(name, run_id, "json")
    try:
        html = render_html(safe)
    except Exception as exc:  # noqa: BLE001 - a plotting bug must not lose the findings
        log.exception("monitor %s: rendering the HTML report failed", name)
        html = (f"<!doctype html><meta charset='utf-8'><title>{name} {run_id}</title>"
                f"<p>the HTML report could not be rendered ({type(exc).__name__}); see report.json</p>")
    platform.artifacts.put_bytes(html_key, html.encode("utf-8"))
    platform.artifacts.put_bytes(json_key, json.dumps(safe, allow_nan=False).encode("utf-8"))
    return json_key


def _alerts(platform: Platform, monitor: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    from loopml.monitoring.alerts import process_run

    try:
        changes = process_run(platform, monitor, run)
    except Exception:  # noqa: BLE001 - alerts never fail a finished run
        log.exception("monitor %s run %s: processing alerts failed", monitor["name"], run["id"])
        _say("alerts could not be processed (see the server log)")
        return run
    alerts = {k: [a["id"] + " " + a["key"] for a in v] for k, v in changes.items()}
    for kind, items in alerts.items():
        for item in items:
            _say(f"alert {kind}: {item}")
    return platform.monitors.update_summary(run["id"], {"alerts": alerts})
