"""Ground-truth labels of captured requests: uploaded by inference id, joined by monitor runs.

A label is keyed by the request's inference id (SageMaker's ``X-Amzn-SageMaker-Inference-Id``,
OIP's ``"id"`` or the one the data plane generated and returned); a re-upload replaces it.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from loopml.core.errors import InvalidInput
from loopml.core.timeutil import utcnow
from loopml.monitoring.capture_reader import read_window
from loopml.platform import Platform

LABEL_LOOKBACK = timedelta(days=30)  # how far back uploads look for their ids (and labelled data reads)
MAX_LABEL_BYTES = 64 << 20
MAX_ID_LEN = MAX_LABEL_LEN = 255
UNKNOWN_SHOWN = 20


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
    window = read_window(platform.artifacts, platform.settings.capture_prefix, monitor["endpoint"], None,
                         since=since, until=until, columns=("inference_ids",))
    return {str(i) for i in window.inference_ids if i}
