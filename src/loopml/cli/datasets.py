"""``loopml datasets``: add, list, show."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, fields_table, num, print_json, table, when

app = typer.Typer(help="Register and inspect datasets (content-addressed versions).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


class Format(str, Enum):
    npz = "npz"
    csv = "csv"
    parquet = "parquet"
    images = "images"
    text = "text"


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. mnist.")],
    source: Annotated[str, typer.Argument(help="sample:NAME, a local file or folder, or s3://…")],
    format: Annotated[Optional[Format], typer.Option("--format", help="Inferred when omitted.")] = None,
    label: Annotated[Optional[str], typer.Option("--label", help="Label column of a table.")] = None,
    text: Annotated[Optional[str], typer.Option("--text", help="Text column of a table.")] = None,
    extend: Annotated[bool, typer.Option("--extend", help="Append SOURCE's rows to the newest version "
                                         "(same kind, shape and classes), read with its --label/--text "
                                         "unless given.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register SOURCE as a version of NAME (identical content keeps its version).

    Examples: loopml datasets add mnist sample:mnist;
    loopml datasets add penguins ./penguins.csv --label species;
    loopml datasets add mnist s3://bucket/incoming/batch-1.zip --extend
    """
    from pathlib import Path

    from rich.markup import escape

    from loopml.cli.progress import track

    upload = Path(source).expanduser().exists()  # what the SDK uploads; the rest the server reads itself
    what = escape(f"uploading {Path(source).name}" if upload else f"adding {name} from {source}")
    with track(what, quiet=as_json, transfer=upload) as bar:
        record = client().add_dataset(name, source, format=format.value if format else None, label=label, text=text,
                                      extend=extend, on_upload=bar.upload(f"registering {name} (reading, hashing, "
                                                                          "splitting)"))
    if as_json:
        print_json(record)
        return
    schema = record.get("schema") or {}
    summary = f"{record['rows']} rows, {len(schema.get('classes') or [])} classes, {record['kind']}"
    if record.get("created"):
        console().print(f"registered [bold]{record['ref']}[/] ({summary})")
    else:
        console().print(f"unchanged: same content as [bold]{record['ref']}[/] ({summary})")


@app.command("delete")
def delete(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="No version: the dataset and all its versions.")],
    force: Annotated[bool, typer.Option("--force", help="Delete even if registered model versions were trained "
                                        "on it (the models stay).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete a dataset version (or a whole dataset) with its files.

    Refused while jobs read it, or while model versions trained on it are registered (unless --force).
    Example: loopml datasets delete mnist:2
    """
    result = client().delete_dataset(ref, force=force)
    emit(result, as_json, lambda r: console().print(f"deleted {', '.join(r['deleted'])}"))


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List datasets with their newest version."""
    rows = client().list_datasets()
    emit(rows, as_json, print_datasets)


def print_datasets(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no datasets yet: loopml datasets add mnist sample:mnist")
        return
    console().print(table("name", "latest", "versions", "kind", "rows", "classes", "created", rows=[
        (d["name"], d["latest_version"], d["versions"], d["latest"]["kind"], d["latest"]["rows"],
         len((d["latest"].get("schema") or {}).get("classes") or []), when(d["latest"].get("created_at")))
        for d in rows]))


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="Default: the newest version.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset version: schema, class counts and split sizes."""
    record = client().dataset(ref)
    emit(record, as_json, print_dataset)


def print_dataset(record: dict[str, Any]) -> None:
    out = console()
    schema = record.get("schema") or {}
    out.print(fields_table([
        ("dataset", record["ref"]), ("kind", record["kind"]), ("rows", record["rows"]),
        ("format", record.get("format") or "-"), ("source", record.get("source") or "-"),
        ("label", schema.get("label") or "-"), ("content hash", record["content_hash"][:16]),
        ("created", when(record.get("created_at"))),
    ]))
    counts = (record.get("splits") or {}).get("counts") or {}
    if counts:
        out.print(table("split", "rows", title="Splits", rows=[(k, v) for k, v in counts.items()]))
    class_counts = schema.get("class_counts") or {}
    if class_counts:
        total = sum(class_counts.values()) or 1
        out.print(table("class", "rows", "share", title="Classes",
                        rows=[(str(c), n, f"{100 * n / total:.1f}%") for c, n in class_counts.items()]))
    features = schema.get("features") or []
    if features:
        out.print(table("feature", "type", "details", title="Features",
                        rows=[(str(f.get("name")), str(f.get("type") or f.get("dtype") or "-"), _feature_details(f))
                              for f in features]))


def _feature_details(f: dict[str, Any]) -> str:
    if "shape" in f:
        return f"shape {tuple(f['shape'])} {f.get('dtype', '')} range {num(f.get('min'))}..{num(f.get('max'))}"
    if "categories" in f:
        cats = f["categories"]
        shown = ", ".join(map(str, cats[:8])) + (", …" if len(cats) > 8 else "")
        return f"{len(cats)} categories: {shown}"
    keys = [k for k in ("mean", "std", "min", "max", "mean_tokens", "max_tokens", "missing") if k in f]
    return "  ".join(f"{k} {num(f[k], 3)}" for k in keys)
