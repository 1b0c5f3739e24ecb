"""Settings: defaults, LOOPML_* environment, loopml.toml, and their priority."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from loopml.core.errors import InvalidInput
from loopml.core.settings import CHILD_SETTINGS, Settings, load_settings
from tests.process_support import drop_loopml_vars


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No LOOPML_* from the caller's shell, a fake HOME, and a cwd without loopml.toml."""
    drop_loopml_vars(monkeypatch)
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return home


def test_defaults(clean_env: Path) -> None:
    s = load_settings()
    assert s.home == clean_env / ".loopml"
    assert s.resolved_database_url == f"sqlite:///{(clean_env / '.loopml' / 'loopml.db').resolve()}"
    assert s.resolved_artifact_uri == str((clean_env / ".loopml" / "artifacts").resolve())
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.resolved_api_url == "http://127.0.0.1:8080"
    assert s.database_url is None and s.artifact_uri is None and s.token is None
    assert s.keras_backend == "tensorflow" and s.executor == "local" and s.max_concurrent_jobs == 1


def test_env_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOPML_HOME", str(tmp_path / "lh"))
    monkeypatch.setenv("LOOPML_DATABASE_URL", "postgresql://u@db:5432/loopml")
    monkeypatch.setenv("LOOPML_ARTIFACT_URI", "s3://bucket/prefix")
    monkeypatch.setenv("LOOPML_PORT", "9090")
    monkeypatch.setenv("LOOPML_HOST", "0.0.0.0")
    s = Settings()
    assert s.home == tmp_path / "lh"
    assert s.resolved_database_url == "postgresql://u@db:5432/loopml"
    assert s.resolved_artifact_uri == "s3://bucket/prefix"
    assert s.port == 9090 and isinstance(s.port, int)
    assert s.resolved_api_url == "http://127.0.0.1:9090"  # a wildcard bind is reached via loopback


def test_home_env_moves_derived_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOOPML_HOME", "~/elsewhere")
    s = Settings()
    assert s.home == Path.home() / "elsewhere"  # ~ expanded
    assert s.resolved_database_url == f"sqlite:///{(Path.home() / 'elsewhere' / 'loopml.db').resolve()}"
    assert s.resolved_artifact_uri == str((Path.home() / "elsewhere" / "artifacts").resolve())


def test_toml_in_cwd_is_read(tmp_path: Path) -> None:
    Path("loopml.toml").write_text(
        f'home = "{tmp_path / "toml-home"}"\nport = 7000\nhost = "10.0.0.5"\ntoken = "sekret"\n'
        'artifact_uri = "s3://from-toml/x"\n')
    s = Settings()
    assert s.home == tmp_path / "toml-home" and s.port == 7000 and s.host == "10.0.0.5"
    assert s.token == "sekret" and s.resolved_artifact_uri == "s3://from-toml/x"
    assert s.resolved_api_url == "http://10.0.0.5:7000"


def test_env_beats_toml_and_kwargs_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("loopml.toml").write_text('port = 7000\nhost = "10.0.0.5"\n')
    monkeypatch.setenv("LOOPML_PORT", "9191")
    s = Settings()
    assert s.port == 9191 and s.host == "10.0.0.5"
    assert load_settings(port=1234).port == 1234


def test_loopml_config_names_another_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "conf" / "custom.toml"
    cfg.parent.mkdir()
    cfg.write_text("port = 6006\n")
    Path("loopml.toml").write_text("port = 7000\n")
    monkeypatch.setenv("LOOPML_CONFIG", str(cfg))
    assert Settings().port == 6006


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_invalid_port_env_is_a_validation_error(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("LOOPML_PORT", port)
    with pytest.raises(pydantic.ValidationError, match="port"):
        Settings()


def test_invalid_values_in_toml_and_kwargs(monkeypatch: pytest.MonkeyPatch) -> None:
    Path("loopml.toml").write_text("port = 65536\n")
    with pytest.raises(pydantic.ValidationError, match="port"):
        Settings()
    Path("loopml.toml").unlink()
    # load_settings (what the CLI, server and workers call) turns it into one InvalidInput line
    with pytest.raises(InvalidInput, match="settings are not valid.*keras_backend"):
        load_settings(keras_backend="theano")
    with pytest.raises(InvalidInput, match="max_concurrent_jobs"):
        load_settings(max_concurrent_jobs=0)


def test_settings_are_frozen_once_loaded() -> None:
    s = load_settings(port=1234)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.port = 1  # type: ignore[misc]
    assert s.model_copy(update={"port": 1}).port == 1 and s.port == 1234


def test_each_child_role_gets_its_settings_and_no_others_secrets(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, database_url="postgresql://u:pw@db/x", token="admin-secret",
                 serving_token="dp-secret", s3_endpoint_url="http://s3:9000", api_url="http://cp:8080")
    parent = {"PATH": "/bin", "AWS_ACCESS_KEY_ID": "k", "LOOPML_TOKEN": "admin-secret", "LOOPML_PORT": "1"}
    worker = s.child_env("worker", parent)
    assert worker["LOOPML_DATABASE_URL"] == "postgresql://u:pw@db/x"
    assert worker["LOOPML_ARTIFACT_URI"] == str((tmp_path / "artifacts").resolve())
    assert worker["LOOPML_S3_ENDPOINT_URL"] == "http://s3:9000" and worker["KERAS_BACKEND"] == "tensorflow"
    assert "LOOPML_TOKEN" not in worker and "LOOPML_SERVING_TOKEN" not in worker and "LOOPML_PORT" not in worker
    assert worker["PATH"] == "/bin" and worker["AWS_ACCESS_KEY_ID"] == "k"  # S3 credentials stay in the env
    serving = s.child_env("serving", parent)
    assert serving["LOOPML_SERVING_TOKEN"] == "dp-secret" and "LOOPML_TOKEN" not in serving
    assert serving["LOOPML_DATABASE_URL"] == "postgresql://u:pw@db/x"
    function = s.child_env("function", parent)
    assert function["LOOPML_API_URL"] == "http://cp:8080" and "LOOPML_TOKEN" not in function  # its own, per call
    assert not any(k in function for k in ("LOOPML_DATABASE_URL", "LOOPML_ARTIFACT_URI", "LOOPML_HOME"))
    assert function["OMP_NUM_THREADS"] == "1"
    importer = s.child_env("importer", parent)
    assert {k for k in importer if k.startswith("LOOPML_")} == {"LOOPML_CONFIG"}
    assert set(CHILD_SETTINGS) == {"worker", "serving", "function", "importer"}


def test_a_child_reads_back_the_settings_it_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Path("loopml.toml").write_text("database_url = 'sqlite:///elsewhere.db'\n")  # not the child's business
    parent = Settings(home=tmp_path, max_concurrent_jobs=3, capture_prefix="cap")
    for key, value in parent.child_env("worker", {}).items():
        monkeypatch.setenv(key, value)
    child = load_settings()
    assert child.resolved_database_url == parent.resolved_database_url
    assert (child.home, child.capture_prefix) == (tmp_path, "cap")
    assert child.max_concurrent_jobs == 1  # not a worker's setting: the default
