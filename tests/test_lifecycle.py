"""Issue 10 items 12-13: the lifecycle of models and data over REST, SDK and CLI — delete
(refused while in use, files removed with the record, crash-safe), import, download, compare."""

from __future__ import annotations

from pathlib import Path

import pytest

from loopml.api.app import create_app
from loopml.core.errors import Conflict, InvalidInput
from loopml.sdk.client import Client
from tests.asgi_server import serve_asgi
from tests.surface_support import assert_error, cli_runner


def write_csv(path: Path, rows: int = 40) -> Path:
    lines = ["sepal,petal,species"] + [f"{i * 0.1:.1f},{(i % 7) * 0.3:.1f},{'ab'[i % 2]}" for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def quiet_server(settings, platform):
    """The API over ``platform`` without the control loop: queued jobs stay queued."""
    with serve_asgi(create_app(settings, platform=platform, start_loop=False)) as url:
        yield url


def fake_version(platform, name: str, dataset: str) -> dict:
    """A registry entry with a file under its prefix (training is tested elsewhere)."""
    version = platform.models.next_version(name)
    prefix = f"models/{name}/v{version}"
    platform.artifacts.put_bytes(f"{prefix}/loopml.json", b"{}")
    return platform.models.add_version(name, version, dataset=dataset, kind="tabular", template="mlp", hparams={},
                                       metrics={}, lineage={}, runtimes=["keras"], artifact_prefix=prefix)


def one_line(result) -> str:
    lines = [ln for ln in (result.stdout + (result.stderr or "")).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_delete_refusals_and_deletions_over_rest_sdk_and_cli(quiet_server, platform, monkeypatch, tmp_path):
    import httpx

    c, run = Client(quiet_server), cli_runner(quiet_server, monkeypatch)
    ds = c.add_dataset("iris", write_csv(tmp_path / "iris.csv"), label="species")
    c.add_dataset("iris", write_csv(tmp_path / "iris2.csv", rows=50), label="species")
    assert platform.artifacts.list(ds["artifact_prefix"])
    mv = fake_version(platform, "flowers", dataset="iris:1")
    c.set_alias("flowers", "production", 1)

    # a dataset version with registered models: 409 / exit 2, one line naming them and --force
    assert_error(httpx.delete(f"{quiet_server}/datasets/iris/versions/1"), 409, "conflict",
                 "model version flowers:1", "--force")
    result = run("datasets", "delete", "iris:1")
    assert result.exit_code == 2 and "model version flowers:1 (trained on it)" in one_line(result)
    # a model version behind an alias: refused, nothing deleted
    result = run("models", "delete", "flowers:1")
    assert result.exit_code == 2 and "alias flowers@production" in one_line(result)
    with pytest.raises(Conflict, match="alias flowers@production"):
        c.delete_model("flowers")
    assert c.model_version("flowers", 1)["ref"] == "flowers:1"
    assert platform.artifacts.list(mv["artifact_prefix"])
    # mistakes
    assert_error(httpx.delete(f"{quiet_server}/models/flowers/versions/latest"), 400, "invalid_input",
                 "deleting needs a version number")
    result = run("models", "delete", "flowers@production")
    assert result.exit_code == 2 and "by number" in one_line(result)
    result = run("datasets", "delete", "nope:1")
    assert result.exit_code == 2 and "dataset 'nope' not found" in one_line(result)

    # once nothing uses it, the version and its files go; the number is not reused
    c.delete_alias("flowers", "production")
    result = run("models", "delete", "flowers:1")
    assert result.exit_code == 0, result.output
    assert "deleted flowers:1" in result.stdout
    assert platform.artifacts.list(mv["artifact_prefix"]) == []
    assert fake_version(platform, "flowers", dataset="iris:2")["version"] == 2

    # --force deletes a dataset version the models were trained on; the models stay
    fake_version(platform, "flowers", dataset="iris:1")
    assert c.delete_dataset("iris:1", force=True)["deleted"] == ["iris:1"]
    assert platform.artifacts.list(ds["artifact_prefix"]) == []
    assert [v["version"] for v in c.dataset_versions("iris")] == [2]
    assert [v["version"] for v in c.model("flowers")["versions"]] == [2, 3]

    # jobs: a queued one is refused; an ended one goes with its logs and files
    job = c.train("iris", params={"epochs": 1}, register_as="flowers")
    result = run("jobs", "delete", job["id"])
    assert result.exit_code == 2 and f"job {job['id']} is queued; cancel it first" in one_line(result)
    c.cancel(job["id"])
    platform.artifacts.put_bytes(f"jobs/{job['id']}/checkpoints/model.keras", b"x")
    result = run("jobs", "delete", job["id"], "--json")
    assert result.exit_code == 0 and f"jobs/{job['id']}" in result.stdout
    assert platform.artifacts.list(f"jobs/{job['id']}") == []
    assert_error(httpx.get(f"{quiet_server}/jobs/{job['id']}"), 404, "not_found")

    # a whole model, then a whole dataset
    assert c.delete_model("flowers")["deleted"] == ["flowers:2", "flowers:3"]
    assert c.models() == []
    result = run("datasets", "delete", "iris")
    assert result.exit_code == 0 and "deleted iris:2" in result.stdout
    assert c.list_datasets() == [] and platform.artifacts.list("datasets") == []


def test_a_deletion_interrupted_after_its_commit_is_finished_at_the_next_start(platform, settings):
    """The crash window: records deleted (one transaction, outbox written), files not yet removed."""
    from loopml.controlplane.loop import ControlLoop

    mv = fake_version(platform, "crashy", dataset="x:1")
    platform.deletions.delete_model_version("crashy", 1)  # the process "dies" before purge()
    assert platform.artifacts.list(mv["artifact_prefix"])  # files still there, record gone
    assert [p["what"] for p in platform.deletions.pending()] == ["model crashy:1"]

    loop = ControlLoop(platform)  # the next control-plane start: its first tick sweeps
    try:
        loop.tick()
    finally:
        loop.stop()
    assert platform.artifacts.list(mv["artifact_prefix"]) == [] and platform.deletions.pending() == []
