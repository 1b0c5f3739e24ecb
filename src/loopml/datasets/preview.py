"""A page of a dataset version's rows as JSON-able values, for people to look at (the dashboard):
images as pixel arrays, texts as strings, table rows as ``{column: value}``."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from loopml.core.errors import InvalidInput
from loopml.datasets.service import load_version
from loopml.datasets.splits import SPLITS
from loopml.platform import Platform

MAX_TEXT = 2000  # characters of one text row: a preview, not the article


def _value(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return None if math.isnan(float(v)) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return None if v is None else (v if isinstance(v, (int, str, bool)) else str(v))


def preview_rows(platform: Platform, record: dict[str, Any], split: str | None, offset: int,
                 limit: int) -> dict[str, Any]:
    """Rows ``offset .. offset+limit`` of ``split`` (all rows, in stored order, when None)."""
    if split is not None and split not in SPLITS:
        raise InvalidInput(f"split {split!r} is not valid: use one of {', '.join(SPLITS)}")
    content, splits = load_version(platform, record)
    index = np.sort(splits[split]) if split else np.arange(len(content))
    page = index[offset:offset + limit]
    part = content.take(page)
    rows: list[dict[str, Any]] = []
    for i, row_index in enumerate(page.tolist()):
        row: dict[str, Any] = {"index": int(row_index), "label": str(part.labels[i])}
        if part.kind == "image":
            img = part.images[i]
            row["image"] = img.tolist() if img.dtype.kind in "iu" else np.round(img, 4).tolist()
        elif part.kind == "text":
            text = str(part.frame[part.text_column].iloc[i])
            row["text"] = text[:MAX_TEXT]
            row["truncated"] = len(text) > MAX_TEXT
        else:
            row["values"] = {str(c): _value(v) for c, v in part.frame.iloc[i].items()}
        rows.append(row)
    out: dict[str, Any] = {"name": record["name"], "version": record["version"], "kind": content.kind,
                           "split": split, "total": int(len(index)), "offset": offset, "rows": rows}
    if content.kind == "tabular":
        out["columns"] = [str(c) for c in content.frame.columns]
    return out
