"""Growing a dataset: the rows of a new batch appended to an existing version's content."""

from __future__ import annotations

import numpy as np
import pandas as pd

from loopml.core.errors import InvalidInput
from loopml.datasets.content import DatasetContent


def append_rows(base: DatasetContent, new: DatasetContent, *, what: str) -> DatasetContent:
    """``base`` followed by ``new``; InvalidInput names the first mismatch (kind, shape, columns, classes)."""
    if new.kind != base.kind:
        raise InvalidInput(f"{what}: cannot extend a {base.kind} dataset with {new.kind} data")
    unknown = sorted(set(new.labels.tolist()) - set(base.labels.tolist()))
    if unknown:
        known = ", ".join(sorted(set(base.labels.tolist()))[:20])
        raise InvalidInput(f"{what}: class(es) {', '.join(unknown)} are not in the dataset (classes: {known}); "
                           "a new class needs a new dataset")
    labels = np.concatenate([base.labels, new.labels]).astype(object)
    meta = {**new.meta, "extended": True}
    if base.kind == "image":
        assert base.images is not None and new.images is not None
        if new.images.shape[1:] != base.images.shape[1:]:
            raise InvalidInput(f"{what}: images are {_shape(new.images)}, the dataset's are {_shape(base.images)} "
                               "(height x width x channels must match)")
        dtype = base.images.dtype if new.images.dtype == base.images.dtype else np.float32
        images = np.concatenate([base.images.astype(dtype, copy=False), new.images.astype(dtype, copy=False)])
        return DatasetContent(kind="image", labels=labels, images=images, label_column=base.label_column, meta=meta)
    assert base.frame is not None and new.frame is not None
    if base.kind == "text":
        texts = new.frame[new.text_column].astype(str)
        frame = pd.concat([base.frame, pd.DataFrame({base.text_column: texts.to_numpy(dtype=object)})],
                          ignore_index=True)
        return DatasetContent(kind="text", labels=labels, frame=frame, text_column=base.text_column,
                              label_column=base.label_column, meta=meta)
    missing = [c for c in base.frame.columns if c not in new.frame.columns]
    extra = [c for c in new.frame.columns if c not in base.frame.columns]
    if missing or extra:
        parts = ([f"missing column(s) {', '.join(map(str, missing))}"] if missing else []) + \
                ([f"unknown column(s) {', '.join(map(str, extra))}"] if extra else [])
        raise InvalidInput(f"{what}: {'; '.join(parts)}")
    frame = pd.concat([base.frame, new.frame[list(base.frame.columns)]], ignore_index=True)
    return DatasetContent(kind="tabular", labels=labels, frame=frame, label_column=base.label_column, meta=meta)


def _shape(images: np.ndarray) -> str:
    return "x".join(str(d) for d in images.shape[1:])
