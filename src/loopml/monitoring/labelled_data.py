"""Labelled traffic → a dataset version: the closed loop's training data.

The monitor's captured requests that have an uploaded ground-truth label, decoded back to the
served model's raw inputs (its ``InputSignature``), become a new version of a dataset. Runs as
the ``loopml:labelled-data`` workflow task (it may read 30 days of capture).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.timeutil import utcnow
from loopml.monitoring.labels import LABEL_LOOKBACK
from loopml.monitoring.monitors import whole_number
from loopml.monitoring.served import ModelContext
from loopml.platform import Platform
from loopml.registry.resolve import lookup

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
    from loopml.monitoring.served import model_context, served_variant

    record = platform.monitors.get(monitor)
    if not isinstance(dataset, str) or not dataset.strip():
        raise InvalidInput("dataset: name the dataset the labelled requests go to")
    dataset = validate_dataset(dataset.strip())
    needed = min_labels_value(min_labels)
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

    version = lookup(platform, variant["model"], variant["version"])
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
    decoded = decode_window(window, context.signature)
    keep = np.asarray(decoded.keep, dtype=np.int64)
    _values, inverse, counts = np.unique(keep, return_inverse=True, return_counts=True)
    single = counts[inverse] == 1 if keep.size else np.zeros(0, dtype=bool)
    classes = set(context.class_names)
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
    content = _content_of(context, decoded.raw, rows, y)
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


def min_labels_value(value: Any) -> int:
    return whole_number(value, "min_labels", MAX_MIN_LABELS)


def _skipped_text(skipped: dict[str, int]) -> str:
    parts = [f"{n} {what.replace('_', ' ')}" for what, n in skipped.items() if n]
    return f" ({', '.join(parts)} left out)" if parts else ""


def _content_of(context: ModelContext, raw: Any, rows: list[int], labels: list[str]) -> Any:
    """Decoded rows → a DatasetContent (images back in the dataset's integer dtype when they fit)."""
    import numpy as np
    import pandas as pd

    from loopml.datasets.content import DatasetContent

    kind, schema = context.kind, context.schema
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
        column = context.signature.text_column
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
