"""``loopml models``: list, show, and move aliases (every move is audited)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import actor, client, console, emit, fields_table, num, print_json, table, when

app = typer.Typer(help="The model registry: versions, aliases, alias history.", no_args_is_help=True)
alias_app = typer.Typer(help="Point aliases (e.g. prod, staging) at model versions.", no_args_is_help=True)
app.add_typer(alias_app, name="alias")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
HEADLINE = {"test_accuracy": "test acc", "val_accuracy": "val acc"}


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List registered models."""
    rows = client().models()
    emit(rows, as_json, print_models)


def print_models(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no models yet: train one with loopml train --dataset NAME --register-as NAME")
        return
    console().print(table("name", "versions", "latest", "aliases", "test accuracy", "created", rows=[
        (m["name"], m["versions"], m.get("latest_version"),
         ", ".join(f"{a}->{v}" for a, v in sorted((m.get("aliases") or {}).items())) or "-",
         (m.get("latest_metrics") or {}).get("test_accuracy"), when(m.get("created_at"))) for m in rows]))


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION|@ALIAS]", help="No version: the model and its versions.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a model (its versions and aliases) or one version."""
    from loopml.core.errors import InvalidInput
    from loopml.registry.refs import parse_model_ref  # pure string parsing, no store

    c = client()
    parsed = parse_model_ref(ref)
    if parsed.is_job:
        raise InvalidInput(f"{ref} is a training job's model: loopml jobs show {parsed.job_id}")
    if parsed.alias is not None:
        record = c.model_alias(parsed.name, parsed.alias)
    elif parsed.version is not None or ref.strip().endswith(":latest"):
        record = c.model_version(parsed.name, parsed.version or "latest")
    else:
        emit(c.model(parsed.name), as_json, print_model)
        return
    emit(record, as_json, print_version)


def print_model(record: dict[str, Any]) -> None:
    out = console()
    aliases = record.get("aliases") or {}
    out.print(fields_table([("model", record["name"]), ("versions", len(record["versions"])),
                            ("aliases", ", ".join(f"{a}->{v}" for a, v in aliases.items()) or "-")]))
    out.print(table("version", "aliases", "dataset", "template", *HEADLINE.values(), "job", "created", rows=[
        (v["version"], ", ".join(v.get("aliases") or []) or "-", v.get("dataset") or "-", v.get("template") or "-",
         *((v.get("metrics") or {}).get(k) for k in HEADLINE), v.get("job_id") or "-", when(v.get("created_at")))
        for v in record["versions"]]))


def print_version(v: dict[str, Any]) -> None:
    out = console()
    out.print(fields_table([
        ("model", v["ref"]), ("aliases", ", ".join(v.get("aliases") or []) or "-"),
        ("dataset", v.get("dataset") or "-"), ("kind", v.get("kind") or "-"), ("template", v.get("template") or "-"),
        ("job", v.get("job_id") or "-"), ("runtimes", ", ".join(map(str, v.get("runtimes") or [])) or "-"),
        ("trusted", v.get("trusted")), ("created", when(v.get("created_at"))),
    ]))
    if v.get("metrics"):
        out.print(fields_table([(k, num(val)) for k, val in v["metrics"].items()], title="Metrics"))
    if v.get("hparams"):
        out.print(fields_table([(k, num(val)) for k, val in v["hparams"].items()], title="Hyperparameters"))


class Kind(str, Enum):
    image = "image"
    text = "text"
    tabular = "tabular"


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(metavar="FILE", help="model.keras, model.onnx or a SavedModel folder.")],
    name: Annotated[str, typer.Option("--name", help="Register as the next version of this model.")],
    labels: Annotated[Optional[str], typer.Option("--labels", help="Class names in output order: a,b,c "
                                                  "(default 0..N-1 from the output width).")] = None,
    labels_file: Annotated[Optional[Path], typer.Option("--labels-file", help="Class names, one per line.")] = None,
    input_shape: Annotated[Optional[str], typer.Option("--input-shape", help="One row's shape, e.g. 28,28,1 "
                                                       "(when the model leaves it open).")] = None,
    kind: Annotated[Optional[Kind], typer.Option("--kind", help="Default: from the input shape.")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="Tabular: input column names in order "
                                                   "(default x0..xN-1).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option("--tokenizer", help="Text: a HuggingFace tokenizer.json.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a model trained elsewhere as the next version of --name.

    The model takes what clients send (pixels, numeric columns, token ids) and ends in a softmax.
    A .keras file is loaded in Keras safe mode (Lambda layers are refused) and exported to ONNX.
    Example: loopml models import digits.keras --name digits --input-shape 8,8,1
    """
    from loopml.core.errors import InvalidInput

    if labels is not None and labels_file is not None:
        raise InvalidInput("give --labels or --labels-file, not both")
    names = None
    if labels_file is not None:
        try:
            names = [ln.strip() for ln in labels_file.read_text("utf-8").splitlines() if ln.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"--labels-file {str(labels_file)!r} cannot be read: {exc}") from None
    elif labels is not None:
        names = [x.strip() for x in labels.split(",") if x.strip()]
    record = client().import_model(path, name, labels=names, input_shape=input_shape,
                                   kind=kind.value if kind else None,
                                   columns=[x.strip() for x in columns.split(",")] if columns else None,
                                   tokenizer=tokenizer)
    if as_json:
        print_json(record)
        return
    shape = tuple((record.get("input") or {}).get("shape") or [])[1:]
    console().print(f"imported [bold]{record['ref']}[/] ({record['kind']}, {len(record['label_names'])} labels, "
                    f"input {shape}, runtimes {', '.join(record.get('runtimes') or [])})")


@app.command("download")
def download(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION|@ALIAS]", help="No version: the newest.")],
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="Where to write the files (created if missing).")],
    force: Annotated[bool, typer.Option("--force", help="Write into a folder that is not empty.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a model version's files (model.keras, model.onnx, loopml.json, tokenizer) into DIR.

    Example: loopml models download mnist-cnn:1 ./mnist-cnn-1
    """
    result = client().download_model(ref, folder, force=force)
    emit(result, as_json, lambda r: console().print(f"wrote {r['ref']} to {r['path']}: {', '.join(r['files'])}"))


@app.command("compare")
def compare(
    a: Annotated[str, typer.Argument(metavar="A", help="NAME:VERSION, NAME@ALIAS or NAME (newest).")],
    b: Annotated[str, typer.Argument(metavar="B", help="The other model version.")],
    dataset: Annotated[Optional[str], typer.Option("--dataset", metavar="NAME[:VERSION][:SPLIT]",
                                                   help="Evaluate both on the same rows (split default test); "
                                                   "without it: the test metrics recorded at training.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Two model versions side by side: metrics, per-class metrics, confusion matrices, hyperparameters.

    Example: loopml models compare mnist-cnn:1 mnist-cnn@production --dataset mnist:test
    """
    result = client().compare_models(a, b, dataset=dataset)
    emit(result, as_json, print_comparison)


def _delta(x: Any, y: Any) -> str:
    if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) \
            and not isinstance(y, bool):
        return f"{y - x:+.4g}"
    return "" if x == y else "differs"


def print_comparison(r: dict[str, Any]) -> None:
    out = console()
    a, b = r["a"], r["b"]
    where = (f"evaluated on {r['dataset']}:{r['split']} (job {r['job_id']})" if r["source"] == "evaluated"
             else "test metrics recorded at training")
    out.print(f"[bold]{a['ref']}[/] vs [bold]{b['ref']}[/]: {where}")
    rows = [("dataset", a.get("dataset") or "-", b.get("dataset") or "-", ""),
            ("template", a.get("template") or "-", b.get("template") or "-", ""),
            ("job", a.get("job_id") or a.get("source") or "-", b.get("job_id") or b.get("source") or "-", "")]
    keys = list(dict.fromkeys([*(a.get("metrics") or {}), *(b.get("metrics") or {})]))
    rows += [(k, num((a.get("metrics") or {}).get(k)), num((b.get("metrics") or {}).get(k)),
              _delta((a.get("metrics") or {}).get(k), (b.get("metrics") or {}).get(k))) for k in keys]
    out.print(table("", a["ref"], b["ref"], "B - A", title="Metrics", rows=rows))
    hp_keys = sorted({*a["hparams"], *b["hparams"]})
    if hp_keys:
        out.print(table("hyperparameter", a["ref"], b["ref"], "", title="Hyperparameters", rows=[
            (k, num(a["hparams"].get(k)), num(b["hparams"].get(k)),
             "" if a["hparams"].get(k) == b["hparams"].get(k) else "differs") for k in hp_keys]))
    classes = list(dict.fromkeys([*(a.get("per_class") or {}), *(b.get("per_class") or {})]))
    if classes:
        pa, pb = a.get("per_class") or {}, b.get("per_class") or {}
        out.print(table("class", "A precision", "A recall", "A f1", "B precision", "B recall", "B f1", "support",
                        title="Per class", rows=[
                            (str(c), (pa.get(c) or {}).get("precision"), (pa.get(c) or {}).get("recall"),
                             (pa.get(c) or {}).get("f1"), (pb.get(c) or {}).get("precision"),
                             (pb.get(c) or {}).get("recall"), (pb.get(c) or {}).get("f1"),
                             (pa.get(c) or pb.get(c) or {}).get("support")) for c in classes]))
    for side in (a, b):
        cm, labels = side.get("confusion_matrix"), side.get("labels")
        if cm and labels and len(labels) == len(cm):
            out.print(table("true \\ predicted", *map(str, labels), title=f"Confusion matrix of {side['ref']}",
                            rows=[(str(lab), *row) for lab, row in zip(labels, cm)]))
    if not keys and not classes:
        out.print("neither version recorded test metrics (imported?): compare them with --dataset NAME:SPLIT")


@app.command("delete")
def delete(
    ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]", help="No version: every version of the model.")],
    as_json: JsonOpt = False,
) -> None:
    """Delete a model version (or every version of a model) with its files.

    Refused while a version is behind an alias, served by an endpoint or used by a running job.
    Example: loopml models delete mnist-cnn:2
    """
    result = client().delete_model(ref)
    emit(result, as_json, lambda r: console().print(f"deleted {', '.join(r['deleted'])}"))


@alias_app.command("set")
def alias_set(name: str, alias: str, version: Annotated[int, typer.Argument(min=1)]) -> None:
    """Point ALIAS of model NAME at VERSION."""
    moved = client().set_alias(name, alias, version, actor=actor())
    before = f" (was {moved['previous']})" if moved.get("previous") is not None else ""
    console().print(f"{name}@{alias} -> {moved['version']}{before}")


@alias_app.command("delete")
def alias_delete(name: str, alias: str,
                 force: Annotated[bool, typer.Option("--force", help=(
                     "Remove it even if endpoints follow it (they can no longer resolve it)."))] = False) -> None:
    """Remove ALIAS from model NAME. Refused while endpoints follow it."""
    from loopml.cli.output import print_broken

    gone = client().delete_alias(name, alias, actor=actor(), force=force)
    console().print(f"{name}@{alias} removed (was {gone.get('previous')})")
    print_broken(gone)


@alias_app.command("history")
def alias_history(name: str, as_json: JsonOpt = False) -> None:
    """Every alias move of model NAME, oldest first."""
    rows = client().alias_history(name)
    emit(rows, as_json, lambda history: print_alias_history(name, history))


def print_alias_history(name: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print(f"model {name} has no alias history")
        return
    console().print(table("at", "alias", "from", "to", "actor", rows=[
        (when(e.get("at")), e["alias"], num(e.get("from_version")), num(e.get("to_version")), e.get("actor") or "-")
        for e in rows]))
