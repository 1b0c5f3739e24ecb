"""/endpoints: create, change and remove real-time endpoints (the data plane serves them).

These routes only write the desired state (``serving.service``); the control plane and the
serving process converge on it. ``ready`` in a record says when the current generation is
served; ``url`` is where to POST invocations (null when no data plane runs here).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from loopml.core.errors import LoopMLError
from loopml.platform import Platform
from loopml.serving import service as endpoints_service
from loopml.workflows import dependents

router = APIRouter(prefix="/endpoints", tags=["endpoints"])

_REF = "MODEL:VERSION or MODEL@ALIAS"


class VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str | None = Field(None, description="variant name (default 'primary' for the first)",
                             examples=["primary"])
    ref: str | None = Field(None, description=_REF, examples=["mnist@production"])
    # the stored form (record["spec"]["variants"]) is accepted too, so a GET can be edited and sent back
    model: str | None = Field(None, description="model name (with version or alias, instead of ref)")
    version: int | None = None
    alias: str | None = None
    weight: float = Field(1.0, description="relative traffic weight (share = weight / sum), >= 0")


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    name: str = Field(description="letters, digits and hyphens, at most 63 characters",
                      examples=["digits"])
    model: str | None = Field(None, description=f"{_REF}: shorthand for one variant 'primary'",
                              examples=["mnist@production"])
    variants: list[VariantIn] | None = Field(None, description="production variants (at most 10)")
    shadow: str | None = Field(None, description=f"{_REF}: gets a copy of the traffic; its answers "
                               "are captured, never returned")
    capture_percent: float | None = Field(None, description="share of requests captured, 0-100 (default 0)")
    max_batch_size: int | None = Field(None, description="adaptive batching: rows per batch (default 64)")
    max_batch_delay_ms: float | None = Field(None, description="longest wait to fill a batch (default 2)")
    multi_model: bool | None = Field(None, description="allow X-Amzn-SageMaker-Target-Model (default false)")
    replicas: int | None = Field(None, description="data-plane replicas kept on the Ray cluster (default 1; "
                                 "above 1 needs LOOPML_EXECUTOR=ray)")
    replica_resources: dict[str, float] | None = Field(
        None, description="what each replica reserves on its Ray node: cpus, memory_gb, gpus (default 1, 1, 0)")
    new_key: bool = Field(False, description="make an API key for this endpoint: returned once as "
                          "api_key (only its SHA-256 is kept); invocations then need it")


class EndpointPatch(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str | None = Field(None, description=f"{_REF}: replaces the variants by one 'primary'")
    variants: list[VariantIn] | None = Field(None, description="replaces the production variants")
    shadow: str | None = Field(None, description=f"{_REF}; null removes the shadow, absent keeps it")
    capture_percent: float | None = None
    max_batch_size: int | None = None
    max_batch_delay_ms: float | None = None
    multi_model: bool | None = None
    replicas: int | None = None
    replica_resources: dict[str, float] | None = None
    new_key: bool = Field(False, description="add an API key (returned once as api_key)")
    clear_keys: bool = Field(False, description="revoke every API key of the endpoint")


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    spec: dict[str, Any] = Field(description="the desired state as written (aliases unresolved)")
    resolved: dict[str, Any] | None = Field(None, description="the concrete model versions to serve")
    generation: int = Field(description="bumped by every change of the spec or a followed alias move")
    status: str = Field(description="Creating | Updating | InService | Failed")
    message: str | None = None
    served_generation: int = Field(0, description="the generation the serving process serves")
    served: dict[str, Any] | None = None
    ready: bool = Field(description="InService at the current generation")
    url: str | None = Field(None, description="POST invocations here (null: no data plane running)")
    replicas: list[dict[str, Any]] | None = Field(None, description="on a Ray cluster: each replica's index, "
                                                  "state (pending | running), node, address, last loss")
    api_key: str | None = Field(None, description="only in the answer that made it; shown once")
    created_at: str | None = None
    updated_at: str | None = None
    nodes: list[dict[str, Any]] | None = Field(None, description="GET /endpoints/{name}: the data-plane "
                                               "nodes that have it loaded (state, lost, heartbeat age, load)")


class Deleted(BaseModel):
    deleted: str
    broken: list[dict[str, Any]] = Field([], description="with force: the monitors and workflows now broken")


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _data_plane_url(request: Request) -> str | None:
    control = getattr(request.app.state, "control", None)
    supervisor = getattr(control, "endpoints", None)
    return getattr(supervisor, "url", None)


def _spec(body: BaseModel) -> dict[str, Any]:
    # only what the client sent: for PATCH, absent keys keep their value and "shadow": null removes
    raw = body.model_dump(exclude_unset=True, exclude={"name"})
    if raw.get("variants") is not None:
        raw["variants"] = [{k: v for k, v in variant.items() if v is not None}
                           for variant in raw["variants"]]
    return raw


@router.post("", response_model=Endpoint, status_code=201, summary="Create an endpoint")
def create_endpoint(body: EndpointIn, request: Request) -> dict[str, Any]:
    return endpoints_service.create_endpoint(_platform(request), body.name, _spec(body),
                                 data_plane_url=_data_plane_url(request))


@router.get("", response_model=list[Endpoint], summary="Endpoints, by name (with live traffic: req/s and p99 "
            "since the previous list, from the data plane's /metrics)")
def list_endpoints(request: Request) -> list[dict[str, Any]]:
    records = endpoints_service.list_endpoints(_platform(request), data_plane_url=_data_plane_url(request))
    return with_traffic(request, records)


@router.get("/{name}", response_model=Endpoint, summary="One endpoint: spec, versions, status")
def get_endpoint(name: str, request: Request) -> dict[str, Any]:
    from loopml.api.nodes import serving_nodes

    record = endpoints_service.get_endpoint(_platform(request), name, data_plane_url=_data_plane_url(request))
    record["nodes"] = serving_nodes(_platform(request), name)  # where it is served (lost: silent)
    # on a Ray cluster: the replicas the leader's controller keeps (controlplane/replicas.py)
    controller = getattr(getattr(request.app.state, "control", None), "replicas", None)
    if controller is not None and _platform(request).settings.executor == "ray":
        record["replicas"] = controller.replicas(name)
    return record


@router.patch("/{name}", response_model=Endpoint,
              summary="Change an endpoint (absent fields keep their value; a new generation)")
def update_endpoint(name: str, body: EndpointPatch, request: Request) -> dict[str, Any]:
    return endpoints_service.update_endpoint(_platform(request), name, _spec(body),
                                 data_plane_url=_data_plane_url(request))


@router.delete("/{name}", response_model=Deleted, response_model_exclude_unset=True,
               summary="Delete an endpoint; 409 listing the monitors and workflows that use it unless force=true")
def delete_endpoint(name: str, request: Request, force: bool = False) -> dict[str, Any]:
    platform = _platform(request)
    broken = endpoints_service.delete_endpoint(platform, name, check_unused=dependents.guard(platform, force=force))
    return {"deleted": name, **({"broken": broken} if broken else {})}


# ------------------------------------------------------------------ for the dashboard (/ui)
# The browser cannot call the data plane (another origin: CORS, and its own token). These routes
# let it through the control plane's auth without opening the data plane to other origins:
# /invocations forwards a request unchanged to the data plane's own route, /stats reads its
# /metrics, /captured reads the capture files the data plane wrote.

_FORWARD = ("content-type", "accept", "x-amzn-sagemaker-target-variant", "x-amzn-sagemaker-inference-id",
            "x-amzn-sagemaker-target-model")
_PROXY_TIMEOUT_S = 60.0


class DataPlaneUnavailable(LoopMLError):
    code = "data_plane_unavailable"
    status = 503


def _serving_url(request: Request, name: str) -> str:
    endpoints_service.get_endpoint(_platform(request), name)  # 404 for an unknown endpoint
    url = _data_plane_url(request)
    if url is None:
        raise DataPlaneUnavailable("no data plane runs with this control plane (started without its control loop)")
    return url


def _serving_headers(request: Request) -> dict[str, str]:
    token = _platform(request).settings.serving_token
    return {"Authorization": f"Bearer {token}"} if token else {}


def _invocation_headers(request: Request) -> dict[str, str]:
    """The data plane's own token when it has one (it opens every route); else the caller's
    Authorization as sent — an endpoint key, or a LoopML token holding endpoints:NAME:invoke, which
    the data plane accepts on a keyed endpoint (without it an invoker got 401 through here)."""
    given = request.headers.get("authorization")
    return _serving_headers(request) or ({"Authorization": given} if given else {})


async def _data_plane(method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        async with httpx.AsyncClient(timeout=_PROXY_TIMEOUT_S) as client:
            return await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise DataPlaneUnavailable(f"the data plane at {url} did not answer: {type(exc).__name__}") from None


@router.post("/{name}/invocations", summary="Invoke through the control plane: the request is forwarded "
             "unchanged to the data plane's own /endpoints/NAME/invocations (for the dashboard; "
             "clients call the data plane directly)")
async def invoke_via_control_plane(name: str, request: Request) -> Response:
    url = await run_in_threadpool(_serving_url, request, name)
    headers = {k: request.headers[k] for k in _FORWARD if k in request.headers}
    answer = await _data_plane("POST", f"{url}/endpoints/{name}/invocations", content=await request.body(),
                               headers={**headers, **_invocation_headers(request)})
    kept = {k: v for k, v in answer.headers.items()
            if k.lower().startswith(("x-amzn-", "x-loopml-", "retry-after"))}
    return Response(answer.content, status_code=answer.status_code, headers=kept,
                    media_type=answer.headers.get("content-type"))


def _bucket_bound(value: str) -> float | None:
    return None if value in ("+Inf", "inf") else float(value)  # None: +Inf (JSON has no infinity)


def parse_serving_metrics(text: str, endpoint: str) -> dict[str, Any]:
    """The data plane's Prometheus text → per-variant counters of one endpoint (cumulative: the
    caller takes differences between two reads for rates and windowed percentiles)."""
    return parse_all_serving_metrics(text).get(endpoint) or {"variants": {}, "shadow": {"agree": 0, "disagree": 0}}


def parse_all_serving_metrics(text: str) -> dict[str, dict[str, Any]]:
    """``parse_serving_metrics`` of every endpoint in one pass: ``{endpoint: {variants, shadow}}``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[str, Any]] = {}

    def entry(endpoint: str, variant: str) -> dict[str, Any]:
        variants = out.setdefault(endpoint, {"variants": {}, "shadow": {"agree": 0, "disagree": 0}})["variants"]
        return variants.setdefault(variant, {
            "requests": 0, "errors": 0, "codes": {}, "latency": {"buckets": [], "sum": 0.0, "count": 0},
            "batch_size": {"buckets": [], "sum": 0.0, "count": 0}, "batches": 0, "batch_rows": 0,
            "rejected": 0, "queue_rows": 0})

    histograms = {"loopml_request_latency_seconds": "latency", "loopml_batch_size_rows": "batch_size"}
    counters = {"loopml_request_errors_total": "errors", "loopml_batches_total": "batches",
                "loopml_batch_rows_total": "batch_rows", "loopml_batcher_rejected_total": "rejected",
                "loopml_queue_depth_rows": "queue_rows"}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            endpoint = labels.get("endpoint")
            if endpoint is None:
                continue
            if sample.name == "loopml_shadow_comparisons_total":
                out.setdefault(endpoint, {"variants": {}, "shadow": {"agree": 0, "disagree": 0}})[
                    "shadow"][labels["result"]] = int(sample.value)
                continue
            if "variant" not in labels:
                continue
            row = entry(endpoint, labels["variant"])
            if sample.name == "loopml_requests_total":
                row["codes"][labels["code"]] = int(sample.value)
                row["requests"] += int(sample.value)
            elif sample.name in counters:
                row[counters[sample.name]] = int(sample.value)
            elif family.name in histograms:
                hist = row[histograms[family.name]]
                if sample.name.endswith("_bucket"):
                    hist["buckets"].append([_bucket_bound(labels["le"]), int(sample.value)])
                elif sample.name.endswith("_sum"):
                    hist["sum"] = float(sample.value)
                elif sample.name.endswith("_count"):
                    hist["count"] = int(sample.value)
    # cumulative buckets by bound, +Inf last: merged worker files need not list them in order
    for endpoint in out.values():
        for row in endpoint["variants"].values():
            for name in histograms.values():
                row[name]["buckets"].sort(key=lambda b: float("inf") if b[0] is None else b[0])
    return out


def histogram_quantile(buckets: list[list[Any]], q: float) -> float | None:
    """The q-quantile of cumulative ``[[le, count], …]`` (le None = +Inf), linear inside a bucket
    as PromQL's histogram_quantile; None without observations."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0
    for le, count in buckets:
        if count >= rank:
            return lower if le is None else lower + (le - lower) * (rank - below) / max(1, count - below)
        lower, below = (le if le is not None else lower), count
    return lower


def _latency_buckets(variants: dict[str, Any]) -> list[list[Any]]:
    merged: dict[Any, int] = {}
    for v in variants.values():
        for le, count in v["latency"]["buckets"]:
            merged[le] = merged.get(le, 0) + count
    return sorted(([le, c] for le, c in merged.items()), key=lambda b: float("inf") if b[0] is None else b[0])


def with_traffic(request: Request, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each record's ``traffic``: ``{requests, rps, p99_ms, window_s}``, rps and p99 over the time
    since the previous list (p99 over the process lifetime on the first); records unchanged when
    no data plane answers (2 s at most: a list never waits on a stuck data plane)."""
    url = _data_plane_url(request)
    if url is None or not records:
        return records
    try:
        answer = httpx.get(f"{url}/metrics", headers=_serving_headers(request), timeout=2.0)
        answer.raise_for_status()
    except httpx.HTTPError:
        return records
    now, parsed = time.time(), parse_all_serving_metrics(answer.text)
    previous = getattr(request.app.state, "endpoint_traffic", None) or {}
    current: dict[str, tuple[float, int, list[list[Any]]]] = {}
    for record in records:
        variants = (parsed.get(record["name"]) or {}).get("variants") or {}
        requests, buckets = sum(v["requests"] for v in variants.values()), _latency_buckets(variants)
        current[record["name"]] = (now, requests, buckets)
        before = previous.get(record["name"])
        traffic: dict[str, Any] = {"requests": requests, "rps": None, "window_s": None,
                                   "p99_ms": None}
        window = buckets
        if before is not None and now > before[0] and requests >= before[1]:
            traffic["window_s"] = round(now - before[0], 3)
            traffic["rps"] = round((requests - before[1]) / (now - before[0]), 3)
            old = {le: c for le, c in before[2]}
            window = [[le, c - old.get(le, 0)] for le, c in buckets]
        p99 = histogram_quantile(window, 0.99)
        traffic["p99_ms"] = None if p99 is None else round(p99 * 1000, 3)
        record["traffic"] = traffic
    request.app.state.endpoint_traffic = current
    return records


@router.get("/{name}/stats", summary="Live per-variant counters from the data plane's /metrics: requests, "
            "errors, latency and batch-size histograms (cumulative; differences of two reads give rates)")
async def endpoint_stats(name: str, request: Request) -> dict[str, Any]:
    url = await run_in_threadpool(_serving_url, request, name)
    answer = await _data_plane("GET", f"{url}/metrics", headers=_serving_headers(request))
    if answer.status_code != 200:
        raise DataPlaneUnavailable(f"the data plane's /metrics answered HTTP {answer.status_code}")
    return {"endpoint": name, "at": time.time(), **parse_serving_metrics(answer.text, name)}


_CAPTURE_LOOKBACK = timedelta(days=7)
_CAPTURED_BODY_CHARS = 4096


def _clip(data: Any) -> Any:
    return data[:_CAPTURED_BODY_CHARS] + "…" if isinstance(data, str) and len(data) > _CAPTURED_BODY_CHARS else data


def recent_captured(platform: Platform, name: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` captured requests of an endpoint (all variants, shadow included), newest
    first; bodies longer than a few KiB are cut (the capture files keep them whole)."""
    from loopml.monitoring.capture_reader import capture_files

    endpoints_service.get_endpoint(platform, name)
    since = datetime.now(timezone.utc) - _CAPTURE_LOOKBACK
    keys = capture_files(platform.artifacts, platform.settings.capture_prefix, name, None, since=since)
    rows: list[dict[str, Any]] = []
    for key in reversed(keys):  # newest hour first; within a file, lines are in arrival order
        for line in platform.artifacts.get_bytes(key).splitlines():
            if line.strip():
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue
        if len(rows) >= limit * 4:
            break
    rows.sort(key=lambda r: str(r.get("eventMetadata", {}).get("inferenceTime", "")), reverse=True)
    out = []
    for row in rows[:limit]:
        data = row.get("captureData", {})
        meta = row.get("eventMetadata", {})
        out.append({**meta, "input": {**data.get("endpointInput", {}), "data": _clip(data.get("endpointInput", {}).get("data"))},
                    "output": {**data.get("endpointOutput", {}), "data": _clip(data.get("endpointOutput", {}).get("data"))}})
    return out


@router.get("/{name}/captured", summary="The newest captured requests (capture_percent > 0), newest first; "
            "bodies cut at 4 KiB")
def captured(name: str, request: Request, limit: int = Query(20, ge=1, le=200)) -> list[dict[str, Any]]:
    return recent_captured(_platform(request), name, limit)
