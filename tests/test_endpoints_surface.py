"""The management surface of real-time endpoints: REST (/endpoints), SDK and `loopml endpoints`.

A real control plane (``live_server``) with model versions written straight into the registry
(no training): the serving process cannot load them, which the records report as ``Failed`` —
asserted too. The SDK's and the CLI's invocations go to a real data plane on a free port serving
a small trained digits CNN.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from typer.testing import CliRunner

from loopml.cli.main import app as cli_app
from loopml.core.errors import Conflict, InvalidInput, LoopMLError, NotFound, UnsupportedFormat
from loopml.sdk.client import Client, EndpointFailed, EndpointTimeout, InvocationError
from tests.test_cli import ok_json, one_line_error
from tests.surface_support import assert_error, cli_runner

pytest_plugins = ("tests.serving_support",)  # digit_bundles: small trained CNNs

HEAVY = ("keras", "tensorflow", "numpy", "pandas", "fastapi", "loopml.store", "loopml.api", "sqlalchemy")


def add_model_version(platform, name: str = "tiny", version: int = 1, kind: str = "tabular") -> dict:
    return platform.models.add_version(
        name, version, job_id=None, dataset="tab:1", kind=kind, template="mlp", hparams={"epochs": 1},
        metrics={"test_accuracy": 0.5}, lineage={}, runtimes=["keras"], artifact_prefix=f"models/{name}/v{version}")


@pytest.fixture
def registry(live_server, settings):
    """The live server's registry with tiny:1, tiny:2 (alias prod -> 1) and a text model."""
    from loopml.platform import Platform

    plat = Platform(settings)
    add_model_version(plat, "tiny", 1)
    add_model_version(plat, "tiny", 2)
    add_model_version(plat, "words", 1, kind="text")
    plat.models.set_alias("tiny", "prod", 1, actor="test")
    yield plat
    plat.close()


@pytest.fixture
def api(live_server, registry):
    with httpx.Client(base_url=live_server, timeout=30) as http:
        yield http


@pytest.fixture
def sdk(live_server, registry):
    with Client(live_server, token="") as c:
        yield c


@pytest.fixture
def cli(live_server, registry, monkeypatch):
    return cli_runner(live_server, monkeypatch)


def versions(record: dict) -> dict[str, tuple[str, int, float]]:
    return {v["name"]: (v["model"], v["version"], v["weight"]) for v in record["resolved"]["variants"]}


# ----------------------------------------------------------------------------- REST


def test_rest_create_list_get_patch_delete(api, live_server):
    created = api.post("/endpoints", json={"name": "tiny-ep", "model": "tiny@prod", "max_batch_size": 8})
    assert created.status_code == 201, created.text
    rec = created.json()
    assert (rec["name"], rec["generation"], rec["status"], rec["ready"]) == ("tiny-ep", 1, "Creating", False)
    assert rec["spec"]["variants"] == [{"name": "primary", "model": "tiny", "version": None, "alias": "prod",
                                        "weight": 1.0}]
    assert rec["spec"]["max_batch_size"] == 8 and rec["spec"]["shadow"] is None
    assert versions(rec) == {"primary": ("tiny", 1, 1.0)}  # the alias, resolved
    assert rec["url"].startswith("http://127.0.0.1:") and rec["url"].endswith("/endpoints/tiny-ep/invocations")
    assert rec["url"] != f"{live_server}/endpoints/tiny-ep/invocations"  # the data plane has its own port

    assert [e["name"] for e in api.get("/endpoints").json()] == ["tiny-ep"]
    got = api.get("/endpoints/tiny-ep").json()
    assert (got["generation"], got["url"], got["spec"]) == (1, rec["url"], rec["spec"])

    patched = api.patch("/endpoints/tiny-ep", json={
        "variants": [{"name": "primary", "ref": "tiny:1", "weight": 90},
                     {"name": "canary", "ref": "tiny@prod", "weight": 10}],
        "shadow": "tiny:2", "capture_percent": 25})
    assert patched.status_code == 200, patched.text
    p = patched.json()
    assert p["generation"] == 2 and p["status"] in ("Updating", "Failed") and not p["ready"]
    assert versions(p) == {"primary": ("tiny", 1, 90.0), "canary": ("tiny", 1, 10.0)}
    assert p["resolved"]["shadow"]["version"] == 2 and p["spec"]["capture_percent"] == 25.0
    assert p["spec"]["max_batch_size"] == 8  # absent from the PATCH: kept

    kept = api.patch("/endpoints/tiny-ep", json={"max_batch_delay_ms": 5}).json()
    assert kept["generation"] == 3 and kept["spec"]["shadow"]["version"] == 2  # shadow absent: kept
    assert len(kept["spec"]["variants"]) == 2 and kept["spec"]["max_batch_delay_ms"] == 5.0
    removed = api.patch("/endpoints/tiny-ep", json={"shadow": None}).json()
    assert removed["generation"] == 4 and removed["spec"]["shadow"] is None and removed["resolved"]["shadow"] is None
    # the stored variant form can be sent back as it came
    back = api.patch("/endpoints/tiny-ep", json={"variants": removed["spec"]["variants"][:1]})
    assert back.status_code == 200, back.text
    assert versions(back.json()) == {"primary": ("tiny", 1, 90.0)}
    single = api.patch("/endpoints/tiny-ep", json={"model": "tiny:2"}).json()
    assert versions(single) == {"primary": ("tiny", 2, 1.0)} and single["generation"] == 6

    deleted = api.delete("/endpoints/tiny-ep")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": "tiny-ep"}
    assert_error(api.get("/endpoints/tiny-ep"), 404, "not_found", "tiny-ep")
    assert_error(api.delete("/endpoints/tiny-ep"), 404, "not_found", "tiny-ep")
    assert api.get("/endpoints").json() == []
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/endpoints/{name}"]) == {"get", "patch", "delete"}


def test_rest_refusals_name_the_problem(api):
    def post(**body):
        return api.post("/endpoints", json={"name": "ep", **body})

    assert_error(post(model="ghost:1"), 404, "not_found", "ghost")
    assert_error(post(model="tiny@staging"), 404, "not_found", "tiny", "staging")
    assert_error(post(model="tiny:9"), 404, "not_found", "tiny", "version 9")
    assert_error(post(variants=[{"name": "a", "ref": "tiny:1", "weight": -1}]), 400, "invalid_input",
                 "variants[0].weight", "-1")
    assert_error(post(variants=[{"name": "a", "ref": "tiny:1", "weight": 0}]), 400, "invalid_input",
                 "weight above 0")
    assert_error(post(model="tiny"), 400, "invalid_input", "names no version", "tiny@production")
    assert_error(post(), 400, "invalid_input", "needs a model")
    assert_error(post(model="tiny:1", max_batch_size=0), 400, "invalid_input", "max_batch_size")
    assert_error(post(model="tiny:1", capture_percent=101), 400, "invalid_input", "capture_percent")
    assert_error(post(model="tiny:1", colour="red"), 400, "invalid_input", "colour")
    assert_error(post(variants=[{"name": "a", "ref": "tiny:1", "wieght": 2}]), 400, "invalid_input", "wieght")
    assert_error(post(model="tiny:1", variants=[{"ref": "tiny:2"}]), 400, "invalid_input", "not both")
    assert_error(post(model="tiny:1", shadow="words:1"), 400, "invalid_input", "same input")
    assert_error(api.post("/endpoints", json={"name": "Bad_Name", "model": "tiny:1"}), 400, "invalid_input",
                 "Bad_Name")
    assert_error(api.post("/endpoints", json={"model": "tiny:1"}), 400, "invalid_input", "name: field required")
    assert_error(api.post("/endpoints", content=b"{nope", headers={"content-type": "application/json"}),
                 400, "invalid_input", "not valid JSON")

    assert post(model="tiny:1").status_code == 201
    assert_error(post(model="tiny:2"), 409, "conflict", "'ep' already exists")
    assert_error(api.patch("/endpoints/ep", json={"colour": "red"}), 400, "invalid_input", "colour")
    assert_error(api.patch("/endpoints/ep", json={"name": "other"}), 400, "invalid_input", "name")
    assert_error(api.patch("/endpoints/ep", json={"model": "ghost@prod"}), 404, "not_found", "ghost")
    assert_error(api.patch("/endpoints/nope", json={"model": "tiny:1"}), 404, "not_found", "nope")
    assert api.get("/endpoints/ep").json()["generation"] == 1  # refused changes leave no trace


# ----------------------------------------------------------------------------- SDK


def test_sdk_manages_endpoints_and_reports_a_model_that_cannot_load(sdk, cli):
    rec = sdk.create_endpoint("clf", model="tiny:1", shadow="tiny:2", capture_percent=10)
    assert rec["generation"] == 1 and rec["resolved"]["shadow"]["version"] == 2
    with pytest.raises(Conflict, match="already exists"):
        sdk.create_endpoint("clf", model="tiny:1")
    with pytest.raises(NotFound, match="ghost"):
        sdk.create_endpoint("other", model="ghost@prod")
    with pytest.raises(InvalidInput, match="weight"):
        sdk.create_endpoint("other", variants=[{"name": "a", "ref": "tiny:1", "weight": -3}])

    kept = sdk.update_endpoint("clf", capture_percent=50)
    assert kept["generation"] == 2 and kept["spec"]["shadow"] is not None  # shadow left out: kept
    gone = sdk.update_endpoint("clf", shadow=None)
    assert gone["generation"] == 3 and gone["spec"]["shadow"] is None
    assert [e["name"] for e in sdk.endpoints()] == ["clf"] and sdk.endpoint("clf")["generation"] == 3

    # the registry entry has no files: the serving process reports the generation as Failed
    with pytest.raises(EndpointFailed, match="loopml.json") as failed:
        sdk.wait_endpoint("clf", timeout=60, poll=0.1)
    assert failed.value.record["status"] == "Failed" and failed.value.record["generation"] == 3
    assert failed.value.exit_code == 1

    # the CLI shows it (the serving process is up now, so this one fails fast)
    one_line_error(cli("endpoints", "create", "clf2", "--model", "tiny@prod", "--wait", "--timeout", "60"),
                   1, "endpoint 'clf2' failed", "loopml.json")
    listed = cli("endpoints", "list")
    assert listed.exit_code == 0 and "clf2" in listed.stdout and "Failed" in listed.stdout
    assert "primary=tiny:1 100%" in listed.stdout
    shown = cli("endpoints", "show", "clf")
    assert shown.exit_code == 0 and "loopml.json" in shown.stdout and "tiny@prod" not in shown.stdout

    assert sdk.delete_endpoint("clf") == {"deleted": "clf"}
    with pytest.raises(NotFound, match="clf"):
        sdk.endpoint("clf")
    with pytest.raises(NotFound, match="clf"):
        sdk.invoke("clf", instances=[[1, 2]])


def test_wait_endpoint_times_out_with_the_last_status(monkeypatch):
    c = Client("http://127.0.0.1:9", token="")
    monkeypatch.setattr(c, "endpoint", lambda name: {"name": name, "status": "Creating", "generation": 1,
                                                     "ready": False, "message": "serving process starting"})
    with pytest.raises(EndpointTimeout, match="still Creating after 0.05s: serving process starting"):
        c.wait_endpoint("x", timeout=0.05, poll=0.01)


DIGITS = [str(d) for d in range(10)]
IMAGE = [[0.0] * 8] * 8  # one 8x8 digit, as the served model takes it


@contextmanager
def serve_data_plane(folder: Path, capture_root: Path, host: str = "127.0.0.1") -> Iterator[tuple[str, Any]]:
    """The real data plane (token ``dp-secret``, everything captured) on a free port of ``host``,
    with the endpoint table as a serving process holds it mid-life: ``ep`` live (variants
    ``primary`` and ``canary``, weight 0: only sent to by name) on the model bundle in ``folder``,
    ``warming`` still loading, ``broken`` failed to load. Yields (url, captured): ``captured()``
    flushes the capture and returns the records of ``ep``."""
    from loopml.artifacts.store import ArtifactStore
    from loopml.serving.app import StaticEndpoints, create_data_plane
    from loopml.monitoring.capture_reader import read_captured
    from loopml.serving.capture import CaptureWriter
    from loopml.serving.host import ModelHost
    from loopml.serving.live import LiveEndpoint, Variant
    from tests.asgi_server import serve_asgi

    class MidLife(StaticEndpoints):
        def loading(self, name: str) -> bool:
            return name == "warming"

        def failure(self, name: str) -> str | None:
            return "ValueError: the weights do not fit the graph" if name == "broken" else None

    model = ModelHost.load(folder, name="ep")
    table = MidLife({})
    table.live["ep"] = LiveEndpoint(name="ep", generation=1, capture_fraction=1.0, variants=[
        Variant(name="primary", host=model, weight=1.0, model="digits", version=1),
        Variant(name="canary", host=model, weight=0.0, model="digits", version=1)])
    store = ArtifactStore(str(capture_root))
    capture = CaptureWriter(store, "capture", flush_interval_s=60)

    def captured() -> list[dict]:
        capture.flush()
        return list(read_captured(store, "capture", "ep"))

    try:
        with serve_asgi(create_data_plane(table, token="dp-secret", capture=capture,
                                          on_shutdown=table.close), host=host) as url:
            yield url, captured
    finally:
        capture.close()


@pytest.fixture
def data_plane(tmp_path, digit_bundles) -> Iterator[tuple[str, Any]]:
    with serve_data_plane(digit_bundles[0], tmp_path / "artifacts") as served:
        yield served


def _inputs(records: list[dict], content_type: str) -> list[dict]:
    """The captured request bodies of that content type (files are read in time order, and
    several within the same second in no particular order)."""
    return [i for i in (r["captureData"]["endpointInput"] for r in records)
            if i["observedContentType"] == content_type]


def _point_at(monkeypatch, target, data_plane_url: str) -> None:
    """The control plane's endpoint records (``Client.endpoint``) name the data plane at ``data_plane_url``."""
    monkeypatch.setattr(target, "endpoint", lambda *args: {"name": args[-1],
                                                            "url": f"{data_plane_url}/endpoints/{args[-1]}/invocations"})


def test_invoke_talks_to_the_data_plane_and_maps_its_errors(monkeypatch, data_plane):
    url, captured = data_plane
    monkeypatch.setenv("LOOPML_SERVING_TOKEN", "dp-secret")
    c = Client("http://127.0.0.1:8080", token="cp-secret")
    _point_at(monkeypatch, c, url)
    out = c.invoke("ep", instances=[IMAGE], variant="canary", inference_id="req-1")
    assert out["predictions"][0]["label"] in DIGITS
    # the data plane's token was sent (it refuses any other, the control plane's too), the body
    # as JSON instances, to the variant named, with the inference id
    [record] = captured()
    meta, given = record["eventMetadata"], record["captureData"]["endpointInput"]
    assert (meta["variant"], meta["inferenceId"]) == ("canary", "req-1")
    assert given["observedContentType"] == "application/json"
    assert json.loads(given["data"]) == {"instances": [IMAGE]}

    csv = ",".join(["0"] * 64) + "\n"
    assert len(c.invoke("ep", body=csv.encode(), content_type="text/csv")["predictions"]) == 1
    assert [i["data"] for i in _inputs(captured(), "text/csv")] == [csv]  # sent as-is
    with pytest.raises(InvalidInput, match="not a multi-model endpoint"):  # the target model was sent
        c.invoke("ep", body=csv.encode(), content_type="text/csv", target_model="tiny:2")
    with pytest.raises(InvalidInput, match="either instances or body"):
        c.invoke("ep")

    with pytest.raises(InvalidInput, match="instances"):
        c.invoke("ep", instances=[1])
    with pytest.raises(NotFound, match="Endpoint gone not found"):
        c.invoke("gone", instances=[IMAGE])
    with pytest.raises(UnsupportedFormat, match="text/xml"):
        c.invoke("ep", body=b"<x/>", content_type="text/xml")
    with pytest.raises(InvocationError, match="loading") as busy:
        c.invoke("warming", instances=[IMAGE])
    assert (busy.value.code, busy.value.status, busy.value.retry_after) == ("ServiceUnavailable", 503, 1.0)
    with pytest.raises(InvocationError, match="ValueError") as boom:
        c.invoke("broken", instances=[IMAGE])
    assert isinstance(boom.value, LoopMLError) and boom.value.code == "ModelError"


def test_invoke_reaches_a_remote_data_plane_at_the_api_host(monkeypatch, tmp_path, digit_bundles):
    """The control plane names its data plane as it sees it (127.0.0.1); a client that reached
    the API at another address reaches the data plane at that address: here a data plane
    listening on 127.0.0.2 only, named as 127.0.0.1 (where nothing listens) by the record."""
    from urllib.parse import urlsplit

    with serve_data_plane(digit_bundles[0], tmp_path / "artifacts", host="127.0.0.2") as (url, captured):
        port = urlsplit(url).port
        monkeypatch.setenv("LOOPML_SERVING_TOKEN", "dp-secret")
        c = Client("http://127.0.0.2:8080", token="")
        _point_at(monkeypatch, c, f"http://127.0.0.1:{port}")
        assert c.invoke("ep", instances=[IMAGE])["predictions"][0]["label"] in DIGITS
        assert len(captured()) == 1
    assert "authorization" not in {k.lower() for k in c._http.headers}


def test_invoke_without_a_data_plane_says_so(monkeypatch):
    c = Client("http://127.0.0.1:8080", token="")
    monkeypatch.setattr(c, "endpoint", lambda name: {"name": name, "url": None})
    with pytest.raises(LoopMLError, match="no data-plane address"):
        c.invoke("ep", instances=[[1]])


# ----------------------------------------------------------------------------- CLI


def test_cli_create_show_update_delete(cli):
    rec = ok_json(cli("endpoints", "create", "cli-ep", "--model", "tiny@prod",
                      "--variant", "canary=tiny:2:0.25", "--shadow", "tiny:2", "--capture", "5",
                      "--max-batch-size", "16", "--max-batch-delay-ms", "3", "--multi-model", "--json"))
    assert versions(rec) == {"primary": ("tiny", 1, 1.0), "canary": ("tiny", 2, 0.25)}
    assert rec["spec"]["multi_model"] is True and rec["spec"]["max_batch_size"] == 16
    assert rec["spec"]["capture_percent"] == 5.0 and rec["resolved"]["shadow"]["version"] == 2

    shown = cli("endpoints", "show", "cli-ep")
    assert shown.exit_code == 0, shown.stderr
    for word in ("cli-ep", "tiny@prod", "canary", "shadow", "80.0 %", "20.0 %", "/endpoints/cli-ep/invocations"):
        assert word in shown.stdout, (word, shown.stdout)
    assert ok_json(cli("endpoints", "show", "cli-ep", "--json"))["name"] == "cli-ep"

    updated = ok_json(cli("endpoints", "update", "cli-ep", "--no-shadow", "--single-model", "--json"))
    assert updated["generation"] == 2 and updated["spec"]["shadow"] is None
    assert updated["spec"]["multi_model"] is False and len(updated["spec"]["variants"]) == 2
    swapped = ok_json(cli("endpoints", "update", "cli-ep", "--variant", "primary=tiny:2", "--json"))
    assert versions(swapped) == {"primary": ("tiny", 2, 1.0)} and swapped["spec"]["max_batch_size"] == 16
    plain = cli("endpoints", "update", "cli-ep", "--capture", "0")
    assert plain.exit_code == 0 and "updated endpoint cli-ep (generation 4)" in plain.stdout
    assert [e["name"] for e in ok_json(cli("endpoints", "list", "--json"))] == ["cli-ep"]

    assert cli("endpoints", "delete", "cli-ep").stdout.strip() == "deleted endpoint cli-ep"
    one_line_error(cli("endpoints", "show", "cli-ep"), 2, "endpoint 'cli-ep' not found")
    assert "no endpoints yet" in cli("endpoints", "list").stdout


def test_cli_mistakes_are_one_line_and_exit_2(cli, tmp_path):
    one_line_error(cli("endpoints", "create", "ep", "--variant", "tiny:1"), 2, "--variant 'tiny:1'",
                   "NAME=MODEL:VERSION:WEIGHT")
    one_line_error(cli("endpoints", "create", "ep", "--variant", "a=tiny:1:lots"), 2, "'lots' is not a number")
    one_line_error(cli("endpoints", "create", "ep", "--variant", "a=tiny:1:-2"), 2, "weight", "-2")
    one_line_error(cli("endpoints", "create", "ep", "--model", "ghost:1"), 2, "ghost")
    one_line_error(cli("endpoints", "create", "ep"), 2, "needs a model")
    one_line_error(cli("endpoints", "create", "bad_name", "--model", "tiny:1"), 2, "bad_name")
    one_line_error(cli("endpoints", "create", "ep", "--model", "tiny:1", "--capture", "200"), 2, "--capture must be between 0 and 100")
    assert cli("endpoints", "create", "ep", "--model", "tiny:1").exit_code == 0
    one_line_error(cli("endpoints", "create", "ep", "--model", "tiny:1"), 2, "already exists")
    one_line_error(cli("endpoints", "update", "ep"), 2, "nothing to change")
    one_line_error(cli("endpoints", "update", "ep", "--shadow", "tiny:2", "--no-shadow"), 2, "not both")
    one_line_error(cli("endpoints", "update", "nope", "--model", "tiny:1"), 2, "nope")
    one_line_error(cli("endpoints", "invoke", "ep"), 2, "--data", "--file")
    one_line_error(cli("endpoints", "invoke", "ep", "--file", str(tmp_path / "none.json")), 2, "none.json")
    one_line_error(cli("endpoints", "delete", "nope"), 2, "nope")


def test_cli_invoke_prints_labels_and_confidences(monkeypatch, tmp_path, data_plane):
    url, captured = data_plane
    monkeypatch.setenv("LOOPML_API_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LOOPML_SERVING_TOKEN", "dp-secret")
    _point_at(monkeypatch, Client, url)
    runner = CliRunner()
    data = json.dumps([IMAGE, [[16.0] * 8] * 8])
    out = runner.invoke(cli_app, ["endpoints", "invoke", "ep", "--data", data, "--variant", "canary"])
    assert out.exit_code == 0, out.output
    [record] = captured()
    answer = json.loads(record["captureData"]["endpointOutput"]["data"])["predictions"]
    words = ["label", "confidence", "served by variant canary"]
    words += [w for p in answer for w in (p["label"], f"{p['confidence']:.4f}")]
    for word in words:
        assert word in out.stdout, (word, out.stdout)
    given = record["captureData"]["endpointInput"]
    assert (given["data"], given["observedContentType"]) == (data, "application/json")  # the body as-is
    assert record["eventMetadata"]["variant"] == "canary" and "inferenceId" not in record["eventMetadata"]
    csv = ",".join(["0"] * 64) + "\n"
    (tmp_path / "rows.csv").write_text(csv)
    as_json = runner.invoke(cli_app, ["endpoints", "invoke", "ep", "--file", str(tmp_path / "rows.csv"), "--json"])
    assert json.loads(as_json.stdout)["predictions"][0]["label"] in DIGITS
    assert [i["data"] for i in _inputs(captured(), "text/csv")] == [csv]


def test_curl_example_has_an_input_of_the_right_shape():
    from loopml.cli.endpoints import curl_example

    class FakeClient:
        def __init__(self, schema):
            self.schema = schema

        def _serving_token(self):
            return "t"

        def model_version(self, name, version):
            return {"dataset": "ds:1"}

        def dataset(self, ref):
            return {"schema": self.schema}

    url = "http://127.0.0.1:8081/endpoints/ep/invocations"

    def example(kind, schema):
        record = {"resolved": {"variants": [{"name": "primary", "model": "m", "version": 1, "kind": kind}]}}
        return curl_example(FakeClient(schema), record, url)

    image = example("image", {"kind": "image", "features": [{"name": "image", "shape": [8, 8, 1]}]})
    assert image.startswith("python3 -c") and "[[[0.0]*1]*8]*8" in image and "--data-binary @-" in image
    assert "$LOOPML_SERVING_TOKEN" in image
    tab = example("tabular", {"kind": "tabular", "features": [
        {"name": "sepal", "type": "numeric", "mean": 5.8433}, {"name": "colour", "type": "categorical",
                                                              "categories": ["blue", "red"]}]})
    assert '{"instances": [{"sepal": 5.843, "colour": "blue"}]}' in tab and url in tab
    assert '"an example text"' in example("text", {})
    assert "[...]" in example("tabular", {})  # no schema: a placeholder


def test_endpoints_help_stays_light():
    probe = (
        "import sys\n"
        "from loopml.cli.main import main\n"
        "for argv in (['loopml', 'endpoints', '--help'], ['loopml', 'endpoints', 'create', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--variant" in out.stdout and "invoke" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", out.stdout.splitlines()[-1]
    assert time.monotonic() - started < 30
