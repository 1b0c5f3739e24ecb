"""/endpoints: create, change and remove real-time endpoints (the data plane serves them).

These routes only write the desired state (``serving.service``); the control plane and the
serving process converge on it. ``ready`` in a record says when the current generation is
served; ``url`` is where to POST invocations (null when no data plane runs here).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

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
    api_key: str | None = Field(None, description="only in the answer that made it; shown once")
    created_at: str | None = None
    updated_at: str | None = None


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


@router.get("", response_model=list[Endpoint], summary="Endpoints, by name")
def list_endpoints(request: Request) -> list[dict[str, Any]]:
    return endpoints_service.list_endpoints(_platform(request), data_plane_url=_data_plane_url(request))


@router.get("/{name}", response_model=Endpoint, summary="One endpoint: spec, versions, status")
def get_endpoint(name: str, request: Request) -> dict[str, Any]:
    return endpoints_service.get_endpoint(_platform(request), name, data_plane_url=_data_plane_url(request))


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
