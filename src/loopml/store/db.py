"""Engine and sessions for the metadata store, chosen by URL (sqlite:/// or postgresql://).

A brand-new database is created at the newest schema; an existing one at an older revision is
refused with the command that upgrades it (never migrated behind the user's back).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, event, func, inspect, literal_column, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from loopml.core.errors import InvalidInput, SchemaOutOfDate

_MIGRATIONS = str(Path(__file__).with_name("migrations"))


def normalise_url(url: str) -> str:
    """postgresql:// and postgres:// use psycopg 3; a bare path means SQLite."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    return url


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # WAL lets workers write while the API reads
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except Exception as exc:  # noqa: BLE001 - the user's mistake, say which URL
        raise InvalidInput(f"database URL {url!r} is not valid: {exc}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)
    raise InvalidInput(f"database URL {url!r}: only sqlite:/// and postgresql:// are supported")


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", _MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    return ScriptDirectory(_MIGRATIONS).get_current_head()  # type: ignore[return-value]


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    cfg = _alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def ensure_schema(engine: Engine, *, create: bool = True) -> None:
    """Create a new database; refuse one whose schema is older than this LoopML."""
    current, head = current_revision(engine), head_revision()
    if current == head:
        return
    if current is None and create and not inspect(engine).get_table_names():
        upgrade(engine)
        return
    raise SchemaOutOfDate(
        f"metadata database {engine.url.render_as_string(hide_password=True)} is at schema "
        f"{current or 'unknown'}, this LoopML needs {head}: run `loopml db upgrade`")


class MetadataStore:
    """Owns the engine and hands out transactional sessions."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
        try:
            ensure_schema(self.engine, create=create)
        except BaseException:
            self.engine.dispose()  # a refused database must not leak pooled connections
            raise
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block exits cleanly, rolled back otherwise."""
        with self._sessions() as s, s.begin():
            yield s

    def dispose(self) -> None:
        self.engine.dispose()


def db_now(s: Session) -> float:
    """Seconds since 1970 by the database's clock."""
    if s.get_bind().dialect.name == "postgresql":
        expr = func.extract("epoch", func.clock_timestamp())
    else:  # SQLite: julianday('now') has millisecond resolution
        expr = (func.julianday("now") - literal_column("2440587.5")) * literal_column("86400.0")
    return float(s.execute(select(expr)).scalar_one())
