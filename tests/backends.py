"""Real storage backends for contract tests: SQLite + PostgreSQL, local folder + S3 (moto server).

Use from a test module with::

    pytest_plugins = ("tests.backends",)

(registers these fixtures once for the whole session, so the moto server is shared).

Fixtures
    metadata_url    sqlite (file in tmp_path) | postgresql (fresh schema per test)
    metadata_store  a MetadataStore on ``metadata_url``, disposed before the schema is dropped
    artifact_store  local (tmp_path folder) | s3 (fresh bucket per test on the moto server)
    moto_endpoint   session: URL of a real S3 API server (``moto_server`` subprocess)
    s3_env          AWS_* dummy credentials / region set with monkeypatch

Environment
    LOOPML_TEST_POSTGRES_URL       default postgresql://$USER@127.0.0.1:5432/test; unreachable -> skip
    LOOPML_TEST_REQUIRE_POSTGRES=1 a missing/unreachable PostgreSQL fails instead of skipping
"""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import pytest

from tests.process_support import free_port

PG_URL_ENV = "LOOPML_TEST_POSTGRES_URL"
PG_REQUIRE_ENV = "LOOPML_TEST_REQUIRE_POSTGRES"


def _unavailable(reason: str, *, required: bool) -> None:
    if required:
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# -- metadata store --------------------------------------------------------------------------

def _pg_admin_url(url: str) -> str:
    """psycopg wants a plain libpq URL (no +driver)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def with_search_path(url: str, schema: str) -> str:
    """``url`` with libpq ``options=-csearch_path=<schema>`` appended."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}', safe='')}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh, empty schema (dropped afterwards)."""
    required = os.environ.get(PG_REQUIRE_ENV) == "1"
    # Unset: try the conventional local server (database `test`, trust auth) and skip if absent.
    base = os.environ.get(PG_URL_ENV) or f"postgresql://{getpass.getuser()}@127.0.0.1:5432/test"
    import psycopg

    admin = _pg_admin_url(base)
    schema = f"loopml_t_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {base} is unreachable: {str(exc).strip()}", required=required)
    try:
        yield with_search_path(base, schema)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'meta' / 'loopml.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def metadata_store(metadata_url: str):
    from loopml.store.db import MetadataStore

    store = MetadataStore(metadata_url)
    try:
        yield store
    finally:
        store.dispose()


# -- artifact store --------------------------------------------------------------------------

def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a moto S3 server started once per session (terminated at the end)."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        pytest.skip(f"S3 tests need moto's server ({exe} missing): pip install -e '.[test]'")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        opener, deadline = _no_proxy_opener(), time.monotonic() + 120  # imports, on a loaded machine
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}",
                            pytrace=False)
            try:
                with opener.open(f"{url}/moto-api/", timeout=10):  # its first answer loads its backends
                    break
            except urllib.error.HTTPError:
                break  # it answered
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not answer on {url} within 120 s: {log.read_text()[-2000:]}",
                                pytrace=False)
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region (set by env; a region in client_kwargs breaks CreateBucket)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL",
                "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(var, raising=False)
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)


def s3_client(endpoint: str):
    """A boto3 S3 client on ``endpoint`` (call with ``s3_env`` active)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def make_bucket(endpoint: str) -> str:
    bucket = f"loopml-t-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_bucket(moto_endpoint: str, s3_env: None) -> str:
    """A fresh, empty bucket on the moto server."""
    return make_bucket(moto_endpoint)


@pytest.fixture(params=["local", "s3"])
def artifact_store(request: pytest.FixtureRequest, tmp_path: Path):
    from loopml.artifacts.store import ArtifactStore

    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore(f"s3://{bucket}/prefix", s3_endpoint_url=endpoint)
