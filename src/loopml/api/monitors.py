"""/monitors: model monitors on endpoints (drift against the baseline, quality against uploaded
labels), their runs and reports, baselines; /alerts: what the runs raised."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from loopml.api.auth import acting_as
from loopml.api.control import wake_control
from loopml.core.errors import InvalidInput
from loopml.core.jsonutil import loads_strict
from loopml.monitoring import labelled_data, labels, monitors
from loopml.platform import Platform

log = logging.getLogger("loopml.api")
router = APIRouter(prefix="/monitors", tags=["monitors"])
alerts_router = APIRouter(prefix="/alerts", tags=["monitors"])


class MonitorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-63 letters, digits, '-' or '_'", examples=["mnist-drift"])
    endpoint: str = Field(description="the endpoint whose captured traffic is watched", examples=["mnist"])
    variant: str | None = Field(None, description="one of its variants (default: the first)")
    schedule: str | None = Field(None, description="cron: minute hour day month weekday", examples=["*/5 * * * *"])
    tz: str | None = Field(None, description="the schedule's IANA time zone (default UTC)")
    window: str | int = Field("1h", description="how far back the first run looks: 30m, 1h, 2d, or seconds")
    min_samples: int = Field(200, description="decoded rows for the full tests; fewer: only already-decisive shifts are judged (early)")
    thresholds: dict[str, float] | list[str] | None = Field(
        None, description="shift, js_distance, mmd, psi, ks_pvalue, chi2_pvalue, mmd_pvalue, early_level, "
                          "accuracy, min_samples (see README: Monitoring)",
        examples=[{"shift": 0.2, "accuracy": 0.9}])
    webhooks: list[str] | None = Field(None, description="http(s) URLs POSTed a JSON body on every new alert")


class LabelsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: list[Any] = Field(description="[{inference_id, label}, ...]")


class LabelledDatasetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(description="the dataset the labelled requests become a version of", examples=["mnist-live"])
    extend: bool = Field(True, description="append to the dataset's newest version (else a version of its own)")
    min_labels: int = Field(100, description="fewer labelled requests: 409 (not enough labels yet)")


class BaselineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="MODEL:VERSION (or MODEL@ALIAS)", examples=["mnist:3"])
    dataset: str | None = Field(None, description="NAME[:VERSION] whose held-out rows to profile; default "
                                   "the dataset the version was trained on (required for an imported version)")


class Monitor(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    endpoint: str
    variant: str | None = None
    schedule: str | None = None
    tz: str
    window_s: int
    window: str | None = None
    min_samples: int
    thresholds: dict[str, Any]
    webhooks: list[str]
    status: str = Field(description="active | paused")
    cursor: str | None = Field(None, description="newest inference time read so far")
    next_run_at: str | None = None


class Deleted(BaseModel):
    deleted: str


def _platform(request: Request) -> Platform:
    return request.app.state.platform



@router.post("", response_model=Monitor, status_code=201, summary="Create a monitor on an endpoint")
def create_monitor(body: MonitorIn, request: Request) -> dict[str, Any]:
    return monitors.create_monitor(_platform(request), body.name, body.endpoint, variant=body.variant,
                                  schedule=body.schedule, tz=body.tz, window=body.window,
                                  min_samples=body.min_samples, thresholds=body.thresholds, webhooks=body.webhooks)


@router.get("", response_model=list[Monitor], summary="Monitors, with their last run and open alerts")
def list_monitors(request: Request) -> list[dict[str, Any]]:
    return monitors.list_monitors(_platform(request))


@router.post("/baselines", status_code=201, summary="Compute (backfill) a model version's baseline: a job")
def submit_baseline(body: BaselineIn, request: Request) -> dict[str, Any]:
    job = monitors.submit_baseline(_platform(request), body.model, body.dataset)
    wake_control(request)
    return job


@router.get("/{name}", response_model=Monitor, summary="One monitor with its last runs and open alerts")
def get_monitor(name: str, request: Request) -> dict[str, Any]:
    return monitors.get_monitor(_platform(request), name)


@router.post("/{name}/pause", response_model=Monitor, summary="Stop scheduled runs")
def pause_monitor(name: str, request: Request) -> dict[str, Any]:
    return monitors.pause_monitor(_platform(request), name)


@router.post("/{name}/resume", response_model=Monitor, summary="Schedule runs again (from now)")
def resume_monitor(name: str, request: Request) -> dict[str, Any]:
    return monitors.resume_monitor(_platform(request), name)


@router.delete("/{name}", response_model=Deleted, summary="Delete a monitor, its runs, labels and alerts")
def delete_monitor(name: str, request: Request) -> dict[str, Any]:
    monitors.delete_monitor(_platform(request), name)
    return {"deleted": name}


@router.post("/{name}/runs", status_code=201, summary="Run the monitor now: {run, job}")
def run_monitor(name: str, request: Request) -> dict[str, Any]:
    run, job = monitors.submit_run(_platform(request), name)
    wake_control(request)
    return {"run": run, "job": job}


@router.get("/{name}/runs", summary="The monitor's runs, newest first")
def list_runs(name: str, request: Request, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    return _platform(request).monitors.runs(name, limit=limit)


@router.get("/{name}/runs/{run_id}", summary="One run: status, window, rows, violations, summary, report key")
def get_run(name: str, run_id: str, request: Request) -> dict[str, Any]:
    return _platform(request).monitors.get_run(name, run_id)


@router.get("/{name}/runs/{run_id}/report.html", response_class=HTMLResponse,
            summary="The run's report as a self-contained HTML page")
def get_report_html(name: str, run_id: str, request: Request) -> Response:
    data = monitors.get_report(_platform(request), name, run_id, "html")
    return Response(data, media_type="text/html; charset=utf-8")


@router.get("/{name}/runs/{run_id}/report", summary="The run's report (JSON; ?format=html for the page)")
def get_report(name: str, run_id: str, request: Request, format: str = Query("json")) -> Response:
    data = monitors.get_report(_platform(request), name, run_id, format)
    media = "text/html; charset=utf-8" if format == "html" else "application/json"
    return Response(data, media_type=media)


@router.post("/{name}/labels", summary="Upload true labels keyed by inference id: a multipart `file` "
                                        "(csv inference_id,label or jsonl) or JSON {labels: [...]}")
async def upload_labels(name: str, request: Request) -> dict[str, Any]:
    platform = _platform(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InvalidInput("file: upload the labels file as the multipart field 'file'")
        data = await upload.read()
        fmt = form.get("format")
        return await run_in_threadpool(labels.upload_labels, platform, name, data=data,
                                       format=str(fmt) if fmt else None, filename=upload.filename)
    body = await request.body()
    try:
        parsed = loads_strict(body) if body.strip() else None
    except ValueError:
        raise InvalidInput("body: not valid JSON; send {\"labels\": [{\"inference_id\": ..., \"label\": ...}]} "
                           "or a multipart file") from None
    try:
        rows = LabelsIn.model_validate(parsed).labels
    except Exception:  # noqa: BLE001 - pydantic's error, said in our words
        raise InvalidInput("body: send {\"labels\": [{\"inference_id\": ..., \"label\": ...}]} or a multipart "
                           "file") from None
    return await run_in_threadpool(labels.upload_labels, platform, name, rows=rows)


@router.post("/{name}/dataset", status_code=201,
             summary="The monitor's labelled captured requests as a new dataset version (409: too few labels)")
def labelled_dataset(name: str, body: LabelledDatasetIn, request: Request) -> dict[str, Any]:
    return labelled_data.labelled_dataset(_platform(request), name, body.dataset, extend=body.extend,
                                    min_labels=body.min_labels)


@alerts_router.get("", summary="Alerts, newest first (?open=true for the open ones, ?monitor=NAME)")
def list_alerts(request: Request, open: bool | None = Query(None), monitor: str | None = Query(None),
                limit: int = Query(200, ge=1, le=10_000)) -> list[dict[str, Any]]:
    return _platform(request).monitors.alerts(open=open, monitor=monitor, limit=limit)


@alerts_router.get("/{alert_id}", summary="One alert: key, statistic, counts, notifications")
def get_alert(alert_id: str, request: Request) -> dict[str, Any]:
    return _platform(request).monitors.alert(alert_id)


@alerts_router.post("/{alert_id}/ack", summary="Acknowledge an open alert: it stays open (shown as acked; "
                                                "it is not notified again) until it recovers or is resolved")
def ack_alert(alert_id: str, request: Request,
              actor: str | None = Header(None, alias="X-LoopML-Actor")) -> dict[str, Any]:
    return _platform(request).monitors.ack_alert(alert_id, actor=acting_as(request, actor))


@alerts_router.post("/{alert_id}/resolve", summary="Close an open alert by hand; a later violation opens a new one")
def resolve_alert(alert_id: str, request: Request,
                  actor: str | None = Header(None, alias="X-LoopML-Actor")) -> dict[str, Any]:
    return _platform(request).monitors.resolve_alert(alert_id, actor=acting_as(request, actor))
