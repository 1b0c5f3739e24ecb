"""The control-plane REST API in-process (TestClient): real Platform, SQLite and local artifacts."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from loopml.api.app import create_app
from tests.surface_support import assert_error, write_csv


@pytest.fixture
def api(settings, platform):
    """The app over the shared ``platform``; no control loop, so submitted jobs stay queued."""
    with TestClient(create_app(settings, platform=platform, start_loop=False)) as client:
        yield client


def write_npz(path: Path, seed: int = 0, rows: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    np.savez(path, x=rng.normal(size=(rows, 4)).astype(np.float32), y=np.arange(rows) % 3)
    return path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def png(value: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), color=value).save(buf, format="PNG")
    return buf.getvalue()


def add_model_version(platform, name: str = "tiny", version: int = 1) -> dict:
    """A registry entry written through the real repository (training is tested elsewhere)."""
    return platform.models.add_version(
        name, version, job_id=None, dataset="tab:1", kind="tabular", template="mlp", hparams={"epochs": 1},
        metrics={"test_accuracy": 0.5}, lineage={}, runtimes=["keras"], artifact_prefix=f"models/{name}/v{version}")


# ------------------------------------------------------------------ basics


def test_health_and_openapi(api):
    assert api.get("/health").json() == {"status": "ok", "version": __import__("loopml").__version__}
    spec = api.get("/openapi.json").json()
    for path in ("/datasets", "/datasets/upload", "/jobs/train", "/jobs/{job_id}/output", "/files",
                 "/models/{name}/aliases/{alias}", "/models/{name}/alias-history"):
        assert path in spec["paths"], path
    assert "TrainIn" in spec["components"]["schemas"]


def test_unknown_route_and_method_are_json(api):
    assert_error(api.get("/nope"), 404, "not_found", "/nope")
    assert_error(api.delete("/health"), 405, "method_not_allowed")


# ------------------------------------------------------------------ datasets


def test_register_npz_is_idempotent_and_changed_content_is_a_new_version(api, tmp_path):
    src = write_npz(tmp_path / "a.npz")
    first = api.post("/datasets", json={"name": "tab", "source": str(src)})
    assert first.status_code == 201, first.text
    assert (first.json()["ref"], first.json()["created"]) == ("tab:1", True)
    assert first.json()["schema"]["classes"] == ["0", "1", "2"]

    again = api.post("/datasets", json={"name": "tab", "source": str(src)})
    assert again.status_code == 200
    assert (again.json()["version"], again.json()["created"]) == (1, False)

    changed = api.post("/datasets", json={"name": "tab", "source": str(write_npz(tmp_path / "b.npz", seed=1))})
    assert (changed.status_code, changed.json()["version"], changed.json()["created"]) == (201, 2, True)

    versions = api.get("/datasets/tab").json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert api.get("/datasets/tab/versions/latest").json()["version"] == 2
    assert api.get("/datasets/tab/versions/1").json()["content_hash"] == first.json()["content_hash"]
    listed = api.get("/datasets").json()
    assert [(d["name"], d["latest_version"], d["versions"]) for d in listed] == [("tab", 2, 2)]


def test_register_sample_digits(api):
    resp = api.post("/datasets", json={"name": "digits", "source": "sample:digits"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["rows"] == 1797 and body["kind"] == "image"
    assert sum(body["splits"]["counts"].values()) == 1797
    assert len(body["schema"]["class_counts"]) == 10


def test_upload_csv_file_and_reupload(api, tmp_path):
    data = write_csv(tmp_path / "flowers.csv").read_bytes()
    form = {"name": "flowers", "label": "species", "format": "csv"}
    first = api.post("/datasets/upload", data=form, files={"file": ("flowers.csv", data, "text/csv")})
    assert first.status_code == 201, first.text
    assert first.json()["kind"] == "tabular" and first.json()["source"] == "upload:flowers.csv"
    again = api.post("/datasets/upload", data=form, files={"file": ("renamed.csv", data, "text/csv")})
    assert (again.status_code, again.json()["version"], again.json()["created"]) == (200, 1, False)
    zipped = api.post("/datasets/upload", data=form,
                      files={"file": ("f.zip", zip_bytes({"export/flowers.csv": data}), "application/zip")})
    assert (zipped.status_code, zipped.json()["version"]) == (200, 1)  # a zipped single file is that file
    assert_error(api.post("/datasets/upload", data={**form, "format": "xls"},
                          files={"file": ("flowers.csv", data, "text/csv")}), 400, "invalid_input", "format")


def test_upload_zip_of_image_folder(api):
    members = {f"pics/{cls}/{i}.png": png(40 * v + i) for v, cls in enumerate(["cat", "dog"]) for i in range(10)}
    resp = api.post("/datasets/upload", data={"name": "pics"},
                    files={"file": ("pics.zip", zip_bytes(members), "application/zip")})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["kind"] == "image" and body["rows"] == 20
    assert body["schema"]["classes"] == ["cat", "dog"]


@pytest.mark.parametrize("bad_member, fragment", [
    ("../evil.png", "'..'"),
    ("pics/../../evil.png", "'..'"),
    ("/etc/evil.png", "absolute"),
    ("pics\\..\\evil.png", "backslash"),
])
def test_upload_zip_with_escaping_member_is_refused(api, settings, bad_member, fragment):
    members = {"pics/a/1.png": png(1), "pics/b/1.png": png(200), bad_member: b"x"}
    resp = api.post("/datasets/upload", data={"name": "pics"},
                    files={"file": ("pics.zip", zip_bytes(members), "application/zip")})
    assert_error(resp, 400, "invalid_input", "refused", fragment)
    assert not (settings.home / "evil.png").exists() and not Path("/etc/evil.png").exists()
    assert api.get("/datasets").json() == []


def test_dataset_user_mistakes_are_4xx_json(api, tmp_path):
    assert_error(api.post("/datasets", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "invalid_input", "not valid JSON")
    assert_error(api.post("/datasets", json={"name": "x"}), 400, "invalid_input", "source: field required")
    assert_error(api.post("/datasets", json={"name": "x", "source": "sample:digits", "format": "xls"}),
                 400, "invalid_input", "format")
    assert_error(api.post("/datasets", json={"name": "Bad Name!", "source": "sample:digits"}),
                 400, "invalid_input", "Bad Name!")
    assert_error(api.post("/datasets", json={"name": "x", "source": str(tmp_path / "missing.csv")}),
                 400, "invalid_input", "does not exist")
    assert_error(api.post("/datasets/upload", data={"name": "x"}), 400, "invalid_input", "file: field required")
    assert_error(api.post("/datasets/upload", data={"name": "x"},
                          files={"file": ("x.zip", b"not a zip", "application/zip")}),
                 400, "invalid_input", "not a valid zip")
    assert_error(api.get("/datasets/nope"), 404, "not_found", "nope")
    assert_error(api.get("/datasets/nope/versions/latest"), 404, "not_found", "nope")
    assert_error(api.get("/datasets/nope/versions/abc"), 400, "invalid_input", "'abc'")


# ------------------------------------------------------------------ jobs and files


@pytest.fixture
def tab(api, tmp_path):
    resp = api.post("/datasets", json={"name": "tab", "source": str(write_npz(tmp_path / "t.npz"))})
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_submit_train_job_and_inspect_it(api, tab):
    resp = api.post("/jobs/train", json={"dataset": "tab", "model": "mlp", "params": {"epochs": 1}})
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert (job["kind"], job["status"], job["spec"]["dataset"]) == ("train", "queued", "tab:1")

    detail = api.get(f"/jobs/{job['id']}").json()
    assert [e["status"] for e in detail["events"]] == ["queued"] and detail["metrics"] == []
    assert [j["id"] for j in api.get("/jobs", params={"kind": "train", "status": "queued"}).json()] == [job["id"]]
    assert api.get("/jobs", params={"kind": "predict"}).json() == []
    logs = api.get(f"/jobs/{job['id']}/logs", params={"after": 0}).json()
    assert (logs["status"], logs["lines"], logs["next_after"]) == ("queued", [], 0)
    assert_error(api.get(f"/jobs/{job['id']}/output"), 400, "invalid_input", "train job")

    cancelled = api.post(f"/jobs/{job['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert api.post(f"/jobs/{job['id']}/cancel").json()["status"] == "cancelled"  # idempotent


def test_job_user_mistakes_are_4xx_json(api, tab):
    assert_error(api.post("/jobs/train", json={"dataset": "nope"}), 404, "not_found", "nope")
    assert_error(api.post("/jobs/train", json={"dataset": "tab", "model": "transformer"}),
                 400, "invalid_input", "transformer")
    assert_error(api.post("/jobs/train", json={"dataset": "tab", "params": {"epochs": [1]}}),
                 400, "invalid_input", "params.epochs")
    assert_error(api.post("/jobs/train", json={"dataset": "tab", "epochs": 3}), 400, "invalid_input", "epochs")
    assert_error(api.post("/jobs/train", json={"model": "cnn"}), 400, "invalid_input", "dataset is required")
    assert_error(api.post("/jobs/predict", json={"model": "ghost", "input": "dataset:tab:test"}),
                 404, "not_found", "ghost")
    assert_error(api.get("/jobs/job-missing"), 404, "not_found", "job-missing")
    assert_error(api.get("/jobs/job-missing/logs"), 404, "not_found")
    assert_error(api.post("/jobs/job-missing/cancel"), 404, "not_found")
    assert_error(api.get("/jobs/job-missing/output"), 404, "not_found")
    assert_error(api.get("/jobs", params={"status": "bogus"}), 400, "invalid_input", "status")
    assert_error(api.get("/jobs", params={"limit": 0}), 400, "invalid_input", "limit")
    assert_error(api.get("/jobs/x/logs", params={"after": "soon"}), 400, "invalid_input", "after")


def test_prediction_output_is_409_until_the_job_succeeds(api, platform, tab):
    add_model_version(platform)
    resp = api.post("/jobs/predict", json={"model": "tiny:1", "input": "dataset:tab:test", "limit": 5})
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["input"]["split"] == "test"
    assert_error(api.get(f"/jobs/{resp.json()['id']}/output"), 409, "conflict", "queued")
    assert_error(api.post("/jobs/predict", json={"model": "tiny", "input": "dataset:tab:holdout"}),
                 400, "invalid_input", "holdout")


def test_file_upload_returns_a_key_usable_by_train(api, tab):
    code = b"def build_model(hparams, schema):\n    raise NotImplementedError\n"
    resp = api.post("/files", data={"kind": "model"}, files={"file": ("my_model.py", code, "text/x-python")})
    assert resp.status_code == 201, resp.text
    key = resp.json()["key"]
    assert key.endswith("my_model.py")
    job = api.post("/jobs/train", json={"dataset": "tab", "model": f"file:{key}"})
    assert job.status_code == 201, job.text
    assert job.json()["spec"]["user_model_key"] == key
    assert_error(api.post("/files", data={"kind": "weights"}, files={"file": ("a.py", code)}), 400, "invalid_input",
                 "kind")
    assert_error(api.post("/files", data={"kind": "model"}, files={"file": ("a.py", b"")}), 400, "invalid_input",
                 "empty")


# ------------------------------------------------------------------ models


def test_model_registry_routes(api, platform):
    add_model_version(platform, version=1)
    add_model_version(platform, version=2)
    assert [m["name"] for m in api.get("/models").json()] == ["tiny"]
    assert [v["version"] for v in api.get("/models/tiny").json()["versions"]] == [1, 2]
    assert api.get("/models/tiny/versions/latest").json()["version"] == 2

    moved = api.put("/models/tiny/aliases/prod", json={"version": 1}, headers={"X-LoopML-Actor": "alice"})
    assert moved.json() == {"name": "tiny", "alias": "prod", "version": 1, "previous": None}
    assert api.put("/models/tiny/aliases/prod", json={"version": 2}).json()["previous"] == 1
    assert api.get("/models/tiny/aliases/prod").json()["version"] == 2
    assert api.get("/models/tiny").json()["aliases"] == {"prod": 2}
    assert api.delete("/models/tiny/aliases/prod").json()["previous"] == 2
    history = api.get("/models/tiny/alias-history").json()
    assert [(e["from_version"], e["to_version"], e["actor"]) for e in history] == \
        [(None, 1, "alice"), (1, 2, "api"), (2, None, "api")]

    assert_error(api.get("/models/ghost"), 404, "not_found", "ghost")
    assert_error(api.get("/models/tiny/versions/9"), 404, "not_found", "9")
    assert_error(api.get("/models/tiny/aliases/prod"), 404, "not_found", "prod")
    assert_error(api.delete("/models/tiny/aliases/prod"), 404, "not_found", "prod")
    assert_error(api.put("/models/tiny/aliases/prod", json={"version": 7}), 404, "not_found", "7")
    assert_error(api.put("/models/tiny/aliases/latest", json={"version": 1}), 400, "invalid_input", "reserved")
    assert_error(api.put("/models/tiny/aliases/prod", json={"version": "two"}), 400, "invalid_input", "version")


# ------------------------------------------------------------------ auth and crashes


def test_token_auth(settings, platform):
    secured = settings.model_copy(update={"token": "s3cret"})
    with TestClient(create_app(secured, platform=platform, start_loop=False)) as client:
        assert client.get("/health").status_code == 200
        assert_error(client.get("/datasets"), 401, "unauthorized", "missing API token")
        assert_error(client.get("/datasets", headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        assert_error(client.get("/datasets", headers={"Authorization": "Basic s3cret"}), 401, "unauthorized")
        assert_error(client.get("/openapi.json"), 401, "unauthorized")
        assert_error(client.get("/no-such-route"), 401, "unauthorized")  # no route probing without a token
        ok = client.get("/datasets", headers={"Authorization": "Bearer s3cret"})
        assert (ok.status_code, ok.json()) == (200, [])


def test_unexpected_error_is_500_json_without_traceback(settings, platform, caplog):
    app = create_app(settings, platform=platform, start_loop=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    with TestClient(app, raise_server_exceptions=False) as client:
        body = assert_error(client.get("/boom"), 500, "error")
    assert "secret internal detail" not in body["message"]
    assert "secret internal detail" in caplog.text  # logged server-side, with its traceback


def test_lifespan_builds_and_closes_its_own_platform(settings):
    with TestClient(create_app(settings, start_loop=False)) as client:
        assert client.get("/datasets").json() == []
    assert (settings.home / "loopml.db").exists()


def test_nan_and_infinity_in_json_bodies_are_refused_with_400(live_server) -> None:
    """Python's json (FastAPI's) accepts NaN/Infinity/1e999; PostgreSQL's json refuses them later."""
    import httpx

    for body in (b'{"event": NaN}', b'{"event": [Infinity]}', b'{"event": {"x": 1e999}}', b'{"event": -Infinity}'):
        resp = httpx.post(f"{live_server}/functions/nope/invocations", content=body,
                          headers={"Content-Type": "application/json"})
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["code"] == "invalid_input" and "body:" in resp.json()["message"]
    # ordinary JSON still reaches the route (here: a 404 naming the missing function)
    resp = httpx.post(f"{live_server}/functions/nope/invocations", content=b'{"event": {"x": 1.5}}',
                      headers={"Content-Type": "application/json"})
    assert resp.status_code == 404 and "nope" in resp.json()["message"]
    # a body that is not JSON at all keeps the route's own 400
    resp = httpx.post(f"{live_server}/jobs/train", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
