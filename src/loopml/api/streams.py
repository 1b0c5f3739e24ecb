"""Server-Sent Events: a job's progress, epoch metrics and log lines pushed as they are recorded,
so the dashboard's curves and log tail update without polling the three JSON routes."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any, AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from loopml.core.jobstatus import TERMINAL
from loopml.platform import Platform

router = APIRouter(tags=["jobs"])

POLL_S = 0.5  # workers write progress to the store; this is how stale a pushed line may be
# then the stream ends and the client reconnects with the last ids it saw: a server shutting down
# (uvicorn waits for open responses) never waits long on a dashboard left open
MAX_STREAM_S = 10.0

_DESCRIPTION = """`text/event-stream` of one job. Events (each `data:` is JSON):

* `job` — the job record (status, progress, reason, result) when it changes, first at connect;
* `metrics` — one finished epoch (`{"epoch": N, …}`), every recorded epoch after `after_epoch`;
* `log` — one log line `{id, at, text}`, every line after `after_log`;
* `end` — the final job record once the job has ended (the stream then closes).

A stream lasts at most about 10 s while the job runs (so a shutting-down server never waits on
it): reconnect with `after_log`/`after_epoch` set to the last ids seen to resume without repeats."""


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()


def _changed(record: dict[str, Any]) -> tuple:
    return (record["status"], json.dumps(record.get("progress"), sort_keys=True, default=str),
            record.get("cancel_requested"), record.get("reason"))


async def job_events(platform: Platform, request: Request, job_id: str, after_log: int,
                     after_epoch: int) -> AsyncIterator[bytes]:
    jobs = platform.jobs
    last_state: tuple | None = None
    started = time.monotonic()
    while True:
        # the job first: once it is terminal, the metrics and lines read after it are complete
        record = await run_in_threadpool(jobs.get, job_id)
        epochs = await run_in_threadpool(jobs.metrics, job_id)
        lines = await run_in_threadpool(jobs.logs, job_id, after_log, 1000)
        out: list[bytes] = []
        state = _changed(record)
        if state != last_state:
            last_state = state
            out.append(_sse("job", record))
        for row in epochs:
            if row["epoch"] > after_epoch:
                after_epoch = row["epoch"]
                out.append(_sse("metrics", row))
        for line in lines:
            after_log = line["id"]
            out.append(_sse("log", line))
        if record["status"] in TERMINAL and len(lines) < 1000:
            out.append(_sse("end", record))
        if out:
            yield b"".join(out)
        if record["status"] in TERMINAL and len(lines) < 1000:
            return
        if time.monotonic() - started > MAX_STREAM_S or await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)


@router.get("/jobs/{job_id}/events/stream", summary="Follow a job live (Server-Sent Events)",
            description=_DESCRIPTION, response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
                       404: {"description": "no such job"}})
async def stream_job(job_id: str, request: Request,
                     after_log: Annotated[int, Query(ge=0, description="send log lines after this id")] = 0,
                     after_epoch: Annotated[int, Query(ge=0, description="send epochs after this one")] = 0,
                     ) -> StreamingResponse:
    platform: Platform = request.app.state.platform
    await run_in_threadpool(platform.jobs.get, job_id)  # 404 before the stream starts
    return StreamingResponse(job_events(platform, request, job_id, after_log, after_epoch),
                             media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
