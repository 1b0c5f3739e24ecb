"""``loopml db``: metadata-database maintenance."""

from __future__ import annotations

import typer

app = typer.Typer(help="Metadata database maintenance.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Migrate the configured metadata database (LOOPML_DATABASE_URL) to this LoopML's schema."""
    from loopml.cli.output import console
    from loopml.sdk.http import load_settings
    from loopml.store import db

    settings = load_settings()
    engine = db.make_engine(settings.resolved_database_url)
    try:
        before = db.current_revision(engine)
        db.upgrade(engine)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        console().print(f"{where} is already at schema {after}")
    else:
        console().print(f"upgraded {where} from schema {before or '(empty)'} to {after}")
