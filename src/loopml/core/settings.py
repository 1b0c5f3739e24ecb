"""One typed settings object, read once at start and passed down.

Sources, highest priority first: explicit keyword arguments, ``LOOPML_*`` environment
variables, ``loopml.toml`` (in the working directory, or the file named by
``LOOPML_CONFIG``), then the defaults below. Nothing reads the environment at import time.
Frozen once loaded: a different value is a new object (``settings.model_copy(update=...)``).

Child processes get their settings one way: ``settings.child_env(role)``, the environment of
that role (``CHILD_SETTINGS`` says which settings each receives). Never on a command line,
where any local user reads them (``ps``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from loopml.core.errors import InvalidInput

ChildRole = Literal["worker", "serving", "function", "importer"]

# Which settings each child process receives (as LOOPML_* variables); nothing else of LOOPML_*
# reaches it. worker: a job's process (store locations, Keras backend, the API URL for alert
# links — not the API token); serving: the data plane (store locations, its own token, memory;
# not the admin token); function: user code, which only talks to the API (its URL; the token is
# the invocation's own, limited and short-lived, set by functions.runtime) — no store credentials
# and never the admin token; importer: converts a model file, needs no settings at all.
CHILD_SETTINGS: dict[str, tuple[str, ...]] = {
    "worker": ("home", "database_url", "artifact_uri", "s3_endpoint_url", "keras_backend",
               "capture_prefix", "api_url"),
    "serving": ("home", "database_url", "artifact_uri", "s3_endpoint_url", "serving_token",
                "serving_memory_mb", "capture_prefix", "log_level", "http_read_timeout_s",
                "node_heartbeat_s", "serving_drain_s"),
    "function": ("api_url",),
    "importer": (),
}
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOOPML_", extra="ignore", frozen=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".loopml",
                       description="Folder for the default metadata database and artifacts.")
    database_url: str | None = Field(None, description="sqlite:///path or postgresql://...; default sqlite under home.")
    artifact_uri: str | None = Field(None, description="Local folder / file:// URI or s3://bucket/prefix; default under home.")
    s3_endpoint_url: str | None = Field(None, description="Endpoint of an S3-compatible server for s3:// URIs.")
    host: str = Field("127.0.0.1", description="Control-plane bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Control-plane port.")
    api_url: str | None = Field(None, description="Where the CLI/SDK find the control plane; default http://host:port.")
    token: str | None = Field(None, description=(
        "Server: the bootstrap admin token (auth is on when it is set or any user exists). CLI/SDK: the "
        "token sent as 'Authorization: Bearer <token>' (wins over `loopml login`)."))
    keras_backend: Literal["tensorflow", "jax", "torch"] = Field(
        "tensorflow", description="Keras backend for training (measured fastest on CPU: tensorflow).")
    max_concurrent_jobs: int = Field(1, ge=1, description="Local executor: jobs running at once.")
    warm_workers: int = Field(1, ge=0, le=8, description=(
        "Spare workers kept ready with TensorFlow/Keras imported, so a job skips that import (~5 CPU-seconds): "
        "processes on the local executor, actors holding 1 CPU / 2 GB on Ray; each idle spare holds ~0.7 GB RSS. "
        "0: start every worker cold."))
    executor: Literal["local", "ray"] = Field(
        "local", description="Where jobs run: local (subprocesses on this host) or ray (a Ray cluster; needs a "
                             "PostgreSQL database_url and an s3:// artifact_uri every node reaches).")
    ray_address: str = Field("auto", description="Ray cluster to run jobs on (executor=ray): auto (the cluster "
                             "`ray start` made on this host), HOST:PORT of its head, or ray://HOST:10001.")
    job_retries: int = Field(2, ge=0, description="Ray executor: how often a job whose node died is retried on "
                             "another node (from its last checkpoint).")
    reconcile_interval_s: float = Field(0.5, gt=0, description="Control-plane loop period.")
    heartbeat_timeout_s: float = Field(60.0, gt=0, description="A running job silent this long is failed.")
    autoscale_interval_s: float = Field(5.0, gt=0, description="The leader evaluates each autoscaled "
                                        "endpoint's load this often (seconds).")
    serving_host: str = Field("127.0.0.1", description="Data-plane (endpoints) bind address.")
    serving_port: int = Field(8081, ge=0, le=65535, description="Data-plane port, one for all endpoints (0: any free port).")
    serving_token: str | None = Field(None, description="If set, data-plane requests need 'Authorization: Bearer <token>'.")
    serving_memory_mb: int = Field(2048, ge=16, description="Model memory budget of the serving process; least-recently-used models unload past it.")
    serving_workers: int | None = Field(None, ge=0, le=64, description=(
        "Serving processes sharing the data-plane socket (each serves every endpoint and holds its "
        "own models: memory is per worker). 0 or unset: cores // 2, between 1 and 4 (the batchers' "
        "ONNX Runtime threads, the control plane and local clients share the cores)."))
    capture_prefix: str = Field("capture", description="Artifact-store prefix of captured endpoint traffic.")
    node_heartbeat_s: float = Field(2.0, gt=0, description=(
        "How often a data-plane node (`loopml serve`, the embedded data plane) reports its state, "
        "endpoints loaded and load to the metadata store."))
    serving_drain_s: float | None = Field(None, ge=0, le=300, description=(
        "On SIGTERM a data-plane node first answers /readyz and /ping with 503 'draining' (and "
        "reports itself draining) this long while still serving, so a load balancer's health check "
        "takes it out before it stops accepting. Unset: 2 s for `loopml serve` nodes and Ray "
        "replicas, 0 for the control plane's own data plane (its socket outlives the process)."))
    node_lost_after_s: float = Field(10.0, gt=0, description=(
        "A data-plane node silent this long is shown as lost (`loopml endpoints show`, `loopml nodes list`)."))
    http_read_timeout_s: float = Field(30.0, gt=0, description=(
        "Slow clients get 408 and are disconnected: a request's headers (and on the data plane its "
        "body) must arrive within this many seconds; a control-plane body may not pause longer."))
    function_concurrency: int = Field(4, ge=1, description="Function invocations running at once (each in its own process).")
    trigger_poll_interval_s: float = Field(1.0, gt=0, description="How often object and cron triggers are checked.")
    log_level: str = Field("warning", description="Server log level.")
    webhook_allow_private: bool = Field(False, description=(
        "Monitor webhooks may go to private, loopback and link-local addresses (refused by default: "
        "they would let a URL reach the metadata service or local ports)."))
    webhook_allow_hosts: str = Field("", description=(
        "Comma-separated host names and networks (CIDR) monitor webhooks may reach although they are "
        "not public, e.g. hooks.internal,10.2.0.0/16."))
    server_paths: str = Field("", description=(
        "Comma-separated folders on the control plane's machine whose files a non-admin token may name "
        "once auth is on (a dataset source, an object trigger's folder); the local artifact store is "
        "always allowed, any other server path needs an admin (it is read with the server's rights)."))

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

    def cluster_mode_problem(self) -> str | None:
        """With a remote executor every node reads and writes the same stores: one line saying
        what to set when they are this host's SQLite file or folder (None: fine)."""
        if self.executor == "local":
            return None
        if not self.resolved_database_url.startswith(("postgresql://", "postgres://", "postgresql+")):
            return (f"LOOPML_EXECUTOR={self.executor} needs a database every node reaches: set "
                    "LOOPML_DATABASE_URL=postgresql://USER@HOST/DB (SQLite is a file on this host)")
        if not self.resolved_artifact_uri.startswith("s3://"):
            return (f"LOOPML_EXECUTOR={self.executor} needs an artifact store every node reaches: set "
                    "LOOPML_ARTIFACT_URI=s3://BUCKET/PREFIX (and LOOPML_S3_ENDPOINT_URL for an S3-compatible "
                    "server); a local folder is on this host only")
        return None

    def _resolved(self, key: str) -> object:
        return {"database_url": self.resolved_database_url, "artifact_uri": self.resolved_artifact_uri,
                "api_url": self.resolved_api_url}.get(key, getattr(self, key))

    def child_env(self, role: ChildRole, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a ``role`` child process: ``base`` (default: this process's
        environment) without any LOOPML_* variable, plus the role's settings (CHILD_SETTINGS),
        resolved here so the child needs neither this process's loopml.toml nor its defaults."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if not k.startswith("LOOPML_")}
        for key in CHILD_SETTINGS[role]:
            value = self._resolved(key)
            if value is not None:
                env[f"LOOPML_{key.upper()}"] = str(value)
        env["LOOPML_CONFIG"] = os.devnull  # what a child gets is said above, not by a file it finds
        env["PYTHONUNBUFFERED"] = "1"
        if role in ("worker", "importer"):
            env["KERAS_BACKEND"] = self.keras_backend
            env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        if role == "function":  # many small processes: one thread each, no stray .pyc
            env.update({**_ONE_THREAD, "PYTHONDONTWRITEBYTECODE": "1"})
        return env


# -- `loopml login`: the CLI/SDK user's token, outside loopml.toml (which the server reads too: a
# login token there would become the server's bootstrap admin token) -----------------------------
def credentials_path() -> Path:
    """``$XDG_CONFIG_HOME/loopml/credentials.toml`` (default ``~/.config/loopml/``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "loopml" / "credentials.toml"


def load_login() -> dict[str, str] | None:
    """``{"api_url", "token"}`` saved by ``loopml login``; None when there is none (or it is unreadable)."""
    import tomllib

    try:
        data = tomllib.loads(credentials_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data.get("api_url"), str) and isinstance(data.get("token"), str):
        return {"api_url": data["api_url"].rstrip("/"), "token": data["token"]}
    return None


def save_login(api_url: str, token: str) -> Path:
    """Write the credentials file, mode 0600 from the start (folder 0700), replacing it whole."""
    import json

    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:  # TOML basic strings are JSON strings here
        f.write(f"# written by `loopml login`; LOOPML_TOKEN overrides it\napi_url = {json.dumps(api_url.rstrip('/'))}\n"
                f"token = {json.dumps(token)}\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def forget_login() -> bool:
    try:
        credentials_path().unlink()
        return True
    except FileNotFoundError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Settings(), with a bad LOOPML_* value or loopml.toml entry as one InvalidInput line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"LoopML settings are not valid (LOOPML_* / loopml.toml): {detail}") from None
