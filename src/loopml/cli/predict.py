"""``loopml predict``: batch predictions with a registered model version."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, err_console, print_json, table
from loopml.cli.train import CpusOpt, GpusOpt, MemoryOpt
from loopml.core.errors import InvalidInput, LoopMLError

SHOW_ROWS = 100


def predict(
    model: Annotated[str, typer.Argument(metavar="MODEL[:VERSION|@ALIAS]", help="A registered model.")],
    input: Annotated[str, typer.Argument(metavar="INPUT",
                                         help="NAME[:VERSION]:SPLIT of a dataset (e.g. mnist:test), a local "
                                              ".csv/.parquet/.npz/.npy file, or for image models a .png/.jpg "
                                              "file, a folder of images or a .zip of them.")],
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Predict at most N rows.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", dir_okay=False,
                                                   help="Write the CSV here instead of printing a table.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (job record and predictions).")] = False,
    cpus: CpusOpt = None,
    memory_gb: MemoryOpt = None,
    gpus: GpusOpt = None,
) -> None:
    """Predict INPUT with MODEL, wait for the job, then print the predictions or write them as CSV.

    The input is checked against the model's input signature before a job is queued. Images are
    greyscaled or coloured and resized as the model takes them; each row names its file.

    Example: loopml predict mnist-cnn@production mnist:test --limit 10 --output preds.csv
    """
    from loopml.cli.train import follow

    if output is not None:
        check_writable(output)
    c = client()
    job = c.predict(model, input, limit=limit, cpus=cpus, memory_gb=memory_gb, gpus=gpus)
    if not as_json:
        err_console().print(f"submitted prediction job {job['id']}")
    final = follow(c, job["id"], live=not as_json)
    if final is None:
        err_console().print(f"detached; job {job['id']} keeps running. Fetch the result later: "
                            f"loopml jobs show {job['id']}")
        raise typer.Exit(130)
    if final["status"] != "succeeded":
        raise LoopMLError(f"prediction job {final['id']} {final['status']}: {final.get('reason') or 'no reason given'}")
    if output is not None:
        try:
            c.download_output(final["id"], output)
        except OSError as exc:
            raise LoopMLError(f"cannot write {output}: {exc.strerror or exc}") from None
        if as_json:
            print_json({"job": final, "output": str(output)})
        else:
            console().print(f"wrote predictions of job {final['id']} to {output}")
        return
    rows = list(csv.DictReader(io.StringIO(c.prediction_output(final["id"]).decode("utf-8"))))
    if as_json:
        print_json({"job": final, "predictions": rows})
        return
    print_predictions(rows)


def check_writable(output: Path) -> None:
    """--output must be writable before a job runs, not after it ran (exit 2, one line)."""
    target = output.expanduser()
    folder = target.parent.resolve()
    if not folder.is_dir():
        raise InvalidInput(f"--output {output}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise InvalidInput(f"--output {output}: not writable (permission denied)")


def print_predictions(rows: list[dict[str, Any]]) -> None:
    out = console()
    has_truth = any(r.get("truth") not in (None, "") for r in rows)
    has_file = any(r.get("file") for r in rows)
    cols = ["row", *(["file"] if has_file else []), *(["truth"] if has_truth else []), "label", "confidence"]
    shown = rows[:SHOW_ROWS]
    out.print(table(*cols, rows=[[_cell(r, c) for c in cols] for r in shown]))
    if len(rows) > SHOW_ROWS:
        out.print(f"… {len(rows) - SHOW_ROWS} more rows; use --output FILE for all of them")
    if has_truth:
        right = sum(1 for r in rows if r.get("truth") == r.get("label"))
        out.print(f"accuracy {right / len(rows):.4f} ({right}/{len(rows)} rows)")


def _cell(row: dict[str, Any], col: str) -> str:
    value = row.get(col) or ""
    if col == "confidence":
        try:
            return f"{float(value):.4f}"
        except ValueError:
            return value
    return value
