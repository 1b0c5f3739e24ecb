"""Alembic environment: the connection is handed in by loopml.store.db (no alembic.ini needed)."""

from alembic import context

from loopml.store.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # e.g. `alembic revision --autogenerate` from a developer shell
    from sqlalchemy import create_engine

    connection = create_engine(config.get_main_option("sqlalchemy.url")).connect()

context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
