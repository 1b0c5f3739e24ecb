"""The in-memory form of a dataset, shared by readers, versioning, splits and training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Kind = Literal["image", "text", "tabular"]


@dataclass
class DatasetContent:
    """Rows of one dataset.

    kind="image":   ``images`` is (N, H, W, C), uint8 or float32, raw pixel scale (e.g. 0..255).
    kind="text":    ``frame`` has one string column named ``text_column``.
    kind="tabular": ``frame`` holds the feature columns only (numeric and categorical, NaN allowed).
    ``labels`` is always a 1-D object array of class names as strings, one per row.
    """

    kind: Kind
    labels: np.ndarray
    images: np.ndarray | None = None
    frame: pd.DataFrame | None = None
    text_column: str | None = None
    label_column: str = "label"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> "DatasetContent":
        """A new content holding only the rows at ``idx`` (order kept)."""
        idx = np.asarray(idx, dtype=np.int64)
        return DatasetContent(
            kind=self.kind,
            labels=self.labels[idx],
            images=None if self.images is None else self.images[idx],
            frame=None if self.frame is None else self.frame.iloc[idx].reset_index(drop=True),
            text_column=self.text_column,
            label_column=self.label_column,
            meta=dict(self.meta),
        )

    @property
    def texts(self) -> list[str]:
        assert self.frame is not None and self.text_column is not None
        return self.frame[self.text_column].astype(str).tolist()


def raw_inputs(content: DatasetContent) -> np.ndarray | list[str] | pd.DataFrame:
    """What a client would send for these rows: pixels, strings or table rows (a model's features
    turn them into tensors). Training, evaluation, batch prediction and baselines all read rows so."""
    if content.kind == "image":
        return content.images
    if content.kind == "text":
        return content.texts
    return content.frame
