"""A content hash over the logical rows of a dataset.

The hash ignores file timestamps, compression and container format: it covers kind,
column names, a normalised dtype, shapes and values (labels included). Strings are
hashed as UTF-8 with their lengths, numbers as raw little-endian bytes, missing values
(NaN/None/NA) as a mask, so the same rows always give the same digest, also across
pandas versions (we do not rely on ``hash_pandas_object``'s internals).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from loopml.datasets.content import DatasetContent

_NUMERIC_KINDS = "biufcmM"


def _update_text(h: "hashlib._Hash", *parts: str) -> None:
    for p in parts:
        b = p.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)


def _update_array(h: "hashlib._Hash", arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind == "f":
        arr = arr.copy()
        arr[np.isnan(arr)] = np.nan  # one NaN bit pattern
        arr[arr == 0] = 0  # -0.0 == 0.0
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    _update_text(h, arr.dtype.name, repr(tuple(arr.shape)))
    h.update(arr.tobytes())


def _update_strings(h: "hashlib._Hash", values: pd.Series | np.ndarray) -> None:
    s = pd.Series(values, copy=False)
    missing = s.isna().to_numpy(dtype=bool)
    strs = ["" if m else str(v) for v, m in zip(s.tolist(), missing)]
    lengths = np.fromiter((len(x) for x in strs), dtype="<i8", count=len(strs))
    _update_text(h, "string", str(len(strs)))
    h.update(np.packbits(missing).tobytes())
    h.update(lengths.tobytes())
    h.update("".join(strs).encode("utf-8", "surrogatepass"))


def _update_column(h: "hashlib._Hash", name: str, col: pd.Series) -> None:
    _update_text(h, "column", str(name))
    arr = col.to_numpy()
    if arr.dtype.kind in _NUMERIC_KINDS:
        _update_array(h, arr)
    else:  # object / str / string / category / nullable extension: hash the string form
        _update_strings(h, col)


def content_hash(content: DatasetContent) -> str:
    """sha256 hex digest of the dataset's logical content (``meta`` is not part of it)."""
    h = hashlib.sha256()
    _update_text(h, "loopml-dataset-v1", content.kind, content.label_column, content.text_column or "")
    _update_strings(h, np.asarray(content.labels, dtype=object))
    if content.images is not None:
        _update_text(h, "images")
        _update_array(h, np.asarray(content.images))
    if content.frame is not None:
        _update_text(h, "frame", str(content.frame.shape[1]))
        for i, name in enumerate(content.frame.columns):  # iloc: duplicate names stay distinct
            _update_column(h, name, content.frame.iloc[:, i])
    return h.hexdigest()
