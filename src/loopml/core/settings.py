"""One typed settings object, read once at start and passed down.

Sources, highest priority first: explicit keyword arguments, ``LOOPML_*`` environment
variables, ``loopml.toml`` (in the working directory, or the file named by
``LOOPML_CONFIG``), then the defaults below. Nothing reads the environment at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPML_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".loopml",
                       description="Folder for the default metadata database and artifacts.")
    database_url: str | None = Field(None, description="sqlite:///path or postgresql://...; default sqlite under home.")
    artifact_uri: str | None = Field(None, description="Local folder / file:// URI or s3://bucket/prefix; default under home.")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible server for s3:// URIs.")
    host: str = Field("127.0.0.1", description="Control-plane bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Control-plane port.")
    api_url: str | None = Field(None, description="Where the CLI/SDK find the control plane; default http://host:port.")
    token: str | None = Field(None, description="If set, the API requires 'Authorization: Bearer <token>'.")
    keras_backend: Literal["tensorflow", "jax", "torch"] = Field(
        "tensorflow", description="Keras backend for training (measured fastest on CPU: tensorflow).")
    max_concurrent_jobs: int = Field(1, ge=1, description="Local executor: jobs running at once.")
    executor: Literal["local"] = Field("local", description="Where jobs run.")
    reconcile_interval_s: float = Field(0.5, gt=0, description="Control-plane loop period.")
    heartbeat_timeout_s: float = Field(60.0, gt=0, description="A running job silent this long is failed.")
    serving_host: str = Field("127.0.0.1", description="Data-plane (endpoints) bind address.")
    serving_port: int = Field(8081, ge=0, le=65535, description="Data-plane port, one for all endpoints (0: any free port).")
    serving_token: str | None = Field(None, description="If set, data-plane requests need 'Authorization: Bearer <token>'.")
    serving_memory_mb: int = Field(2048, ge=16, description="Model memory budget of the serving process; least-recently-used models unload past it.")
    capture_prefix: str = Field("capture", description="Artifact-store prefix of captured endpoint traffic.")
    function_concurrency: int = Field(4, ge=1, description="Function invocations running at once (each in its own process).")
    trigger_poll_interval_s: float = Field(1.0, gt=0, description="How often object and cron triggers are checked.")
    log_level: str = Field("warning", description="Server log level.")

    @field_validator("home", mode="before")
    @classmethod
    def _expand_home(cls, v: object) -> object:
        return Path(os.path.expanduser(str(v))) if v is not None else v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = os.environ.get("LOOPML_CONFIG", "loopml.toml")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file))

    # Derived values: computed, never stored twice.
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'loopml.db').resolve()}"

    @property
    def resolved_artifact_uri(self) -> str:
        return self.artifact_uri or str((self.home / "artifacts").resolve())

    @property
    def resolved_api_url(self) -> str:
        if self.api_url:
            return self.api_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
