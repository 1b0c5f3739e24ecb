"""``loopml endpoints``: real-time endpoints — create, list, show, update, delete, invoke."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from loopml.cli import autoscaling
from loopml.cli.output import client, console, emit, err_console, fields_table, num, print_json, table, when
from loopml.core.errors import InvalidInput, LoopMLError

if TYPE_CHECKING:
    from loopml.sdk.client import Client

app = typer.Typer(help="Real-time endpoints: serve registered models over HTTP (SageMaker-style).",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
STATUS_STYLE = {"InService": "green", "Creating": "yellow", "Updating": "cyan", "Failed": "red"}
CONTENT_TYPES = {".json": "application/json", ".npy": "application/x-npy", ".csv": "text/csv",
                 ".txt": "text/plain", ".png": "image/png", ".jpg": "image/jpeg",
                 ".jpeg": "image/jpeg"}
SHOW_ROWS = 100

# the options create and update share (update: an option left out keeps its value)
ModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", metavar="MODEL@ALIAS|MODEL:VERSION",
    help="The model to serve (variant 'primary'); @ALIAS follows the alias when it moves.")]
VariantOpt = Annotated[Optional[list[str]], typer.Option(
    "--variant", metavar="NAME=MODEL:VERSION:WEIGHT",
    help="A production variant (also NAME=MODEL@ALIAS:WEIGHT); repeatable. Traffic share = "
         "weight / sum of weights.")]
ShadowOpt = Annotated[Optional[str], typer.Option(
    "--shadow", metavar="MODEL:VERSION|MODEL@ALIAS",
    help="A model that gets a copy of the traffic; its answers are captured, never returned.")]
CaptureOpt = Annotated[Optional[float], typer.Option(
    "--capture", metavar="PERCENT", help="Capture this share (0-100) of requests and answers.")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(
    "--max-batch-size", help="Adaptive batching: at most this many rows per batch (default 64).")]
BatchDelayOpt = Annotated[Optional[float], typer.Option(
    "--max-batch-delay-ms", help="Longest wait in ms to fill a batch (default 2).")]
ReplicasOpt = Annotated[Optional[int], typer.Option(
    "--replicas", metavar="N", help="Data-plane replicas kept on the Ray cluster, replaced when they die "
                                    "(default 1; above 1 needs LOOPML_EXECUTOR=ray on the server).")]
ReplicaCpusOpt = Annotated[Optional[float], typer.Option(
    "--replica-cpus", metavar="N", help="CPUs each replica reserves on its Ray node (default 1).")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait until the endpoint serves, then print "
                                                      "its URL and a curl example.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", metavar="SECONDS",
                                           help="How long --wait waits.")]


def styled(status: str | None) -> str:
    status = status or "-"
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _variants(items: list[str] | None) -> list[dict[str, Any]] | None:
    if not items:
        return None
    from loopml.serving.spec import parse_variant_flag  # pure parsing: no numpy, no store

    return [parse_variant_flag(item) for item in items]


def _spec_kwargs(model: str | None, variant: list[str] | None, capture: float | None,
                 max_batch_size: int | None, max_batch_delay_ms: float | None,
                 multi_model: bool | None) -> dict[str, Any]:
    return {"model": model, "variants": _variants(variant), "capture_percent": capture,
            "max_batch_size": max_batch_size, "max_batch_delay_ms": max_batch_delay_ms,
            "multi_model": multi_model}


# ----------------------------------------------------------------------------- commands


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Endpoint name (letters, digits, hyphens).")],
    model: ModelOpt = None,
    variant: VariantOpt = None,
    shadow: ShadowOpt = None,
    capture: CaptureOpt = None,
    max_batch_size: BatchSizeOpt = None,
    max_batch_delay_ms: BatchDelayOpt = None,
    multi_model: Annotated[bool, typer.Option(
        "--multi-model", help="Allow X-Amzn-SageMaker-Target-Model (any version of the models).")] = False,
    new_key: Annotated[bool, typer.Option(
        "--new-key", help="Make an API key (printed once); invocations then need it.")] = False,
    replicas: ReplicasOpt = None,
    replica_cpus: ReplicaCpusOpt = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Create an endpoint serving a registered model.

    Example: loopml endpoints create mnist --model mnist-cnn@production --wait
    """
    kwargs = _spec_kwargs(model, variant, capture, max_batch_size, max_batch_delay_ms,
                          True if multi_model else None)
    kwargs["replicas"] = replicas
    kwargs["replica_resources"] = {"cpus": replica_cpus} if replica_cpus is not None else None
    c = client()
    record = c.create_endpoint(name, shadow=shadow, new_key=new_key, **kwargs)
    _finish(c, record, wait=wait, timeout=timeout, as_json=as_json, verb="created")


@app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="The endpoint to change.")],
    model: ModelOpt = None,
    variant: VariantOpt = None,
    shadow: ShadowOpt = None,
    no_shadow: Annotated[bool, typer.Option("--no-shadow", help="Remove the shadow model.")] = False,
    capture: CaptureOpt = None,
    max_batch_size: BatchSizeOpt = None,
    max_batch_delay_ms: BatchDelayOpt = None,
    multi_model: Annotated[Optional[bool], typer.Option(
        "--multi-model/--single-model", help="Allow X-Amzn-SageMaker-Target-Model or not.")] = None,
    new_key: Annotated[bool, typer.Option(
        "--new-key", help="Add an API key (printed once).")] = False,
    clear_keys: Annotated[bool, typer.Option(
        "--clear-keys", help="Revoke every API key of the endpoint.")] = False,
    replicas: ReplicasOpt = None,
    replica_cpus: ReplicaCpusOpt = None,
    min_replicas: autoscaling.MinReplicasOpt = None,
    max_replicas: autoscaling.MaxReplicasOpt = None,
    target_queue: autoscaling.TargetQueueOpt = None,
    target_rps: autoscaling.TargetRpsOpt = None,
    scale_out_cooldown: autoscaling.OutCooldownOpt = None,
    scale_in_cooldown: autoscaling.InCooldownOpt = None,
    no_autoscaling: autoscaling.NoAutoscalingOpt = False,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    as_json: JsonOpt = False,
) -> None:
    """Change an endpoint; options left out keep their value.

    --model or --variant replace the variants. The current versions answer until the new ones
    are loaded (a new generation; no failed requests on the switch).

    Example: loopml endpoints update mnist --variant primary=mnist-cnn:3:90 --variant canary=mnist-cnn:4:10

    Autoscaling: loopml endpoints update mnist --min-replicas 1 --max-replicas 4 --target-queue 8
    """
    if shadow is not None and no_shadow:
        raise InvalidInput("give either --shadow or --no-shadow, not both")
    kwargs = _spec_kwargs(model, variant, capture, max_batch_size, max_batch_delay_ms, multi_model)
    kwargs["replicas"] = replicas
    kwargs["replica_resources"] = {"cpus": replica_cpus} if replica_cpus is not None else None
    if shadow is not None or no_shadow:
        kwargs["shadow"] = None if no_shadow else shadow
    policy = autoscaling.policy_args(min_replicas, max_replicas, target_queue, target_rps,
                                     scale_out_cooldown, scale_in_cooldown)
    spec_change = not all(v is None for v in kwargs.values()) or "shadow" in kwargs or new_key or clear_keys
    if not spec_change and (policy or no_autoscaling):
        c = client()
        autoscaling.apply(c, name, policy, no_autoscaling)
        emit(c.endpoint(name), as_json, print_endpoint)
        return
    if not spec_change:
        raise InvalidInput(f"nothing to change on endpoint {name!r}: give --model, --variant, "
                           "--shadow/--no-shadow, --capture, --max-batch-size, "
                           "--max-batch-delay-ms, --multi-model/--single-model, --replicas, --replica-cpus or autoscaling flags")
    c = client()
    autoscaling.apply(c, name, policy, no_autoscaling)
    record = c.update_endpoint(name, new_key=new_key, clear_keys=clear_keys, **kwargs)
    _finish(c, record, wait=wait, timeout=timeout, as_json=as_json, verb="updated")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List endpoints with their status, variants and URL."""
    emit(client().endpoints(), as_json, print_endpoints)


@app.command("show")
def show(name: str, as_json: JsonOpt = False) -> None:
    """An endpoint's spec, the versions it serves, its status and URL."""
    emit(client().endpoint(name), as_json, print_endpoint)


@app.command("delete")
def delete(name: str,
           force: Annotated[bool, typer.Option("--force", help=(
               "Delete even if monitors watch it or workflows deploy to it (they fail)."))] = False,
           as_json: JsonOpt = False) -> None:
    """Delete an endpoint (its models are unloaded; the registry keeps them). Refused while
    monitors watch it or workflows deploy to it."""
    from loopml.cli.output import print_broken

    gone = client().delete_endpoint(name, force=force)
    if as_json:
        print_json(gone)
    else:
        console().print(f"deleted endpoint {name}")
        print_broken(gone)


@app.command("invoke")
def invoke(
    name: str,
    data: Annotated[Optional[str], typer.Option(
        "--data", "-d", metavar="BODY",
        help='The request body, e.g. \'{"instances": [[5.1, 3.5, 1.4, 0.2]]}\' or a bare JSON list.')] = None,
    file: Annotated[Optional[str], typer.Option(
        "--file", "-f", metavar="PATH", help="Read the body from a file (.json, .npy, .csv, .txt, one .png/.jpg image; '-': stdin).")] = None,
    content_type: Annotated[Optional[str], typer.Option(
        "--content-type", "-t", help="application/json, application/x-npy, text/csv, text/plain, image/png or image/jpeg "
                                     "(default: from the file's extension, else JSON).")] = None,
    variant: Annotated[Optional[str], typer.Option("--variant", help="Send to this production variant.")] = None,
    target_model: Annotated[Optional[str], typer.Option(
        "--target-model", metavar="MODEL:VERSION", help="Multi-model endpoints: the model to use.")] = None,
    key: Annotated[Optional[str], typer.Option(
        "--key", envvar="LOOPML_ENDPOINT_KEY", help="The endpoint's API key, if it has keys.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict with an endpoint: one row per instance with its label and confidence.

    Example: loopml endpoints invoke mnist --file body.json   (body: {"instances": [...]})
    """
    body, ctype = _body(data, file, content_type)
    resp = client()._invocation(name, body=body, content_type=ctype, variant=variant,
                                target_model=target_model, api_key=key)
    try:
        answer = resp.json()
    except ValueError:
        raise LoopMLError(f"endpoint {name!r} answered with something that is not JSON: "
                          f"{resp.text[:200]!r}") from None
    if as_json:
        print_json(answer)
        return
    print_predictions(answer, resp.headers.get("x-amzn-invoked-production-variant"))


# ----------------------------------------------------------------------------- helpers


def _body(data: str | None, file: str | None, content_type: str | None) -> tuple[bytes, str]:
    if (data is None) == (file is None):
        raise InvalidInput("give the request body with either --data BODY or --file PATH")
    if data is not None:
        return data.encode("utf-8"), content_type or "application/json"
    assert file is not None
    if file == "-":
        import sys

        return sys.stdin.buffer.read(), content_type or "application/json"
    path = Path(file).expanduser()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read --file {file}: {exc.strerror or exc}") from None
    return raw, content_type or CONTENT_TYPES.get(path.suffix.lower(), "application/json")


def _finish(c: Client, record: dict[str, Any], *, wait: bool, timeout: float, as_json: bool,
            verb: str) -> None:
    name = record["name"]
    api_key = record.get("api_key")
    if api_key and wait and not as_json:  # before waiting: a failed wait must not lose it
        err_console().print(f"API key of {name} (shown once): {api_key}", markup=False)
    if wait:
        record = _wait(c, name, timeout=timeout, live=not as_json)
        if api_key:
            record["api_key"] = api_key
    if as_json:
        print_json(record)
        return
    out = console()
    out.print(f"{verb} endpoint [bold]{name}[/] (generation {record['generation']}): "
              f"{styled(record['status'])}")
    print_endpoint(record)
    if api_key and not wait:
        out.print(f"API key (shown once; send it as 'Authorization: Bearer <key>'): "
                  f"[bold]{api_key}[/]")
    if not wait:
        out.print(f"the control plane is loading it; follow with: loopml endpoints show {name} "
                  f"(or add --wait)")
        return
    url = c._invocation_url(name, fresh=True) if record.get("url") else None
    if url:
        out.print(f"\ninvoke it at [bold]{url}[/]")
        out.print(f"  loopml endpoints invoke {name} --data '...'")
        out.print("  " + curl_example(c, record, url), markup=False)


def _wait(c: Client, name: str, *, timeout: float, live: bool) -> dict[str, Any]:
    from loopml.cli.progress import track

    try:
        with track(f"{name}: waiting", quiet=not live) as bar:

            def show(rec: dict[str, Any]) -> None:
                from rich.markup import escape

                note = f" - {escape(str(rec['message']))}" if rec.get("message") else ""
                bar.update(f"{name}: {styled(rec.get('status'))} (generation {rec.get('generation')}){note}")

            return c.wait_endpoint(name, timeout=timeout, on_poll=show)
    except KeyboardInterrupt:
        err_console().print(f"stopped waiting; endpoint {name} keeps converging: "
                            f"loopml endpoints show {name}")
        raise typer.Exit(130) from None


def _shares(variants: list[dict[str, Any]]) -> list[float]:
    total = sum(float(v.get("weight") or 0) for v in variants)
    return [100.0 * float(v.get("weight") or 0) / total if total else 0.0 for v in variants]


def _variants_text(record: dict[str, Any]) -> str:
    resolved = record.get("resolved") or {}
    variants = resolved.get("variants") or (record.get("spec") or {}).get("variants") or []
    parts = [f"{v['name']}={v['model']}:{v.get('version')} {share:.0f}%"
             for v, share in zip(variants, _shares(variants))]
    shadow = resolved.get("shadow")
    if shadow:
        parts.append(f"shadow={shadow['model']}:{shadow.get('version')}")
    return "\n".join(parts) or "-"


def print_endpoints(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no endpoints yet: create one with loopml endpoints create NAME --model MODEL@ALIAS")
        return
    t = table("name", "status", "ready", "variants", "url", rows=[
        (e["name"], styled(e.get("status")), "yes" if e.get("ready") else "no", _variants_text(e),
         e.get("url") or "-") for e in rows])
    # narrow terminals: whole words in every column, the URL folds (never cut with an ellipsis)
    t.columns[1].min_width = max(len(e.get("status") or "-") for e in rows)
    t.columns[3].min_width = max(len(line) for e in rows for line in _variants_text(e).splitlines())
    t.columns[4].overflow = "fold"
    console().print(t)


def print_endpoint(record: dict[str, Any]) -> None:
    out = console()
    spec = record.get("spec") or {}
    resolved = record.get("resolved") or {}
    pairs: list[tuple[str, Any]] = [
        ("endpoint", record["name"]), ("status", styled(record.get("status"))),
        ("ready", "yes" if record.get("ready") else "no"),
        ("generation", f"{record.get('generation')} (serving {record.get('served_generation') or '-'})"),
    ]
    if record.get("message"):
        from rich.markup import escape

        pairs.append(("message", escape(str(record["message"]))))  # e.g. "variants: ['a']" is not markup
    pairs += [("url", record.get("url") or "- (no data plane running)"),
              ("capture", f"{num(float(spec.get('capture_percent') or 0), 1)} %"),
              ("batching", f"up to {spec.get('max_batch_size', '-')} rows, "
                           f"{num(spec.get('max_batch_delay_ms'), 1)} ms"),
              ("multi-model", "yes" if spec.get("multi_model") else "no"),
              ("created", when(record.get("created_at"))), ("updated", when(record.get("updated_at")))]
    out.print(fields_table(pairs))
    from loopml.serving.spec import model_ref_text  # pure: no store, no numpy

    written = {v["name"]: v for v in spec.get("variants") or []}
    variants = resolved.get("variants") or spec.get("variants") or []
    rows = [(v["name"], model_ref_text(written.get(v["name"], v)), v.get("version"),
             num(float(v.get("weight") or 0), 2), f"{share:.1f} %") for v, share in zip(variants, _shares(variants))]
    shadow = resolved.get("shadow") or spec.get("shadow")
    if shadow:
        rows.append(("shadow", model_ref_text(spec.get("shadow") or shadow), shadow.get("version"), "-", "copy"))
    if rows:
        out.print(table("variant", "model", "version", "weight", "traffic", rows=rows))
    if record.get("nodes"):
        from loopml.cli.nodes import nodes_table

        out.print(nodes_table(record["nodes"], endpoint=record["name"]))
    _print_replicas(record)
    autoscaling.print_autoscaling(record.get("autoscaling"))


def _print_replicas(record: dict[str, Any]) -> None:
    """On a Ray cluster: each replica's slot, state, node and address (and its last loss)."""
    replicas = record.get("replicas")
    if replicas is None:
        return
    want = (record.get("spec") or {}).get("replicas") or 1
    console().print(f"replicas: {sum(r.get('state') == 'running' for r in replicas)} running of {want}")
    if replicas:
        console().print(table("replica", "state", "node", "address", "last loss", rows=[
            (str(r["index"]), r.get("state") or "-", r.get("node") or "-", r.get("address") or "-",
             r.get("reason") or "-") for r in replicas]))


def print_predictions(answer: Any, variant: str | None = None) -> None:
    out = console()
    predictions = answer.get("predictions") if isinstance(answer, dict) else None
    if not isinstance(predictions, list):
        print_json(answer)  # not the predictions shape: show it as it came
        return
    shown = predictions[:SHOW_ROWS]
    out.print(table("row", "label", "confidence", rows=[
        (str(i), str(p.get("label")), _confidence(p.get("confidence")))
        for i, p in enumerate(shown) if isinstance(p, dict)]))
    if len(predictions) > SHOW_ROWS:
        out.print(f"… {len(predictions) - SHOW_ROWS} more rows; use --json for all of them")
    if variant:
        out.print(f"served by variant {variant}")


def _confidence(value: Any) -> str:
    try:
        return f"{float(value):.4f}"
    except (TypeError, ValueError):
        return "-"


# ----------------------------------------------------------------------------- curl example


def curl_example(c: Client, record: dict[str, Any], url: str) -> str:
    """A ready-to-paste request with an input of the right shape (from the training dataset's
    schema; a placeholder when it cannot be found)."""
    keyed = bool((record.get("spec") or {}).get("key_hashes"))  # its keys answer, else the data plane's token
    auth = ' -H "Authorization: Bearer $LOOPML_ENDPOINT_KEY"' if keyed else \
        ' -H "Authorization: Bearer $LOOPML_SERVING_TOKEN"' if c._serving_token() else ""
    head = f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json'{auth}"
    variants = (record.get("resolved") or {}).get("variants") or []
    schema: dict[str, Any] = {}
    kind = variants[0].get("kind") if variants else None
    try:
        if variants:
            dataset = c.model_version(variants[0]["model"], variants[0]["version"]).get("dataset")
            if dataset:
                schema = c.dataset(dataset).get("schema") or {}
    except LoopMLError:
        schema = {}
    features = schema.get("features") or []
    kind = schema.get("kind") or kind
    if kind == "image" and features and features[0].get("shape"):
        expr = "0.0"
        for dim in reversed(features[0]["shape"]):
            expr = f"[{expr}]*{int(dim)}"
        make = f'import json; print(json.dumps({{"instances": [{expr}]}}))'
        return f"python3 -c {shlex.quote(make)} | {head} --data-binary @-"
    if kind == "text":
        body: Any = {"instances": ["an example text"]}
    elif kind == "tabular" and features:
        body = {"instances": [{f["name"]: _example_value(f) for f in features}]}
    else:
        return f"{head} -d '{{\"instances\": [...]}}'"
    return f"{head} -d {shlex.quote(json.dumps(body))}"


def _example_value(feature: dict[str, Any]) -> Any:
    if feature.get("type") == "numeric":
        mean = feature.get("mean")
        return round(float(mean), 3) if mean is not None else 0.0
    categories = feature.get("categories") or []
    return categories[0] if categories else ""
