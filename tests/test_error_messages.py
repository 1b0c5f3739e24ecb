"""Error messages in the user's words (issue 10, item 9): no temporary upload paths, no internal
prefixes, the CLI's flags instead of API field names, the right fix for a missing endpoint
key, and "did you mean …?" for a mistyped name. Real control plane, CLI and HTTP."""

from __future__ import annotations

import zipfile
from contextlib import contextmanager
from typing import Iterator

import httpx
import pytest

from loopml.core.errors import NotFound
from loopml.sdk.client import Client, InvocationError
from tests.surface_support import assert_error, cli_runner

pytest_plugins = ("tests.serving_support", "tests.backends")


def one_line(out) -> str:
    assert out.exit_code == 2 and out.stdout == "", out.output
    assert "Traceback" not in out.output and len(out.stderr.strip().splitlines()) == 1, out.stderr
    return out.stderr.strip()


@contextmanager
def opened(settings) -> Iterator:
    """A Platform on ``settings`` (the test server's store), closed after use."""
    from loopml.platform import Platform

    plat = Platform(settings)
    try:
        yield plat
    finally:
        plat.close()


def add_model_version(settings, name: str = "tiny") -> None:
    """A registry record (no artifacts: nothing here loads it)."""
    with opened(settings) as plat:
        plat.models.add_version(name, 1, job_id=None, dataset="tab:1", kind="tabular", template="mlp",
                                hparams={"epochs": 1}, metrics={}, lineage={}, runtimes=["keras"],
                                artifact_prefix=f"models/{name}/v1")


def register_digits(settings, bundle) -> None:
    """``bundle`` (a trained digits model) as the next version of model ``digits``."""
    from tests.serving_support import register

    with opened(settings) as plat:
        register(plat, "digits", bundle)


def test_upload_errors_name_the_users_file_not_the_temporary_copy(live_server, settings, tmp_path, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text('a,label\n1,"x\n')
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as zf:
        zf.writestr("a.png", b"not a png")
        zf.writestr("b.png", b"not a png")
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as zf:
        zf.writestr("cat/a.png", b"not a png")
        zf.writestr("dog/b.png", b"not a png")
    run = cli_runner(live_server, monkeypatch)
    internal = str(settings.home)
    line = one_line(run("datasets", "add", "x", str(bad)))
    assert line.startswith("error: bad.csv cannot be read as csv") and internal not in line and "upload-" not in line
    line = one_line(run("datasets", "add", "x", str(flat)))
    assert line == "error: folder flat.zip has no class subfolders (expected flat.zip/<class>/<files>)"
    line = one_line(run("datasets", "add", "x", str(broken)))
    assert "image broken.zip/cat/a.png cannot be read" in line and internal not in line
    # the API answers the same words to a plain multipart upload
    r = httpx.post(f"{live_server}/datasets/upload", data={"name": "x"},
                   files={"file": ("bad.csv", bad.read_bytes(), "text/csv")})
    body = assert_error(r, 400, "invalid_input", "bad.csv cannot be read as csv")
    assert internal not in body["message"]
    # a server-visible zip is unpacked to a temporary folder too: the zip is named instead
    r = httpx.post(f"{live_server}/datasets", json={"name": "x", "source": str(flat)})
    assert_error(r, 400, "invalid_input", f"folder {flat} has no class subfolders")
    assert "loopml-unzip-" not in r.json()["message"]


def test_an_s3_source_is_named_not_its_downloaded_copy(tmp_path, moto_endpoint, s3_bucket, clean_env):
    from loopml.core.errors import InvalidInput
    from loopml.core.settings import Settings
    from loopml.datasets.service import register
    from tests.backends import s3_client

    s3_client(moto_endpoint).put_object(Bucket=s3_bucket, Key="incoming/bad.csv", Body=b'a,label\n1,"x\n')
    with opened(Settings(home=tmp_path / "home", s3_endpoint_url=moto_endpoint)) as plat, \
            pytest.raises(InvalidInput) as err:
        register(plat, "x", f"s3://{s3_bucket}/incoming/bad.csv")
    assert err.value.message.startswith(f"s3://{s3_bucket}/incoming/bad.csv cannot be read as csv")


def test_a_mistyped_split_names_the_dataset_and_its_splits(live_server, settings, monkeypatch):
    add_model_version(settings)
    run = cli_runner(live_server, monkeypatch)
    line = one_line(run("predict", "tiny:1", "digits:tset"))
    assert line == "error: dataset digits has no split 'tset' (train, validation, test); did you mean 'test'?"
    r = httpx.post(f"{live_server}/jobs/predict", json={"model": "tiny:1", "input": "dataset:digits:tset"})
    body = assert_error(r, 400, "invalid_input", "dataset digits has no split 'tset'")
    assert "dataset:" not in body["message"]
    assert httpx.get(f"{live_server}/jobs").json() == []  # nothing queued


def test_the_cli_names_its_flags_the_api_its_fields(live_server, settings, tmp_path, monkeypatch):
    add_model_version(settings)
    run = cli_runner(live_server, monkeypatch)
    line = one_line(run("endpoints", "create", "ep", "--model", "tiny:1", "--capture", "150"))
    assert line == "error: --capture must be between 0 and 100, got 150.0"
    line = one_line(run("endpoints", "create", "ep", "--model", "tiny:1", "--max-batch-size", "5000"))
    assert line.startswith("error: --max-batch-size must be between 1 and 1024") and "max_batch_size" not in line
    r = httpx.post(f"{live_server}/endpoints", json={"name": "ep", "model": "tiny:1", "capture_percent": 150})
    body = assert_error(r, 400, "invalid_input", "capture_percent must be between 0 and 100")
    assert body["details"] == {"field": "capture_percent"}
    Client(live_server).create_endpoint("watched", model="tiny:1", capture_percent=10)
    line = one_line(run("monitors", "create", "m", "--endpoint", "watched", "--min-samples", "0"))
    assert line.startswith("error: --min-samples: must be a whole number between 1 and")
    line = one_line(run("monitors", "create", "m", "--endpoint", "watched", "--window", "5x"))
    assert line == "error: --window: '5x' is not a duration; use e.g. 30m, 1h or 2d"

    table = tmp_path / "birds.csv"
    table.write_text("island,kind\nDream,Adelie\nBiscoe,Gentoo\n")
    line = one_line(run("datasets", "add", "birds", str(table)))
    assert "pass --label COLUMN;" in line and "label=" not in line
    r = httpx.post(f"{live_server}/datasets", json={"name": "birds", "source": str(table)})
    assert assert_error(r, 400, "invalid_input", "pass label=COLUMN")["details"] == {"field": "label"}
    odd = tmp_path / "birds.data"
    odd.write_text(table.read_text())
    line = one_line(run("datasets", "add", "birds", str(odd)))
    assert "or pass --format FORMAT" in line


def test_did_you_mean_for_every_named_object(live_server, settings, tmp_path, monkeypatch):
    add_model_version(settings, "digits-cnn")
    c = Client(live_server)
    table = tmp_path / "digits.csv"
    table.write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    c.add_dataset("digits", str(table))
    c.create_endpoint("digits-ep", model="digits-cnn:1", capture_percent=10)
    code = tmp_path / "ingest.py"
    code.write_text("def handler(event, context):\n    return event\n")
    c.create_function("ingest", str(code))
    c.create_workflow("retrain", {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}})
    c.create_trigger("nightly", cron="0 3 * * *", workflow="retrain")
    c.create_monitor("drift", "digits-ep")

    run = cli_runner(live_server, monkeypatch)
    for group, typo, noun, name in [("datasets", "digts", "dataset", "digits"),
                                    ("models", "digits-cn", "model", "digits-cnn"),
                                    ("endpoints", "digit-ep", "endpoint", "digits-ep"),
                                    ("functions", "injest", "function", "ingest"),
                                    ("workflows", "retrian", "workflow", "retrain"),
                                    ("triggers", "nightley", "trigger", "nightly"),
                                    ("monitors", "drfit", "monitor", "drift")]:
        line = one_line(run(group, "show", typo))
        assert line == f"error: {noun} '{typo}' not found; did you mean '{name}'?", line
    assert one_line(run("datasets", "show", "zzz")) == "error: dataset 'zzz' not found"  # nothing close
    # the API carries the suggestions too, and so does a reference inside a request
    r = httpx.get(f"{live_server}/functions/injest")
    assert assert_error(r, 404, "not_found", "did you mean 'ingest'?")["details"] == {"suggestions": ["ingest"]}
    with pytest.raises(NotFound, match="dataset 'digts' not found; did you mean 'digits'"):
        c.train(dataset="digts")


def test_did_you_mean_when_deleting_a_mistyped_name(live_server, settings, tmp_path, monkeypatch):
    add_model_version(settings, "digits-cnn")
    table = tmp_path / "digits.csv"
    table.write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    Client(live_server).add_dataset("digits", str(table))
    run = cli_runner(live_server, monkeypatch)
    for args, noun, typo, name in [(("models", "delete", "digits-cn"), "model", "digits-cn", "digits-cnn"),
                                   (("models", "delete", "digits-cn:1"), "model", "digits-cn", "digits-cnn"),
                                   (("datasets", "delete", "digts"), "dataset", "digts", "digits"),
                                   (("datasets", "delete", "digts:1"), "dataset", "digts", "digits")]:
        line = one_line(run(*args))
        assert line == f"error: {noun} '{typo}' not found; did you mean '{name}'?", line
    assert Client(live_server).dataset("digits")["version"] == 1  # nothing deleted


def test_trigger_and_compare_errors_name_flags_and_models_not_request_fields(live_server, settings, tmp_path,
                                                                            monkeypatch):
    add_model_version(settings)
    c = Client(live_server)
    c.add_dataset("digits", "sample:digits")
    code = tmp_path / "ingest.py"
    code.write_text("def handler(event, context):\n    return event\n")
    c.create_function("ingest", str(code))
    run = cli_runner(live_server, monkeypatch)
    missing = tmp_path / "no-such-folder"
    line = one_line(run("triggers", "create", "t", "--objects", str(missing), "--function", "ingest"))
    assert line.startswith(f"error: --objects: '{missing}' does not exist") and "objects_uri" not in line, line
    r = httpx.post(f"{live_server}/triggers", json={"name": "t", "kind": "objects", "objects_uri": str(missing),
                                                   "function": "ingest"})
    assert assert_error(r, 400, "invalid_input", "objects_uri:")["details"] == {"field": "objects_uri"}
    line = one_line(run("models", "compare", "tiny:1", "tiny:1", "--dataset", "digits:test"))
    assert line == "error: tiny:1 is a tabular model; dataset digits:1 is image", line
    assert httpx.get(f"{live_server}/jobs").json() == []  # nothing queued


def test_a_missing_endpoint_key_says_how_to_send_it(live_server, settings, digit_bundles, digits_data, monkeypatch):
    register_digits(settings, digit_bundles[0])
    c = Client(live_server)
    run = cli_runner(live_server, monkeypatch)
    made = run("endpoints", "create", "locked", "--model", "digits:1", "--new-key", "--wait", "--timeout", "120")
    assert made.exit_code == 0, made.output
    key = made.stderr.split("(shown once): ", 1)[1].split()[0]
    assert '-H "Authorization: Bearer $LOOPML_ENDPOINT_KEY"' in made.stdout  # the curl example sends the key
    instances = digits_data[0][:1].tolist()
    body = '{"instances": %s}' % instances
    line = one_line(run("endpoints", "invoke", "locked", "--data", body))
    assert line == "error: endpoint 'locked' needs one of its API keys: pass --key KEY (or set LOOPML_ENDPOINT_KEY)"
    line = one_line(run("endpoints", "invoke", "locked", "--data", body, "--key", "nope"))
    assert line == "error: endpoint 'locked' refused the API key given: it is not one of its keys"
    with pytest.raises(InvocationError, match="pass api_key=KEY") as missing:
        c.invoke("locked", instances=instances)
    assert missing.value.status == 401 and "LOOPML_SERVING_TOKEN" not in str(missing.value)
    assert len(c.invoke("locked", instances=instances, api_key=key)["predictions"]) == 1
    monkeypatch.setenv("LOOPML_ENDPOINT_KEY", key)
    out = run("endpoints", "invoke", "locked", "--data", body, "--json")
    assert out.exit_code == 0, out.output


@pytest.fixture
def token_server(settings):
    """A control plane whose data plane wants LOOPML_SERVING_TOKEN."""
    from loopml.api.app import create_app
    from tests.asgi_server import serve_asgi

    with serve_asgi(create_app(settings.model_copy(update={"serving_token": "dp-secret"}), start_loop=True)) as url:
        yield url


def test_a_missing_data_plane_token_says_set_loopml_serving_token(token_server, settings, digit_bundles,
                                                                  digits_data, monkeypatch):
    register_digits(settings, digit_bundles[0])
    c = Client(token_server)
    c.create_endpoint("open", model="digits:1", wait=True, timeout=120)
    instances = digits_data[0][:1].tolist()
    with pytest.raises(InvocationError, match="^the data plane needs its token: set LOOPML_SERVING_TOKEN$"):
        c.invoke("open", instances=instances)
    with pytest.raises(InvocationError, match="has no API keys: the data plane wants its own token"):
        c.invoke("open", instances=instances, api_key="lml_nope")
    monkeypatch.setenv("LOOPML_SERVING_TOKEN", "wrong")
    with pytest.raises(InvocationError, match="LOOPML_SERVING_TOKEN does not match"):
        Client(token_server).invoke("open", instances=instances)
    monkeypatch.setenv("LOOPML_SERVING_TOKEN", "dp-secret")
    assert len(Client(token_server).invoke("open", instances=instances)["predictions"]) == 1
