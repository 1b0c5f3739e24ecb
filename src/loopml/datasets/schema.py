"""A JSON-serialisable description of a dataset: kind, rows, classes and features."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

import numpy as np
import pandas as pd

from loopml.datasets.content import DatasetContent

_INT = re.compile(r"-?\d+")


def sort_classes(names: Iterable[str]) -> list[str]:
    """Sorted class names; numeric order when all are integers ("2" < "10")."""
    names = [str(n) for n in set(names)]
    if names and all(_INT.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def _num(x: object) -> float | None:
    """A JSON-safe float (NaN/inf -> None)."""
    f = float(x)  # type: ignore[arg-type]
    return f if math.isfinite(f) else None


def _is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col.dtype) and not pd.api.types.is_bool_dtype(col.dtype)


def _column_feature(name: str, col: pd.Series) -> dict:
    feature: dict = {"name": str(name), "dtype": str(col.dtype), "missing": int(col.isna().sum())}
    if _is_numeric(col):
        values = col.dropna().to_numpy(dtype=np.float64)
        feature["type"] = "numeric"
        if values.size:
            # population std (ddof=0), as a normalisation layer would compute it
            feature.update(mean=_num(values.mean()), std=_num(values.std()),
                           min=_num(values.min()), max=_num(values.max()))
        else:
            feature.update(mean=None, std=None, min=None, max=None)
    else:
        feature["type"] = "categorical"
        feature["categories"] = sorted({str(v) for v in col.dropna().tolist()})
    return feature


def infer_schema(content: DatasetContent) -> dict:
    """Describe ``content``.

    ``{"kind", "rows", "label", "classes", "class_counts", "features"}`` plus ``"text"`` (the text
    column) for text. Features: image -> one entry with dtype/shape/min/max; text -> one entry
    with mean/max length in whitespace tokens; tabular -> one per column, numeric with
    mean/std/min/max or categorical with sorted categories, both with a missing count.
    """
    labels = [str(v) for v in content.labels]
    classes = sort_classes(labels)
    counts = pd.Series(labels, dtype=object).value_counts()
    schema: dict = {
        "kind": content.kind,
        "rows": len(content),
        "label": content.label_column,
        "classes": classes,
        "class_counts": {c: int(counts[c]) for c in classes},
    }
    if content.kind == "image":
        assert content.images is not None
        images = content.images
        cast = int if images.dtype.kind in "biu" else _num
        has = images.size > 0
        schema["features"] = [{
            "name": "image",
            "dtype": images.dtype.name,
            "shape": [int(d) for d in images.shape[1:]],
            "min": cast(images.min()) if has else None,
            "max": cast(images.max()) if has else None,
        }]
    elif content.kind == "text":
        assert content.text_column is not None
        lengths = np.fromiter((len(t.split()) for t in content.texts), dtype=np.int64)
        schema["text"] = content.text_column
        schema["features"] = [{
            "name": content.text_column,
            "dtype": "string",
            "mean_length": round(float(lengths.mean()), 2) if lengths.size else 0.0,
            "max_length": int(lengths.max()) if lengths.size else 0,
        }]
    else:
        assert content.frame is not None
        schema["features"] = [
            _column_feature(name, content.frame.iloc[:, i]) for i, name in enumerate(content.frame.columns)
        ]
    return schema
