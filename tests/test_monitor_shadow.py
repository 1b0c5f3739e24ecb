"""A monitor on an endpoint with a shadow variant compares the shadow's answers with production's
on the same requests (joined by inference id), side by side with their accuracies when labels exist."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from loopml.core.settings import Settings
from loopml.platform import Platform
from tests.serving_support import digit_bundles, digits_data, register  # noqa: F401 - session fixtures


@pytest.fixture
def plat(settings: Settings):
    p = Platform(settings)
    yield p
    p.close()


def test_shadow_variant_is_compared_side_by_side_with_production(plat: Platform, digit_bundles, digits_data) -> None:
    from loopml.models.bundle import load_bundle
    from loopml.monitoring import run as monitor_run
    from loopml.monitoring import labels, monitors
    from loopml.monitoring.baseline_job import load_baseline
    from loopml.monitoring.profile import build_profile
    from loopml.serving.capture import CaptureWriter
    from loopml.serving.codecs import encode_predictions
    from loopml.serving.spec import normalise_spec, resolve_spec

    images, target = digits_data
    production = register(plat, "digits", digit_bundles[1])  # trained 4 epochs
    shadow = register(plat, "digits", digit_bundles[0])      # trained 1 epoch: worse
    prod_bundle = load_bundle(digit_bundles[1], runtime="onnx")
    shadow_bundle = load_bundle(digit_bundles[0], runtime="onnx")
    manifest = json.loads((digit_bundles[1] / "loopml.json").read_text())
    train = images[:800, ..., None]
    profile = build_profile(kind="image", raw=train, proba=prod_bundle.predict_proba(train),
                            class_names=prod_bundle.label_names, schema=manifest)
    plat.artifacts.put_bytes(f"{production['artifact_prefix']}/baseline/profile.json", json.dumps(profile).encode())
    assert load_baseline(plat, production)[0]["rows"] == 800

    spec = normalise_spec({"model": f"digits:{production['version']}", "shadow": f"digits:{shadow['version']}",
                           "capture_percent": 100})
    plat.endpoints.create("mnist", spec, resolve_spec(spec, lambda m, v, a: plat.models.get(m, v, a)))
    monitors.create_monitor(plat, "m", "mnist", min_samples=100)

    held = images[1000:1300]
    truth = [str(t) for t in target[1000:1300]]
    start = time.time() - 300
    with CaptureWriter(plat.artifacts, plat.settings.capture_prefix) as writer:
        for variant, bundle, is_shadow in (("primary", prod_bundle, False), ("shadow", shadow_bundle, True)):
            proba = bundle.predict_proba(held[..., None])
            for i, image in enumerate(held):
                writer.record("mnist", variant, input_body=json.dumps({"instances": [image.tolist()]}).encode(),
                              input_content_type="application/json",
                              output_body=encode_predictions(proba[i:i + 1], bundle.label_names),
                              inference_id=f"req-{i}", model="digits",
                              model_version=shadow["version"] if is_shadow else production["version"],
                              event_time=start + i * 0.05, shadow=is_shadow)
    labels.upload_labels(plat, "m", rows=[{"inference_id": f"req-{i}", "label": t} for i, t in enumerate(truth)])

    run, job = plat.monitors.create_run("m")
    result = monitor_run.run(plat, {"id": None, "spec": job["spec"]})
    assert result["status"] == "succeeded", result
    side = result["summary"]["shadow"]
    assert side["shadow_variant"] == "shadow" and side["model"] == {"name": "digits", "version": shadow["version"]}
    assert side["n"] == 300 and side["labelled"] == 300
    # the numbers are the two models' own: recompute them from the bundles
    prod_pred = np.asarray(prod_bundle.label_names)[prod_bundle.predict_proba(held[..., None]).argmax(1)]
    shadow_pred = np.asarray(shadow_bundle.label_names)[shadow_bundle.predict_proba(held[..., None]).argmax(1)]
    assert side["agreement"] == pytest.approx(float(np.mean(prod_pred == shadow_pred)), abs=1e-3)
    assert side["accuracy"]["production"] == pytest.approx(float(np.mean(prod_pred == np.asarray(truth))), abs=1e-3)
    assert side["accuracy"]["shadow"] == pytest.approx(float(np.mean(shadow_pred == np.asarray(truth))), abs=1e-3)
    assert side["accuracy"]["production"] > side["accuracy"]["shadow"]
    report = json.loads(monitors.get_report(plat, "m", result["id"], "json"))
    assert report["shadow"]["shadow_variant"] == "shadow"
    assert "shadow" in monitors.get_report(plat, "m", result["id"], "html").decode().lower()


def test_oip_requests_are_captured_with_their_ids_shadowed_and_joined_to_labels(
        tmp_path, digit_bundles, digits_data) -> None:
    """Open Inference Protocol traffic goes through the same invocation core as SageMaker's: a
    real serving process (shadow, 100 % capture) answers OIP requests with their ``id`` (or a
    generated one), copies them to the shadow, captures them with that id, and a monitor run
    joins uploaded labels to them."""
    import httpx

    from loopml.core.timeutil import utcnow
    from loopml.models.bundle import load_bundle
    from loopml.monitoring import run as monitor_run
    from loopml.monitoring import labels, monitors
    from loopml.monitoring.capture_reader import read_window
    from loopml.monitoring.profile import build_profile
    from loopml.monitoring.capture_reader import read_captured
    from tests.process_support import wait_for
    from tests.test_endpoints import control_plane, create, wait_ready

    images, target = digits_data
    held, truth = images[1000:1080], [str(t) for t in target[1000:1080]]
    with control_plane(tmp_path) as (plat, loop):
        production = register(plat, "digits", digit_bundles[1])
        shadow = register(plat, "digits", digit_bundles[0])
        bundle = load_bundle(digit_bundles[1], runtime="onnx")
        manifest = json.loads((digit_bundles[1] / "loopml.json").read_text())
        train = images[:800, ..., None]
        profile = build_profile(kind="image", raw=train, proba=bundle.predict_proba(train),
                                class_names=bundle.label_names, schema=manifest)
        plat.artifacts.put_bytes(f"{production['artifact_prefix']}/baseline/profile.json",
                                 json.dumps(profile).encode())
        create(plat, loop, "mnist", model=f"digits:{production['version']}",
               shadow=f"digits:{shadow['version']}", capture_percent=100)
        wait_ready(plat, "mnist")
        monitors.create_monitor(plat, "m", "mnist", min_samples=50)

        def infer(image: np.ndarray, **extra) -> dict:
            doc = {**extra, "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8, 8],
                                        "data": image.ravel().tolist()}]}
            r = client.post(f"{loop.endpoints.url}/v2/models/mnist/infer", json=doc)
            assert r.status_code == 200, r.text
            return r.json()

        with httpx.Client(timeout=30) as client:
            for i, image in enumerate(held):
                assert infer(image, id=f"oip-{i}")["id"] == f"oip-{i}"  # the request's own id
            generated = {infer(held[0])["id"], infer(held[1])["id"]}  # none given: one is made
            assert len(generated) == 2 and all(generated), generated
            answered = len(held) + 2

            def shadowed() -> bool:  # every answered request was compared with the shadow
                text = client.get(f"{loop.endpoints.url}/metrics").text
                return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("loopml_shadow_comparisons_total{")) == answered
            wait_for(shadowed, 30, what="shadow comparisons of the OIP requests")
        loop.stop()  # graceful: capture flushed

        ids = {f"oip-{i}" for i in range(len(held))} | generated
        for variant in ("primary", "shadow"):
            records = list(read_captured(plat.artifacts, "capture", "mnist", variant))
            assert {r["eventMetadata"]["inferenceId"] for r in records} == ids, variant
        # a run reads up to now − CAPTURE_SETTLE_S: wait until the newest record is older
        window = read_window(plat.artifacts, plat.settings.capture_prefix, "mnist", None,
                             since=None, until=None, columns=("inference_times",))
        settle = (window.last_time - utcnow()).total_seconds() + monitor_run.CAPTURE_SETTLE_S + 0.5
        if settle > 0:
            time.sleep(settle)

        labels.upload_labels(plat, "m", rows=[{"inference_id": f"oip-{i}", "label": t}
                                               for i, t in enumerate(truth)])
        run, job = plat.monitors.create_run("m")
        result = monitor_run.run(plat, {"id": None, "spec": job["spec"]})
        assert result["status"] == "succeeded", result
        summary = result["summary"]
        assert summary["records"] == answered and summary["undecodable"] == 0, summary
        assert summary["quality"]["n"] == len(held), summary["quality"]  # labels joined by id
        predicted = np.asarray(bundle.label_names)[bundle.predict_proba(held[..., None]).argmax(1)]
        assert summary["quality"]["accuracy"] == pytest.approx(
            float(np.mean(predicted == np.asarray(truth))), abs=1e-3)
        side = summary["shadow"]
        assert side["n"] == answered and side["labelled"] == len(held), side
