"""The CLI as a person meets it: progress on a terminal (and none when piped), help pages, tables
that stay readable, JSON that keeps non-ASCII text."""

from __future__ import annotations

import io
import json
import re

import pytest
import typer
from typer.testing import CliRunner

from loopml.cli.main import app

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TERMINAL = {"TTY_COMPATIBLE": "1", "COLUMNS": "120"}  # Rich's documented switch: treat stdout as a terminal
PIPED = {"TTY_COMPATIBLE": None, "FORCE_COLOR": None, "TTY_INTERACTIVE": None}


@pytest.fixture
def run(live_server, monkeypatch):
    monkeypatch.setenv("LOOPML_API_URL", live_server)

    def invoke(*args: str, env: dict[str, str | None] | None = None):
        return CliRunner().invoke(app, list(args), env={**PIPED, **(env or {})}, catch_exceptions=False)
    return invoke


def _csv(tmp_path, rows: int = 3000):
    path = tmp_path / "flowers.csv"
    path.write_text("a,b,kind\n" + "".join(f"{i},{i % 7},{'xy'[i % 2]}\n" for i in range(rows)))
    return path


FLOW = """\
StartAt: Hold
States:
  Hold:
    Type: Wait
    Seconds: 2
    Next: Done
  Done:
    Type: Pass
    End: true
"""


# -- item 17: progress ------------------------------------------------------------------------


def test_piped_and_json_output_carry_no_progress(run, tmp_path):
    result = run("datasets", "add", "flowers", str(_csv(tmp_path)), "--label", "kind")
    assert result.exit_code == 0, result.output
    assert "registered flowers:1" in result.stdout
    assert not ANSI.search(result.output) and "uploading" not in result.output and "━" not in result.output

    as_json = run("datasets", "add", "flowers", str(_csv(tmp_path)), "--label", "kind", "--json",
                  env=TERMINAL)  # --json: quiet even on a terminal
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["ref"] == "flowers:1"

    (tmp_path / "flow.yaml").write_text(FLOW)
    about = "waits two seconds, then passes; see http://127.0.0.1:8080/docs#/workflows for the API it goes through"
    assert run("workflows", "create", "hold", "--definition", str(tmp_path / "flow.yaml"),
               "--description", about).exit_code == 0
    listed = run("workflows", "list")  # piped: no terminal width to squeeze the table into
    assert listed.exit_code == 0 and about in listed.stdout, listed.stdout
    waited = run("workflows", "start", "hold", "--wait")
    assert waited.exit_code == 0, waited.output
    assert "→ Hold" in waited.stdout and "SUCCEEDED" in waited.stdout  # the event lines are output, not progress
    assert not ANSI.search(waited.output) and "in Hold" not in waited.output


def test_a_terminal_sees_upload_bytes_and_the_current_state(run, tmp_path):
    csv = _csv(tmp_path)
    result = run("datasets", "add", "flowers", str(csv), "--label", "kind", env=TERMINAL)
    assert result.exit_code == 0, result.output
    shown = ANSI.sub("", result.stdout)
    assert "uploading flowers.csv" in shown and "registering flowers" in shown  # sent, then the server's work
    final = shown.rsplit("\r", 1)[0].rsplit("uploading flowers.csv", 1)[-1]  # the last frame drawn
    assert final.count("registering flowers") == 1, final
    size_kb = f"{csv.stat().st_size / 1000:.1f}/{csv.stat().st_size / 1000:.1f} kB"  # Rich's DownloadColumn
    assert size_kb in shown, shown
    assert "registered flowers:1" in shown

    (tmp_path / "flow.yaml").write_text(FLOW)
    assert run("workflows", "create", "hold", "--definition", str(tmp_path / "flow.yaml")).exit_code == 0
    waited = run("workflows", "start", "hold", "--wait", env=TERMINAL)
    assert waited.exit_code == 0, waited.output
    shown = ANSI.sub("", waited.stdout)
    assert re.search(r"execution \S+: RUNNING in Hold", shown), shown  # the Wait lasts 2 s: polled at least once
    assert "SUCCEEDED" in shown


def test_progress_helper_is_silent_unless_a_terminal_watches():
    from rich.console import Console

    from loopml.cli import output, progress

    for env, drawn in (({}, False), (TERMINAL, True)):
        buf = io.StringIO()
        with pytest.MonkeyPatch.context() as mp:
            for var in ("TTY_COMPATIBLE", "FORCE_COLOR"):
                mp.delenv(var, raising=False)
            for key, value in env.items():
                mp.setenv(key, value)
            mp.setattr(output, "console", lambda: Console(file=buf, width=100))
            mp.setattr(progress, "console", output.console)
            with progress.track("uploading x.bin", transfer=True) as bar:
                bar.transferred(512, 2048)
                bar.print("a line that is output")
            with progress.track("quiet", quiet=True) as bar:  # --json
                bar.update("never drawn")
        text = ANSI.sub("", buf.getvalue())
        assert "a line that is output" in text
        assert ("uploading x.bin" in text) is drawn and ("0.5/2.0 kB" in text) is drawn
        assert "never drawn" not in text and "quiet" not in text


# -- item 20: help ---------------------------------------------------------------------------


def _commands(cmd, path=()):
    yield path, cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _commands(sub, (*path, name))


def test_every_help_page_is_polished():
    root = typer.main.get_command(app)
    pages = list(_commands(root))
    assert len(pages) > 50  # the whole tree, groups and commands
    for path, cmd in pages:
        page = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400", **PIPED})
        where = "loopml " + " ".join(path)
        assert page.exit_code == 0, where
        assert "<bool>" not in page.stdout, where
        assert "iris" not in page.stdout.lower(), where
        assert (cmd.help or cmd.short_help or "").strip(), f"{where} has no help line"
        for param in cmd.params:
            if param.param_type_name == "argument":
                assert param.metavar and param.metavar == param.metavar.upper(), f"{where}: {param.metavar}"
        usage = next(line for line in page.stdout.splitlines() if "Usage:" in line)
        for text in [p.help for p in cmd.params if getattr(p, "help", None)]:
            for bracketed in re.findall(r"\[[^\]]*\]", text):  # Rich markup would eat "[default: x]"
                assert bracketed in page.stdout, f"{where}: {bracketed!r} is not shown"
        assert not re.search(r"\{[a-z_]+\}", usage), f"{where}: {usage}"


# -- tables and JSON ---------------------------------------------------------------------------


def test_tables_fold_long_cells_and_keep_short_ones_whole():
    from rich.console import Console

    from loopml.cli.output import fields_table, table

    url = "http://127.0.0.1:8081/endpoints/a-rather-long-endpoint-name/invocations"
    message = "variant canary could not load mnist-cnn:2: the model file is missing from the artifact store"
    buf = io.StringIO()
    out = Console(file=buf, width=72)
    out.print(table("name", "status", "ready", "url", "message",
                    rows=[("mnist-canary", "[green]InService[/]", "yes", url, message)]))
    out.print(fields_table([("url", url)]))
    lines = buf.getvalue().splitlines()
    assert "…" not in buf.getvalue()  # nothing cut off
    assert any("InService" in line for line in lines) and any("mnist-canary" in line for line in lines)
    cells = [[c.strip() for c in line.split("│")] for line in lines if line.startswith("│")]
    folded = "".join(row[4] for row in cells if len(row) > 4)
    assert folded == url  # the URL folds across lines inside its column, whole
    header = next(line for line in lines if line.startswith("┃")).split("┃")
    assert len(header[4]) >= 14 and len(header[5]) >= 14  # long columns share the width, readable
    assert "InService" in cells[0][2] and "mnist-canary" == cells[0][1]  # short cells whole, on one line
    assert "".join(line.split(maxsplit=1)[-1].strip() for line in lines if line.strip()
                   and not line.startswith(("┏", "┃", "┡", "│", "└"))) == url  # fields_table: folded too


def test_json_output_keeps_non_ascii(run, tmp_path):
    csv = tmp_path / "marks.csv"
    csv.write_text("a,b,grade\n" + "".join(f"{i},{i % 5},{'≥5' if i % 2 else 'café'}\n" for i in range(40)))
    result = run("datasets", "add", "marks", str(csv), "--label", "grade", "--json")
    assert result.exit_code == 0, result.output
    assert "≥5" in result.stdout and "café" in result.stdout and "\\u" not in result.stdout
    assert set(json.loads(result.stdout)["schema"]["classes"]) == {"≥5", "café"}


def test_a_terminal_sees_the_endpoint_status_and_the_monitor_job(run, settings):
    """Registry entries without files (no training): the endpoint's generation fails to load and the
    monitor's run fails in its worker — both after the progress showed where they were."""
    from loopml.platform import Platform
    from tests.test_endpoints_surface import add_model_version
    from tests.test_monitors import add_endpoint

    plat = Platform(settings)
    try:
        add_model_version(plat, "tiny", 1)
        add_endpoint(plat, "mnist")
    finally:
        plat.close()

    created = run("endpoints", "create", "clf", "--model", "tiny:1", "--wait", "--timeout", "120", env=TERMINAL)
    assert created.exit_code == 1, created.output
    assert re.search(r"clf: (Creating|Failed) \(generation 1\)", ANSI.sub("", created.stdout)), created.stdout
    piped = run("endpoints", "update", "clf", "--capture", "5", "--wait", "--timeout", "120")
    assert piped.exit_code == 1 and "generation" not in piped.stdout and not ANSI.search(piped.output)

    assert run("monitors", "create", "m", "--endpoint", "mnist").exit_code == 0
    ran = run("monitors", "run", "m", env=TERMINAL)
    assert ran.exit_code == 1, ran.output  # no baseline: the run fails in its worker, said why
    assert re.search(r"monitor m: job job-\S+ failed", ANSI.sub("", ran.stdout)), ran.stdout
    piped = run("monitors", "run", "m")
    assert piped.exit_code == 1 and "monitor m: job" not in piped.output and not ANSI.search(piped.output)


# ------------------------------------------------------------------ usage mistakes: one line, exit 2


@pytest.mark.parametrize(("args", "fragments"), [
    (["jobs", "list", "--kind", "bogus"], ("'bogus' is not one of", "--kind", "loopml jobs list --help")),
    (["models", "import", "m.keras", "--kind", "foo"], ("'foo' is not one of", "loopml models import --help")),
    (["datasets", "add"], ("Missing argument 'NAME'", "loopml datasets add --help")),
    (["jobs", "list", "--nope"], ("No such option: --nope",)),
    (["jobs", "nosuch"], ("No such command 'nosuch'",)),
    (["--bogus"], ("No such option: --bogus", "loopml --help")),
])
def test_a_usage_mistake_is_one_line_with_exit_2(args, fragments):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "╭" not in result.stderr and not result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_and_bare_groups_still_show_help():
    for args in (["jobs", "list", "--help"], ["--help"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0 and "Usage: loopml" in result.stdout
    bare = CliRunner().invoke(app, ["jobs"])
    assert "Usage: loopml jobs" in bare.output and "error:" not in bare.output


# ------------------------------------------------------------------ the CLI's words, a typo, no leftovers


def test_download_force_template_typo_and_deleted_dataset_leaves_no_folder(run, live_server, settings, tmp_path):
    from pathlib import Path

    import numpy as np

    from loopml.core.errors import InvalidInput
    from loopml.sdk.client import Client

    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 3)
    assert run("datasets", "add", "tab", str(tmp_path / "t.npz")).exit_code == 0
    typo = run("train", "--dataset", "tab", "--model", "mlpp")
    assert typo.exit_code == 2 and "did you mean 'mlp'?" in typo.stderr, typo.stderr
    assert run("train", "--dataset", "tab", "--model", "mlp", "--epochs", "1", "--wait").exit_code == 0

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine\n")
    refused = run("models", "download", "tab-mlp:1", str(full))
    assert refused.exit_code == 2 and "pass --force to write into it" in refused.stderr, refused.stderr
    assert "force=True" not in refused.stderr
    with Client(live_server) as c, pytest.raises(InvalidInput, match=r"pass force=True to write into it"):
        c.download_model("tab-mlp:1", full)

    folder = Path(settings.resolved_artifact_uri) / "datasets" / "tab"
    assert folder.is_dir()
    assert run("models", "delete", "tab-mlp").exit_code == 0
    deleted = run("datasets", "delete", "tab")
    assert deleted.exit_code == 0, deleted.output
    assert not folder.exists()


def test_following_a_training_job_prints_each_epoch_once(run, tmp_path):
    """`loopml train` follows through the SDK's wait(on_poll=...): every finished epoch is one line."""
    ok = run("datasets", "add", "flowers", str(_csv(tmp_path, rows=300)), "--label", "kind", "--json")
    assert ok.exit_code == 0, ok.output
    trained = run("train", "--dataset", "flowers", "--epochs", "2", "--no-register")
    assert trained.exit_code == 0, trained.output
    lines = [line for line in trained.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"], trained.stdout
