"""The canonical on-disk form of a dataset version.

image        -> ``data.npz``      arrays ``images`` (N,H,W,C) and ``labels`` (unicode)
text/tabular -> ``data.parquet``  the frame plus a ``__label__`` column

Bytes are deterministic for the same content (fixed zip timestamps), so identical
versions also give identical files. ``load_content`` needs the version's schema (from
``infer_schema``) for kind and column roles.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from loopml.core.errors import CorruptArtifact, InvalidInput
from loopml.datasets.content import DatasetContent

NPZ_FILE = "data.npz"
PARQUET_FILE = "data.parquet"
LABEL_FIELD = "__label__"
_EPOCH = (1980, 1, 1, 0, 0, 0)


def data_file(kind: str) -> str:
    """The file name a version of this kind is stored in."""
    return NPZ_FILE if kind == "image" else PARQUET_FILE


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def _storable(frame: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding non-strings become strings (missing kept): parquet needs one
    type per column, and the content hash already sees object values through ``str``."""
    out = frame.copy()
    out.columns = [str(c) for c in out.columns]
    for i in range(out.shape[1]):
        col = out.iloc[:, i]
        if col.dtype == object:
            values = [v if (isinstance(v, str) or pd.isna(v)) else str(v) for v in col.tolist()]
            out.isetitem(i, pd.Series(values, dtype=object, index=out.index))
    return out


def dump_content(content: DatasetContent) -> dict[str, bytes]:
    """Serialise ``content`` to ``{file name: bytes}``."""
    labels = np.asarray([str(v) for v in content.labels], dtype=str)
    if content.kind == "image":
        if content.images is None:
            raise InvalidInput("image dataset has no images array")
        return {NPZ_FILE: _npz_bytes({"images": content.images, "labels": labels})}
    if content.frame is None:
        raise InvalidInput(f"{content.kind} dataset has no frame")
    if LABEL_FIELD in content.frame.columns:
        raise InvalidInput(f"column name {LABEL_FIELD!r} is reserved; rename that column")
    frame = _storable(content.frame.reset_index(drop=True))
    frame[LABEL_FIELD] = pd.Series(labels.astype(object), dtype=object)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise InvalidInput(f"dataset frame cannot be stored as parquet: {e}") from None
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return {PARQUET_FILE: buf.getvalue()}


def load_content(files: dict[str, bytes], schema: dict, what: str = "dataset") -> DatasetContent:
    """Inverse of ``dump_content``; ``what`` names the version in errors (e.g. ``mnist:2``)."""
    kind = schema.get("kind")
    if kind not in ("image", "text", "tabular"):
        raise CorruptArtifact(f"dataset {what} is damaged: schema has unknown kind {kind!r}")
    name = data_file(kind)
    data = files.get(name)
    if not data:
        raise CorruptArtifact(f"dataset {what} is damaged: {name} is missing or empty")
    label_column = schema.get("label") or "label"
    try:
        if kind == "image":
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                images, labels = npz["images"], npz["labels"]
            if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
                raise ValueError(f"images {images.shape} do not match labels {labels.shape}")
            return DatasetContent(kind="image", labels=labels.astype(object), images=images,
                                  label_column=label_column)
        frame = pq.read_table(io.BytesIO(data)).to_pandas()
        if LABEL_FIELD not in frame.columns:
            raise ValueError(f"no {LABEL_FIELD} column")
        labels = frame.pop(LABEL_FIELD).astype(object).to_numpy()
    except CorruptArtifact:
        raise
    except Exception as e:  # any decoder failure means the stored bytes are damaged
        raise CorruptArtifact(f"dataset {what} is damaged: {name} cannot be read ({e})") from None
    text_column = schema.get("text") if kind == "text" else None
    if text_column is not None and text_column not in frame.columns:
        raise CorruptArtifact(f"dataset {what} is damaged: text column {text_column!r} missing from {name}")
    return DatasetContent(kind=kind, labels=labels, frame=frame, text_column=text_column,
                          label_column=label_column)
