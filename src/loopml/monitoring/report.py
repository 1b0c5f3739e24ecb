"""A monitoring run's report as one self-contained HTML page (inline CSS and SVG, no scripts).

``render_html(report)`` takes the dict a run writes as report.json::

    {"monitor", "endpoint", "variant", "model", "window": {"since", "until"}, "rows", "malformed",
     "drift": <drift.compare() result>, "baseline": <profile>, "current": <profile>,
     "estimate": <estimate.estimate_accuracy() + "check"> | {"reason"},
     "quality": <quality.quality() + "estimate"> | None, "quality_windows": [...], "shadow": {...} | None,
     "alerts": [...]}

Any key may be missing or None: the page shows what there is. Every piece of text that comes from
the report goes through ``html.escape``; the page references no external URL, font or script.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

BASE_COLOUR = "#4c78a8"
CURRENT_COLOUR = "#f58518"
_MAX_CATEGORIES_SHOWN = 25
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:1.5em;margin-bottom:0.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.violated td{background:#fde8e8}.ok{color:#2a7a2a;font-weight:600}.bad{color:#b00020;font-weight:600}
.muted{color:#777}.charts{display:flex;flex-wrap:wrap;gap:16px}.chart{border:1px solid #eee;padding:6px}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3g}"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)


def _get(mapping: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return default
        mapping = mapping.get(key)
    return default if mapping is None else mapping


def _shares(counts: Sequence[Any]) -> list[float]:
    values = [float(c) if isinstance(c, (int, float)) and math.isfinite(float(c)) and c > 0 else 0.0 for c in counts]
    total = sum(values)
    return [v / total if total else 0.0 for v in values]


# --------------------------------------------------------------------------- SVG


def bar_chart(title: str, labels: Sequence[str], baseline: Sequence[float], current: Sequence[float],
              *, width: int = 380, height: int = 170) -> str:
    """Grouped bars (baseline vs current shares) as inline SVG; hover titles give the values."""
    n = max(len(labels), 1)
    top = max([*baseline, *current, 1e-9])
    pad_l, pad_b, pad_t = 34, 34, 18
    plot_w, plot_h = width - pad_l - 6, height - pad_b - pad_t
    slot = plot_w / n
    bar = max(slot * 0.4, 1.0)
    parts = [f'<svg width="{width}" height="{height}" '
             f'role="img" aria-label="{_e(title)}">',
             f'<text x="{pad_l}" y="12" font-size="12" font-weight="600">{_e(title)}</text>',
             f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 6}" y2="{pad_t + plot_h}" stroke="#999"/>',
             f'<text x="{pad_l - 4}" y="{pad_t + 8}" font-size="9" text-anchor="end">{top:.0%}</text>']
    for i, label in enumerate(labels):
        x0 = pad_l + i * slot + slot * 0.1
        for j, (series, colour) in enumerate(((baseline, BASE_COLOUR), (current, CURRENT_COLOUR))):
            v = series[i] if i < len(series) else 0.0
            h = plot_h * v / top
            who = "baseline" if j == 0 else "current"
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bar:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{_e(label)} — {who}: {v:.1%}</title></rect>')
        if n <= 12 or i % math.ceil(n / 12) == 0:
            short = str(label) if len(str(label)) <= 10 else str(label)[:9] + "…"
            parts.append(f'<text x="{x0 + bar:.1f}" y="{pad_t + plot_h + 12}" font-size="9" '
                         f'text-anchor="middle">{_e(short)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, labels: Sequence[str], values: Sequence[float | None],
               *, width: int = 560, height: int = 180) -> str:
    """A 0–1 line chart (e.g. accuracy per window) as inline SVG."""
    pad_l, pad_b, pad_t = 34, 30, 18
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    n = len(values)
    parts = [f'<svg width="{width}" height="{height}" '
             f'role="img" aria-label="{_e(title)}">',
             f'<text x="{pad_l}" y="12" font-size="12" font-weight="600">{_e(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + plot_h * (1 - frac)
        parts.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#eee"/>'
                     f'<text x="{pad_l - 4}" y="{y + 3:.1f}" font-size="9" text-anchor="end">{frac:.1f}</text>')
    points = []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(float(v)):
            continue
        x = pad_l + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)
        y = pad_t + plot_h * (1 - min(max(float(v), 0.0), 1.0))
        points.append((x, y))
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{BASE_COLOUR}">'
                     f'<title>{_e(labels[i] if i < len(labels) else i)}: {float(v):.4f}</title></circle>')
    if len(points) > 1:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{BASE_COLOUR}" stroke-width="1.5"/>')
    if labels:
        parts.append(f'<text x="{pad_l}" y="{height - 8}" font-size="9">{_e(labels[0])}</text>')
        parts.append(f'<text x="{width - 10}" y="{height - 8}" font-size="9" text-anchor="end">{_e(labels[-1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _bin_labels(edges: Sequence[Any]) -> list[str]:
    e = [float(x) for x in edges if isinstance(x, (int, float))]
    if not e:
        return ["all"]
    return [f"≤{e[0]:.3g}"] + [f"{a:.3g}–{b:.3g}" for a, b in zip(e, e[1:])] + [f">{e[-1]:.3g}"]


def _numeric_chart(name: str, base: Mapping, cur: Mapping) -> str:
    b_counts = list(base.get("counts") or [])
    c_counts = list(cur.get("counts") or [])
    if not b_counts and not c_counts:
        return ""
    labels = _bin_labels(base.get("edges") or cur.get("edges") or [])
    size = max(len(labels), len(b_counts), len(c_counts))
    labels += [f"bin {i}" for i in range(len(labels), size)]
    return bar_chart(name, labels, _shares(b_counts + [0] * (size - len(b_counts))),
                     _shares(c_counts + [0] * (size - len(c_counts))))


def _categorical_chart(name: str, base: Mapping, cur: Mapping) -> str:
    b, c = dict(base or {}), dict(cur or {})
    if not b and not c:
        return ""
    cats = list(b) + [k for k in c if k not in b]
    b_share, c_share = _shares([b.get(k, 0) for k in cats]), _shares([c.get(k, 0) for k in cats])
    if len(cats) > _MAX_CATEGORIES_SHOWN:  # the categories that matter most: largest shares on either side
        keep = sorted(range(len(cats)), key=lambda i: -max(b_share[i], c_share[i]))[:_MAX_CATEGORIES_SHOWN]
        keep.sort()
        cats = [cats[i] for i in keep]
        b_share, c_share = [b_share[i] for i in keep], [c_share[i] for i in keep]
    return bar_chart(name, [str(k) for k in cats], b_share, c_share, width=max(380, 22 * len(cats) + 60))


# --------------------------------------------------------------------------- sections


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], row_classes: Sequence[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(
            f'<td class="num">{_e(_fmt(v))}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f"<td>{_e(_fmt(v))}</td>" for v in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(report: Mapping) -> str:
    drift = report.get("drift") if isinstance(report.get("drift"), Mapping) else {}
    violations = drift.get("violations") or []
    if drift.get("insufficient"):
        status = f'<span class="muted">not enough data: {_e(drift.get("reason") or "")}</span>'
    elif not drift:
        status = '<span class="muted">no drift computed</span>'
    elif violations:
        status = f'<span class="bad">{len(violations)} violation(s): ' \
                 f'{_e(", ".join(str(v.get("name")) for v in violations if isinstance(v, Mapping)))}</span>'
    else:
        status = '<span class="ok">no drift detected</span>'
    window = report.get("window") if isinstance(report.get("window"), Mapping) else {}
    rows = [("Monitor", report.get("monitor")), ("Endpoint", report.get("endpoint")),
            ("Variant", report.get("variant")), ("Model", report.get("model")),
            ("Window", f"{_fmt(window.get('since'))} → {_fmt(window.get('until'))}"),
            ("Rows", report.get("rows")), ("Malformed lines skipped", report.get("malformed")),
            ("Estimated accuracy", _interval(report.get("estimate")) if _get(report, "estimate", "accuracy")
             is not None else None)]
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in rows if v is not None)
    return f"<p>{status}</p><table>{cells}</table>"


def _drift_section(report: Mapping) -> str:
    drift = report.get("drift")
    if not isinstance(drift, Mapping) or not drift.get("features"):
        return ""
    rows, classes = [], []
    for item in drift.get("features") or []:
        if not isinstance(item, Mapping):
            continue
        rows.append([item.get("name"), item.get("type"), _fmt(item.get("statistics") or {}),
                     _fmt(item.get("thresholds") or {}), item.get("n_baseline"), item.get("n_current"),
                     bool(item.get("violated"))])
        classes.append("violated" if item.get("violated") else "")
    if drift.get("early"):
        note = (f'<p class="muted">Early look ({_e(drift.get("n_current"))} rows, fewer than min_samples): a '
                f'feature is violated only when its sequential evidence (log10_evidence) passes the bar '
                f'and its effect reaches its floor.</p>')
    else:
        note = (f'<p class="muted">p-value thresholds are Holm-corrected over {_e(drift.get("tests"))} '
                f'tests; a feature is violated when its p-value is below the threshold and its '
                f'noise-corrected effect (shift in std / JS distance / MMD²) reaches its floor.</p>')
    return ("<h2>Drift</h2>" + note +
            _table(["feature", "type", "statistics", "thresholds", "n baseline", "n current", "violated"],
                   rows, classes))


def _distribution_section(report: Mapping) -> str:
    base, cur = report.get("baseline"), report.get("current")
    base = base if isinstance(base, Mapping) else {}
    cur = cur if isinstance(cur, Mapping) else {}
    charts = []
    b_classes, c_classes = _get(base, "predictions", "classes", default={}), _get(cur, "predictions", "classes", default={})
    class_chart = _categorical_chart("predicted classes", b_classes, c_classes)
    b_feats, c_feats = base.get("features") or {}, cur.get("features") or {}
    names = list(b_feats) + [k for k in c_feats if k not in b_feats]
    for name in names:
        b = b_feats.get(name) if isinstance(b_feats.get(name), Mapping) else {}
        c = c_feats.get(name) if isinstance(c_feats.get(name), Mapping) else {}
        kind = b.get("type") or c.get("type")
        if kind == "numeric":
            charts.append(_numeric_chart(str(name), b, c))
        elif kind == "categorical":
            charts.append(_categorical_chart(str(name), b.get("counts") or {}, c.get("counts") or {}))
    b_conf, c_conf = _get(base, "predictions", "confidence", default={}), _get(cur, "predictions", "confidence", default={})
    charts.append(_numeric_chart("confidence", b_conf, c_conf))
    charts = [c for c in [class_chart, *charts] if c]
    if not charts:
        return ""
    legend = (f'<p class="legend"><span style="background:{BASE_COLOUR}"></span>baseline'
              f'<span style="background:{CURRENT_COLOUR}"></span>current window (shares of rows per bin)</p>')
    return ("<h2>Distributions</h2>" + legend + '<div class="charts">' +
            "".join(f'<div class="chart">{c}</div>' for c in charts) + "</div>")


def _quality_block(q: Mapping, title: str) -> str:
    classes = [str(c) for c in q.get("classes") or []]
    out = [f"<h3>{_e(title)}</h3><p>accuracy <b>{_e(_fmt(q.get('accuracy')))}</b> over "
           f"{_e(_fmt(q.get('n')))} labelled rows; macro F1 {_e(_fmt(q.get('macro_f1')))}</p>"]
    per_class = q.get("per_class") or {}
    if per_class:
        out.append(_table(["class", "precision", "recall", "f1", "support"],
                          [[name, _get(v, "precision"), _get(v, "recall"), _get(v, "f1"), _get(v, "support")]
                           for name, v in per_class.items()]))
    cm = q.get("confusion_matrix") or []
    if cm and classes:
        out.append('<p class="muted">confusion matrix: rows = true class, columns = predicted</p>')
        out.append(_table(["true \\ predicted", *classes],
                          [[classes[i] if i < len(classes) else i, *row] for i, row in enumerate(cm)]))
    return "".join(out)


def _interval(estimate: Any) -> str:
    if not isinstance(estimate, Mapping) or estimate.get("accuracy") is None:
        return "—"
    return f"{_fmt(estimate.get('accuracy'))} [{_fmt(estimate.get('low'))}, {_fmt(estimate.get('high'))}]"


def _estimate_block(report: Mapping) -> str:
    """Estimated accuracy (no labels needed) beside the measured one, on the same rows."""
    estimate = report.get("estimate")
    if not isinstance(estimate, Mapping):
        return ""
    if estimate.get("accuracy") is None:
        return f'<h3>Estimated accuracy</h3><p class="muted">no estimate: {_e(estimate.get("reason"))}</p>'
    check = estimate.get("check") if isinstance(estimate.get("check"), Mapping) else {}
    q = report.get("quality") if isinstance(report.get("quality"), Mapping) else {}
    rows = [["whole window", estimate.get("n"), None, _interval(estimate)]]
    if q:
        rows.insert(0, ["labelled rows", q.get("n"), q.get("accuracy"), _interval(q.get("estimate"))])
    verdict = ""
    floor = _e(_fmt(_get(check, "thresholds", "accuracy")))
    if check.get("violated"):
        verdict = f'<p class="bad">the whole interval is below the accuracy floor {floor}</p>'
    elif check.get("overruled"):
        verdict = (f'<p class="muted">the estimate is below the accuracy floor {floor}, but the labelled rows '
                   'passed it: no alert (measured accuracy is the stronger evidence)</p>')
    elif check:
        verdict = f'<p class="ok">not shown below the accuracy floor {floor}</p>'
    note = (f'<p class="muted">estimated from the confidences of the model, calibrated on '
            f'{_e(_fmt(estimate.get("calibrated_rows")))} held-out baseline rows; interval level '
            f'{_e(_fmt(estimate.get("level")))}. It holds while the confidences keep their meaning: inputs '
            f'unlike anything the model has seen, or a changed meaning of the inputs, break it — '
            f'labels are the check.</p>')
    return ("<h3>Estimated accuracy</h3>" + verdict + note +
            _table(["rows", "n", "measured accuracy", "estimated accuracy [interval]"], rows))


def _quality_section(report: Mapping) -> str:
    parts = [_estimate_block(report)]
    q = report.get("quality")
    if isinstance(q, Mapping):
        parts.append(_quality_block(q, "Quality against ground truth"))
    windows = [w for w in report.get("quality_windows") or [] if isinstance(w, Mapping)]
    if windows:
        labels = [str(w.get("start") or "") for w in windows]
        parts.append(line_chart("accuracy per window", labels, [w.get("accuracy") for w in windows]))
        parts.append(_table(["window start", "end", "n", "accuracy", "estimated [interval]", "macro F1"],
                            [[w.get("start"), w.get("end"), w.get("n"), w.get("accuracy"),
                              _interval(w.get("estimate")), w.get("macro_f1")] for w in windows]))
    shadow = report.get("shadow")
    if isinstance(shadow, Mapping):
        prod, shad = shadow.get("production") or {}, shadow.get("shadow") or {}
        parts.append("<h3>Shadow vs production</h3>")
        parts.append(_table(["", "production", "shadow"], [
            ["variant", shadow.get("production_variant"), shadow.get("shadow_variant")],
            ["accuracy", _get(prod, "accuracy"), _get(shad, "accuracy")],
            ["macro F1", _get(prod, "macro_f1"), _get(shad, "macro_f1")],
            ["labelled rows", _get(prod, "n"), _get(shad, "n")]]))
        parts.append(f"<p>prediction agreement {_e(_fmt(shadow.get('agreement')))} over "
                     f"{_e(_fmt(shadow.get('n')))} requests</p>")
    parts = [p for p in parts if p]
    return "<h2>Quality</h2>" + "".join(parts) if parts else ""


def _alerts_section(report: Mapping) -> str:
    alerts = [a for a in report.get("alerts") or [] if isinstance(a, Mapping)]
    if not alerts:
        return ""
    keys = ["id", "status", "feature", "metric", "value", "threshold", "message"]
    return "<h2>Alerts</h2>" + _table(keys, [[a.get(k) for k in keys] for a in alerts])


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page (see the module docstring)."""
    report = report if isinstance(report, Mapping) else {}
    title = f"LoopML monitor {report.get('monitor') or ''}".strip()
    body = [f"<h1>{_e(title)}</h1>", _summary(report), _alerts_section(report), _drift_section(report),
            _distribution_section(report), _quality_section(report)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")


def report_key(monitor: str, run_id: str, fmt: str) -> str:
    """Where a run's report is stored (``fmt``: json | html)."""
    return f"monitoring/{monitor}/{run_id}/report.{fmt}"
