"""Real-time endpoints end to end: control loop → serving process → real clients.

A real ControlLoop (as `loopml server` runs it) supervises a real serving process on
127.0.0.1:<free port>; model versions are real (tiny digits CNNs, tests/serving_support.py);
clients are httpx, an unmodified boto3 ``sagemaker-runtime`` client and tritonclient.
"""

from __future__ import annotations

import io
import os
import signal
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import orjson
import pytest

pytest.importorskip("onnxruntime")

import httpx  # noqa: E402

from loopml.core.settings import Settings  # noqa: E402
from tests.process_support import drop_loopml_vars, wait_for  # noqa: E402
from tests.serving_support import Hammer, register  # noqa: E402
from tests.test_codecs import image_file  # noqa: E402 - one PNG/JPEG body builder

pytest_plugins = ("tests.serving_support",)



@contextmanager
def control_plane(tmp_path, **overrides) -> Iterator[tuple]:
    """(Platform, started ControlLoop) under ``tmp_path``, untouched by the caller's LOOPML_*."""
    from loopml.controlplane import ControlLoop
    from loopml.platform import Platform

    with pytest.MonkeyPatch.context() as mp:
        drop_loopml_vars(mp)
        mp.setenv("LOOPML_CONFIG", str(tmp_path / "no-such-loopml.toml"))
        settings = Settings(home=tmp_path / "home", port=0, serving_port=0, token=None,
                            reconcile_interval_s=0.2, **overrides)
        platform = Platform(settings)
        loop = ControlLoop(platform)
        loop.start()
        try:
            yield platform, loop
        finally:
            loop.stop()
            platform.close()


def create(platform, loop, name: str, **spec) -> dict:
    from loopml.serving.service import create_endpoint

    return create_endpoint(platform, name, spec, data_plane_url=loop.endpoints.url)


def wait_ready(platform, name: str, generation: int | None = None, timeout: float = 90) -> dict:
    def ready():
        rec = platform.endpoints.get(name)
        if rec["status"] == "Failed" and (generation is None or rec["generation"] == generation):
            raise AssertionError(f"endpoint {name} failed: {rec['message']}")
        ok = rec["ready"] and (generation is None or rec["served_generation"] >= generation)
        return rec if ok else None
    return wait_for(ready, timeout, what=f"endpoint {name} ready")


def images_body(images: np.ndarray) -> bytes:
    return orjson.dumps({"instances": images.tolist()})


@pytest.fixture(scope="module")
def served(tmp_path_factory, digit_bundles):
    """One control plane + serving process for the module, with digits v1 and v2 registered
    and endpoint ``digits`` on v2 (100 % capture)."""
    tmp = tmp_path_factory.mktemp("served")
    with control_plane(tmp) as (platform, loop):
        register(platform, "digits", digit_bundles[0])
        register(platform, "digits", digit_bundles[1])
        create(platform, loop, "digits", model="digits:2", capture_percent=100)
        wait_ready(platform, "digits")
        yield platform, loop


def test_invoke_json_npy_csv_and_boto3(served, digits_data):
    platform, loop = served
    images, target = digits_data
    url = f"{loop.endpoints.url}/endpoints/digits/invocations"
    r = httpx.post(url, content=images_body(images[:16]),
                   headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.headers["x-amzn-invoked-production-variant"] == "primary"
    preds = r.json()["predictions"]
    assert len(preds) == 16
    for p in preds:
        assert p["label"] in [str(i) for i in range(10)]
        assert 0 < p["confidence"] <= 1 and p["probabilities"][p["label"]] == p["confidence"]
    accuracy = np.mean([p["label"] == str(t) for p, t in zip(preds, target[:16])])
    assert accuracy >= 0.5  # v2 is a (small) trained model, not noise

    buf = io.BytesIO()
    np.save(buf, images[:4])
    r_npy = httpx.post(url, content=buf.getvalue(), headers={"content-type": "application/x-npy"})
    assert [p["label"] for p in r_npy.json()["predictions"]] == [p["label"] for p in preds[:4]]
    csv = "\n".join(",".join(str(v) for v in img.ravel()) for img in images[:2])
    r_csv = httpx.post(url, content=csv, headers={"content-type": "text/csv"})
    assert r_csv.status_code == 200, r_csv.text
    assert [p["label"] for p in r_csv.json()["predictions"]] == [p["label"] for p in preds[:2]]

    import boto3
    import botocore

    rt = boto3.client("sagemaker-runtime", endpoint_url=loop.endpoints.url, region_name="us-east-1",
                      aws_access_key_id="x", aws_secret_access_key="x")
    out = rt.invoke_endpoint(EndpointName="digits", ContentType="application/json",
                             Body=images_body(images[:3]), InferenceId="req-42")
    assert out["InvokedProductionVariant"] == "primary"
    assert [p["label"] for p in orjson.loads(out["Body"].read())["predictions"]] == \
        [p["label"] for p in preds[:3]]
    with pytest.raises(rt.exceptions.ValidationError):
        rt.invoke_endpoint(EndpointName="digits", ContentType="application/json", Body=b"{oops")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        rt.invoke_endpoint(EndpointName="nope", ContentType="application/json",
                           Body=images_body(images[:1]))
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_png_and_jpeg_bodies_are_fitted_to_the_model_signature(served, digits_data):
    platform, loop = served
    images, target = digits_data  # 8×8 greyscale digits, integer pixels 0–16
    url = f"{loop.endpoints.url}/endpoints/digits/invocations"
    as_json = httpx.post(url, content=images_body(images[:4]),
                         headers={"content-type": "application/json"}).json()["predictions"]
    for image, expected in zip(images[:4], as_json):
        r = httpx.post(url, content=image_file(image.astype(np.uint8)),
                       headers={"content-type": "image/png"})
        assert r.status_code == 200, r.text
        (pred,) = r.json()["predictions"]  # one image per body
        assert pred == expected  # the same pixels as the JSON body: the same answer

    # an RGB JPEG 4x the size: greyscaled and resized as the signature (8, 8, 1) says
    big = np.kron(images[0], np.ones((4, 4))).astype(np.uint8)
    r = httpx.post(url, content=image_file(np.dstack([big] * 3), "JPEG"),
                   headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["label"] in {str(i) for i in range(10)}

    # another aspect ratio would be distorted: 400 naming the expected shape
    r = httpx.post(url, content=image_file(np.zeros((8, 24), np.uint8)),
                   headers={"content-type": "image/png"})
    assert r.status_code == 400 and r.headers["x-amzn-errortype"] == "ValidationError"
    assert "8×8 greyscale images (input shape (8, 8, 1))" in r.json()["message"]

    import boto3

    rt = boto3.client("sagemaker-runtime", endpoint_url=loop.endpoints.url,
                      region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    png = image_file(images[1].astype(np.uint8))
    out = rt.invoke_endpoint(EndpointName="digits", ContentType="image/png", Body=png,
                             InferenceId="png-1")
    assert orjson.loads(out["Body"].read())["predictions"] == [as_json[1]]
    with pytest.raises(rt.exceptions.ValidationError, match="not a readable PNG image"):
        rt.invoke_endpoint(EndpointName="digits", ContentType="image/png", Body=b"GIF89a...")

    # captured as sent (monitors decode it again through the same codec)
    import base64

    from loopml.monitoring.capture_reader import read_captured

    def captured():
        return [r["captureData"]["endpointInput"] for r in read_captured(
            platform.artifacts, "capture", "digits", "primary")
            if r["eventMetadata"].get("inferenceId") == "png-1"]
    (record,) = wait_for(captured, 60, what="the captured PNG request")
    assert (record["observedContentType"], record["encoding"]) == ("image/png", "BASE64")
    assert base64.b64decode(record["data"]) == png


@pytest.mark.parametrize("body,ctype,status,needle", [
    (b"{not json", "application/json", 400, "JSON"),
    (b'{"instances": []}', "application/json", 400, ""),
    (b'{"instances": [[1, 2, 3]]}', "application/json", 400, "shape"),
    (b'{"instances": [[[NaN]]]}', "application/json", 400, ""),
    (b"hello", "application/x-weird", 415, "application/x-weird"),
])
def test_bad_input_is_4xx_and_the_server_keeps_serving(served, digits_data, body, ctype, status,
                                                       needle):
    platform, loop = served
    url = f"{loop.endpoints.url}/endpoints/digits/invocations"
    r = httpx.post(url, content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.headers["x-amzn-errortype"] == "ValidationError"
    assert needle.lower() in r.json()["message"].lower()
    ok = httpx.post(url, content=images_body(digits_data[0][:1]),
                    headers={"content-type": "application/json"})
    assert ok.status_code == 200


def test_oversized_body_is_413(served):
    platform, loop = served
    r = httpx.post(f"{loop.endpoints.url}/endpoints/digits/invocations",
                   content=b"[" + b"0," * 3_200_000 + b"0]",
                   headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["message"]


def test_health_metrics_and_capture(served, digits_data):
    platform, loop = served
    base = loop.endpoints.url
    for path in ("/ping", "/healthz", "/readyz", "/v2/health/ready"):
        assert httpx.get(base + path).status_code == 200, path
    before = httpx.get(base + "/metrics").text
    for _ in range(3):
        httpx.post(f"{base}/endpoints/digits/invocations", content=images_body(digits_data[0][:2]),
                   headers={"content-type": "application/json",
                            "X-Amzn-SageMaker-Inference-Id": "trace-7"})
    text = httpx.get(base + "/metrics").text
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(text)}
    ok = [s for s in families["loopml_requests"].samples
          if s.labels.get("endpoint") == "digits" and s.labels.get("code") == "200"]
    assert ok and ok[0].value >= 3
    assert "loopml_batch_size_rows_bucket" in text and "loopml_queue_depth_rows" in text
    assert before != text

    from loopml.monitoring.capture_reader import read_captured

    def captured():
        return [r for r in read_captured(platform.artifacts, "capture", "digits", "primary")
                if r["eventMetadata"].get("inferenceId") == "trace-7"]
    records = wait_for(lambda: len(captured()) >= 3 and captured(), 60, what="capture files")
    rec = records[0]
    assert rec["captureData"]["endpointInput"]["encoding"] == "JSON"
    assert orjson.loads(rec["captureData"]["endpointInput"]["data"])["instances"]
    assert orjson.loads(rec["captureData"]["endpointOutput"]["data"])["predictions"]
    meta = rec["eventMetadata"]
    assert meta["modelVersion"] == 2 and meta["model"] == "digits" and meta["latencyMs"] > 0


def test_tritonclient_open_inference_protocol(served, digits_data):
    import tritonclient.http as triton

    platform, loop = served
    images = digits_data[0][:5]
    client = triton.InferenceServerClient(loop.endpoints.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("digits")
    meta = client.get_model_metadata("digits")
    assert meta["name"] == "digits" and "2" in meta["versions"]
    inp = triton.InferInput("input", list(images.shape), "FP32")
    inp.set_data_from_numpy(images.astype(np.float32), binary_data=True)
    result = client.infer("digits", [inp], outputs=[
        triton.InferRequestedOutput("probabilities", binary_data=True),
        triton.InferRequestedOutput("label", binary_data=False)])
    proba = result.as_numpy("probabilities")
    assert proba.shape == (5, 10)
    r = httpx.post(f"{loop.endpoints.url}/endpoints/digits/invocations",
                   content=images_body(images), headers={"content-type": "application/json"})
    labels = [p["label"] for p in r.json()["predictions"]]
    assert [str(i) for i in proba.argmax(axis=1)] == labels
    assert [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label")] == labels

    # OIP traffic is counted and captured like invocations (binary request → BASE64)
    from loopml.monitoring.capture_reader import read_captured

    def oip_records():
        return [r for r in read_captured(platform.artifacts, "capture", "digits", "primary")
                if r["captureData"]["endpointInput"]["encoding"] == "BASE64"
                and r["captureData"]["endpointOutput"]["observedContentType"]
                == "application/octet-stream"]
    assert wait_for(oip_records, 60, what="captured OIP traffic")


def test_alias_move_switches_versions_without_failed_requests(tmp_path, digit_bundles,
                                                              digits_data):
    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[0])
        register(platform, "digits", digit_bundles[1])
        platform.models.set_alias("digits", "production", 1)
        rec = create(platform, loop, "digits", model="digits@production")
        rec = wait_ready(platform, "digits")
        assert rec["served"]["variants"][0]["version"] == 1
        url = f"{loop.endpoints.url}/endpoints/digits/invocations"
        with Hammer(url, images_body(digits_data[0][:1]), threads=4) as hammer:
            wait_for(lambda: len(hammer.codes) > 50, 30, what="traffic before the switch")
            platform.models.set_alias("digits", "production", 2)
            rec = wait_for(lambda: (r := platform.endpoints.get("digits"))["ready"]
                           and r["served"]["variants"][0]["version"] == 2 and r, 60,
                           what="the endpoint to follow the alias")
            n = len(hammer.codes)
            wait_for(lambda: len(hammer.codes) > n + 50, 30, what="traffic after the switch")
        assert "alias moved" in (rec["message"] or "") or rec["generation"] == 2
        assert hammer.errors == []
        assert set(hammer.codes) == {200}, sorted(set(hammer.codes))


def test_crashed_serving_process_is_restarted_and_gap_gets_503(tmp_path, digit_bundles,
                                                                digits_data):
    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[1])
        create(platform, loop, "digits", model="digits:1")
        rec = wait_ready(platform, "digits")
        pid = rec["served"]["pid"]
        url = f"{loop.endpoints.url}/endpoints/digits/invocations"
        with Hammer(url, images_body(digits_data[0][:1]), threads=2) as hammer:
            wait_for(lambda: len(hammer.codes) > 20, 30, what="traffic")
            os.kill(pid, signal.SIGKILL)
            rec = wait_for(lambda: (r := platform.endpoints.get("digits"))["ready"]
                           and r["served"]["pid"] != pid and r, 90, what="restart")
            n = len(hammer.codes)
            wait_for(lambda: len(hammer.codes) > n + 20, 30, what="traffic after restart")
        # requests in flight at the kill may see a reset connection; nothing hangs (60 s
        # client timeout), and the gap is answered 503 or queued until the new process is up
        assert all(c in (200, 503) for c in hammer.codes), sorted(set(hammer.codes))
        assert not [e for e in hammer.errors if "Timeout" in e], hammer.errors
        assert hammer.codes[-1] == 200
        r = httpx.post(url, content=images_body(digits_data[0][:1]),
                       headers={"content-type": "application/json"})
        assert r.status_code == 200


def test_variants_shadow_and_capture_count_across_graceful_stop(tmp_path, digit_bundles,
                                                                digits_data):
    images = digits_data[0]
    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[0])
        register(platform, "digits", digit_bundles[1])
        create(platform, loop, "digits", model="digits:1",
               variants=[{"name": "canary", "ref": "digits:2", "weight": 1.0}],
               shadow="digits:2", capture_percent=100)
        wait_ready(platform, "digits")
        url = f"{loop.endpoints.url}/endpoints/digits/invocations"
        seen = {}
        answered = 0
        with httpx.Client(timeout=60) as client:
            for i in range(40):
                r = client.post(url, content=images_body(images[i:i + 1]),
                                headers={"content-type": "application/json"})
                assert r.status_code == 200
                answered += 1
                v = r.headers["x-amzn-invoked-production-variant"]
                seen[v] = seen.get(v, 0) + 1
            for name in ("primary", "canary"):
                r = client.post(url, content=images_body(images[:1]),
                                headers={"content-type": "application/json",
                                         "X-Amzn-SageMaker-Target-Variant": name})
                assert r.headers["x-amzn-invoked-production-variant"] == name
                seen[name] += 1
                answered += 1
            r = client.post(url, content=images_body(images[:1]),
                            headers={"content-type": "application/json",
                                     "X-Amzn-SageMaker-Target-Variant": "nope"})
            assert r.status_code == 400 and "nope" in r.json()["message"]
            metrics = wait_for(lambda: (t := client.get(f"{loop.endpoints.url}/metrics").text)
                               .count("loopml_shadow_comparisons_total{") and t, 60,
                               what="shadow comparisons")
        assert set(seen) == {"primary", "canary"}, seen
        assert 'result="agree"' in metrics or 'result="disagree"' in metrics
        loop.stop()  # graceful: SIGTERM → drain → capture flushed

        from loopml.monitoring.capture_reader import read_captured

        store = platform.artifacts
        primary = list(read_captured(store, "capture", "digits", "primary"))
        canary = list(read_captured(store, "capture", "digits", "canary"))
        shadow = list(read_captured(store, "capture", "digits", "shadow"))
        assert len(primary) + len(canary) == answered
        assert len(primary) == seen["primary"] and len(canary) == seen["canary"]
        assert len(shadow) == answered  # every answered request was mirrored to the shadow
        assert all(r["eventMetadata"]["modelVersion"] == 2 for r in shadow)
        keys = store.list("capture/digits/primary")
        assert keys and all(k.endswith(".jsonl") and k.count("/") == 7 for k in keys), keys


def test_multi_model_endpoint_loads_target_model_on_first_use(tmp_path, digit_bundles,
                                                              digits_data):
    from loopml.models.bundle import load_bundle

    images = digits_data[0][:4]
    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[0])
        register(platform, "digits", digit_bundles[1])
        create(platform, loop, "many", model="digits:1", multi_model=True)
        wait_ready(platform, "many")
        url = f"{loop.endpoints.url}/endpoints/many/invocations"
        r = httpx.post(url, content=images_body(images),
                       headers={"content-type": "application/json",
                                "X-Amzn-SageMaker-Target-Model": "digits:2"}, timeout=60)
        assert r.status_code == 200, r.text
        v2 = load_bundle(digit_bundles[1], runtime="onnx")
        expected = v2.runtime.predict(v2.features.transform(images[..., np.newaxis]))
        got = np.array([[p["probabilities"][str(c)] for c in range(10)]
                        for p in r.json()["predictions"]])
        np.testing.assert_allclose(got, expected, atol=1e-5)
        r1 = httpx.post(url, content=images_body(images), headers={"content-type": "application/json"})
        assert r1.json() != r.json()  # without a target: the endpoint's own version 1
        r = httpx.post(url, content=images_body(images),
                       headers={"content-type": "application/json",
                                "X-Amzn-SageMaker-Target-Model": "digits:9"})
        assert r.status_code in (400, 404) and "9" in r.json()["message"]


def test_data_plane_token(tmp_path, digit_bundles, digits_data):
    with control_plane(tmp_path, serving_token="s3cret") as (platform, loop):
        register(platform, "digits", digit_bundles[1])
        create(platform, loop, "digits", model="digits:1")
        wait_ready(platform, "digits")
        url = f"{loop.endpoints.url}/endpoints/digits/invocations"
        body = images_body(digits_data[0][:1])
        r = httpx.post(url, content=body, headers={"content-type": "application/json"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = httpx.post(url, content=body, headers={"content-type": "application/json",
                                                   "authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = httpx.post(url, content=body, headers={"content-type": "application/json",
                                                   "authorization": "Bearer s3cret"})
        assert r.status_code == 200
        assert httpx.get(loop.endpoints.url + "/ping").status_code == 200  # health stays open


# -- fuzzing: nothing a client sends yields a 5xx ---------------------------------------------
import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402


def test_openapi_fuzz_never_5xx(served):
    """schemathesis generates requests from the data plane's own OpenAPI document."""
    platform, loop = served
    schema = schemathesis.openapi.from_url(f"{loop.endpoints.url}/openapi.json")
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
                  database=None)
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=loop.endpoints.url, timeout=30)
            assert response.status_code < 500, (case.method, case.path, response.text[:300])

        check()
        checked += 1
    assert checked >= 8  # every documented operation was exercised


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers(-2**63, 2**63 - 1)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=40)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=_json_values, ctype=st.sampled_from(["application/json", "text/csv",
                                                     "application/x-npy", "text/plain"]))
def test_payload_fuzz_never_5xx(served, payload, ctype):
    platform, loop = served
    body = orjson.dumps({"instances": payload}) if ctype == "application/json" else \
        str(payload).encode()
    r = httpx.post(f"{loop.endpoints.url}/endpoints/digits/invocations", content=body,
                   headers={"content-type": ctype}, timeout=30)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert r.json()["message"] and r.headers["x-amzn-errortype"]


def test_capture_counts_equal_answers_under_load_across_a_graceful_stop(tmp_path, digit_bundles,
                                                                        digits_data):
    from loopml.monitoring.capture_reader import read_captured

    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[1])
        create(platform, loop, "digits", model="digits:1", capture_percent=100)
        wait_ready(platform, "digits")
        url = f"{loop.endpoints.url}/endpoints/digits/invocations"
        with Hammer(url, images_body(digits_data[0][:2]), threads=8) as hammer:
            wait_for(lambda: len(hammer.codes) > 300, 60, what="load")
            loop.stop()  # SIGTERM while 8 clients keep sending: drain, answer, flush
        answered = sum(1 for c in hammer.codes if c == 200)
        captured = list(read_captured(platform.artifacts, "capture", "digits", "primary"))
        assert answered > 300
        assert len(captured) == answered, (len(captured), answered, set(hammer.codes))
        ids = {r["eventMetadata"]["eventId"] for r in captured}
        assert len(ids) == len(captured)  # no record written twice


def test_per_endpoint_api_keys(tmp_path, digit_bundles, digits_data):
    from loopml.serving.service import update_endpoint

    with control_plane(tmp_path) as (platform, loop):
        register(platform, "digits", digit_bundles[1])
        rec = create(platform, loop, "locked", model="digits:1", new_key=True)
        key = rec["api_key"]
        assert key.startswith("lml_") and key not in str(platform.endpoints.get("locked"))
        create(platform, loop, "open", model="digits:1")
        wait_ready(platform, "locked")
        wait_ready(platform, "open")
        base = loop.endpoints.url
        body = images_body(digits_data[0][:1])
        json_ct = {"content-type": "application/json"}
        assert httpx.post(f"{base}/endpoints/locked/invocations", content=body,
                          headers=json_ct).status_code == 401
        assert httpx.post(f"{base}/endpoints/locked/invocations", content=body,
                          headers={**json_ct, "authorization": "Bearer nope"}).status_code == 401
        ok = httpx.post(f"{base}/endpoints/locked/invocations", content=body,
                        headers={**json_ct, "authorization": f"Bearer {key}"})
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{base}/v2/models/locked").status_code == 401
        assert httpx.get(f"{base}/v2/models/locked",
                         headers={"authorization": f"Bearer {key}"}).status_code == 200
        # other endpoints stay open; revoking the keys opens this one again
        assert httpx.post(f"{base}/endpoints/open/invocations", content=body,
                          headers=json_ct).status_code == 200
        rec = update_endpoint(platform, "locked", {"clear_keys": True})
        wait_ready(platform, "locked", rec["generation"])
        assert httpx.post(f"{base}/endpoints/locked/invocations", content=body,
                          headers=json_ct).status_code == 200


def test_sdk_invoke_against_the_real_data_plane(served, digits_data, monkeypatch):
    from loopml.core.errors import InvalidInput, NotFound, UnsupportedFormat
    from loopml.sdk.client import Client
    from loopml.serving.service import get_endpoint

    platform, loop = served
    c = Client("http://127.0.0.1:1", token="")
    # the control plane's lookup (covered in test_endpoints_surface); the data plane is real
    monkeypatch.setattr(c, "endpoint", lambda name: get_endpoint(
        platform, "digits", data_plane_url=loop.endpoints.url) | {"name": name, "url": (
            f"{loop.endpoints.url}/endpoints/{name}/invocations")})
    out = c.invoke("digits", instances=digits_data[0][:2].tolist(), inference_id="sdk-1")
    assert len(out["predictions"]) == 2
    assert {p["label"] for p in out["predictions"]} <= {str(i) for i in range(10)}
    with pytest.raises(InvalidInput, match="malformed JSON"):
        c.invoke("digits", body=b"{oops", content_type="application/json")
    with pytest.raises(UnsupportedFormat, match="text/xml"):
        c.invoke("digits", body=b"<a/>", content_type="text/xml")
    with pytest.raises(NotFound, match="nope"):
        c.invoke("nope", instances=[[0]])
