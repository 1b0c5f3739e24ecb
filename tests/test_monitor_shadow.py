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
    from loopml.monitoring import service
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
    service.create_monitor(plat, "m", "mnist", min_samples=100)

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
    service.upload_labels(plat, "m", rows=[{"inference_id": f"req-{i}", "label": t} for i, t in enumerate(truth)])

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
    report = json.loads(service.get_report(plat, "m", result["id"], "json"))
    assert report["shadow"]["shadow_variant"] == "shadow"
    assert "shadow" in service.get_report(plat, "m", result["id"], "html").decode().lower()
