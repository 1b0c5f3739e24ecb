"""Request/response codecs for real-time endpoints (SageMaker-runtime bodies).

``decode(body, content_type, kind)`` turns an ``invocations`` body into the RAW inputs the
model version's features accept (``loopml.models.features``) plus its row count:

    image    float32 ndarray (N, H, W), (N, H, W, C) or flat (N, H*W*C); the features check H/W/C
             (pass ``shape=``, the model's ``InputSignature.shape``, to check it here with better hints)
    text     list[str]
    tabular  list[dict] (rows given as lists/CSV lines need ``columns=``, the model's column names)

Content types (parameters such as ``charset`` ignored, case-insensitive, missing → JSON):

    application/json    {"instances": [...]}, {"inputs": [...]} or a bare list of instances.
                        The top level must be a list of instances: one un-nested image/text/record
                        is refused, not guessed. Image instances: (H, W, C), (H, W) when C is 1,
                        or flat H·W·C, integers or floats — numeric bodies in any of these
                        layouts are decoded off their bytes (``serving.json_pixels``) at about
                        the same speed; anything else goes through the strict path below.
    application/x-npy   one .npy array (header checked before any allocation; object arrays —
                        pickles — refused). Numeric for image/tabular, strings for text.
    text/csv            image/tabular: one row of values per line; text: one text per line
                        (csv quoting: a text containing a comma must be quoted).
    text/plain          one text (text models only).
    image/png, image/jpeg
                        one image file (image models only), fitted to the model's shape by
                        ``serving.image_files``: greyscale/RGB and resized as the signature says,
                        else refused naming the expected shape. Pillow decodes it: callers on an
                        event loop use ``decode_async`` (a thread for these and big bodies).

Every bad body raises ``InvalidInput`` (``UnsupportedFormat`` for an unknown content type) with a
message naming the problem; nothing else escapes (fuzzed in tests/test_codecs.py).

Decode speed per JSON layout (``bench/codecs.py --layouts``; see docs/benchmarks.md): the
(N, 28, 28, 1) layout a Keras user sends took 4× the time of 28×28 rows (nested one-element
lists through ``np.asarray``); it is now 1.5× (integers) / 1.9× (floats) of them, and
the rows themselves got 20–30 % faster (integers read as int64, the cheapest conversion).
Bodies past OFF_LOOP_BYTES are decoded on a worker thread (``decode_async``).

The strict path's options (bench/codecs.py, µs per body, median of 21 rounds, 2-core SHARED
machine — ±15 % run to run; 28×28 integer pixels, 1 / 32 images; measured before the
per-layout decoder):

    orjson.loads + np.asarray(x).astype(float32)   68 / 2,465   ← used
    orjson.loads + np.asarray(x, dtype=float32)    69 / 2,832   (won one earlier run by ~10 %)
    orjson.loads + np.array(x, dtype=float32)      69 / 2,720
    json.loads   + np.asarray(x).astype(float32)  154 / 5,572   (orjson: 2.2x faster)
    decode() end to end: JSON 83 / 2,676 · npy 67 / 84 · CSV (np.loadtxt) 87 / 2,278

The three numpy variants are within noise of each other; discovering the dtype then casting is
kept because it is the strict one: ``np.asarray(["1"], dtype=float32)`` silently parses numeric
strings and turns ``null`` into NaN, whereas a discovered dtype of kind U/O is refused with a
message naming "strings"/"null". orjson's
``OPT_SERIALIZE_NUMPY`` only matters for encoding. A npy body costs ~65 µs of numpy header
parsing whatever its size: the cheapest by far for batches. ``encode_predictions`` (10 classes):
14 µs for 1 row, 100 µs for 32 rows.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
from typing import Any, Sequence

import numpy as np
import orjson

from loopml.core.errors import CorruptArtifact, InvalidInput, UnsupportedFormat
from loopml.serving.image_files import IMAGE_FORMATS, decode_image_file
from loopml.serving.json_pixels import decode_pixels, layouts

KINDS = ("image", "text", "tabular")
JSON, NPY, CSV, TEXT = "application/json", "application/x-npy", "text/csv", "text/plain"
CONTENT_TYPES = (JSON, NPY, CSV, TEXT, *IMAGE_FORMATS)
_NPY_MAGIC = b"\x93NUMPY"
MAX_BODY_BYTES = 6_291_456  # SageMaker's synchronous invocation limit (inflated OIP bodies too)
OFF_LOOP_BYTES = 64 * 1024  # ≈ 22 28×28 integer images, ≈ 0.5–1 ms to decode (bench/codecs.py)
_NUMERIC_KINDS = "biuf"


# --------------------------------------------------------------------------- decode


def media_type(content_type: str | None) -> str:
    """``"Application/JSON; charset=utf-8"`` → ``"application/json"``; missing → JSON."""
    if not content_type:
        return JSON
    base = content_type.split(";", 1)[0].strip().lower()
    return base or JSON


def is_image_file(content_type: str | None) -> bool:
    """Whether the body is a PNG/JPEG file (decoding it is CPU work: keep it off the loop)."""
    return content_type is not None and media_type(content_type) in IMAGE_FORMATS


async def decode_async(body: bytes, content_type: str | None, kind: str,
                       **options: Any) -> tuple[Any, int]:
    """``decode`` for a caller on the event loop: image files and bodies past OFF_LOOP_BYTES
    are decoded on a worker thread (the big JSON ones in chunks that release the GIL between
    them), so one big body does not hold up the other requests' decoding and answers."""
    if len(body) <= OFF_LOOP_BYTES and not is_image_file(content_type):
        return decode(body, content_type, kind, **options)
    return await asyncio.to_thread(decode, body, content_type, kind, **options)


def decode(body: bytes, content_type: str | None, kind: str, *, max_rows: int = 10_000,
           max_text_chars: int = 100_000, shape: Sequence[int] | None = None,
           columns: Sequence[str] | None = None, text_column: str = "text") -> tuple[Any, int]:
    """Request body → (raw inputs for the model's features, number of rows).

    ``shape``, ``columns`` and ``text_column`` come from the model's ``InputSignature``
    (models/signature.py). ``shape`` (image models, e.g. (28, 28, 1)) makes the shape check happen
    here; ``columns`` (tabular: the model's column order) lets rows come as lists or CSV lines;
    ``text_column`` is the record field holding the text (``{"text": ...}``).
    """
    if kind not in KINDS:
        raise InvalidInput(f"unknown model kind {kind!r}; expected one of {', '.join(KINDS)}")
    mtype = media_type(content_type)
    if mtype not in CONTENT_TYPES:
        raise UnsupportedFormat(f"content type {mtype!r} is not supported; use one of "
                                f"{', '.join(CONTENT_TYPES)}")
    if not body:
        raise InvalidInput("request body is empty")
    if mtype == JSON:
        if kind == "image" and shape is not None:
            raw = decode_pixels(body, shape, max_rows)  # every regular layout, off the bytes
            if raw is not None:
                return raw, len(raw)
        instances = _json_instances(body)
        _check_rows(len(instances), max_rows)
        if kind == "image":
            raw = _image_array(instances, "JSON instances", shape)
        elif kind == "text":
            raw = _texts(instances, max_text_chars, text_column)
        else:
            raw = _records(instances, columns, max_text_chars)
    elif mtype == NPY:
        raw = _npy(body, kind, max_rows, max_text_chars, shape, columns)
    elif mtype == CSV:
        raw = _csv(body, kind, max_rows, max_text_chars, shape, columns)
    elif mtype in IMAGE_FORMATS:
        if kind != "image":
            raise UnsupportedFormat(f"{mtype} bodies are for image models; this is a(n) {kind} "
                                    "model — use application/json")
        raw = decode_image_file(body, mtype, shape)
    else:  # text/plain
        if kind != "text":
            raise UnsupportedFormat(f"text/plain carries one text and is only for text models; "
                                    f"this is a(n) {kind} model — use application/json")
        text = _utf8(body)
        _check_text(text, max_text_chars, 0)
        raw = [text]
    return raw, len(raw)


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not valid UTF-8 (byte {exc.start})") from None


def _check_rows(n: int, max_rows: int) -> None:
    if n == 0:
        raise InvalidInput("request has no instances (empty list)")
    if n > max_rows:
        raise InvalidInput(f"request has too many rows: {n} > {max_rows} allowed per request")


def _check_text(text: str, max_chars: int, i: int) -> None:
    if len(text) > max_chars:
        raise InvalidInput(f"text {i} is too long: {len(text)} characters > {max_chars} allowed")


def _json_instances(body: bytes) -> list[Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON at position {exc.pos} (line {exc.lineno}, column "
                           f"{exc.colno}): {exc.msg}") from None
    if isinstance(doc, dict):
        keys = [k for k in ("instances", "inputs") if k in doc]
        if len(keys) != 1:
            raise InvalidInput('JSON object must have exactly one of "instances" or "inputs" '
                               f"(a list of instances), got keys {sorted(doc)[:10]}")
        doc = doc[keys[0]]
        where = f'"{keys[0]}"'
    else:
        where = "the JSON body"
    if not isinstance(doc, list):
        raise InvalidInput(f"{where} must be a list of instances, got {_json_type(doc)} "
                           "(wrap a single instance in a list)")
    return doc


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value),
                                                                      type(value).__name__)


def _image_array(rows: Any, source: str, shape: Sequence[int] | None) -> np.ndarray:
    """Nested numbers → float32 (N, ...) array; refuses strings, null, ragged rows, NaN/Inf."""
    if isinstance(rows, np.ndarray):
        arr = rows
    else:
        try:
            arr = np.asarray(rows)  # dtype discovered: strict and faster than dtype=float32
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:
            raise InvalidInput(f"{source} for an image model are ragged or not numeric "
                               f"(all images must have the same shape): {exc}") from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        what = {"U": "strings", "S": "bytes", "O": "null, objects or mixed types",
                "c": "complex numbers"}.get(arr.dtype.kind, f"dtype {arr.dtype}")
        raise InvalidInput(f"{source} for an image model must be numbers (pixels), got {what}")
    if arr.ndim == 1:
        raise InvalidInput(f"{source} must be a list of images, got one flat list of "
                           f"{arr.shape[0]} numbers (wrap a single image in a list)")
    if arr.ndim > 4 or arr.ndim == 0:
        raise InvalidInput(f"{source} have shape {arr.shape}; expected (N, H, W), (N, H, W, C) "
                           "or flat (N, H*W*C)")
    if shape is not None:
        _check_image_shape(arr.shape, tuple(int(d) for d in shape), source)
    integral = arr.dtype.kind in "iub"
    with np.errstate(over="ignore", invalid="ignore"):  # too large for float32 → inf, below
        arr = arr.astype(np.float32, copy=False)
    if integral:
        if arr.size and not np.isfinite(arr.max()):  # only overflow can make an integer inf
            raise InvalidInput(f"{source} contain numbers too large for float32")
    elif not np.isfinite(arr).all():
        raise InvalidInput(f"{source} contain NaN or infinite pixel values "
                           "(or numbers too large for float32)")
    return arr


def _check_image_shape(got: tuple[int, ...], want: tuple[int, ...], source: str) -> None:
    h, w, c = (list(want) + [1, 1, 1])[:3]
    accepted = set(layouts(want).values())  # the fast path's layouts: one rule for both
    if got[1:] in accepted:
        return
    hint = ""
    if got in accepted or (len(got) == 2 and got == (h, w)):
        hint = " — this looks like ONE image: wrap it in a list"
    forms = f"(N, {h}, {w}, {c})" + (f", (N, {h}, {w})" if c == 1 else "")
    raise InvalidInput(f"{source} have shape {got}; this model expects {forms} or flat "
                       f"(N, {h * w * c}){hint}")


def _texts(items: list[Any], max_chars: int, text_column: str) -> list[str]:
    texts: list[str] = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            if not isinstance(item.get(text_column), str):
                raise InvalidInput(f"text instance {i} must have a string field "
                                   f"{text_column!r}, got keys {sorted(item)[:10]}")
            item = item[text_column]
        elif not isinstance(item, str):
            raise InvalidInput(f"text instance {i} must be a string (or {{{text_column!r}: "
                               f"...}}), got {_json_type(item)}")
        _check_text(item, max_chars, i)
        texts.append(item)
    return texts


def _cell(value: Any, row: int, column: str, max_chars: int) -> Any:
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"row {row} column {column!r} is NaN or infinite")
        return value
    if isinstance(value, str):
        if len(value) > max_chars:
            raise InvalidInput(f"row {row} column {column!r} text is too long: {len(value)} "
                               f"characters > {max_chars} allowed")
        return value
    raise InvalidInput(f"row {row} column {column!r} must be a number, string, boolean or "
                       f"null, got {_json_type(value)}")


def _records(rows: list[Any], columns: Sequence[str] | None, max_chars: int) -> list[dict]:
    records: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            records.append({k: _cell(v, i, k, max_chars) for k, v in row.items()})
        elif isinstance(row, list):
            if columns is None:
                raise InvalidInput(f"tabular row {i} is a list; send objects ({{column: "
                                   "value}) — this endpoint does not know the column order")
            if len(row) != len(columns):
                raise InvalidInput(f"tabular row {i} has {len(row)} values; the model expects "
                                   f"{len(columns)} columns ({', '.join(columns)})")
            records.append({k: _cell(v, i, k, max_chars) for k, v in zip(columns, row)})
        else:
            raise InvalidInput(f"tabular row {i} must be an object or a list of values, got "
                               f"{_json_type(row)}")
    return records


def _npy(body: bytes, kind: str, max_rows: int, max_chars: int, shape: Sequence[int] | None,
         columns: Sequence[str] | None) -> Any:
    if not body.startswith(_NPY_MAGIC):
        if body.startswith(b"PK"):
            raise InvalidInput("application/x-npy body is an .npz archive; send one .npy array")
        raise InvalidInput("application/x-npy body is not an .npy file (bad magic bytes)")
    fp = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            dims, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version in ((2, 0), (3, 0)):
            dims, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except Exception as exc:  # numpy's header parser leaks ValueError, SyntaxError,
        # tokenize.TokenError, EOFError, … on garbage; the header is untrusted input: all → 400
        raise InvalidInput(f"application/x-npy header is invalid: {type(exc).__name__}: "
                           f"{exc}") from None
    if dtype.hasobject:
        raise InvalidInput("application/x-npy body holds an object array (pickled data), "
                           "which is refused; send a numeric (or string) array")
    data = body[fp.tell():]
    count = math.prod(dims)
    if count * dtype.itemsize != len(data) or (count and not dtype.itemsize):
        raise InvalidInput(f"application/x-npy body is truncated or has trailing bytes: header "
                           f"says {dims} {dtype} ({count * dtype.itemsize} bytes), body has "
                           f"{len(data)}")
    if not dims:
        raise InvalidInput("application/x-npy body is a 0-d scalar; send a batch of rows")
    try:
        arr = np.frombuffer(data, dtype=dtype).reshape(dims, order="F" if fortran else "C")
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"application/x-npy body cannot be read: {exc}") from None
    _check_rows(arr.shape[0], max_rows)
    if kind == "image":
        if arr.dtype.kind not in _NUMERIC_KINDS:
            raise InvalidInput(f"application/x-npy array for an image model must be numeric, "
                               f"got dtype {arr.dtype}")
        return _image_array(arr, "npy rows", shape)
    if kind == "text":
        if arr.ndim != 1 or arr.dtype.kind not in "US":
            raise InvalidInput(f"application/x-npy array for a text model must be 1-D strings, "
                               f"got shape {arr.shape} dtype {arr.dtype}")
        try:
            items = [s if isinstance(s, str) else s.decode("utf-8") for s in arr.tolist()]
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"application/x-npy byte strings are not UTF-8: {exc}") from None
        return _texts(items, max_chars, "text")
    if arr.ndim != 2 or arr.dtype.kind not in _NUMERIC_KINDS:
        raise InvalidInput(f"application/x-npy array for a tabular model must be 2-D numeric "
                           f"(rows × columns), got shape {arr.shape} dtype {arr.dtype}")
    return _records(arr.astype(np.float64).tolist(), columns, max_chars)


def _csv_rows(body: bytes) -> list[list[str]]:
    try:
        return [row for row in csv.reader(io.StringIO(_utf8(body), newline="")) if row]
    except csv.Error as exc:
        raise InvalidInput(f"malformed CSV: {exc}") from None


def _csv_value(cell: str) -> Any:
    cell = cell.strip()
    if cell == "":
        return None  # missing: the tabular features impute it
    try:
        return float(cell)
    except ValueError:
        return cell


def _csv(body: bytes, kind: str, max_rows: int, max_text_chars: int,
         shape: Sequence[int] | None, columns: Sequence[str] | None) -> Any:
    if kind == "image":  # numbers need no quoting: numpy's C reader, ~2x the csv module
        text = _utf8(body)
        if not text.strip():
            _check_rows(0, max_rows)
        try:  # (the body is size-capped upstream: no max_rows here, it warns on blank lines)
            arr = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32, ndmin=2,
                             comments=None)
        except ValueError as exc:
            raise InvalidInput(f"CSV for an image model must hold the same number of numbers "
                               f"on every line (ragged or not numeric): {exc}") from None
        _check_rows(arr.shape[0], max_rows)
        return _image_array(arr, "CSV rows", shape)
    rows = _csv_rows(body)
    if kind == "tabular" and columns is not None and rows and \
            [c.strip() for c in rows[0]] == list(columns):
        rows = rows[1:]  # a header line naming the model's columns
    _check_rows(len(rows), max_rows)
    if kind == "text":
        for i, row in enumerate(rows):
            if len(row) != 1:
                raise InvalidInput(f"CSV line {i + 1} has {len(row)} fields; a text model takes "
                                   "one text per line (quote texts containing commas)")
        return _texts([row[0] for row in rows], max_text_chars, "text")
    return _records([[_csv_value(v) for v in row] for row in rows], columns, max_text_chars)


# --------------------------------------------------------------------------- encode


# answers carry 6 decimals; monitoring profiles a baseline's confidences at the same precision
ANSWER_DECIMALS = 6


def encode_predictions(proba: np.ndarray, label_names: list[str], *,
                       top_k: int | None = None) -> bytes:
    """(N, K) probabilities → ``{"predictions": [{"label", "confidence", "probabilities"}]}``.

    ``probabilities`` maps every label (in ``label_names`` order) to its probability, or only
    the ``top_k`` most likely ones (most likely first, ties in label order). Values rounded
    to 6 digits.
    """
    proba = np.asarray(proba)
    if proba.ndim != 2 or proba.shape[1] != len(label_names):
        raise CorruptArtifact(f"model output has shape {proba.shape}; expected (N, "
                              f"{len(label_names)}) for labels {list(label_names)[:20]}")
    if top_k is not None and top_k < 1:
        raise InvalidInput(f"top_k must be at least 1, got {top_k}")
    labels = [str(name) for name in label_names]
    best = proba.argmax(axis=1).tolist() if proba.shape[1] else []
    rounded = np.round(proba.astype(np.float64), ANSWER_DECIMALS).tolist()
    if top_k is not None:
        order = np.argsort(-proba, axis=1, kind="stable")[:, :top_k].tolist()
    else:
        order = None
    predictions = []
    for i, row in enumerate(rounded):
        if order is None:
            probs = dict(zip(labels, row))
        else:
            probs = {labels[j]: row[j] for j in order[i]}
        b = best[i]
        predictions.append({"label": labels[b], "confidence": row[b], "probabilities": probs})
    return orjson.dumps({"predictions": predictions})


def error_body(message: str) -> bytes:
    """SageMaker's error body: ``{"message": ...}`` (the code goes in ``x-amzn-ErrorType``)."""
    return orjson.dumps({"message": str(message)})


__all__ = ["decode", "decode_async", "encode_predictions", "error_body", "is_image_file",
           "media_type", "CONTENT_TYPES", "KINDS", "OFF_LOOP_BYTES", "MAX_BODY_BYTES"]
