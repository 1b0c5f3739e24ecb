"""The control-plane REST API: ``create_app(settings)`` builds it, ``loopml server`` runs it.

The lifespan opens the Platform (unless one is given) and runs the ControlLoop (which
dispatches queued jobs and reconciles running ones) for as long as the app is up.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from loopml import __version__
from loopml.api import (audit, cluster, datasets, endpoints, functions, identity, jobs, models, monitors, nodes, streams,
                        triggers, tuning, workflows)
from loopml.api.auth import AuthMiddleware
from loopml.api.dashboard import mount_dashboard
from loopml.api.errors import CatchAllMiddleware, SafeJSONResponse, StrictJSONMiddleware, install_handlers
from loopml.artifacts.cleanup import remove_platform_temporaries
from loopml.core.settings import Settings, load_settings
from loopml.platform import Platform

log = logging.getLogger("loopml.api")
# start/stop lines: `loopml server` shows this logger at INFO whatever LOOPML_LOG_LEVEL says
lifecycle_log = logging.getLogger("loopml.server")


class Health(BaseModel):
    status: str
    version: str
    data_plane: str | None = None  # where the endpoints are served (None: no control loop)


def _where(settings: Settings, loop) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    parts = [f"control plane http://{host}:{settings.port}"]
    if loop is not None:
        parts.append(f"data plane {loop.endpoints.url or 'not listening'}")
        parts.append(f"serving log {loop.endpoints.log_path}")
    return ", ".join(parts)


def create_app(settings: Settings | None = None, *, platform: Platform | None = None,
               start_loop: bool = True) -> FastAPI:
    """The FastAPI app; ``platform`` is used as-is (and not closed) when given."""
    settings = settings or (platform.settings if platform is not None else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = platform is None
        # opening the database may create/check its schema: keep it off the event loop
        plat = platform if platform is not None else await run_in_threadpool(Platform, settings)
        app.state.platform = plat
        await run_in_threadpool(remove_platform_temporaries, plat)  # left by a kill -9 during uploads
        loop = None
        try:
            if start_loop:
                from loopml.controlplane import ControlLoop

                loop = ControlLoop(plat)
                loop.start()
            app.state.control = loop  # the API names the data plane's address from it
            lifecycle_log.info("LoopML started: %s", _where(settings, loop))
            yield
        finally:
            where = _where(settings, loop)
            if loop is not None:
                await run_in_threadpool(loop.stop)  # stop() joins its thread
            if owned:
                plat.close()
            lifecycle_log.info("LoopML stopped: %s", where)

    # FastAPIOffline: /docs and /redoc load their JavaScript/CSS from the installed package
    # (served under /static-offline-docs), so the API docs work without internet access
    app = FastAPIOffline(
        title="LoopML control plane",
        version=__version__,
        description="Datasets, tracked training jobs, a model registry and batch predictions. "
                    "Errors are JSON `{code, message}`. With auth on (LOOPML_TOKEN set or any user created), "
                    "every route but `/health`, `/healthz` and `/hooks/*` needs `Authorization: Bearer "
                    "<token>` whose role or scopes hold the route's permission (docs/security.md).",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,  # a stored lone surrogate never fails a list
    )
    app.state.settings = settings
    install_handlers(app)

    @app.get("/health", response_model=Health, response_model_exclude_none=True, tags=["health"])
    @app.get("/healthz", response_model=Health, response_model_exclude_none=True, tags=["health"])
    def health(request: Request) -> Health:
        control = getattr(request.app.state, "control", None)
        return Health(status="ok", version=__version__,
                      data_plane=control.endpoints.url if control is not None else None)

    app.include_router(datasets.router)
    app.include_router(jobs.router)
    app.include_router(models.router)
    app.include_router(endpoints.router)
    app.include_router(functions.router)
    app.include_router(triggers.router)
    app.include_router(triggers.hooks_router)
    app.include_router(workflows.router)
    app.include_router(workflows.executions_router)
    app.include_router(monitors.router)
    app.include_router(monitors.alerts_router)
    app.include_router(tuning.router)
    app.include_router(cluster.router)
    app.include_router(nodes.router)
    app.include_router(streams.router)
    mount_dashboard(app)
    app.include_router(identity.users_router)
    app.include_router(identity.tokens_router)
    app.include_router(identity.whoami_router)
    app.include_router(audit.router)

    # add_middleware wraps outward: the auth check (and audit) runs first, the catch-all sits
    # inside it, so a 500 is audited too
    app.add_middleware(StrictJSONMiddleware)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(AuthMiddleware)
    return app
