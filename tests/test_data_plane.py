"""The real-time data plane (serving/app.py + serving/host.py) against real clients.

A tiny digits CNN is trained in-process once per module, saved as a bundle and served by
uvicorn on a free port; httpx and an unmodified boto3 ``sagemaker-runtime`` client call it.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("keras")

import httpx  # noqa: E402

from loopml.serving.app import MAX_BODY_BYTES, create_data_plane  # noqa: E402
from loopml.serving.host import ModelHost  # noqa: E402
from tests.asgi_server import serve_asgi  # noqa: E402

pytest_plugins = ("tests.serving_support",)  # digits_data, digit_bundles: small trained CNNs

N_CONCURRENT = 64


@pytest.fixture(scope="module")
def bundle_dir(digit_bundles) -> Path:
    return digit_bundles[0]  # a digits CNN trained one epoch


@pytest.fixture(scope="module")
def host(bundle_dir) -> ModelHost:
    # a longer delay than the default makes coalescing deterministic on a shared 2-core box
    return ModelHost.load(bundle_dir, max_batch_size=32, max_delay_ms=10.0, name="digits")


@pytest.fixture(scope="module")
def server_url(host) -> Iterator[str]:
    with serve_asgi(create_data_plane({"digits": host}), "loopml-data-plane") as url:
        yield url


@pytest.fixture(scope="module")
def runtime_client(server_url):
    import boto3
    from botocore.config import Config

    return boto3.client("sagemaker-runtime", endpoint_url=server_url, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _check_predictions(doc: dict, host: ModelHost, raw: np.ndarray) -> None:
    expected = host.bundle.predict(raw)
    got = doc["predictions"]
    assert [p["label"] for p in got] == [p["label"] for p in expected]
    for g, e in zip(got, expected):
        assert g["confidence"] == pytest.approx(e["confidence"], abs=1e-5)
        assert set(g["probabilities"]) == set(host.label_names)
        for name, p in e["probabilities"].items():
            assert g["probabilities"][name] == pytest.approx(p, abs=1e-5)


# --------------------------------------------------------------------------- happy paths


def test_ping_and_json_invocation(server_url, host, digits_data):
    raw = digits_data[0][:5]
    with httpx.Client(base_url=server_url) as client:
        assert client.get("/ping").status_code == 200
        r = client.post("/endpoints/digits/invocations", content=orjson.dumps(raw.tolist()),
                        headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-amzn-invoked-production-variant"] == "AllTraffic"
    assert r.headers["x-amzn-requestid"]
    _check_predictions(r.json(), host, raw)


def test_boto3_sagemaker_runtime_unmodified(runtime_client, host, digits_data):
    raw = digits_data[0][10:13]
    r = runtime_client.invoke_endpoint(EndpointName="digits", ContentType="application/json",
                                       Body=orjson.dumps({"instances": raw.tolist()}))
    assert r["ContentType"] == "application/json"
    assert r["InvokedProductionVariant"] == "AllTraffic"
    _check_predictions(orjson.loads(r["Body"].read()), host, raw)

    r = runtime_client.invoke_endpoint(EndpointName="digits", ContentType="application/x-npy",
                                       Body=_npy(raw.reshape(3, -1)))
    _check_predictions(orjson.loads(r["Body"].read()), host, raw)


def test_boto3_raises_modelled_errors(runtime_client):
    errors = runtime_client.exceptions
    with pytest.raises(errors.ValidationError) as info:
        runtime_client.invoke_endpoint(EndpointName="digits", ContentType="application/json",
                                       Body=b"{not json")
    assert "malformed JSON" in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(errors.ValidationError) as info:
        runtime_client.invoke_endpoint(EndpointName="nope", ContentType="application/json",
                                       Body=b"[]")
    assert "Endpoint nope not found" in info.value.response["Error"]["Message"]
    with pytest.raises(errors.ValidationError):
        runtime_client.invoke_endpoint(EndpointName="digits", ContentType="application/xml",
                                       Body=b"<x/>")


def test_concurrent_requests_are_batched(server_url, host, digits_data):
    images = digits_data[0]
    before = host.batcher.stats()

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
            return await asyncio.gather(*[
                client.post("/endpoints/digits/invocations",
                            content=orjson.dumps(images[i:i + 1].tolist()),
                            headers={"content-type": "application/json"})
                for i in range(N_CONCURRENT)])

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * N_CONCURRENT
    expected = host.bundle.predict(images[:N_CONCURRENT])
    assert [r.json()["predictions"][0]["label"] for r in responses] == \
        [e["label"] for e in expected]
    after = host.batcher.stats()
    assert after["requests"] - before["requests"] == N_CONCURRENT
    assert after["failed_requests"] == before["failed_requests"]
    new_batches = after["batches"] - before["batches"]
    assert new_batches < N_CONCURRENT  # coalesced
    assert max(after["batch_rows_histogram"]) > 1


# --------------------------------------------------------------------------- refusals


def _bad_bodies() -> list[tuple[str, str, bytes]]:
    nan = np.zeros((1, 8, 8), dtype=np.float32)
    nan[0, 0, 0] = np.nan
    return [
        ("malformed json", "application/json", b'{"instances": [[1, 2'),
        ("json NaN literal", "application/json", b"[[NaN]]"),
        ("npy NaN", "application/x-npy", _npy(nan)),
        ("empty list", "application/json", b"[]"),
        ("empty instances", "application/json", b'{"instances": []}'),
        ("empty body", "application/json", b""),
        ("wrong shape", "application/json", b"[[1, 2, 3]]"),
        ("single image unwrapped", "application/json", orjson.dumps(np.zeros((8, 8)).tolist())),
        ("ragged", "application/json", b"[[1, 2], [3]]"),
        ("strings", "application/json", b'[["a", "b"]]'),
        ("null pixels", "application/json", b"[[null, 1]]"),
        ("not a list", "application/json", b'{"instances": 3}'),
        ("npy garbage", "application/x-npy", b"\x93NUMPYgarbage"),
        ("npy pickle", "application/x-npy", _npy(np.array([{"a": 1}], dtype=object))),
        ("csv ragged", "text/csv", b"1,2,3\n4,5\n"),
        ("text/plain for image", "text/plain", b"hello"),
        ("unsupported type", "application/xml", b"<x/>"),
        ("bad utf-8", "application/json", b"\xff\xfe[1]"),
        ("deep nesting", "application/json", b"[" * 10_000 + b"]" * 10_000),
    ]


@pytest.mark.parametrize("what,content_type,body", _bad_bodies(), ids=lambda v: v
                         if isinstance(v, str) and len(v) < 40 and "/" not in v else "")
def test_bad_bodies_are_4xx_json(server_url, what, content_type, body):
    r = httpx.post(f"{server_url}/endpoints/digits/invocations", content=body,
                   headers={"content-type": content_type})
    assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
    assert r.headers["x-amzn-errortype"] == "ValidationError"
    assert r.headers["content-type"] == "application/json"
    message = r.json()["message"]
    assert message and "Traceback" not in message


def test_oversized_body_is_413(server_url):
    url = f"{server_url}/endpoints/digits/invocations"
    r = httpx.post(url, content=b"[" + b" " * MAX_BODY_BYTES + b"]",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.headers["x-amzn-errortype"] == "ValidationError"

    def chunks():  # no Content-Length (chunked): counted while reading
        yield b"["
        for _ in range(7):
            yield b" " * 1_000_000
        yield b"]"

    r = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["message"]


def test_unknown_routes_and_methods(server_url):
    with httpx.Client(base_url=server_url) as client:
        r = client.post("/endpoints/other/invocations", content=b"[]")
        assert r.status_code == 404 and r.headers["x-amzn-errortype"] == "ValidationError"
        assert client.get("/nothing").status_code == 404
        assert client.get("/endpoints/digits/invocations").status_code == 405


def test_bearer_token(bundle_dir, digits_data):
    # in-process ASGI: the host's batcher binds to this test's event loop
    host = ModelHost.load(bundle_dir, max_batch_size=8, name="digits")
    app = create_data_plane({"digits": host}, token="s3cret")
    body = orjson.dumps(digits_data[0][:2].tolist())

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dp") as client:
            r = await client.post("/endpoints/digits/invocations", content=body)
            assert r.status_code == 401 and r.json()["message"]
            r = await client.post("/endpoints/digits/invocations", content=body,
                                  headers={"authorization": "Bearer wrong"})
            assert r.status_code == 401
            r = await client.post("/endpoints/nope/invocations", content=body)
            assert r.status_code == 401  # no endpoint discovery without the token
            r = await client.post("/endpoints/digits/invocations", content=body,
                                  headers={"authorization": "Bearer s3cret"})
            assert r.status_code == 200 and len(r.json()["predictions"]) == 2
            assert (await client.get("/ping")).status_code == 200
        await host.close()

    asyncio.run(run())
    assert not host.loaded


def test_model_failure_is_424_and_queue_full_503(bundle_dir, digits_data):
    from loopml.serving.batcher import QueueFull

    host = ModelHost.load(bundle_dir, max_batch_size=8, name="digits", warmup=False)
    app = create_data_plane({"digits": host})
    body = orjson.dumps(digits_data[0][:1].tolist())
    real_predict = host.batcher._predict

    async def run() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dp") as client:
            def broken(x):
                raise RuntimeError("secret internals")
            host.batcher._predict = broken
            r = await client.post("/endpoints/digits/invocations", content=body)
            assert r.status_code == 424 and r.headers["x-amzn-errortype"] == "ModelError"
            assert "secret internals" not in r.text and "Traceback" not in r.text
            host.batcher._predict = real_predict

            async def full(_x, **_kw):
                raise QueueFull("queue is full")
            original_submit = host.batcher.submit
            host.batcher.submit = full
            r = await client.post("/endpoints/digits/invocations", content=body)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert r.headers["x-amzn-errortype"] == "ServiceUnavailable"
            host.batcher.submit = original_submit
            r = await client.post("/endpoints/digits/invocations", content=body)
            assert r.status_code == 200
        await host.close()

    asyncio.run(run())


def test_oip_inferences_are_counted_other_v2_requests_are_not(bundle_dir, digits_data):
    """Every OIP inference (answered, refused, trailing slash or not) counts in /metrics under
    its endpoint, like an invocation; metadata and wrong-method requests do not."""
    host = ModelHost.load(bundle_dir, max_batch_size=8, name="digits")
    app = create_data_plane({"digits": host})
    images = digits_data[0][:2].astype(np.float32)
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(images.shape),
                       "data": images.ravel().tolist()}]}

    async def run() -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://dp") as client:
            for path in ("/v2/models/digits/infer", "/v2/models/digits/versions/1/infer/"):
                r = await client.post(path, json=doc)
                assert r.status_code == 200 and r.json()["id"], r.text
            r = await client.post("/v2/models/digits/infer", json={"inputs": []})
            assert r.status_code == 400
            assert (await client.post("/v2/models/nope/infer", json=doc)).status_code == 404
            assert (await client.get("/v2/models/digits")).status_code == 200
            assert (await client.post("/v2/models/digits/ready")).status_code == 405
            text = (await client.get("/metrics")).text
        await host.close()
        return text

    counts = {}
    for line in asyncio.run(run()).splitlines():
        if line.startswith("loopml_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = (labels["endpoint"], labels["variant"], labels["code"])
            counts[key] = float(line.rsplit(" ", 1)[1])
    assert counts == {("digits", "AllTraffic", "200"): 2, ("digits", "AllTraffic", "400"): 1,
                      ("nope", "-", "404"): 1}, counts
