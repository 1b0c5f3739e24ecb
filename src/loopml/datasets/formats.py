"""Readers that turn a local file or folder into a ``DatasetContent``.

Every failure the user can cause (missing path, wrong format, no label column, a single
class, ...) raises ``InvalidInput``/``UnsupportedFormat`` with a one-line message that names
the file and the problem.
"""

from __future__ import annotations

import math
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from loopml.core.errors import InvalidInput, UnsupportedFormat
from loopml.datasets.content import DatasetContent
from loopml.datasets.image_fit import check_fits

FORMATS = ("npz", "csv", "parquet", "images", "text")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif"})
TEXT_EXTENSIONS = frozenset({".txt"})
LABEL_CANDIDATES = ("label", "target", "class", "y", "species")
_EXTENSION_FORMATS = {".npz": "npz", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_X_KEYS = ("x", "images", "image")
_Y_KEYS = ("y", "labels", "label")
_MIN_IMAGE_SIDE = 8  # (N, 4) iris-like tables must not become 2x2 images
_TEXT_MIN_MEAN_CHARS = 30
_TEXT_MIN_MEAN_WORDS = 3  # ... or sentences of 3+ words,
_TEXT_MIN_UNIQUE_SHARE = 0.5  # half of them distinct (categories repeat)


# ---------------------------------------------------------------- shared helpers


def decode_text(data: bytes) -> str:
    """UTF-8 (BOM allowed), else Windows-1252, else Latin-1 (which never fails)."""
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def label_strings(values: np.ndarray | pd.Series | list) -> np.ndarray:
    """Class names as a 1-D object array of str; integral floats lose their ".0"."""
    out = []
    for v in list(values):
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            v = int(v)
        elif isinstance(v, (bool, np.bool_)):
            v = bool(v)
        out.append(str(v))
    return np.asarray(out, dtype=object)


def _check_classes(labels: np.ndarray, where: str, min_classes: int = 2) -> None:
    if labels.shape[0] == 0:
        raise InvalidInput(f"{where} has no rows")
    classes = sorted(set(labels.tolist()))
    if len(classes) < min_classes:
        raise InvalidInput(f"{where} has only 1 class ({classes[0]!r}); need at least 2")


def hidden(parts: Iterable[str]) -> bool:
    """A path (its parts) that is a hidden file or archive debris such as .DS_Store and __MACOSX/:
    skipped by every reader, and by the submission check of a prediction input (predict_input)."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _visible(p: Path) -> bool:
    return not hidden((p.name,))


def _class_files(folder: Path, extensions: frozenset[str]) -> list[tuple[str, Path]]:
    """(class name, file) for files under each class subfolder, sorted for determinism."""
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and _visible(d))
    if not subdirs:
        raise InvalidInput(f"folder {folder} has no class subfolders (expected {folder}/<class>/<files>)")
    pairs = [
        (d.name, f)
        for d in subdirs
        for f in sorted(d.rglob("*"))
        if f.is_file() and _visible(f) and f.suffix.lower() in extensions
    ]
    if not pairs:
        kinds = ", ".join(sorted(extensions))
        raise InvalidInput(f"folder {folder} has no {kinds} files in its class subfolders")
    return pairs


def _infer_folder_format(folder: Path) -> str:
    suffixes = Counter(
        f.suffix.lower() for f in folder.rglob("*") if f.is_file() and _visible(f)
    )
    n_images = sum(n for s, n in suffixes.items() if s in IMAGE_EXTENSIONS)
    n_texts = sum(n for s, n in suffixes.items() if s in TEXT_EXTENSIONS)
    if n_images and n_texts:
        raise UnsupportedFormat(
            f"folder {folder} mixes {n_images} image files and {n_texts} .txt files; "
            "pass format=images or format=text", field="format"
        )
    if n_images:
        return "images"
    if n_texts:
        return "text"
    found = ", ".join(sorted(s or "(no extension)" for s in suffixes)) or "nothing"
    raise UnsupportedFormat(f"folder {folder} holds no image or .txt files (found: {found})")


def extension_format(name: str) -> str | None:
    """The format a file name's extension names (``.csv`` → csv), if any."""
    return _EXTENSION_FORMATS.get(Path(name).suffix.lower())


def _infer_format(path: Path) -> str:
    if path.is_dir():
        return _infer_folder_format(path)
    fmt = _EXTENSION_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UnsupportedFormat(
            f"cannot tell the format of {path} from its extension {path.suffix or '(none)'!r}; "
            "use .npz, .csv, .parquet, or a folder of class subfolders, or pass format=FORMAT", field="format"
        )
    return fmt


# ---------------------------------------------------------------- npz


def _find_key(keys: list[str], wanted: tuple[str, ...]) -> str | None:
    lowered = {k.lower(): k for k in keys}
    return next((lowered[w] for w in wanted if w in lowered), None)


def _npz_labels(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        y = y.argmax(axis=1)  # one-hot rows -> class index
    if y.ndim != 1:
        raise InvalidInput(f"{where}: labels must be 1-D (or one-hot), got shape {y.shape}")
    if y.shape[0] != n:
        raise InvalidInput(f"{where}: {n} samples but {y.shape[0]} labels")
    return label_strings(y)


def _image_dtype(x: np.ndarray) -> np.ndarray:
    """uint8 when the values fit (integers in 0..255), else float32 on the raw scale."""
    if x.dtype == np.uint8:
        return x
    if x.dtype.kind in "biu" and (x.size == 0 or (x.min() >= 0 and x.max() <= 255)):
        return x.astype(np.uint8)
    return x.astype(np.float32)


def _as_images(x: np.ndarray) -> np.ndarray | None:
    """(N,H,W,C) images from x, or None when x is a plain (N, D) table."""
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side < _MIN_IMAGE_SIDE or side * side != x.shape[1]:
            return None
        x = x.reshape(x.shape[0], side, side, 1)
    elif x.ndim == 3:
        x = x[..., np.newaxis]
    elif x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[3] not in (1, 3, 4):
        x = np.transpose(x, (0, 2, 3, 1))  # channels-first -> channels-last
    return _image_dtype(np.ascontiguousarray(x))


def read_npz(path: Path, label: str | None = None, min_classes: int = 2) -> DatasetContent:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InvalidInput(f"{path} cannot be read as npz ({e})") from None
    keys = list(arrays)
    y_key = label if label in arrays else None
    if label is not None and y_key is None:
        raise InvalidInput(f"label array {label!r} not found in {path.name}; arrays: {', '.join(keys)}")
    x_key = _find_key(keys, _X_KEYS)
    y_key = y_key or _find_key(keys, _Y_KEYS)
    if x_key is None or y_key is None:
        missing = "data array (x, X or images)" if x_key is None else "label array (y or labels)"
        raise InvalidInput(f"{path.name} has no {missing}; arrays: {', '.join(keys) or 'none'}")
    x = arrays[x_key]
    where = path.name
    if x.dtype.kind not in "biuf":
        raise InvalidInput(f"{where}: array {x_key!r} must be numeric, got dtype {x.dtype}")
    if x.ndim < 2 or x.ndim > 4 or x.shape[0] == 0:
        raise InvalidInput(f"{where}: array {x_key!r} must be (N,D), (N,H,W) or (N,H,W,C) with N > 0, "
                           f"got shape {x.shape}")
    labels = _npz_labels(arrays[y_key], x.shape[0], where)
    _check_classes(labels, where, min_classes)
    meta = {"source": str(path), "format": "npz"}
    images = _as_images(x)
    if images is not None:
        if images.shape[-1] not in (1, 3, 4):
            raise InvalidInput(f"{where}: images need 1, 3 or 4 channels, got shape {images.shape}")
        return DatasetContent(kind="image", labels=labels, images=images, label_column=y_key, meta=meta)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    return DatasetContent(kind="tabular", labels=labels, frame=frame, label_column=y_key, meta=meta)


# ---------------------------------------------------------------- csv / parquet


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            return pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several unrelated types for bad files
            raise InvalidInput(f"{path} cannot be read as parquet ({type(e).__name__}: {e})") from None
    last: Exception | None = None
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            return pd.read_csv(path, encoding=encoding)
        except UnicodeDecodeError as e:
            last = e
        except pd.errors.EmptyDataError:
            raise InvalidInput(f"{path} is empty") from None
        except (pd.errors.ParserError, ValueError, OSError) as e:
            raise InvalidInput(f"{path} cannot be read as csv ({e})") from None
    raise InvalidInput(f"{path} cannot be read as csv ({last})")


def _pick_label(df: pd.DataFrame, label: str | None, name: str) -> str:
    columns = [str(c) for c in df.columns]
    listing = ", ".join(columns)
    if label is not None:
        if label not in columns:
            raise InvalidInput(f"label column {label!r} not found in {name}; columns: {listing}")
        return label
    lowered = {c.lower(): c for c in columns}
    for candidate in LABEL_CANDIDATES:
        if candidate in lowered:
            return lowered[candidate]
    raise InvalidInput(
        f"{name} has no label column (looked for {', '.join(LABEL_CANDIDATES)}); "
        f"pass label=COLUMN; columns: {listing}", field="label"
    )


def _is_string_column(col: pd.Series) -> bool:
    if pd.api.types.is_string_dtype(col.dtype) and not isinstance(col.dtype, pd.CategoricalDtype):
        return col.dropna().map(lambda v: isinstance(v, str)).all()
    return False


def _is_free_text(col: pd.Series) -> bool:
    """Long values (mean > 30 chars), or short sentences: several words each, mostly unique."""
    if not _is_string_column(col):
        return False
    values = col.dropna()
    if values.empty:
        return False
    if values.str.len().mean() > _TEXT_MIN_MEAN_CHARS:
        return True
    return (values.str.split().str.len().mean() >= _TEXT_MIN_MEAN_WORDS
            and values.nunique() >= _TEXT_MIN_UNIQUE_SHARE * len(values))


def _infer_text_column(df: pd.DataFrame, name: str, fmt: str | None) -> str | None:
    """The free-text column, if there is one; several are the user's to choose between
    (``fmt``: the table format that would keep it a table)."""
    columns = [str(c) for c in df.columns if _is_free_text(df[c])]
    if len(columns) > 1:
        table = f", or format={fmt} to keep it a table" if fmt else ""
        raise InvalidInput(f"{name} has {len(columns)} free-text columns ({', '.join(columns)}): a text "
                           f"dataset reads one; pass text=COLUMN{table}", field=["text", "format"])
    return columns[0] if columns else None


def read_table(path: Path, fmt: str, label: str | None = None, text: str | None = None,
               want_text: bool = False, min_classes: int = 2, infer_text: bool = True) -> DatasetContent:
    """csv/parquet -> tabular content, or text content when ``text`` is given or inferred
    (``infer_text=False``: the format was given, the table stays a table)."""
    df = _read_table(path, fmt)
    df.columns = [str(c) for c in df.columns]
    name = path.name
    if df.shape[0] == 0:
        raise InvalidInput(f"{name} has no rows")
    label_col = _pick_label(df, label, name)
    missing = df[label_col].isna()
    meta: dict = {"source": str(path), "format": fmt}
    if missing.any():
        meta["dropped_rows_missing_label"] = int(missing.sum())
        df = df.loc[~missing].reset_index(drop=True)
    labels = label_strings(df[label_col])
    _check_classes(labels, f"{name} (label column {label_col!r})", min_classes)
    features = df.drop(columns=[label_col])
    if text is not None and text not in features.columns:
        listing = ", ".join(features.columns)
        raise InvalidInput(f"text column {text!r} not found in {name}; columns: {listing}")
    text_col = text or (_infer_text_column(features, name, None if want_text else fmt)
                        if infer_text or want_text else None)
    if want_text and text_col is None:
        raise InvalidInput(f"{name} has no text column (a string column with mean length > "
                           f"{_TEXT_MIN_MEAN_CHARS} chars, or of sentences); pass text=COLUMN", field="text")
    if text_col is not None:
        dropped = [c for c in features.columns if c != text_col]
        if dropped:
            meta["dropped_columns"] = dropped
        values = ["" if pd.isna(v) else str(v) for v in features[text_col].tolist()]
        frame = pd.DataFrame({text_col: pd.Series(values, dtype=object)})
        return DatasetContent(kind="text", labels=labels, frame=frame, text_column=text_col,
                              label_column=label_col, meta=meta)
    if features.shape[1] == 0:
        raise InvalidInput(f"{name} has no feature columns besides label {label_col!r}")
    return DatasetContent(kind="tabular", labels=labels, frame=features, label_column=label_col, meta=meta)


# ---------------------------------------------------------------- folders


def read_image_folder(folder: Path, min_classes: int = 2) -> DatasetContent:
    """class subfolders of png/jpg/bmp/gif -> uint8 (N,H,W,C); one mode and size for all."""
    from PIL import Image, UnidentifiedImageError

    pairs = _class_files(folder, IMAGE_EXTENSIONS)
    headers = []
    for _, f in pairs:
        try:
            with Image.open(f) as im:
                headers.append((im.mode, im.size))
        except (UnidentifiedImageError, OSError) as e:
            raise InvalidInput(f"image {f} cannot be read ({e})") from None
    grayscale = all(mode in ("L", "1") for mode, _ in headers)
    mode = "L" if grayscale else "RGB"
    sizes = Counter(size for _, size in headers)
    size = sizes.most_common(1)[0][0]  # ties: the size seen first (sorted file order)
    images = np.stack([decode_image(f, mode, size) for _, f in pairs])
    if images.ndim == 3:
        images = images[..., np.newaxis]
    labels = np.asarray([c for c, _ in pairs], dtype=object)
    _check_classes(labels, f"folder {folder}", min_classes)
    meta = {"source": str(folder), "format": "images", "mode": mode, "size": list(size),
            "resized": int(sum(n for s, n in sizes.items() if s != size))}
    return DatasetContent(kind="image", labels=labels, images=images, meta=meta)


def decode_image(path: Path, mode: str, size: tuple[int, int], fit: tuple[int, int, int] | None = None
                 ) -> np.ndarray:
    """One image file as uint8 pixels, converted to ``mode`` (L, RGB, RGBA) and resized to ``size`` (w, h).
    With ``fit`` (a model's (H, W, C)), an image of another aspect ratio is refused, not distorted."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if fit is not None:
                check_fits(im.size, fit, f"image {path.name!r}")
            im = im.convert(mode)
            if im.size != size:
                im = im.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise InvalidInput(f"image {path.name} cannot be decoded ({e})") from None


def image_files(folder: Path) -> list[Path]:
    """Every visible image file under ``folder``, sorted (unlabelled images for prediction)."""
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                  and not hidden(f.relative_to(folder).parts))


def read_images_as(files: list[Path], shape: tuple[int, int, int]) -> np.ndarray:
    """Images decoded to a model's input signature (H, W, C): greyscaled or coloured, resized
    (an image of another aspect ratio is refused, as endpoints refuse it: datasets.image_fit)."""
    h, w, c = shape
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(c)
    if mode is None:
        raise InvalidInput(f"images with {c} channels cannot be decoded from image files")
    return np.stack([decode_image(f, mode, (w, h), shape) for f in files]).reshape(len(files), h, w, c)


def read_text_folder(folder: Path, min_classes: int = 2) -> DatasetContent:
    """class subfolders of .txt files -> text content with column "text"."""
    pairs = _class_files(folder, TEXT_EXTENSIONS)
    texts = []
    for _, f in pairs:
        try:
            texts.append(decode_text(f.read_bytes()))
        except OSError as e:
            raise InvalidInput(f"text file {f} cannot be read ({e})") from None
    labels = np.asarray([c for c, _ in pairs], dtype=object)
    _check_classes(labels, f"folder {folder}", min_classes)
    frame = pd.DataFrame({"text": pd.Series(texts, dtype=object)})
    return DatasetContent(kind="text", labels=labels, frame=frame, text_column="text",
                          meta={"source": str(folder), "format": "text"})


# ---------------------------------------------------------------- entry point


def read_source(path: str, fmt: str | None = None, label: str | None = None,
                text: str | None = None, min_classes: int = 2) -> DatasetContent:
    """Read a local file or folder as a dataset; ``fmt`` is inferred when None.

    ``min_classes=1`` accepts a batch of a single class (rows appended to an existing dataset).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidInput(f"dataset source {path} does not exist")
    if fmt is not None and fmt not in FORMATS:
        raise UnsupportedFormat(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    infer_text = fmt is None  # --format csv|parquet: a table, whatever its strings look like
    fmt = fmt or _infer_format(p)
    if fmt in ("npz", "csv", "parquet") and p.is_dir():
        raise UnsupportedFormat(f"format {fmt} expects a file, but {path} is a folder")
    if fmt == "images" and not p.is_dir():
        raise UnsupportedFormat(f"format images expects a folder of class subfolders, but {path} is a file")
    if fmt == "npz":
        return read_npz(p, label, min_classes)
    if fmt in ("csv", "parquet"):
        return read_table(p, fmt, label, text, min_classes=min_classes, infer_text=infer_text)
    if fmt == "images":
        return read_image_folder(p, min_classes)
    # fmt == "text": a folder of class subfolders, or a csv/parquet with a text column
    if p.is_dir():
        return read_text_folder(p, min_classes)
    table_fmt = _EXTENSION_FORMATS.get(p.suffix.lower())
    if table_fmt not in ("csv", "parquet"):
        raise UnsupportedFormat(f"format text expects a folder of class subfolders of .txt files "
                                f"or a .csv/.parquet file with a text column, got {path}")
    return read_table(p, table_fmt, label, text, want_text=True, min_classes=min_classes)
