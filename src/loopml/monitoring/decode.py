"""Captured bodies → the model's RAW inputs and its answers, row by row.

``decode_window(window, signature)`` reads every captured request/response of a ``CaptureWindow``
the way the data plane read it, with the served version's ``InputSignature`` (models/signature.py:
kind, image shape, column order, text field, class names — what the data plane decoded with):

inputs   SageMaker bodies through ``serving.codecs.decode`` (JSON ``{"instances"|"inputs": [...]}``
         or a bare list, ``text/csv``, ``application/x-npy`` (captured BASE64), ``text/plain``),
         and Open Inference Protocol v2 JSON requests (``{"inputs": [{"name", "datatype",
         "shape", "data"}]}``) through ``serving.oip``. Binary OIP bodies cannot be split again
         (their header length is not captured): undecodable.
outputs  the data plane's ``{"predictions": [{"label", "confidence", "probabilities"?}]}`` and
         OIP's ``{"outputs": [{"name": "probabilities"|"label"|"confidence", ...}]}``.

A request may carry several instances: its rows are expanded, and ``keep[j]`` is the index in the
window of the record row ``j`` came from (``window.inference_ids[keep[j]]`` is the row's id,
``window.inference_times[keep[j]]`` its time). A record whose input or output cannot be read, or
whose answer has another number of rows than its request, is counted in ``undecodable`` and
skipped — never an exception.

``raw`` has the form the bundle's features take (and ``profile.build_profile`` reads): images a
float32 (N, H, W, C) array, texts a list[str], tabular rows a DataFrame with the model's columns.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from loopml.core.errors import InvalidInput
from loopml.models.signature import InputSignature
from loopml.monitoring.capture_reader import CaptureWindow, body_bytes
from loopml.serving.codecs import decode as decode_body, media_type

__all__ = ["Decoded", "decode_window"]

log = logging.getLogger(__name__)

_MAX_ROWS = 1_000_000  # per captured request: the data plane already capped what it accepted
_MAX_TEXT_CHARS = 10_000_000


@dataclass
class Decoded:
    raw: Any  # (N, H, W, C) float32 | list[str] | DataFrame
    proba: np.ndarray | None  # (N, K) float32 over class_names; None unless every row had them all
    predicted: list[str]  # the label the endpoint answered, per row
    confidence: np.ndarray  # (N,) float64
    keep: np.ndarray  # (N,) int64: the window record each row came from
    undecodable: int  # records skipped

    @property
    def rows(self) -> int:
        return len(self.predicted)

    def records(self) -> np.ndarray:
        """Indices of the window records that decoded (each once, in order)."""
        return np.unique(self.keep)


# --------------------------------------------------------------------------- one record


def _decode_input(body: bytes, content_type: str | None, sig: InputSignature) -> Any:
    if media_type(content_type) == "application/json" and body[:1] == b"{" and b'"datatype"' in body:
        raw = _oip_input(body, sig)
        if raw is not None:
            return raw
    raw, _ = decode_body(body, content_type, sig.kind, max_rows=_MAX_ROWS, max_text_chars=_MAX_TEXT_CHARS,
                         shape=sig.shape, columns=sig.columns, text_column=sig.text_column)
    return raw


def _oip_input(body: bytes, sig: InputSignature) -> Any:
    """An OIP v2 JSON request's rows, or None when the body is not one."""
    from loopml.serving.oip import json_request_rows  # the data plane's own OIP parser

    doc = orjson.loads(body)
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    if not (isinstance(inputs, list) and inputs and all(isinstance(t, dict) and "datatype" in t
                                                        for t in inputs)):
        return None
    return json_request_rows(doc, sig)


def _decode_output(doc: Any) -> list[tuple[str, float, dict[str, float] | None]]:
    """A parsed answer → (label, confidence, probabilities or None) per row."""
    if not isinstance(doc, dict):
        raise InvalidInput("output is not a JSON object")
    if "predictions" in doc:
        out = []
        for p in doc["predictions"]:
            probs = p.get("probabilities")
            out.append((str(p["label"]), float(p["confidence"]), probs if isinstance(probs, dict) else None))
        return out
    if "outputs" in doc:  # OIP v2
        tensors = {t["name"]: t for t in doc["outputs"] if isinstance(t, dict)}
        labels = tensors.get("label", {}).get("data")
        conf = tensors.get("confidence", {}).get("data")
        if labels is None or conf is None:
            raise InvalidInput("OIP output lacks the label/confidence tensors")
        return [(str(label), float(c), None) for label, c in zip(labels, conf, strict=True)]
    raise InvalidInput("output has neither predictions nor outputs")


# --------------------------------------------------------------------------- the window


_CHUNK = 65_536  # records decoded at a time


def decode_window(window: CaptureWindow, signature: InputSignature) -> Decoded:
    """Every record of ``window`` → rows (see the module docstring). Never raises for bad data.

    Per chunk of records, the fastest path that can read all of them: pyarrow's JSON reader over
    the whole chunk (tabular/text ``{"instances": [...]}`` bodies — C++ speed), else one orjson
    call per column for the chunk's JSON bodies, else record by record through serving.codecs
    (other content types, OIP requests, anything unusual, and to isolate a bad record)."""
    sig, kind = signature, signature.kind
    acc = _Accumulator(sig)
    n = len(window)
    for start in range(0, n, _CHUNK):
        arrow_cols = [c.arrow.slice(start, _CHUNK) for c in (
            window.input_data, window.input_encodings, window.input_content_types,
            window.output_data, window.output_encodings)]
        block = _decode_arrow(sig, acc.class_names, arrow_cols) if kind != "image" else None
        if block is not None:
            acc.add_block(start, *block)
            continue
        cols = [c.to_pylist() for c in arrow_cols]
        results: list[Any] = [None] * len(cols[0])
        slow = _decode_fast(sig, cols, results) if kind != "image" else range(len(results))
        for j in slow:
            results[j] = _decode_one(sig, cols[0][j], cols[1][j], cols[2][j], cols[3][j],
                                     cols[4][j])
        for j, got in enumerate(results):
            acc.add(start + j, got)
        acc.end_chunk()
    return acc.result()


def _ndjson(arr: pa.ChunkedArray) -> pa.Buffer:
    """JSON documents → one newline-delimited buffer (newlines between a document's tokens, as
    in pretty-printed JSON, become spaces: valid JSON has none inside its strings)."""
    arr = pc.replace_substring(pc.replace_substring(arr, "\n", " "), "\r", " ")
    joined = pc.binary_join_element_wise(arr, pa.scalar(""), "\n").combine_chunks()
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + len(joined) + 1]
    return joined.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _all_equal(arr: pa.ChunkedArray, value: str) -> bool:
    return arr.null_count == 0 and pc.all(pc.equal(arr, value)).as_py() is not False


def _decode_arrow(sig: InputSignature, class_names: list[str], cols: list[pa.ChunkedArray]
                  ) -> tuple[np.ndarray, Any, list[str], np.ndarray, np.ndarray | None] | None:
    """A whole chunk with pyarrow, or None when any record needs another path."""
    kind = sig.kind
    in_data, in_enc, in_type, out_data, out_enc = cols
    if len(in_data) == 0 or in_data.null_count or out_data.null_count or not _all_equal(in_enc, "JSON") \
            or not _all_equal(out_enc, "JSON"):
        return None
    types = {media_type(t) for t in pc.unique(in_type).to_pylist()}
    if types != {"application/json"}:
        return None
    try:
        inputs = pj.read_json(pa.BufferReader(_ndjson(in_data)),
                              read_options=pj.ReadOptions(use_threads=True, block_size=4 << 20))
        if inputs.column_names != ["instances"] or inputs.num_rows != len(in_data):
            return None
        instances = inputs.column("instances").combine_chunks()
        if instances.null_count or not pa.types.is_list(instances.type):
            return None
        out_schema = pa.schema([("predictions", pa.list_(pa.struct([
            ("label", pa.string()), ("confidence", pa.float64()),
            ("probabilities", pa.struct([(c, pa.float64()) for c in class_names]))])))])
        outputs = pj.read_json(pa.BufferReader(_ndjson(out_data)),
                               read_options=pj.ReadOptions(use_threads=True, block_size=4 << 20),
                               parse_options=pj.ParseOptions(explicit_schema=out_schema,
                                                             unexpected_field_behavior="ignore"))
        predictions = outputs.column("predictions").combine_chunks()
        if outputs.num_rows != len(in_data) or predictions.null_count:
            return None
        n_in = pc.list_value_length(instances)
        if not pc.all(pc.equal(n_in, pc.list_value_length(predictions))).as_py() or \
                pc.min(n_in).as_py() == 0:
            return None  # a record whose answer has another row count (or no rows): the careful path
        rows = pc.list_flatten(instances)
        if kind == "text":
            if not pa.types.is_string(rows.type) or rows.null_count:
                return None
            raw: Any = rows.to_pylist()
        else:
            if not pa.types.is_struct(rows.type):
                return None
            raw = _frame(rows, sig.columns)
        answers = pc.list_flatten(predictions)
        labels = pc.struct_field(answers, "label")
        confidence = pc.struct_field(answers, "confidence")
        if labels.null_count or confidence.null_count:
            return None
        encoded = labels.dictionary_encode()
        names = encoded.dictionary.to_pylist()
        predicted = [names[i] for i in encoded.indices.to_numpy()]
        probs = pc.struct_field(answers, "probabilities")
        proba = None
        if probs.null_count == 0 and class_names:
            fields = [pc.struct_field(probs, c) for c in class_names]
            if all(f.null_count == 0 for f in fields):
                proba = np.column_stack([f.to_numpy() for f in fields]).astype(np.float32)
        keep = pc.list_parent_indices(instances).to_numpy().astype(np.int64)
        return keep, raw, predicted, confidence.to_numpy().astype(np.float64), proba
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, KeyError):
        return None  # a body pyarrow cannot read (or types that change between rows)


def _frame(rows: pa.StructArray, columns: tuple[str, ...] | None) -> pd.DataFrame:
    names = [f.name for f in rows.type]
    columns = list(columns or names)
    data = {}
    for c in columns:
        if c in names:
            field = pc.struct_field(rows, c)
            if pa.types.is_struct(field.type) or pa.types.is_list(field.type) or pa.types.is_null(field.type):
                data[c] = field.to_pylist()  # odd values: as Python objects, like the other paths
            else:
                data[c] = field.to_pandas()
        else:
            data[c] = [None] * len(rows)
    return pd.DataFrame(data, columns=columns)


def _decode_one(sig: InputSignature, in_data: str | None, in_enc: str | None,
                in_type: str | None, out_data: str | None, out_enc: str | None) -> Any:
    """(raw rows, answers) or the exception's class name when the record does not decode."""
    try:
        body = body_bytes(in_data, in_enc)
        out = body_bytes(out_data, out_enc)
        if body is None or out is None:
            raise InvalidInput("missing or undecodable body")
        raw = _decode_input(body, in_type, sig)
        answers = _decode_output(orjson.loads(out))
        if sig.kind == "image":
            raw = _as_nhwc(raw, sig.shape)
        elif sig.kind == "tabular" and raw and not isinstance(raw[0], dict):
            raise InvalidInput("tabular rows must be records")
        if len(answers) != len(raw):
            raise InvalidInput(f"{len(answers)} predictions for {len(raw)} input rows")
        return raw, answers
    except Exception as exc:  # noqa: BLE001 - a record that does not decode is counted, never fatal
        return type(exc).__name__


def _decode_fast(sig: InputSignature, cols: list[list[Any]], results: list[Any]) -> list[int]:
    """JSON text/tabular records of a chunk parsed with ONE orjson call per column (about 20x
    fewer Python-level calls than record by record); returns the indices left for the careful
    path (other encodings, OIP bodies, anything unusual, or the whole chunk if a body is bad)."""
    in_data, in_enc, in_type, out_data, out_enc = cols
    fast = [j for j in range(len(in_data))
            if in_enc[j] == "JSON" and out_enc[j] == "JSON" and in_data[j] and out_data[j]
            and media_type(in_type[j]) == "application/json"]
    if not fast:
        return list(range(len(in_data)))
    try:
        docs = orjson.loads("[" + ",".join([in_data[j] for j in fast]) + "]")
        outs = orjson.loads("[" + ",".join([out_data[j] for j in fast]) + "]")
    except orjson.JSONDecodeError:
        return list(range(len(in_data)))
    if len(docs) != len(fast) or len(outs) != len(fast):  # a body held two documents: be careful
        return list(range(len(in_data)))
    kind, columns, text_column = sig.kind, sig.columns, sig.text_column
    slow = sorted(set(range(len(in_data))) - set(fast))
    for j, doc, out in zip(fast, docs, outs):
        rows = _instances(doc)
        if rows is None:
            slow.append(j)
            continue
        try:
            if kind == "text":
                rows = [r if type(r) is str else r[text_column] for r in rows]
                if not all(type(r) is str for r in rows):
                    raise ValueError
            else:
                first = rows[0]
                if type(first) is list:
                    if columns is None or any(type(r) is not list or len(r) != len(columns) for r in rows):
                        raise ValueError
                    rows = [dict(zip(columns, r)) for r in rows]
                elif any(type(r) is not dict for r in rows) or "datatype" in first:
                    raise ValueError
            answers = _decode_output(out)
            if len(answers) != len(rows):
                raise ValueError
        except Exception:  # noqa: BLE001 - anything unusual: the careful path decides
            slow.append(j)
            continue
        results[j] = (rows, answers)
    slow.sort()
    return slow


def _instances(doc: Any) -> list[Any] | None:
    if type(doc) is list:
        return doc or None
    if type(doc) is dict and len(doc) == 1:
        rows = doc.get("instances", doc.get("inputs"))
        return rows if type(rows) is list and rows else None
    return None


class _Accumulator:
    """Rows of the decoded records, in window order, gathered chunk by chunk."""

    def __init__(self, sig: InputSignature) -> None:
        self.kind = sig.kind
        self.sig = sig
        self.class_names = list(sig.class_names)
        class_names = self.class_names
        self.class_index = {c: i for i, c in enumerate(class_names)}
        self.interned: dict[str, str] = {c: c for c in class_names}
        self.parts: list[Any] = []  # per chunk: image array | texts | DataFrame
        self.keep: list[np.ndarray] = []
        self.predicted: list[str] = []
        self.confidence: list[np.ndarray] = []
        self.proba: list[np.ndarray] | None = []
        self.undecodable = 0
        self.reasons: dict[str, int] = {}
        self._rows: list[Any] = []  # the current chunk's (record-by-record path)
        self._keep: list[int] = []
        self._conf: list[float] = []
        self._proba: list[list[float]] | None = []

    def add(self, i: int, got: Any) -> None:
        if got is None or isinstance(got, str):
            self.undecodable += 1
            why = got or "InvalidInput"
            self.reasons[why] = self.reasons.get(why, 0) + 1
            return
        raw, answers = got
        if self.kind == "image":
            self._rows.append(raw)
        else:
            self._rows.extend(raw)
        self._keep.extend([i] * len(answers))
        interned, k = self.interned, len(self.class_names)
        for label, conf, probs in answers:
            self.predicted.append(interned.setdefault(label, label))
            self._conf.append(conf)
            if self._proba is not None:
                if probs is None or len(probs) < k:
                    self._proba = None  # top-k answers or OIP: no full distribution
                    continue
                row = [0.0] * k
                for name, p in probs.items():
                    j = self.class_index.get(name)
                    if j is not None:
                        row[j] = float(p)
                self._proba.append(row)

    def end_chunk(self) -> None:
        if self._keep:
            if self.kind == "image":
                part: Any = np.concatenate(self._rows, axis=0)
            elif self.kind == "text":
                part = self._rows
            else:
                part = _records_frame(self._rows, self.sig.columns)
            proba = None if self._proba is None else \
                np.asarray(self._proba, dtype=np.float32).reshape(len(self._keep), len(self.class_names))
            self._store(np.asarray(self._keep, dtype=np.int64), part,
                        np.asarray(self._conf, dtype=np.float64), proba)
        self._rows, self._keep, self._conf, self._proba = [], [], [], []

    def add_block(self, start: int, keep: np.ndarray, raw: Any, predicted: list[str], confidence: np.ndarray,
                  proba: np.ndarray | None) -> None:
        interned = self.interned
        self.predicted.extend([interned.setdefault(p, p) for p in predicted])
        self._store(keep + start, raw, confidence, proba)

    def _store(self, keep: np.ndarray, part: Any, confidence: np.ndarray, proba: np.ndarray | None) -> None:
        self.keep.append(keep)
        self.parts.append(part)
        self.confidence.append(confidence)
        if proba is None:
            self.proba = None
        elif self.proba is not None:
            self.proba.append(proba)

    def result(self) -> Decoded:
        if self.undecodable:
            log.warning("%d captured record(s) could not be decoded and were skipped (%s)",
                        self.undecodable, ", ".join(f"{k}: {v}" for k, v in sorted(self.reasons.items())))
        n_rows = len(self.predicted)
        proba = np.concatenate(self.proba, axis=0) if self.proba and n_rows else None
        return Decoded(raw=_assemble(self.sig, self.parts), proba=proba, predicted=self.predicted,
                       confidence=np.concatenate(self.confidence) if self.confidence else np.zeros(0),
                       keep=np.concatenate(self.keep) if self.keep else np.zeros(0, dtype=np.int64),
                       undecodable=self.undecodable)


def _records_frame(records: list[dict], columns: tuple[str, ...] | None) -> pd.DataFrame:
    if columns is None:
        columns = tuple(dict.fromkeys(k for row in records[:1000] for k in row))
    # column by column: much faster than DataFrame.from_records for many small dicts
    return pd.DataFrame({c: [row.get(c) for row in records] for c in columns}, columns=list(columns))


def _as_nhwc(arr: np.ndarray, shape: tuple[int, ...] | None) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    if shape is not None:
        return arr.reshape(len(arr), *shape)
    if arr.ndim == 3:
        return arr[..., np.newaxis]
    if arr.ndim == 4:
        return arr
    raise InvalidInput(f"image rows of shape {arr.shape[1:]} need the schema's image shape")


def _assemble(sig: InputSignature, parts: list[Any]) -> Any:
    kind = sig.kind
    if kind == "image":
        if parts:
            return np.concatenate(parts, axis=0)
        h, w, c = sig.shape or (0, 0, 1)
        return np.zeros((0, h, w, c), dtype=np.float32)
    if kind == "text":
        return [text for part in parts for text in part]
    if not parts:
        return pd.DataFrame({c: [] for c in (sig.columns or ())})
    if len(parts) == 1:
        return parts[0]
    return pd.concat(parts, ignore_index=True)
