"""``loopml``: the command line over the control-plane API.

Only Typer is imported up front; every command imports what it needs (the SDK, Rich, the API
server, the store) when it runs, so ``loopml --help`` never loads Keras, numpy or pandas.
"""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from loopml import __version__
from loopml.cli import (audit, cluster, datasets, db, endpoints, functions, jobs, login, models, monitors, nodes, predict,
                        serve, server, tokens, train, triggers, tuning, users, workflows)
from loopml.cli import helpstyle
from loopml.core.errors import LoopMLError

try:  # typer >= 0.24 parses with its own copy of click, which raises that copy's UsageError
    from typer._click.exceptions import NoArgsIsHelpError as _NoArgsIsHelp, UsageError as _UsageError
except ImportError:  # pragma: no cover - an older typer parses with click itself
    _NoArgsIsHelp, _UsageError = click.exceptions.NoArgsIsHelpError, click.UsageError
USAGE_ERRORS = (click.UsageError, _UsageError)


class LoopMLGroup(TyperGroup):
    """Turns every LoopMLError into one line on stderr and its exit code (2 = the user's mistake)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        helpstyle.polish(self)  # NAME positionals, no "<bool>" beside flags

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except USAGE_ERRORS as err:  # `loopml --bogus`
            _usage_error(ctx, err)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LoopMLError as err:
            from loopml.cli.errors import cli_message

            click.echo(f"error: {cli_message(err)}", err=True)
            ctx.exit(err.exit_code)
        except USAGE_ERRORS as err:  # every subcommand's parsing happens in here
            _usage_error(ctx, err)
            raise


def _usage_error(ctx: click.Context, err: Any) -> None:
    """A bad flag, choice or missing argument as one line (exit 2), not click's boxed usage text.
    ``NoArgsIsHelpError`` (a bare group) is left alone: it shows the help."""
    if isinstance(err, (click.exceptions.NoArgsIsHelpError, _NoArgsIsHelp)):
        return
    path = (err.ctx or ctx).command_path
    message = err.format_message().replace("Value error, ", "").rstrip(".")  # typer's choice check says so
    click.echo(f"error: {message} (see '{path} --help')", err=True)
    ctx.exit(2)


app = typer.Typer(
    name="loopml",
    cls=LoopMLGroup,
    help="LoopML: datasets, tracked Keras training jobs, a model registry and batch predictions "
         "on your own machines. The CLI talks to the control plane at LOOPML_API_URL "
         "(default http://127.0.0.1:8080); start one with `loopml server`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"loopml {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


app.add_typer(datasets.app, name="datasets")
app.command("train", help=train.train.__doc__)(train.train)
app.add_typer(jobs.app, name="jobs")
app.command("tune", help=tuning.tune.__doc__)(tuning.tune)
app.add_typer(tuning.app, name="tuning")
app.add_typer(models.app, name="models")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(functions.app, name="functions")
app.add_typer(triggers.app, name="triggers")
app.add_typer(workflows.app, name="workflows")
app.add_typer(workflows.executions_app, name="executions")
app.add_typer(monitors.app, name="monitors")
app.add_typer(monitors.alerts_app, name="alerts")
app.command("predict", help=predict.predict.__doc__)(predict.predict)
app.command("server", help=server.server.__doc__)(server.server)
app.command("serve", help=serve.serve.__doc__)(serve.serve)
app.add_typer(nodes.app, name="nodes")
app.add_typer(db.app, name="db")
app.add_typer(cluster.app, name="cluster")
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(audit.app, name="audit")
app.command("login", help=login.login.__doc__)(login.login)
app.command("logout", help=login.logout.__doc__)(login.logout)


def main() -> None:
    app(prog_name="loopml")


if __name__ == "__main__":
    main()
