"""Settings: defaults, LOOPML_* environment, loopml.toml, and their priority."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from loopml.core.settings import Settings, load_settings
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
    with pytest.raises(pydantic.ValidationError, match="keras_backend"):
        load_settings(keras_backend="theano")
    with pytest.raises(pydantic.ValidationError, match="max_concurrent_jobs"):
        load_settings(max_concurrent_jobs=0)
