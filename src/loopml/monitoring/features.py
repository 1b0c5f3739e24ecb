"""Summary features monitored per input kind: image statistics, text lengths/OOV, tabular columns.

Images: per image, on pixels rescaled to [0, 1] by the dataset's pixel range (``schema``'s image
feature min/max, as datasets/schema.py records it): ``mean_intensity``, ``contrast`` (std of the
pixels), ``ink_fraction`` (share of pixels above half the range), ``centroid_row`` /
``centroid_col`` (intensity-weighted centre, 0 = top/left, 1 = bottom/right) and
``bbox_fraction`` (share of the image covered by the bounding box of the "ink" pixels).

Text: ``length`` in tokens and ``oov_rate``, with the tokenisation of the seed RNN's tokenizer
(models/features.py: NFD, lowercase, accents stripped, punctuation replaced by spaces, split on
whitespace) re-done in pure Python so monitoring needs no tokenizers model.

Tabular: one feature per schema column (the label column excluded), numeric or categorical as the
schema says; category keys spelled as the tabular pipeline spells them (3, 3.0 and "3" → "3").
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from loopml.core.errors import InvalidInput
from loopml.models.features import category_key

IMAGE_FEATURES = ("mean_intensity", "contrast", "ink_fraction", "centroid_row", "centroid_col", "bbox_fraction")
SPECIAL_TOKENS = frozenset({"[PAD]", "[UNK]"})
_CHUNK = 4096  # images per chunk: bounds the float64 copy to ~25 MB for 28×28 pixels
_NON_WORD = re.compile(r"[^\w\s]")


# --------------------------------------------------------------------------- images


def as_images(raw: Any) -> np.ndarray:
    """(N, H, W, C) view of ``raw`` ((N, H, W) gains a channel axis); anything else → InvalidInput."""
    arr = np.asarray(raw)
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    if arr.ndim != 4:
        raise InvalidInput(f"image monitoring needs an (N, H, W, C) array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InvalidInput(f"image pixels must be numeric, got dtype {arr.dtype}")
    return arr


def pixel_range(schema: dict | None, images: np.ndarray | None = None) -> tuple[float, float]:
    """The pixel range (lo, hi) images are measured against.

    From the schema's image feature (``features[0].min/max``, or top-level ``pixel_min`` /
    ``pixel_max``) when present; else from the dtype (uint8 → 0..255, other ints → their observed
    max, floats → 0..1 when the observed max ≤ 1, else 0..observed max).
    """
    schema = schema or {}
    lo: Any = schema.get("pixel_min")
    hi: Any = schema.get("pixel_max")
    for feature in schema.get("features") or []:
        if isinstance(feature, dict) and (feature.get("shape") is not None or feature.get("name") == "image"):
            lo = feature.get("min") if lo is None else lo
            hi = feature.get("max") if hi is None else hi
            break
    if hi is None and images is not None:
        if images.dtype == np.uint8:
            lo, hi = 0, 255
        elif images.size:
            top = float(np.nanmax(images)) if images.dtype.kind == "f" else float(images.max())
            hi = 1.0 if images.dtype.kind == "f" and top <= 1.0 else top
    lo = 0.0 if lo is None or not math.isfinite(float(lo)) else float(lo)
    hi = 1.0 if hi is None or not math.isfinite(float(hi)) else float(hi)
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def image_features(raw: Any, prange: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per-image summary features (see the module docstring), one float64 array of length N each.

    Channels are averaged. Images holding NaN/inf pixels get NaN features (counted as missing).
    """
    images = as_images(raw)
    n, h, w, _ = images.shape
    lo, hi = prange
    out = {name: np.empty(n, dtype=np.float64) for name in IMAGE_FEATURES}
    rows = (np.arange(h, dtype=np.float64) / max(h - 1, 1))[None, :]
    cols = (np.arange(w, dtype=np.float64) / max(w - 1, 1))[None, :]
    for start in range(0, n, _CHUNK):
        chunk = images[start:start + _CHUNK].astype(np.float64).mean(axis=3)
        g = np.clip((chunk - lo) / (hi - lo), 0.0, 1.0)
        bad = ~np.isfinite(chunk).reshape(len(chunk), -1).all(axis=1)
        g = np.where(np.isfinite(g), g, 0.0)
        flat = g.reshape(len(g), -1)
        ink = g > 0.5
        mass = flat.sum(axis=1)
        safe = np.where(mass > 0, mass, 1.0)
        row_c = np.where(mass > 0, (g.sum(axis=2) * rows).sum(axis=1) / safe, 0.5)
        col_c = np.where(mass > 0, (g.sum(axis=1) * cols).sum(axis=1) / safe, 0.5)
        any_row, any_col = ink.any(axis=2), ink.any(axis=1)
        height = np.where(any_row.any(axis=1), h - any_row.argmax(axis=1) - any_row[:, ::-1].argmax(axis=1), 0)
        width = np.where(any_col.any(axis=1), w - any_col.argmax(axis=1) - any_col[:, ::-1].argmax(axis=1), 0)
        values = {
            "mean_intensity": flat.mean(axis=1),
            "contrast": flat.std(axis=1),
            "ink_fraction": ink.reshape(len(g), -1).mean(axis=1),
            "centroid_row": row_c,
            "centroid_col": col_c,
            "bbox_fraction": height * width / float(h * w),
        }
        for name, v in values.items():
            out[name][start:start + len(chunk)] = np.where(bad, np.nan, v)
    return out


# --------------------------------------------------------------------------- text


def tokenize(text: str) -> list[str]:
    """The seed tokenizer's word split: NFD, lowercase, accents stripped, punctuation → spaces."""
    text = unicodedata.normalize("NFD", text).lower()
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
    return _NON_WORD.sub(" ", text).split()


def texts_from_raw(raw: Any, schema: dict | None = None) -> list[str | None]:
    """Texts from a list of strings, of {column: text} records or a DataFrame (schema ``text``
    column, else the only/first string column). Non-strings become None (missing)."""
    column = (schema or {}).get("text") or "text"
    if isinstance(raw, pd.DataFrame):
        if column not in raw.columns:
            column = raw.columns[0] if len(raw.columns) else column
        raw = raw[column].tolist() if column in raw.columns else []
    elif isinstance(raw, str):
        raw = [raw]
    texts: list[str | None] = []
    for item in raw:
        if isinstance(item, dict):
            item = item.get(column)
        texts.append(item if isinstance(item, str) else None)
    return texts


def text_features(tokens: list[list[str] | None], vocab: dict[str, int] | None
                  ) -> dict[str, np.ndarray]:
    """``length`` (tokens) per text and, with a vocab, ``oov_rate`` (NaN for texts without tokens)."""
    length = np.array([len(t) if t is not None else np.nan for t in tokens], dtype=np.float64)
    out = {"length": length}
    if vocab is not None:
        known = vocab.keys() - SPECIAL_TOKENS
        oov = np.full(len(tokens), np.nan)
        for i, toks in enumerate(tokens):
            if toks:
                oov[i] = sum(1 for t in toks if t not in known) / len(toks)
        out["oov_rate"] = oov
    return out


def token_counts(tokens: Iterable[list[str] | None]) -> Counter:
    counter: Counter = Counter()
    for toks in tokens:
        if toks:
            counter.update(toks)
    return counter


# --------------------------------------------------------------------------- tabular


def tabular_columns(schema: dict | None, frame: pd.DataFrame | None = None) -> list[tuple[str, str]]:
    """(column, "numeric"|"categorical") for every input column: the schema's features minus its
    label column; without schema features, the frame's columns by dtype."""
    schema = schema or {}
    label = schema.get("label")
    listed = [f for f in schema.get("features") or [] if isinstance(f, dict) and f.get("name") is not None]
    if listed:
        return [(str(f["name"]), "numeric" if f.get("type") == "numeric" else "categorical")
                for f in listed if f["name"] != label]
    if frame is None:
        return []
    return [(str(c), "numeric" if pd.api.types.is_numeric_dtype(frame[c].dtype)
             and not pd.api.types.is_bool_dtype(frame[c].dtype) else "categorical")
            for c in frame.columns if c != label]


def as_frame(raw: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a list of records or a dict of columns."""
    if isinstance(raw, pd.DataFrame):
        return raw
    try:
        return pd.DataFrame(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"tabular monitoring needs a table of records: {exc}") from None


def column_values(frame: pd.DataFrame, name: str, kind: str) -> np.ndarray | list[str | None]:
    """A column as float64 (numeric; unparsable → NaN) or as category keys; absent → all missing."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan) if kind == "numeric" else [None] * len(frame)
    series = frame[name]
    if kind == "numeric":
        return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    # one category_key call per distinct value, not per row (a million-row window has a handful)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    keys = np.array([category_key(u) for u in uniques] + [None], dtype=object)  # code -1 → None
    return keys[codes].tolist()
