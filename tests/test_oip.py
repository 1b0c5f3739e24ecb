"""The Open Inference Protocol v2 (serving/oip.py) against the real Triton HTTP client.

Tiny image (digits CNN), text (RNN) and tabular (MLP) models are trained in-process once per
module, saved as bundles, loaded as ModelHosts and served as endpoints by the real data plane
(``serving.app.create_data_plane``) under uvicorn on a free port; an unmodified
``tritonclient.http`` client and httpx call it. Answers are checked against the bundle's runtime
called directly.
"""

from __future__ import annotations

import gzip
import json
import math
import re
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import orjson
import pandas as pd
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("keras")
tritonhttp = pytest.importorskip("tritonclient.http")

import httpx  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from loopml import __version__  # noqa: E402
from loopml.core.errors import InvalidInput  # noqa: E402
from loopml.models.signature import InputSignature  # noqa: E402
from loopml.serving.app import StaticEndpoints, create_data_plane  # noqa: E402
from loopml.serving.batcher import BatcherClosed, QueueFull  # noqa: E402
from loopml.serving.host import ModelHost  # noqa: E402
from loopml.serving.oip import OUTPUTS  # noqa: E402
from tests.asgi_server import serve_asgi  # noqa: E402
from tests.serving_support import train_bundle  # noqa: E402

pytest_plugins = ("tests.serving_support",)  # digits_data, digit_bundles: small trained CNNs

TOL = 1e-5


# --------------------------------------------------------------------------- models


@pytest.fixture(scope="module")
def digits_dir(digit_bundles) -> Path:
    return digit_bundles[0]  # a digits CNN trained one epoch


_TOPICS = {
    "sport": ["the team won the match", "a late goal in the final", "fans cheered the striker"],
    "tech": ["new phone with a faster chip", "software update fixes bugs", "the app crashed"],
}


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> Path:
    from loopml.datasets.content import DatasetContent

    rows = [(f"{s} {i}", topic) for topic, ss in _TOPICS.items() for i in range(3) for s in ss]
    content = DatasetContent(kind="text", frame=pd.DataFrame({"body": [r[0] for r in rows]}),
                             text_column="body", labels=np.array([r[1] for r in rows],
                                                                 dtype=object))
    return train_bundle(tmp_path_factory.mktemp("oip") / "news", content, "rnn",
                        {"epochs": 1, "units": 4, "embedding_dim": 4, "max_length": 8, "vocab_size": 40})


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory) -> Path:
    from loopml.datasets.content import DatasetContent

    rng = np.random.default_rng(0)
    n = 60
    size = rng.normal(10, 3, n)
    frame = pd.DataFrame({"size": size, "colour": rng.choice(["red", "blue"], n).astype(object),
                          "count": rng.integers(0, 5, n)})
    content = DatasetContent(kind="tabular", frame=frame,
                             labels=np.where(size > 10, "big", "small").astype(object))
    return train_bundle(tmp_path_factory.mktemp("oip") / "table", content, "mlp", {"epochs": 1, "units": 4})


@pytest.fixture(scope="module")
def hosts(digits_dir, text_dir, table_dir) -> dict[str, ModelHost]:
    return {"digits": ModelHost.load(digits_dir, max_batch_size=32, name="digits"),
            "news": ModelHost.load(text_dir, max_batch_size=8, name="news"),
            "table": ModelHost.load(table_dir, max_batch_size=8, name="table")}


@pytest.fixture(scope="module")
def host(hosts) -> ModelHost:
    return hosts["digits"]


# --------------------------------------------------------------------------- server


@pytest.fixture(scope="module")
def server_url(hosts) -> Iterator[str]:
    """The real data plane (``create_data_plane``) serving the three models as endpoints."""
    with serve_asgi(create_data_plane(hosts), "oip-data-plane") as url:
        yield url


@pytest.fixture(scope="module")
def triton(server_url):
    client = tritonhttp.InferenceServerClient(url=server_url.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def http(server_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url) as client:
        yield client


def _strs(arr: np.ndarray) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in arr.ravel().tolist()]


def _check(result, host: ModelHost, raw: Any, outputs=OUTPUTS) -> None:
    expected = host.bundle.predict_proba(raw)
    best = expected.argmax(axis=1)
    names = [o["name"] for o in result.get_response()["outputs"]]
    assert names == list(outputs)
    if "probabilities" in outputs:
        proba = result.as_numpy("probabilities")
        assert proba.dtype == np.float32 and proba.shape == expected.shape
        np.testing.assert_allclose(proba, expected, atol=TOL)
    if "label" in outputs:
        assert _strs(result.as_numpy("label")) == [host.label_names[i] for i in best]
    if "confidence" in outputs:
        conf = result.as_numpy("confidence")
        assert conf.dtype == np.float32 and conf.shape == (len(best),)
        np.testing.assert_allclose(conf, expected.max(axis=1), atol=TOL)


# --------------------------------------------------------------------------- tritonclient


def test_health_and_server_metadata(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta == {"name": "loopml", "version": __version__, "extensions": ["binary_tensor_data"]}


def test_model_ready_and_metadata(triton, hosts):
    assert triton.is_model_ready("digits")
    assert triton.is_model_ready("digits", "1")
    assert not triton.is_model_ready("digits", "2")
    assert not triton.is_model_ready("nope")
    meta = triton.get_model_metadata("digits")
    assert meta == triton.get_model_metadata("digits", "1")
    assert meta["name"] == "digits" and meta["versions"] == ["1"]
    assert meta["platform"] == "loopml_onnx"
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8, 8, 1]}]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
                               {"name": "label", "datatype": "BYTES", "shape": [-1]},
                               {"name": "confidence", "datatype": "FP32", "shape": [-1]}]
    assert triton.get_model_metadata("news")["inputs"] == [
        {"name": "input", "datatype": "BYTES", "shape": [-1]}]
    assert triton.get_model_metadata("table")["inputs"] == [
        {"name": "input", "datatype": "BYTES", "shape": [-1, 3]}]
    with pytest.raises(tritonhttp.InferenceServerException, match="not found") as info:
        triton.get_model_metadata("nope")
    assert info.value.status() == "404"


@pytest.mark.parametrize("binary_in", [True, False], ids=["bin-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["bin-out", "json-out"])
def test_infer_binary_and_json(triton, host, digits_data, binary_in, binary_out):
    raw = digits_data[0][:5][..., np.newaxis]
    inp = tritonhttp.InferInput("input", list(raw.shape), "FP32")
    inp.set_data_from_numpy(raw, binary_data=binary_in)
    outputs = [tritonhttp.InferRequestedOutput(name, binary_data=binary_out) for name in OUTPUTS]
    result = triton.infer("digits", [inp], outputs=outputs, request_id="req-7")
    response = result.get_response()
    assert response["model_name"] == "digits" and response["model_version"] == "1"
    assert response["id"] == "req-7"
    for out in response["outputs"]:
        assert ("data" in out) is not binary_out
    _check(result, host, raw)


@pytest.mark.parametrize("datatype,shape", [
    ("FP32", (4, 64)), ("FP32", (4, 8, 8)), ("FP64", (4, 8, 8, 1)), ("UINT8", (4, 64)),
    ("INT64", (4, 8, 8)), ("FP16", (4, 64))])
def test_infer_accepted_shapes_and_datatypes(triton, host, digits_data, datatype, shape):
    from tritonclient.utils import triton_to_np_dtype

    raw = digits_data[0][20:24].reshape(shape).astype(triton_to_np_dtype(datatype))
    for binary in (True, False):
        inp = tritonhttp.InferInput("pixels", list(shape), datatype)  # any name: one input
        inp.set_data_from_numpy(raw, binary_data=binary)
        # no outputs named: all three, in binary (tritonclient sets binary_data_output)
        result = triton.infer("digits", [inp], model_version="1")
        assert all("data" not in o for o in result.get_response()["outputs"])
        _check(result, host, raw.astype(np.float32).reshape(4, 8, 8, 1))


def test_infer_subset_of_outputs_classification_and_gzip(triton, host, digits_data):
    raw = digits_data[0][30:33][..., np.newaxis]
    inp = tritonhttp.InferInput("input", list(raw.shape), "FP32")
    inp.set_data_from_numpy(raw)
    result = triton.infer("digits", [inp], outputs=[
        tritonhttp.InferRequestedOutput("confidence", binary_data=False),
        tritonhttp.InferRequestedOutput("label")], request_compression_algorithm="gzip")
    _check(result, host, raw, outputs=("confidence", "label"))
    result = triton.infer("digits", [inp], request_compression_algorithm="deflate", outputs=[
        tritonhttp.InferRequestedOutput("probabilities", class_count=3)])
    expected = host.bundle.predict_proba(raw)
    top = result.as_numpy("probabilities")
    assert top.shape == (3, 3)
    for row, probs in zip(top, expected):
        order = np.argsort(-probs, kind="stable")[:3]
        parsed = [_strs(np.array([x]))[0].split(":") for x in row]
        assert [int(p[1]) for p in parsed] == order.tolist()
        assert [p[2] for p in parsed] == [host.label_names[j] for j in order]
        np.testing.assert_allclose([float(p[0]) for p in parsed], probs[order], atol=1e-5)


def test_text_model(triton, hosts):
    host = hosts["news"]
    texts = ["the team won", "a faster chip", "Café ünïcode ✓", ""]
    for shape, binary in (([4], True), ([4], False), ([4, 1], True)):
        inp = tritonhttp.InferInput("input", shape, "BYTES")
        inp.set_data_from_numpy(np.array(texts, dtype=object).reshape(shape), binary_data=binary)
        outputs = [tritonhttp.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
        _check(triton.infer("news", [inp], outputs=outputs), host, texts)
    inp = tritonhttp.InferInput("input", [1], "FP32")
    inp.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    with pytest.raises(tritonhttp.InferenceServerException, match="must be BYTES") as info:
        triton.infer("news", [inp])
    assert info.value.status() == "400"


def test_tabular_model(triton, hosts):
    host = hosts["table"]
    assert host.signature.columns == ("size", "colour", "count")
    records = [{"size": 12.5, "colour": "red", "count": 3.0},
               {"size": 4.0, "colour": "blue", "count": 0.0},
               {"size": None, "colour": "green", "count": 1.0}]  # missing size, unseen colour
    cells = np.array([["12.5", "red", "3"], ["4", "blue", "0"], ["", "green", "1"]],
                     dtype=object)
    for binary in (True, False):
        inp = tritonhttp.InferInput("input", [3, 3], "BYTES")
        inp.set_data_from_numpy(cells, binary_data=binary)
        _check(triton.infer("table", [inp]), host, records)
    # one input per column, each with its own datatype (any order)
    columns = {"colour": (np.array(["red", "blue", "green"], dtype=object), "BYTES"),
               "count": (np.array([[3], [0], [1]], dtype=np.int32), "INT32"),
               "size": (np.array([12.5, 4.0, 10.0], dtype=np.float64), "FP64")}
    inputs = []
    for name, (arr, datatype) in columns.items():
        inputs.append(tritonhttp.InferInput(name, list(arr.shape), datatype))
        inputs[-1].set_data_from_numpy(arr)
    records[2]["size"] = 10.0
    _check(triton.infer("table", inputs), host, records)
    # all-numeric tensor (works when the categorical column is given as... a category number)
    inp = tritonhttp.InferInput("input", [1, 3], "FP32")
    inp.set_data_from_numpy(np.array([[1.0, 2.0, 3.0]], dtype=np.float32))
    _check(triton.infer("table", [inp]), host, [{"size": 1.0, "colour": 2.0, "count": 3.0}])


def test_concurrent_clients(server_url, host, digits_data):
    """Many concurrent binary requests (coalesced by the batcher) each get their own rows."""
    from concurrent.futures import ThreadPoolExecutor

    images = digits_data[0][..., np.newaxis]
    expected = host.bundle.predict_proba(images[:64]).argmax(axis=1)

    def one(i: int) -> list[str]:
        client = tritonhttp.InferenceServerClient(url=server_url.removeprefix("http://"))
        try:
            inp = tritonhttp.InferInput("input", [2, 8, 8, 1], "FP32")
            inp.set_data_from_numpy(images[2 * i:2 * i + 2])
            return _strs(client.infer("digits", [inp]).as_numpy("label"))
        finally:
            client.close()

    with ThreadPoolExecutor(16) as pool:
        labels = [x for got in pool.map(one, range(32)) for x in got]
    assert labels == [host.label_names[i] for i in expected]


# --------------------------------------------------------------------------- errors (httpx)


def _infer_body(data: Any = None, *, name="input", shape=(1, 64), datatype="FP32",
                **extra: Any) -> dict:
    tensor = {"name": name, "shape": list(shape), "datatype": datatype,
              "data": [0.5] * 64 if data is None else data}
    return {"inputs": [tensor], **extra}


def _binary_request(header: dict, payload: bytes, header_len: int | None = None
                    ) -> tuple[bytes, dict]:
    head = orjson.dumps(header)
    n = len(head) if header_len is None else header_len
    return head + payload, {"inference-header-content-length": str(n)}


_ERRORS = [
    # (method, path, json body or raw bytes, headers, status, message fragment)
    ("POST", "/v2/models/nope/infer", _infer_body(), {}, 404, "not found"),
    ("POST", "/v2/models/digits/versions/9/infer", _infer_body(), {}, 404, "no version"),
    ("GET", "/v2/models/nope", None, {}, 404, "not found"),
    ("GET", "/v2/models/digits/config", None, {}, 404, "no route"),
    ("GET", "/v2/nothing/here", None, {}, 404, "no route"),
    ("GET", "/v2/models/digits/infer", None, {}, 405, "use POST"),
    ("POST", "/v2/health/live", b"", {}, 405, "use GET"),
    ("POST", "/v2/models/digits/infer", b"{not json", {}, 400, "malformed JSON"),
    ("POST", "/v2/models/digits/infer", b"", {}, 400, "empty"),
    ("POST", "/v2/models/digits/infer", [1, 2], {}, 400, "must be a JSON object"),
    ("POST", "/v2/models/digits/infer", {"inputs": []}, {}, 400, "non-empty list"),
    ("POST", "/v2/models/digits/infer", _infer_body(datatype="FP128"), {}, 400, "datatype"),
    ("POST", "/v2/models/digits/infer", _infer_body(shape=(1, 63)), {}, 400,
     "63 data elements|64 data elements"),
    ("POST", "/v2/models/digits/infer", _infer_body([0.5] * 63), {}, 400,
     "63 data elements but its shape needs 64"),
    ("POST", "/v2/models/digits/infer", _infer_body([0.5] * 49, shape=(1, 7, 7)), {}, 400,
     "expects"),
    ("POST", "/v2/models/digits/infer", _infer_body([0.5] * 64, shape=(64,)), {}, 400,
     "first dimension is the batch"),
    ("POST", "/v2/models/digits/infer", _infer_body(shape=(1, -64)), {}, 400, "negative"),
    ("POST", "/v2/models/digits/infer", _infer_body(shape="1x64"), {}, 400, "list of integers"),
    ("POST", "/v2/models/digits/infer", _infer_body([0.5] * 63 + ["x"]), {}, 400, "strings"),
    ("POST", "/v2/models/digits/infer", _infer_body([0.5] * 63 + [None]), {}, 400, "null"),
    ("POST", "/v2/models/digits/infer", _infer_body([1] * 63 + [300], datatype="UINT8"), {}, 400,
     "range"),
    ("POST", "/v2/models/digits/infer", _infer_body([1.5] * 64, datatype="INT32"), {}, 400,
     "fractional"),
    ("POST", "/v2/models/digits/infer", _infer_body([0.5] * 63 + [1e300]), {}, 400,
     "NaN or infinite"),
    ("POST", "/v2/models/digits/infer", _infer_body(["a"] * 64, datatype="BYTES"), {}, 400,
     "must be numeric"),
    ("POST", "/v2/models/digits/infer", _infer_body(outputs=[{"name": "logits"}]), {}, 400,
     "unknown output 'logits'"),
    ("POST", "/v2/models/digits/infer", _infer_body(outputs=[{"name": "label"}] * 2), {}, 400,
     "twice"),
    ("POST", "/v2/models/digits/infer",
     _infer_body(outputs=[{"name": "label", "parameters": {"binary_data": "yes"}}]), {}, 400,
     "true or false"),
    ("POST", "/v2/models/digits/infer", _infer_body(id=7), {}, 400, '"id" must be a string'),
    ("POST", "/v2/models/digits/infer",
     {"inputs": [_infer_body()["inputs"][0]] * 2}, {}, 400, "exactly one input"),
    ("POST", "/v2/models/digits/infer", _infer_body([[0.5] * 64] * 10_001, shape=(10_001, 64)),
     {}, 400, "too many rows"),
    ("POST", "/v2/models/digits/infer",
     {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                  "parameters": {"binary_data_size": 256}}]}, {}, 400,
     "no Inference-Header-Content-Length"),
    ("POST", "/v2/models/digits/infer", _infer_body(), {"content-encoding": "br"}, 415, "br"),
    ("POST", "/v2/models/digits/infer", b"\x1f\x8b garbage", {"content-encoding": "gzip"}, 400,
     "gzip"),
    ("POST", "/v2/models/news/infer", _infer_body([1] * 2, shape=(2,), datatype="BYTES"), {}, 400,
     "must be strings"),
    ("POST", "/v2/models/news/infer", _infer_body(["a"] * 4, shape=(2, 2), datatype="BYTES"),
     {}, 400, r"\[N\] or \[N, 1\]"),
    ("POST", "/v2/models/table/infer", _infer_body(["1"] * 4, shape=(2, 2), datatype="BYTES"),
     {}, 400, r"expects \[N, 3\]"),
    ("POST", "/v2/models/table/infer",
     _infer_body([1.0, "inf", 2.0], shape=(1, 3), datatype="BYTES"), {}, 400, "must be strings"),
    ("POST", "/v2/models/table/infer",
     _infer_body(["1", "inf", "2"], shape=(1, 3), datatype="BYTES"), {}, 400, "NaN or infinite"),
    ("POST", "/v2/models/table/infer",
     _infer_body(["x", "red", "2"], shape=(1, 3), datatype="BYTES"), {}, 400, "numeric"),
    ("POST", "/v2/models/table/infer",
     {"inputs": [{"name": "size", "shape": [1], "datatype": "FP32", "data": [1]}]}, {}, 400,
     "missing column"),
]


@pytest.mark.parametrize("method,path,body,headers,status,fragment", _ERRORS,
                         ids=[f"{i}-{e[5][:20]}" for i, e in enumerate(_ERRORS)])
def test_errors(http, method, path, body, headers, status, fragment):
    content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    r = http.request(method, path, content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert isinstance(error, str)
    assert re.search(fragment, error), error


def test_binary_framing_errors(http):
    tensor = {"name": "input", "shape": [1, 64], "datatype": "FP32",
              "parameters": {"binary_data_size": 256}}
    payload = np.full((1, 64), 0.5, dtype=np.float32).tobytes()
    cases = [
        (_binary_request({"inputs": [tensor]}, payload[:-4]), "truncated"),
        (_binary_request({"inputs": [tensor]}, payload + b"xx"), "not claimed"),
        (_binary_request({"inputs": [{**tensor, "shape": [1, 32]}]}, payload), "needs 128"),
        (_binary_request({"inputs": [tensor]}, payload, header_len=10**9), "body has"),
        (_binary_request({"inputs": [tensor]}, payload, header_len=5), "malformed JSON"),
        ((payload, {"inference-header-content-length": "abc"}), "must be an integer"),
        (_binary_request({"inputs": [{**tensor, "data": [0.5] * 64}]}, payload), "both"),
        (_binary_request({"inputs": [tensor]}, np.full((1, 64), np.nan, np.float32).tobytes()),
         "NaN"),
    ]
    text = {"name": "input", "shape": [2], "datatype": "BYTES",
            "parameters": {"binary_data_size": 9}}
    cases += [
        (_binary_request({"inputs": [text]}, struct.pack("<I", 1) + b"a" + struct.pack("<I", 9)),
         "/news/truncated"),
        (_binary_request({"inputs": [{**text, "parameters": {"binary_data_size": 10}}]},
                         struct.pack("<I", 1) + b"\xff" + struct.pack("<I", 1) + b"b"),
         "/news/UTF-8"),
        (_binary_request({"inputs": [{**text, "parameters": {"binary_data_size": 12}}]},
                         struct.pack("<I", 1) + b"a" + struct.pack("<I", 1) + b"bcc"),
         "/news/trailing"),
    ]
    for (content, headers), fragment in cases:
        model = "digits"
        if fragment.startswith("/news/"):
            model, fragment = "news", fragment.removeprefix("/news/")
        r = http.post(f"/v2/models/{model}/infer", content=content, headers=headers)
        assert r.status_code == 400, (fragment, r.text)
        assert fragment in r.json()["error"], (fragment, r.text)


def test_json_response_body_shape(http, host, digits_data):
    """A JSON-only response (raw HTTP): flat row-major data, no binary header."""
    raw = digits_data[0][:2]
    r = http.post("/v2/models/digits/infer",
                  content=orjson.dumps(_infer_body(raw.tolist(), shape=(2, 8, 8))))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in r.headers
    doc = r.json()
    assert isinstance(doc["id"], str) and doc["id"]  # no request id: the data plane names it
    assert [o["name"] for o in doc["outputs"]] == list(OUTPUTS)
    proba = doc["outputs"][0]
    assert proba["shape"] == [2, 10] and len(proba["data"]) == 20
    np.testing.assert_allclose(np.array(proba["data"]).reshape(2, 10),
                               host.bundle.predict_proba(raw), atol=TOL)


# --------------------------------------------------------------------------- model failures

# The data plane is real (served on a free port); only the models are stand-ins, to make them
# fail in each way a real model can.


class FakeHost:
    """A model answering [0.25, 0.75] per row, or failing as told. ``switch`` (set by
    ``_switching``) runs once when a request reaches it: the endpoint moved to a new version
    while the request was on its way."""

    signature = InputSignature(kind="image", shape=(2, 2, 1))
    label_names = ["a", "b"]
    model_version = 7
    model_name = "fake-model"

    def __init__(self, behaviour: Any = None, loaded: bool = True) -> None:
        self.behaviour, self._loaded, self.calls = behaviour, loaded, 0
        self.switch: Any = None

    @property
    def loaded(self) -> bool:
        if self.switch is not None:
            self.switch, switch = None, self.switch
            switch()
        return self._loaded

    async def predict_raw(self, raw: Any, *, announced: bool = False) -> np.ndarray:
        self.calls += 1
        if isinstance(self.behaviour, BaseException):
            raise self.behaviour
        if self.behaviour == "bad-shape":
            return np.zeros((1, 5), dtype=np.float32)
        return np.tile(np.array([[0.25, 0.75]], dtype=np.float32), (len(raw), 1))

    async def close(self) -> None:
        pass


_BODY = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}


@contextmanager
def _served(endpoints: Any) -> Iterator[httpx.Client]:
    """The real data plane serving ``endpoints`` on a free port; yields an httpx client."""
    with serve_asgi(create_data_plane(endpoints), "oip-fake-models") as url, \
            httpx.Client(base_url=url, timeout=30) as client:
        yield client


def _infer(client: httpx.Client, name: str, body: Any = _BODY, headers=None) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(f"/v2/models/{name}/infer", content=content, headers=headers or {})


def test_model_failures_map_to_status_codes(caplog):
    cases = {"invalid": (InvalidInput("bad pixels"), 400, "bad pixels"),
             "full": (QueueFull("queue is full"), 503, "queue is full"),
             "boom": (RuntimeError("boom"), 500, "model failed: RuntimeError: boom"),
             "shape": ("bad-shape", 500, "model failed: it returned shape [1, 5]")}
    hosts = {name: FakeHost(behaviour) for name, (behaviour, _, _) in cases.items()}
    with _served({**hosts, "m": FakeHost()}) as client:
        for name, (_, status, fragment) in cases.items():
            r = _infer(client, name)
            assert r.status_code == status and fragment in r.json()["error"], r.text
            if status == 503:
                assert r.headers["retry-after"] == "1"
        assert "boom" in caplog.text
        r = _infer(client, "m")
    doc = r.json()
    assert r.status_code == 200 and doc["model_name"] == "m" and doc["model_version"] == "7"
    assert doc["outputs"][1] == {"name": "label", "datatype": "BYTES", "shape": [1],
                                 "data": ["b"]}


def test_not_ready():
    host = FakeHost(loaded=False)
    with _served({"m": host}) as client:
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/health/live").status_code == 200
        assert client.get("/v2/models/m/ready").status_code == 503
        r = _infer(client, "m")
    assert r.status_code == 503 and host.calls == 0, r.text


def _switching(old: FakeHost, new: FakeHost) -> Any:
    """Endpoint ``m`` served by ``old``; a request reaching ``old`` finds ``new`` in its place."""
    table = StaticEndpoints({"m": old})
    successor = StaticEndpoints({"m": new}).live["m"]
    old.switch = lambda: table.live.__setitem__("m", successor)
    return table


def test_version_switch_retries_once_on_the_current_host():
    old, new = FakeHost(BatcherClosed("endpoint is switching")), FakeHost()
    with _served(_switching(old, new)) as client:
        r = _infer(client, "m")
    assert r.status_code == 200 and (old.calls, new.calls) == (1, 1), r.text
    unloaded, new = FakeHost(loaded=False), FakeHost()
    with _served(_switching(unloaded, new)) as client:
        r = _infer(client, "m")
    assert r.status_code == 200 and (unloaded.calls, new.calls) == (0, 1), r.text
    first, second = FakeHost(BatcherClosed("closed")), FakeHost(BatcherClosed("closed too"))
    with _served(_switching(first, second)) as client:
        r = _infer(client, "m")
    assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    assert (first.calls, second.calls) == (1, 1)


def test_gzip_bomb_refused():
    body = gzip.compress(b" " * (65 * 1024 * 1024))
    with _served({"m": FakeHost()}) as client:
        r = _infer(client, "m", body, headers={"content-encoding": "gzip"})
    assert r.status_code == 413, r.text


# --------------------------------------------------------------------------- fuzz

_json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | \
    st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(_json_leaf, lambda kids: st.lists(kids, max_size=5)
                     | st.dictionaries(st.text(max_size=8), kids, max_size=5), max_leaves=20)
def _mostly(good, bad):
    """``good`` nine times in ten, else ``bad``."""
    return st.integers(0, 9).flatmap(lambda i: bad if i == 9 else good)


_DATATYPES = ["FP32", "FP16", "FP64", "UINT8", "INT64", "BOOL", "BYTES"]
_ROW_SHAPES = [(), (1,), (3,), (64,), (8, 8), (8, 8, 1), (2, 2)]


@st.composite
def _tensor(draw) -> tuple[dict, bytes]:
    """One input: mostly self-consistent (shape vs data), sometimes subtly or wildly off."""
    datatype = draw(_mostly(st.sampled_from(_DATATYPES), st.sampled_from(["fp32", "INT128", ""])))
    rows = draw(_mostly(st.integers(1, 3), st.just(0)))
    shape = [rows, *draw(st.sampled_from(_ROW_SHAPES))]
    count = math.prod(shape)
    kind = draw(_mostly(st.sampled_from(["numbers", "strings", "bools"]), st.just("json")))
    if kind == "numbers":
        values = draw(st.lists(st.floats(-1e6, 1e6) | st.integers(-300, 300) |
                               st.sampled_from([1e39, -1e300]), min_size=count, max_size=count))
    elif kind == "strings":
        values = draw(st.lists(st.text(max_size=6) | st.sampled_from(["", "1.5", "red", "inf"]),
                               min_size=count, max_size=count))
    elif kind == "bools":
        values = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    else:
        values = draw(_json)
    if draw(st.integers(0, 9)) == 0:
        shape = draw(st.lists(st.integers(-2, 70) | st.sampled_from([2**40, 2**64]),
                              max_size=4) | _json)
    elif draw(st.integers(0, 9)) == 0 and isinstance(values, list):
        values = values[:-1] if values else [0]
    name = draw(_mostly(st.sampled_from(["input", "input", "x", "size", "colour", "count"]),
                        _json))
    tensor: dict = {"name": name, "shape": shape, "datatype": datatype}
    payload = b""
    if draw(st.booleans()) and isinstance(values, list):  # binary
        try:
            if datatype == "BYTES":
                payload = b"".join(struct.pack("<I", len(e)) + e for e in
                                   (str(v).encode() for v in values))
            else:
                from tritonclient.utils import triton_to_np_dtype

                with np.errstate(all="ignore"):
                    payload = np.asarray(values, dtype=triton_to_np_dtype(datatype)).tobytes()
        except Exception:
            payload = draw(st.binary(max_size=64))
        cut = draw(st.sampled_from([0, 0, 0, -1, 1]))
        if cut < 0:
            payload = payload[:-1]
        elif cut > 0:
            payload += b"\x00"
        size = draw(_mostly(st.sampled_from([len(payload)] * 4 + [len(payload) + 4, -1]), _json))
        tensor["parameters"] = {"binary_data_size": size}
    else:
        tensor["data"] = values
    return tensor, payload


_output = st.fixed_dictionaries({"name": _mostly(st.sampled_from([*OUTPUTS, "x"]), _json)},
                                optional={"parameters": st.fixed_dictionaries({}, optional={
                                    "binary_data": _mostly(st.booleans(), _json),
                                    "classification": _mostly(st.integers(-1, 12), _json)})})


@st.composite
def _request(draw) -> tuple[bytes, dict]:
    """A whole request: JSON header (+ binary section and its length header)."""
    if draw(st.integers(0, 9)) == 0:
        return json.dumps(draw(_json)).encode(), {}
    tensors = draw(_mostly(st.lists(_tensor(), min_size=1, max_size=3), st.just([])))
    doc: dict = {"inputs": [t for t, _ in tensors]}
    doc.update(draw(st.fixed_dictionaries({}, optional={
        "id": _mostly(st.text(max_size=5), _json),
        "outputs": _mostly(st.lists(_output, max_size=4), _json),
        "parameters": _mostly(st.fixed_dictionaries({}, optional={
            "binary_data_output": _mostly(st.booleans(), _json)}), _json)})))
    head = json.dumps(doc).encode()  # (orjson refuses ints past 64 bits: json sends them)
    binary = b"".join(p for _, p in tensors)
    if not binary and draw(st.booleans()):
        return head, {}
    n = draw(st.sampled_from([len(head)] * 6 + [len(head) - 1, len(head) + 1, 0, -1]))
    return head + binary, {"inference-header-content-length": str(n)}


@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
@given(model=st.sampled_from(["digits", "news", "table"]), request=_request())
def test_random_requests_never_5xx(http, model, request):
    content, headers = request
    r = http.post(f"/v2/models/{model}/infer", content=content, headers=headers)
    assert r.status_code in (200, 400), (content[:2000], r.text)
    if r.status_code == 400:
        assert isinstance(r.json()["error"], str)
    else:
        assert r.json() if "inference-header-content-length" not in r.headers else True


_IMAGE_SHAPES = [(8, 8, 1), (64,), (8, 8), (8, 8, 2), (63,), (1, 64), (8, 8, 1, 1)]


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(rows=st.integers(1, 4), row_shape=st.sampled_from(_IMAGE_SHAPES),
       datatype=st.sampled_from(["FP32", "FP64", "FP16", "UINT8", "INT16", "BOOL"]),
       binary=st.booleans(), special=st.sampled_from([None, np.nan, np.inf, 1e6]),
       seed=st.integers(0, 2**16))
def test_random_image_tensors(triton, host, rows, row_shape, datatype, binary, special, seed):
    """Near-valid image tensors: 200 with the runtime's answer when acceptable, else a 400."""
    from tritonclient.utils import triton_to_np_dtype

    dtype = triton_to_np_dtype(datatype)
    x = np.random.default_rng(seed).uniform(0, 16, (rows, *row_shape))
    if special is not None and np.dtype(dtype).kind == "f":
        x.flat[seed % x.size] = special
    with np.errstate(over="ignore"):  # 1e6 as FP16: inf, refused
        x = x.astype(dtype)
    inp = tritonhttp.InferInput("input", list(x.shape), datatype)
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = [tritonhttp.InferRequestedOutput(n, binary_data=binary) for n in OUTPUTS]
    as_float = x.astype(np.float32)
    acceptable = row_shape in [(8, 8, 1), (64,), (8, 8)] and np.isfinite(as_float).all()
    try:
        result = triton.infer("digits", [inp], outputs=outputs)
    except tritonhttp.InferenceServerException as exc:
        assert not acceptable and exc.status() == "400", exc
        return
    assert acceptable
    _check(result, host, as_float.reshape(rows, 8, 8, 1))


def test_head_and_trailing_slash(http):
    assert http.head("/v2/health/live").status_code == 200
    assert http.get("/v2/").json()["name"] == "loopml"
    assert http.get("/v2/models/digits/").json()["name"] == "digits"
