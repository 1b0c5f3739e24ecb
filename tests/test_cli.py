"""The `loopml` CLI against a real control plane (uvicorn on a free port)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from loopml.cli.main import app
from tests.asgi_server import serve_asgi
from tests.process_support import free_port

HEAVY = ("keras", "tensorflow", "numpy", "pandas", "fastapi", "loopml.store", "loopml.api", "sqlalchemy")


@pytest.fixture
def cli(live_server, monkeypatch):
    """Run `loopml ARGS…` in-process against the live server; returns the click Result."""
    monkeypatch.setenv("LOOPML_API_URL", live_server)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)
    return run


def ok_json(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout)


def one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_help_does_not_import_heavy_modules():
    probe = (
        "import sys\n"
        "from loopml.cli.main import main\n"
        "for argv in (['loopml', '--help'], ['loopml', 'datasets', '--help'], ['loopml', 'train', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Usage: loopml" in out.stdout and "datasets" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "HEAVY=", out.stdout.splitlines()[-1]


def test_sdk_import_is_light():
    probe = ("import sys\nfrom loopml import Client\nClient('http://127.0.0.1:9', token='t').close()\n"
             f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} + ('keras',) if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "HEAVY="


def test_train_with_a_local_model_file_uploads_it(cli, tmp_path):
    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 3)
    ok_json(cli("datasets", "add", "tab", str(tmp_path / "t.npz"), "--json"))
    model = tmp_path / "my_model.py"
    model.write_text("def build_model(hparams, schema):\n    raise NotImplementedError('test model')\n")
    job = ok_json(cli("train", "--dataset", "tab", "--model", str(model), "-p", "epochs=1", "--detach", "--json"))
    assert job["spec"]["user_model_key"].endswith("my_model.py") and job["spec"]["model"].startswith("file:")
    assert job["spec"]["hparams"]["epochs"] == 1
    assert cli("jobs", "cancel", job["id"]).exit_code in (0, 2)  # 2: it already failed (the model raises)
    one_line_error(cli("train", "--dataset", "tab", "--model", str(tmp_path / "missing.py")), 2, "missing.py")


def test_datasets_add_list_show(cli, tmp_path):
    first = ok_json(cli("datasets", "add", "digits", "sample:digits", "--json"))
    assert (first["ref"], first["created"]) == ("digits:1", True)
    again = ok_json(cli("datasets", "add", "digits", "sample:digits", "--json"))
    assert (again["ref"], again["created"]) == ("digits:1", False)

    csv = tmp_path / "flowers.csv"
    csv.write_text("a,b,kind\n" + "".join(f"{i},{i % 5},{'xy'[i % 2]}\n" for i in range(30)))
    uploaded = ok_json(cli("datasets", "add", "flowers", str(csv), "--label", "kind", "--json"))
    assert (uploaded["kind"], uploaded["rows"], uploaded["source"]) == ("tabular", 30, str(csv.resolve()))

    from PIL import Image

    folder = tmp_path / "shapes"
    for cls, value in (("dark", 10), ("light", 240)):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("L", (9, 9), color=value - i).save(folder / cls / f"{i}.png")
    images = ok_json(cli("datasets", "add", "shapes", str(folder), "--json"))
    assert (images["kind"], images["rows"], images["schema"]["classes"]) == ("image", 12, ["dark", "light"])

    listed = ok_json(cli("datasets", "list", "--json"))
    assert [d["name"] for d in listed] == ["digits", "flowers", "shapes"]

    shown = ok_json(cli("datasets", "show", "digits:1", "--json"))
    assert shown["schema"]["class_counts"]["0"] > 0 and sum(shown["splits"]["counts"].values()) == 1797
    table = cli("datasets", "show", "digits")
    assert table.exit_code == 0, table.stderr
    for word in ("digits:1", "Splits", "Classes", "validation"):
        assert word in table.stdout
    plain = cli("datasets", "list")
    assert plain.exit_code == 0 and "flowers" in plain.stdout


def test_user_mistakes_are_one_line_and_exit_2(cli, tmp_path):
    one_line_error(cli("datasets", "show", "nope"), 2, "dataset 'nope' not found")
    one_line_error(cli("datasets", "add", "x", str(tmp_path / "missing.csv")), 2, "does not exist")
    one_line_error(cli("datasets", "add", "Bad Name", "sample:digits"), 2, "Bad Name")
    one_line_error(cli("jobs", "show", "job-missing"), 2, "job-missing")
    one_line_error(cli("models", "show", "ghost@prod"), 2, "ghost")
    one_line_error(cli("train", "--dataset", "nope", "--param", "epochs"), 2, "--param 'epochs'", "KEY=VALUE")
    one_line_error(cli("train", "--dataset", "nope", "--epochs", "1"), 2, "nope")
    assert cli("datasets", "add").exit_code == 2  # bad usage: Typer's own exit 2
    assert cli("datasets", "add", "x", "sample:digits", "--format", "xls").exit_code == 2


def test_unreachable_control_plane_says_how_to_start_it(monkeypatch):
    port = free_port()  # a port nobody listens on
    monkeypatch.setenv("LOOPML_API_URL", f"http://127.0.0.1:{port}")
    result = CliRunner().invoke(app, ["datasets", "list"])
    line = one_line_error(result, 1, "not reachable", f"127.0.0.1:{port}")
    assert "loopml server" in line


def test_token_is_sent_from_the_environment(settings, monkeypatch):
    """A server with a token: LOOPML_TOKEN authorises the CLI, a wrong one is a one-line error."""
    from loopml.api.app import create_app

    secured = settings.model_copy(update={"token": "s3cret"})
    with serve_asgi(create_app(secured, start_loop=False)) as url:
        monkeypatch.setenv("LOOPML_API_URL", url)
        monkeypatch.setenv("LOOPML_TOKEN", "wrong")
        one_line_error(CliRunner().invoke(app, ["jobs", "list"]), 2, "invalid API token")
        monkeypatch.setenv("LOOPML_TOKEN", "s3cret")
        assert ok_json(CliRunner().invoke(app, ["jobs", "list", "--json"])) == []


def test_entry_point_exit_codes_in_a_subprocess(live_server, tmp_path):
    env = {**__import__("os").environ, "LOOPML_API_URL": live_server, "LOOPML_CONFIG": str(tmp_path / "none.toml")}
    cmd = [sys.executable, "-m", "loopml.cli.main"]
    out = subprocess.run([*cmd, "datasets", "show", "nope"], capture_output=True, text=True, env=env, timeout=120)
    assert (out.returncode, out.stderr.strip()) == (2, "error: dataset 'nope' not found")
    out = subprocess.run([*cmd, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("loopml ")


def _training_available() -> str | None:
    for module in ("loopml.training.service", "loopml.controlplane"):
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} does not exist yet"
        except ImportError as exc:
            return f"{module} cannot be imported: {exc}"
    return None


@pytest.mark.skipif(_training_available() is not None, reason=str(_training_available()))
def test_train_then_predict_end_to_end(cli, tmp_path):
    ok_json(cli("datasets", "add", "digits", "sample:digits", "--json"))
    job = ok_json(cli("train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--wait", "--json"))
    assert job["status"] == "succeeded", job["reason"]
    assert job["result"]["model"]["name"] == "digits-cnn"
    assert len(job["metrics"]) == 1 and 0 <= job["result"]["evaluation"]["accuracy"] <= 1

    shown = cli("jobs", "show", job["id"])
    assert shown.exit_code == 0 and "Confusion matrix" in shown.stdout and "Per class" in shown.stdout

    out = tmp_path / "preds.csv"
    pred = ok_json(cli("predict", "digits-cnn", "digits:test", "--limit", "5", "--output", str(out), "--json"))
    assert pred["job"]["status"] == "succeeded"
    header, *rows = out.read_text().strip().splitlines()
    assert {"row", "label", "confidence", "truth"} <= set(header.split(",")) and len(rows) == 5

    npz = tmp_path / "few.npz"
    np.savez(npz, x=np.zeros((3, 8, 8, 1), dtype=np.uint8))
    table = cli("predict", "digits-cnn:1", str(npz))
    assert table.exit_code == 0, table.stderr
    assert "confidence" in table.stdout

    assert ok_json(cli("models", "show", "digits-cnn", "--json"))["versions"][0]["version"] == 1
    assert cli("models", "alias", "set", "digits-cnn", "prod", "1").exit_code == 0
    assert ok_json(cli("models", "show", "digits-cnn@prod", "--json"))["version"] == 1
    assert [e["to_version"] for e in ok_json(cli("models", "alias", "history", "digits-cnn", "--json"))] == [1]


@pytest.mark.skipif(_training_available() is not None, reason=str(_training_available()))
def test_train_wait_exits_1_when_the_job_fails(cli, tmp_path):
    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 3)
    ok_json(cli("datasets", "add", "tab", str(tmp_path / "t.npz"), "--json"))
    model = tmp_path / "broken.py"
    model.write_text("def build_model(hparams, schema):\n    raise RuntimeError('deliberately broken')\n")
    result = cli("train", "--dataset", "tab", "--model", str(model), "--wait", "--json")
    assert result.exit_code == 1, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "failed" and job["reason"]
