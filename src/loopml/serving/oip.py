"""The Open Inference Protocol v2 (KServe V2 / Triton HTTP) for the real-time data plane.

``handle_v2(method, path, headers, body, router)`` answers every path under ``/v2``; the ASGI
app reads the body (and caps its size) and sends what this returns. Routes::

    GET  /v2                                            server metadata
    GET  /v2/health/live | /v2/health/ready             200, or 503 while not ready
    GET  /v2/models/{name}[/versions/{v}]               model metadata
    GET  /v2/models/{name}[/versions/{v}]/ready         200, or 503 while not loaded
    POST /v2/models/{name}[/versions/{v}]/infer         inference

The model name is the ENDPOINT name; ``router.route(name, version)`` finds its variant.

Inputs. One input named "input" (any name is accepted when there is exactly one):

    image    numeric tensor [N, *row_shape], [N, prod(row_shape)] or, when the row shape ends
             in 1, [N, *row_shape[:-1]] — validated like the SageMaker codecs (NaN/Inf refused)
    text     BYTES [N] or [N, 1] (UTF-8)
    tabular  numeric or BYTES [N, n_columns], columns in the model's order (BYTES cells read
             like CSV cells: "" → missing, numbers → numbers); or ONE INPUT PER COLUMN, each
             named after its column, shape [N] or [N, 1] (lets columns have different types)

Outputs: "probabilities" FP32 [N, C] (label order as in ``label_names``), "label" BYTES [N],
"confidence" FP32 [N]; all three when the request names none ("outputs" absent or []). ``"classification": k`` on
"probabilities" (tritonclient ``class_count=k``) returns Triton's BYTES [N, k] of
``"<prob>:<index>:<label>"``, most likely first.

Binary tensor extension: with the ``Inference-Header-Content-Length: n`` request header the
first n body bytes are the JSON header and the rest are the inputs that carry
``"parameters": {"binary_data_size": k}``, in input order (BYTES elements: 4-byte
little-endian length + bytes). An output is returned in binary when it asks for
``"binary_data": true`` or, when it says nothing, the request has
``"parameters": {"binary_data_output": true}``; the response then carries
``Inference-Header-Content-Length`` and content type application/octet-stream.
``Content-Encoding: gzip|deflate`` request bodies are inflated, at most to
``MAX_INFLATED_BYTES`` (the plain body limit: inflation stops as soon as it is passed, 413); they
and bodies past ``OFF_LOOP_BYTES`` are inflated and parsed on a worker thread, so one big request
never stalls the event loop (the other requests, /ping); responses are never compressed.

Errors are JSON ``{"error": "..."}``: 400 bad request, 404 unknown model/version/route, 405 wrong
method, 413 inflated body too large, 415 unknown content encoding, 503 not ready / queue full
(with ``retry-after``), 500 model failure (logged); one table, ``_as_error``. ``handle_v2``
never raises.

This module is a codec: routing, the swap-retry (a host closed while the request arrived runs
the request once more on the current one), capture and the shadow copy are
``serving.invoke``'s. On the data plane every inference has an id: the request's ``"id"``, else
a generated one returned as the response's ``"id"``; capture records it, so ground-truth labels
join OIP requests exactly as SageMaker ones (``X-Amzn-SageMaker-Inference-Id``).

Host attributes used: ``signature`` (models.signature.InputSignature: kind, shape, columns,
text column), ``label_names``, ``async predict_raw(raw)``; optional ``loaded``, ``model_name``,
``model_version`` and ``bundle.runtime_name`` (metadata "platform").
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import zlib
from functools import lru_cache
from typing import Any, NamedTuple, Sequence

import numpy as np
import orjson

from loopml import __version__
from loopml.core.errors import InvalidInput, LoopMLError, NotFound
from loopml.models.signature import InputSignature
from loopml.serving.batcher import BatcherClosed, QueueFull
from loopml.serving.codecs import (MAX_BODY_BYTES, OFF_LOOP_BYTES, _check_rows, _csv_value,
                                   _image_array, _json_type, _records, _texts)
from loopml.serving.invoke import Call, Router, predict

__all__ = ["handle_v2", "server_metadata", "model_metadata", "DATATYPES",
           "MAX_INFLATED_BYTES", "MAX_ROWS"]

log = logging.getLogger(__name__)

MAX_ROWS = 10_000  # as codecs.decode
MAX_TEXT_CHARS = 100_000  # as codecs.decode
MAX_INFLATED_BYTES = MAX_BODY_BYTES  # a gzip/deflate body inflates to at most the plain limit
MAX_DIMS = 32
OUTPUTS = ("probabilities", "label", "confidence")
INPUT_NAME = "input"

_NUMERIC = {"BOOL": np.dtype("?"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
            "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
            "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
            "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
DATATYPES = (*_NUMERIC, "BYTES")
_JSON_CT = (b"content-type", b"application/json")
_BINARY_CT = (b"content-type", b"application/octet-stream")
_RETRY = [(b"retry-after", b"1")]
_LEN = struct.Struct("<I")
_FP32 = np.dtype("<f4")


class _Error(Exception):
    def __init__(self, status: int, message: str,
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, list(headers)


class _Tensor(NamedTuple):
    name: str
    datatype: str
    shape: tuple[int, ...]
    value: Any  # np.ndarray of shape ``shape`` (numeric) or a flat list[str] (BYTES)


Response = tuple[int, list[tuple[bytes, bytes]], bytes]


def _json(status: int, doc: Any, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    return status, [_JSON_CT, *headers], orjson.dumps(doc)


def _error(exc: _Error) -> Response:
    return _json(exc.status, {"error": exc.message}, exc.headers)


# --------------------------------------------------------------------------- routing


async def handle_v2(method: str, path: str, headers: dict[bytes, bytes], body: bytes,
                    router: Router, call: Call | None = None) -> Response:
    """Route any path starting with /v2. Returns (status, extra headers incl content-type,
    body). Never raises (a client's mistake is a 4xx, anything else a logged 500).

    ``router``: the data plane's ``invoke.Invoker`` (routing, inference ids).
    ``call``: filled (``name`` first) when the request is an inference, for the caller to
    finish (metrics, capture, shadow)."""
    try:
        return await _route(method, path, headers, body, router, call)
    except Exception as exc:  # noqa: BLE001 - the error table decides
        return _error(_as_error(exc, f"{method} {path}"))


def _as_error(exc: BaseException, where: str) -> _Error:
    """The OIP error table: what the core, the codec or the model raised → status + message."""
    if isinstance(exc, _Error):
        return exc
    if isinstance(exc, InvalidInput):  # incl. UnsupportedFormat
        return _Error(400, exc.message)
    if isinstance(exc, NotFound):
        return _Error(404, exc.message)
    if isinstance(exc, (QueueFull, BatcherClosed)) or \
            (isinstance(exc, LoopMLError) and exc.status == 503):  # loading, failed, not ready
        return _Error(503, exc.message, _RETRY)
    if isinstance(exc, _ModelFailure):
        cause = exc.__cause__
        log.error("OIP: model %r failed", exc.name, exc_info=cause)
        message = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
        return _Error(500, f"model failed: {message}")
    log.error("OIP: unexpected failure on %s", where, exc_info=exc)
    return _Error(500, "internal failure")


class _ModelFailure(Exception):
    """What the model raised that is no client mistake (reported as ``model failed``)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _allow(method: str, allowed: str, path: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise _Error(405, f"{method} {path} is not allowed; use {allowed}",
                     [(b"allow", allowed.encode())])


async def _route(method: str, path: str, headers: dict[bytes, bytes], body: bytes,
                 backend: Router, call: Call | None) -> Response:
    parts = path.rstrip("/").split("/")  # "/v2/models/x" → ["", "v2", "models", "x"]
    if len(parts) < 2 or parts[0] or parts[1] != "v2":
        raise _Error(404, f"no route for {path}")
    rest = parts[2:]
    if not rest:
        _allow(method, "GET", path)
        return _json(200, server_metadata())
    if rest[0] == "health" and len(rest) == 2 and rest[1] in ("live", "ready"):
        _allow(method, "GET", path)
        if rest[1] == "live":
            return _json(200, {"live": True})
        ready = bool(backend.ready())
        return _json(200 if ready else 503, {"ready": ready})
    if rest[0] != "models" or len(rest) < 2 or not rest[1]:
        raise _Error(404, f"no route for {path}")
    name, tail = rest[1], rest[2:]
    version: str | None = None
    if tail[:1] == ["versions"]:
        if len(tail) < 2 or not tail[1]:
            raise _Error(404, f"no route for {path}")
        version, tail = tail[1], tail[2:]
    if len(tail) > 1 or (tail and tail[0] not in ("ready", "infer")):
        raise _Error(404, f"no route for {path}")
    action = tail[0] if tail else "metadata"
    _allow(method, "POST" if action == "infer" else "GET", path)
    if action == "infer":
        return await _infer(backend, name, version, headers, body, call)
    host = backend.lookup(name, version)
    if action == "metadata":
        return _json(200, model_metadata(host, name))
    if action == "ready":
        ready = bool(getattr(host, "loaded", True))
    return _json(200 if ready else 503, {"name": _model_name(host, name), "ready": ready})


def _model_name(host: Any, name: str) -> str:
    # the OIP model is the endpoint: clients address it by that name, so answer with it
    # (the registry model and version behind it are in "versions" / "model_version")
    return name


def _model_version(host: Any) -> str:
    version = getattr(host, "model_version", None)
    return "1" if version is None or version == "" else str(version)


# --------------------------------------------------------------------------- metadata


def server_metadata() -> dict[str, Any]:
    return {"name": "loopml", "version": __version__, "extensions": ["binary_tensor_data"]}


def model_metadata(host: Any, name: str) -> dict[str, Any]:
    sig: InputSignature = host.signature
    kind = sig.kind
    if kind == "image":
        shape = [-1, *sig.shape] if sig.shape else [-1, -1]
        spec = {"name": INPUT_NAME, "datatype": "FP32", "shape": shape}
    elif kind == "text":
        spec = {"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}
    else:
        # FP32 when every column is numeric, else BYTES (always accepted)
        spec = {"name": INPUT_NAME, "datatype": "FP32" if sig.numeric_columns else "BYTES",
                "shape": [-1, len(sig.columns) if sig.columns else -1]}
    runtime = getattr(getattr(host, "bundle", None), "runtime_name", None)
    return {"name": _model_name(host, name), "versions": [_model_version(host)],
            "platform": f"loopml_{runtime}" if runtime else "loopml",
            "inputs": [spec],
            "outputs": [{"name": "probabilities", "datatype": "FP32",
                         "shape": [-1, len(host.label_names)]},
                        {"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "confidence", "datatype": "FP32", "shape": [-1]}]}


# --------------------------------------------------------------------------- request parsing


def _inflate(body: bytes, encoding: bytes) -> bytes:
    enc = encoding.strip().lower()
    if enc in (b"", b"identity"):
        return body
    if enc == b"gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif enc == b"deflate":
        inflater = zlib.decompressobj(zlib.MAX_WBITS)
    else:
        raise _Error(415, f"content encoding {enc.decode('latin-1')!r} is not supported; "
                          "use gzip, deflate or none")
    try:  # max_length: inflation stops one byte past the cap, whatever the ratio
        out = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error as exc:
        raise _Error(400, f"request body is not valid {enc.decode()} data: {exc}") from None
    if len(out) > MAX_INFLATED_BYTES:
        raise _Error(413, f"request body inflates to more than {MAX_INFLATED_BYTES} bytes")
    if not inflater.eof:
        raise _Error(400, f"request body is truncated {enc.decode()} data")
    return out


def _split_body(headers: dict[bytes, bytes], body: bytes) -> tuple[Any, memoryview | None]:
    """(parsed JSON header, binary section or None)."""
    raw_len = headers.get(b"inference-header-content-length")
    view = memoryview(body)
    binary: memoryview | None = None
    if raw_len is not None:
        try:
            n = int(raw_len)
        except ValueError:
            raise _Error(400, "Inference-Header-Content-Length must be an integer, got "
                              f"{raw_len[:40]!r}") from None
        if n < 0 or n > len(body):
            raise _Error(400, f"Inference-Header-Content-Length is {n} but the body has "
                              f"{len(body)} bytes")
        view, binary = view[:n], view[n:]
    if len(view) == 0:
        raise _Error(400, "request body is empty; send the JSON inference request")
    try:
        doc = orjson.loads(view)
    except orjson.JSONDecodeError as exc:
        raise _Error(400, f"malformed JSON at position {exc.pos} (line {exc.lineno}, column "
                          f"{exc.colno}): {exc.msg}") from None
    return doc, binary


def _params(obj: dict, where: str) -> dict:
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise _Error(400, f'{where} "parameters" must be an object, got {_json_type(params)}')
    return params


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(d) is int for d in value):
        raise _Error(400, f'{where} "shape" must be a list of integers, got {value!r:.80}')
    if len(value) > MAX_DIMS:
        raise _Error(400, f"{where} has {len(value)} dimensions; at most {MAX_DIMS} allowed")
    if any(d < 0 for d in value):
        raise _Error(400, f"{where} shape {value} has a negative dimension")
    return tuple(value)


def _flatten_strings(data: Any, where: str) -> list[str]:
    out: list[str] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                if len(stack) > MAX_DIMS:
                    raise _Error(400, f"{where} data is nested too deeply")
                stack.append(iter(item))
                break
            else:
                raise _Error(400, f"{where} is BYTES: its data must be strings, got "
                                  f"{_json_type(item)}")
        else:
            stack.pop()
    return out


def _numeric_json(data: list, datatype: str, count: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(data)  # dtype discovered, then checked: strict (no "1" → 1.0)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise _Error(400, f"{where} data is ragged or not numeric: {exc}") from None
    kind = arr.dtype.kind
    if arr.size == 0:
        ok = True  # the count check below decides
    elif datatype == "BOOL":
        ok = kind == "b"
    elif datatype.startswith(("INT", "UINT")):
        ok = kind in "biu"
    else:
        ok = kind in "biuf"
    if not ok:
        what = {"U": "strings", "S": "bytes", "O": "null, objects, mixed types or integers "
                "too large", "f": "fractional numbers", "i": "integers", "u": "integers",
                "b": "booleans"}.get(kind, f"dtype {arr.dtype}")
        raise _Error(400, f"{where} is {datatype} but its data holds {what}")
    if arr.size != count:
        raise _Error(400, f"{where} has {arr.size} data elements but its shape needs {count}")
    dtype = _NUMERIC[datatype]
    if dtype.kind in "iu" and arr.size and kind in "iu":
        info = np.iinfo(dtype)
        if arr.min() < info.min or arr.max() > info.max:
            raise _Error(400, f"{where} data has values outside the {datatype} range "
                              f"[{info.min}, {info.max}]")
    with np.errstate(over="ignore", invalid="ignore"):  # FP16/FP32 overflow → inf: refused later
        return arr.astype(dtype, copy=False)


def _reshape(arr: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        return arr.reshape(shape)
    except (ValueError, OverflowError) as exc:  # e.g. [0, 10**30]: no such array
        raise _Error(400, f"{where} shape {list(shape)} is not a valid array shape: {exc}") \
            from None


def _bytes_elements(buf: memoryview, count: int, where: str) -> list[str]:
    if count * 4 > len(buf):
        raise _Error(400, f"{where} binary data has {len(buf)} bytes: too short for {count} "
                          "BYTES elements (each a 4-byte length + bytes)")
    out: list[str] = []
    pos, end = 0, len(buf)
    for i in range(count):
        if pos + 4 > end:
            raise _Error(400, f"{where} binary data is truncated at element {i}")
        (size,) = _LEN.unpack_from(buf, pos)
        pos += 4
        if pos + size > end:
            raise _Error(400, f"{where} binary data is truncated: element {i} claims {size} "
                              f"bytes, {end - pos} left")
        try:
            out.append(str(buf[pos:pos + size], "utf-8"))
        except UnicodeDecodeError as exc:
            raise _Error(400, f"{where} element {i} is not valid UTF-8 (byte {exc.start})") \
                from None
        pos += size
    if pos != end:
        raise _Error(400, f"{where} binary data has {end - pos} trailing bytes after {count} "
                          "elements")
    return out


def _parse_inputs(doc: Any, binary: memoryview | None) -> list[_Tensor]:
    if not isinstance(doc, dict):
        raise _Error(400, f"inference request must be a JSON object, got {_json_type(doc)}")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _Error(400, 'inference request needs "inputs": a non-empty list of tensors')
    tensors: list[_Tensor] = []
    offset = 0
    for i, spec in enumerate(inputs):
        if not isinstance(spec, dict):
            raise _Error(400, f"input {i} must be an object, got {_json_type(spec)}")
        name = spec.get("name")
        if not isinstance(name, str):
            raise _Error(400, f'input {i} needs a string "name"')
        where = f"input {name!r}"
        datatype = spec.get("datatype")
        if datatype not in DATATYPES:
            raise _Error(400, f"{where} has datatype {datatype!r:.40}; expected one of "
                              f"{', '.join(DATATYPES)}")
        shape = _shape(spec.get("shape"), where)
        count = math.prod(shape)
        params = _params(spec, where)
        if "shared_memory_region" in params:
            raise _Error(400, f"{where}: shared memory is not supported")
        size = params.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise _Error(400, f"{where} binary_data_size must be a non-negative integer")
            if "data" in spec:
                raise _Error(400, f'{where} has both "data" and binary_data_size')
            if binary is None:
                raise _Error(400, f"{where} has binary_data_size but the request has no "
                                  "Inference-Header-Content-Length header (no binary section)")
            if offset + size > len(binary):
                raise _Error(400, f"{where} binary data is truncated: needs {size} bytes at "
                                  f"offset {offset}, the binary section has {len(binary)}")
            chunk = binary[offset:offset + size]
            offset += size
            if datatype == "BYTES":
                value: Any = _bytes_elements(chunk, count, where)
            else:
                dtype = _NUMERIC[datatype]
                if size != count * dtype.itemsize:
                    raise _Error(400, f"{where} binary data has {size} bytes; shape {list(shape)}"
                                      f" {datatype} needs {count * dtype.itemsize}")
                value = _reshape(np.frombuffer(chunk, dtype=dtype), shape, where)
                if not value.flags.aligned:
                    value = value.copy()
        else:
            data = spec.get("data")
            if not isinstance(data, list):
                raise _Error(400, f'{where} needs "data" (a list) or binary data, got '
                                  f"{_json_type(data)}")
            if datatype == "BYTES":
                value = _flatten_strings(data, where)
                if len(value) != count:
                    raise _Error(400, f"{where} has {len(value)} data elements but its shape "
                                      f"needs {count}")
            else:
                value = _reshape(_numeric_json(data, datatype, count, where), shape, where)
        tensors.append(_Tensor(name, datatype, shape, value))
    if binary is not None and offset != len(binary):
        raise _Error(400, f"the binary section has {len(binary) - offset} bytes not claimed by "
                          "any input's binary_data_size")
    return tensors


class _Out(NamedTuple):
    name: str
    binary: bool
    classes: int  # classification top-k (0: plain tensor)


def _parse_outputs(doc: dict) -> list[_Out]:
    default_binary = _params(doc, "request").get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise _Error(400, '"binary_data_output" must be true or false')
    outputs = doc.get("outputs")
    if outputs is None or outputs == []:  # none named: all of them
        return [_Out(name, default_binary, 0) for name in OUTPUTS]
    if not isinstance(outputs, list):
        raise _Error(400, '"outputs" must be a list of {"name": ...} objects')
    result: list[_Out] = []
    for i, spec in enumerate(outputs):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _Error(400, f'output {i} must be an object with a string "name"')
        name = spec["name"]
        if name not in OUTPUTS:
            raise _Error(400, f"unknown output {name!r:.80}; this model has outputs "
                              f"{', '.join(OUTPUTS)}")
        if any(o.name == name for o in result):
            raise _Error(400, f"output {name!r} is requested twice")
        params = _params(spec, f"output {name!r}")
        if "shared_memory_region" in params:
            raise _Error(400, f"output {name!r}: shared memory is not supported")
        binary = params.get("binary_data", default_binary)
        if not isinstance(binary, bool):
            raise _Error(400, f'output {name!r} "binary_data" must be true or false')
        classes = params.get("classification", 0)
        if type(classes) is not int or classes < 0:
            raise _Error(400, f'output {name!r} "classification" must be a non-negative integer')
        if classes and name != "probabilities":
            raise _Error(400, f'"classification" applies to the "probabilities" output, not '
                              f"{name!r}")
        result.append(_Out(name, binary, classes))
    return result


# --------------------------------------------------------------------------- tensors → RAW rows


def _rows(t: _Tensor) -> int:
    if not t.shape:
        raise _Error(400, f"input {t.name!r} is a scalar (shape []); the first dimension must "
                          "be the batch (rows)")
    n = t.shape[0]
    try:
        _check_rows(n, MAX_ROWS)
    except InvalidInput as exc:
        raise _Error(400, f"input {t.name!r}: {exc.message}") from None
    return n


def _one_input(tensors: list[_Tensor], kind: str) -> _Tensor:
    if len(tensors) != 1:
        raise _Error(400, f"a(n) {kind} model takes exactly one input ({INPUT_NAME!r}), got "
                          f"{len(tensors)}: {', '.join(repr(t.name) for t in tensors)[:200]}")
    return tensors[0]


def _image_raw(tensors: list[_Tensor], sig: InputSignature) -> np.ndarray:
    t = _one_input(tensors, "image")
    if t.datatype == "BYTES":
        raise _Error(400, f"input {t.name!r} for an image model must be numeric (e.g. FP32), "
                          "got BYTES")
    _rows(t)
    if len(t.shape) < 2:
        want = f"[N, {', '.join(map(str, sig.shape))}]" if sig.shape else "[N, ...]"
        raise _Error(400, f"input {t.name!r} has shape {list(t.shape)}; an image model expects "
                          f"{want} (the first dimension is the batch)")
    return _image_array(t.value, f"input {t.name!r} values", sig.shape)


def _text_raw(tensors: list[_Tensor], sig: InputSignature) -> list[str]:
    t = _one_input(tensors, "text")
    if t.datatype != "BYTES":
        raise _Error(400, f"input {t.name!r} for a text model must be BYTES (UTF-8 strings), "
                          f"got {t.datatype}")
    _rows(t)
    if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
        raise _Error(400, f"input {t.name!r} has shape {list(t.shape)}; a text model expects "
                          "[N] or [N, 1] (one text per row)")
    return _texts(t.value, MAX_TEXT_CHARS, sig.text_column)


def _cells(t: _Tensor) -> list[Any]:
    """A tensor → flat list of Python cells (BYTES read like CSV cells, numbers as floats)."""
    if t.datatype == "BYTES":
        return [_csv_value(s) for s in t.value]
    return t.value.astype(np.float64).ravel().tolist()


def _per_column(tensors: list[_Tensor], columns: Sequence[str] | None) -> bool:
    """One input per column (each named after it) rather than one [N, n_columns] matrix?"""
    if columns is None or not all(t.name in columns for t in tensors):
        return False
    if len(tensors) > 1:
        return True
    shape = tensors[0].shape  # one input named after a column: unless shaped like the matrix
    return not (len(columns) > 1 and len(shape) == 2 and shape[1] == len(columns))


def _tabular_raw(tensors: list[_Tensor], sig: InputSignature) -> list[dict]:
    columns = sig.columns
    if _per_column(tensors, columns):
        n = _rows(tensors[0])
        names, values = [], []
        for t in tensors:
            if t.name in names:
                raise _Error(400, f"column input {t.name!r} is given twice")
            if t.shape not in ((n,), (n, 1)):
                raise _Error(400, f"column input {t.name!r} has shape {list(t.shape)}; expected "
                                  f"[{n}] or [{n}, 1] (all column inputs have the same rows)")
            names.append(t.name)
            values.append(_cells(t))
        return _checked_records([dict(zip(names, row)) for row in zip(*values)], None)
    if len(tensors) != 1:
        raise _Error(400, f"a tabular model takes one input {INPUT_NAME!r} [N, n_columns] or one "
                          f"input per column named after it ({', '.join(columns or [])[:200]}); "
                          f"got {', '.join(repr(t.name) for t in tensors)[:200]}")
    t = tensors[0]
    n = _rows(t)
    if columns is None:
        raise _Error(400, "this model does not record its column order; send one input per "
                          "column, each named after its column")
    width = len(columns)
    if t.shape != (n, width):
        raise _Error(400, f"input {t.name!r} has shape {list(t.shape)}; this tabular model "
                          f"expects [N, {width}] (columns {', '.join(columns)})")
    if t.datatype == "BYTES":
        flat = _cells(t)
        rows = [flat[i:i + width] for i in range(0, len(flat), width)]
    else:
        rows = t.value.astype(np.float64).tolist()
    return _checked_records(rows, columns)


def _checked_records(rows: list, columns: Sequence[str] | None) -> list[dict]:
    try:
        return _records(rows, columns, MAX_TEXT_CHARS)
    except InvalidInput as exc:
        raise _Error(400, exc.message) from None


# --------------------------------------------------------------------------- inference


@lru_cache(maxsize=256)
def _label_table(labels: tuple[Any, ...]) -> tuple[list[bytes], list[str]]:
    """Each label as a length-prefixed BYTES element (binary output) and as a str."""
    names = [str(s) for s in labels]
    return [_LEN.pack(len(b)) + b for b in (s.encode("utf-8") for s in names)], names


def _bytes_binary(items: list[str]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in (s.encode("utf-8") for s in items))


def _raw_rows(tensors: list[_Tensor], sig: InputSignature) -> Any:
    """The request's tensors → RAW rows for ``host.predict_raw`` (as codecs.decode gives)."""
    try:
        if sig.kind == "image":
            return _image_raw(tensors, sig)
        if sig.kind == "text":
            return _text_raw(tensors, sig)
        return _tabular_raw(tensors, sig)
    except InvalidInput as exc:  # codecs' validators
        raise _Error(400, exc.message) from None


def json_request_rows(doc: Any, sig: InputSignature) -> Any:
    """A parsed OIP v2 JSON request → its RAW rows (monitoring re-reads captured requests with
    it); InvalidInput when the request is not one the data plane would have accepted."""
    try:
        return _raw_rows(_parse_inputs(doc, None), sig)
    except _Error as exc:
        raise InvalidInput(exc.message) from None


def _decode_request(headers: dict[bytes, bytes], body: bytes, encoding: bytes | None,
                    sig: InputSignature) -> tuple[list[_Tensor], str | None, list[_Out], Any]:
    """Inflate and parse a request: (tensors, its "id", outputs asked for, RAW rows)."""
    if encoding is not None:
        body = _inflate(body, encoding)
    doc, binary = _split_body(headers, body)
    tensors = _parse_inputs(doc, binary)
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _Error(400, f'"id" must be a string, got {_json_type(request_id)}')
    return tensors, request_id, _parse_outputs(doc), _raw_rows(tensors, sig)


async def _infer(router: Router, name: str, version: str | None, headers: dict[bytes, bytes],
                 body: bytes, call: Call | None) -> Response:
    if call is not None:
        call.name = name  # an inference: the caller finishes it (metrics even when it fails)
    variant = router.route(name, version)  # an unknown model is a 404 whatever the body
    if call is not None:
        call.variant = variant  # metrics name the variant even when the request fails
    encoding = headers.get(b"content-encoding")
    sig = variant.host.signature
    if encoding is not None or len(body) > OFF_LOOP_BYTES:  # a gzip body may inflate 1000-fold
        tensors, request_id, outputs, raw = await asyncio.to_thread(
            _decode_request, headers, body, encoding, sig)
    else:
        tensors, request_id, outputs, raw = _decode_request(headers, body, None, sig)
    try:
        variant, raw, proba = await predict(
            variant, raw, again=lambda: router.route(name, version),
            redecode=lambda host: _raw_rows(tensors, host.signature))
    except (InvalidInput, BatcherClosed, QueueFull, _Error):
        raise
    except Exception as exc:
        raise _ModelFailure(name) from exc
    if request_id is None:
        request_id = router.new_id()  # the data plane's: capture and labels join on it
    response = _response(variant.host, name, request_id, outputs, proba, len(raw))
    if call is not None:
        call.variant, call.raw, call.proba, call.inference_id = variant, raw, proba, request_id
    return response


def _response(host: Any, name: str, request_id: str | None, outputs: list[_Out],
              proba: Any, n: int) -> Response:
    proba = np.ascontiguousarray(proba, dtype=_FP32)
    n_classes = len(host.label_names)
    if proba.shape != (n, n_classes) or not n_classes:
        log.error("OIP: model %r returned shape %s for %d rows and %d labels", name,
                  proba.shape, n, n_classes)
        raise _Error(500, f"model failed: it returned shape {list(proba.shape)}; expected "
                          f"[{n}, {n_classes}]")
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for out in outputs:
        binary = out.binary
        data: Any = None
        if out.name == "probabilities":
            if out.classes:
                k = min(out.classes, n_classes)
                labels = _label_table(tuple(host.label_names))[1]
                order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
                top = np.take_along_axis(proba, order, axis=1).tolist()
                data = [f"{p:f}:{j}:{labels[j]}" for prow, jrow in zip(top, order.tolist())
                        for p, j in zip(prow, jrow)]
                tensor = {"name": "probabilities", "datatype": "BYTES", "shape": [n, k]}
                raw = _bytes_binary(data) if binary else b""
            else:
                tensor = {"name": "probabilities", "datatype": "FP32", "shape": [n, n_classes]}
                data, raw = proba.ravel(), proba.tobytes() if binary else b""
        elif out.name == "confidence":
            conf = proba.max(axis=1)
            tensor = {"name": "confidence", "datatype": "FP32", "shape": [n]}
            data, raw = conf, conf.tobytes() if binary else b""
        else:  # label
            prefixed, labels = _label_table(tuple(host.label_names))
            idx = proba.argmax(axis=1).tolist()
            tensor = {"name": "label", "datatype": "BYTES", "shape": [n]}
            if binary:
                raw = b"".join([prefixed[j] for j in idx])
            else:
                data = [labels[j] for j in idx]
        if binary:
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = data
        tensors.append(tensor)
    doc: dict[str, Any] = {"model_name": _model_name(host, name),
                           "model_version": _model_version(host)}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = tensors
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return 200, [_JSON_CT], header
    return 200, [_BINARY_CT, (b"inference-header-content-length", str(len(header)).encode())], \
        b"".join([header, *chunks])
