"""A batch-prediction input checked against the model's input signature before the job is queued:
a wrong input is a 400 at submission (API, SDK and CLI alike), not a job that fails later.

Only headers are read (CSV column names, parquet schema, npy/npz array shapes, zip member names);
what cannot be read here is left to the worker, which reports it as the job's reason.
"""

from __future__ import annotations

import zipfile
from pathlib import PurePosixPath
from typing import IO, Any

from loopml.core import FOLDER_ZIP_COMMENT
from loopml.core.errors import InvalidInput, NotFound, UnsupportedFormat
from loopml.datasets.formats import IMAGE_EXTENSIONS, LABEL_CANDIDATES, TEXT_EXTENSIONS, hidden
from loopml.datasets.image_fit import check_fits
from loopml.models.signature import InputSignature, read_manifest
from loopml.platform import Platform

TABLE_FILES = (".csv", ".parquet", ".pq")
ARRAY_FILES = (".npz", ".npy")
INPUT_FILES = (*TABLE_FILES, *ARRAY_FILES, ".zip", *sorted(IMAGE_EXTENSIONS))
NPZ_INPUTS = ("x", "images", "inputs")  # the array of an .npz input predicted, first found (predict_runner too)


def model_signature(platform: Platform, mv: dict[str, Any]) -> InputSignature | None:
    """The version's input signature (from its loopml.json); None when it cannot be read."""
    try:
        return InputSignature.from_manifest(read_manifest(platform.artifacts, mv["artifact_prefix"]),
                                            kind=mv.get("kind"))
    except (NotFound, InvalidInput, ValueError, OSError):
        return None  # the worker reports a damaged bundle; nothing to check against here


def check_input(platform: Platform, mv: dict[str, Any], source: dict[str, Any]) -> None:
    """Raise InvalidInput/UnsupportedFormat when ``source`` cannot be what model version ``mv`` takes."""
    if source["type"] == "upload":
        name = source["key"].rsplit("/", 1)[-1]
        suffix = PurePosixPath(name.lower()).suffix
        if suffix not in INPUT_FILES:
            raise UnsupportedFormat(f"input {name!r}: use .csv, .parquet, .npz, .npy, .zip, or image files "
                                    f"({', '.join(sorted(IMAGE_EXTENSIONS))}) for image models")
    sig = model_signature(platform, mv)
    if sig is None:
        return
    kind, ref = sig.kind, mv["ref"]
    if source["type"] == "dataset":
        ds = platform.datasets.get(source["name"], source["version"])
        if ds["kind"] != kind:
            raise InvalidInput(f"model {ref} takes {sig.describe()}; dataset {ds['ref']} is {ds['kind']}")
        columns = [f["name"] for f in (ds.get("schema") or {}).get("features", [])]
        shapes = [f["shape"] for f in (ds.get("schema") or {}).get("features", []) if f.get("shape")]
        if kind == "tabular":
            _check_columns(columns, f"dataset {ds['ref']}", ref, sig)
        elif kind == "image" and shapes and sig.shape is not None and list(sig.shape) != shapes[0]:
            raise InvalidInput(f"model {ref} takes {sig.describe()}; dataset {ds['ref']} holds "
                               f"{'x'.join(map(str, shapes[0]))} images")
        return
    if suffix in IMAGE_EXTENSIONS and kind != "image":
        raise InvalidInput(f"input {name!r} is an image; model {ref} takes {sig.describe()}")
    if kind != "image" and (suffix in ARRAY_FILES or (suffix == ".zip" and kind == "tabular")):
        raise InvalidInput(f"input {name!r} is a {suffix[1:]} file; model {ref} takes {sig.describe()}: "
                           "use a .csv or .parquet file")
    try:
        with platform.artifacts.open_read(source["key"]) as f:
            if suffix in TABLE_FILES:
                _check_columns(_columns(f, suffix), repr(name), ref, sig)
            elif suffix == ".npy":
                _check_shape(_npy_shape(f), name, ref, sig)
            elif suffix == ".npz":
                with zipfile.ZipFile(f) as z:
                    _check_npz(z, name, ref, sig)
            elif suffix == ".zip":
                with zipfile.ZipFile(f) as z:
                    _check_zip(z, name, ref, sig)
            else:
                _check_image(f, repr(name), sig.shape if kind == "image" else None)
    except (InvalidInput, NotFound):
        raise
    except Exception:  # noqa: BLE001 - unreadable here (a damaged file, a stream that cannot seek): the worker says why
        return


def _columns(f: IO[bytes], suffix: str) -> list[str]:
    if suffix == ".csv":
        import pandas as pd

        return [str(c) for c in pd.read_csv(f, nrows=0).columns]
    import pyarrow.parquet as pq

    return [str(c) for c in pq.read_schema(f).names]


def _check_columns(columns: list[str], name: str, ref: str, sig: InputSignature) -> None:
    if sig.kind == "tabular":
        missing = [c for c in sig.columns or () if c not in columns]
        if missing:
            raise InvalidInput(f"input {name} lacks column(s) {', '.join(missing)}; model {ref} takes "
                               f"{sig.describe()}")
    elif sig.kind == "text":
        if sig.text_column not in columns:
            raise InvalidInput(f"input {name} has no text column {sig.text_column!r} (columns: {', '.join(columns)}); "
                               f"model {ref} takes {sig.describe()}")
    elif sig.kind == "image" and sig.shape:
        h, w, c = sig.shape
        labels = {sig.label_column, *LABEL_CANDIDATES}
        pixels = [col for col in columns if col not in labels]
        if len(pixels) != h * w * c:
            raise InvalidInput(f"input {name} has {len(pixels)} pixel columns; model {ref} takes "
                               f"{sig.describe()}, {h * w * c} values per row")


def _npy_shape(f: IO[bytes]) -> tuple[int, ...]:
    import numpy as np

    version = np.lib.format.read_magic(f)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return tuple(reader(f)[0])


def _check_npz(z: zipfile.ZipFile, name: str, ref: str, sig: InputSignature) -> None:
    arrays = {m.rsplit(".npy", 1)[0].lower(): m for m in z.namelist() if m.endswith(".npy")}
    key = next((arrays[k] for k in NPZ_INPUTS if k in arrays), None)
    if key is None:
        raise InvalidInput(f"input {name!r}: no array named x, images or inputs "
                           f"(found {', '.join(sorted(arrays)) or 'none'})")
    with z.open(key) as member:
        _check_shape(_npy_shape(member), name, ref, sig)


def _check_shape(shape: tuple[int, ...], name: str, ref: str, sig: InputSignature) -> None:
    if not sig.shape:
        return
    h, w, c = sig.shape
    fits = (h, w, c), (h * w * c,), *([(h, w)] if c == 1 else [])
    if tuple(shape[1:]) not in fits:
        raise InvalidInput(f"input {name!r} holds arrays of shape {tuple(shape)}; model {ref} takes "
                           f"{sig.describe()}: (N, {h}, {w}, {c}) or flat (N, {h * w * c})")


def _check_image(f: IO[bytes], name: str, shape: tuple[int, ...] | None) -> None:
    """A readable image that the model's shape fits (its size from the header, nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(f) as im:
            size = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidInput(f"input {name} is not a readable image") from None
    if shape:
        check_fits(size, shape, f"image {name}")


def _check_zip(z: zipfile.ZipFile, name: str, ref: str, sig: InputSignature) -> None:
    kind = sig.kind
    folder = z.comment == FOLDER_ZIP_COMMENT  # the SDK zipped a folder: name it as the user gave it
    label = f"folder {name.removesuffix('.zip') + '/'!r}" if folder else f"input {name!r}"
    # as the worker reads it (formats.image_files): a Mac's __MACOSX/._*.png are no images
    members = [m for m in z.namelist() if not m.endswith("/") and not hidden(PurePosixPath(m).parts)]
    suffixes = {PurePosixPath(m.lower()).suffix for m in members}
    images, texts = suffixes & IMAGE_EXTENSIONS, suffixes & TEXT_EXTENSIONS
    if kind == "image" and not images:
        raise InvalidInput(f"{label} holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}); "
                           f"model {ref} takes {sig.describe()}")
    if kind != "image" and images:
        raise InvalidInput(f"{label} holds images; model {ref} takes {sig.describe()}")
    if kind == "text" and not texts:
        raise InvalidInput(f"{label} holds no .txt files; model {ref} takes {sig.describe()}")
    if kind == "image" and sig.shape:
        for member in members:  # headers only: Pillow reads the size without decoding pixels
            if PurePosixPath(member.lower()).suffix in IMAGE_EXTENSIONS:
                with z.open(member) as f:
                    _check_image(f, repr(member) if folder else f"{member!r} in {name!r}", sig.shape)
