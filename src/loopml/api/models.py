"""/models: the registry — versions, aliases and the audit trail of alias moves."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.auth import acting_as
from loopml.api.datasets import Deleted, exact_version, parse_version
from loopml.core.errors import InvalidInput
from loopml.platform import Platform
from loopml.registry import aliases, catalog
from loopml.registry.resolve import lookup

router = APIRouter(prefix="/models", tags=["models"])

ActorHeader = Annotated[str | None, Header(alias="X-LoopML-Actor", description="who moves the alias (audit)")]


class ModelSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    versions: int
    latest_version: int | None = None
    aliases: dict[str, int] = Field(default_factory=dict, description="alias -> version")
    latest_metrics: dict[str, Any] | None = None
    created_at: str | None = None


class ModelVersion(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    name: str
    version: int
    ref: str
    aliases: list[str] = Field(default_factory=list)
    job_id: str | None = None
    dataset: str | None = None
    kind: str | None = None
    template: str | None = None
    hparams: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None
    runtimes: Any = None
    trusted: bool | None = None
    created_at: str | None = None


class ModelVersions(BaseModel):
    name: str
    aliases: dict[str, int] = Field(description="alias -> version")
    versions: list[ModelVersion]
    total: int | None = Field(None, description="how many versions the model has (with limit/offset)")


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)


class AliasMove(BaseModel):
    name: str
    alias: str
    version: int | None = Field(description="null once deleted")
    previous: int | None = None


class AliasDeleted(AliasMove):
    broken: list[dict[str, Any]] = Field([], description="deleted with force: the endpoints that followed it")


class AliasEvent(BaseModel):
    alias: str
    from_version: int | None
    to_version: int | None
    actor: str | None
    at: str | None


def _platform(request: Request) -> Platform:
    return request.app.state.platform


class ImportedVersion(ModelVersion):
    label_names: list[str] = Field(description="one per model output, in order")
    input: dict[str, Any] | None = Field(None, description="the input signature: name, dtype, shape")


@router.post("/import", response_model=ImportedVersion, status_code=201,
             summary="Import a model trained elsewhere (.keras, .onnx, or a .zip of a SavedModel folder)")
def import_model(
    request: Request,
    name: Annotated[str, Form(description="register as the next version of this model")],
    file: Annotated[UploadFile, File(description="model.keras, model.onnx, or a .zip of a SavedModel folder")],
    labels: Annotated[str | None, Form(description="class names in output order: a,b,c or a JSON array; "
                                       "default 0..N-1 from the output width")] = None,
    input_shape: Annotated[str | None, Form(description="one row's shape, e.g. 28,28,1 (when the model "
                                            "leaves it open)")] = None,
    kind: Annotated[Literal["image", "text", "tabular"] | None, Form(description="default: from the input shape")] = None,
    columns: Annotated[str | None, Form(description="tabular: the input columns in order (default x0..xN-1)")] = None,
    tokenizer: Annotated[UploadFile | None, File(description="text: a HuggingFace tokenizer.json")] = None,
) -> dict[str, Any]:
    from loopml.api.datasets import saved_upload, unzipped
    from loopml.datasets.archive import safe_unzip
    from loopml.training.model_import import import_model as run_import

    platform = _platform(request)
    with saved_upload(platform, file, default="model") as saved:
        source, filename = saved, saved.name
        if saved.suffix.lower() == ".zip":  # a SavedModel folder, zipped by the SDK
            root = safe_unzip(saved, unzipped(saved))
            found = sorted(p.parent for p in root.rglob("saved_model.pb"))
            if not found:
                raise InvalidInput(f"{filename} holds no SavedModel (no saved_model.pb inside)")
            source, filename = found[0], found[0].name
        return run_import(platform, name=name, source=source, filename=filename, labels=labels,
                          input_shape=input_shape, kind=kind, columns=columns,
                          tokenizer=tokenizer.file.read() if tokenizer is not None else None)


@router.get("", response_model=list[ModelSummary], summary="Registered models")
def list_models(request: Request,
                name: Annotated[str | None, Query(max_length=128, description="only names containing this (any case)")] = None,
                limit: Annotated[int | None, Query(ge=1, le=1000, description="page size (default: all)")] = None,
                offset: Annotated[int, Query(ge=0, description="skip this many (paging)")] = 0,
                ) -> list[dict[str, Any]]:
    return catalog.list_models(_platform(request), name_contains=name, limit=limit, offset=offset)


@router.get("/{name}", response_model=ModelVersions, summary="A model's versions and aliases")
def model_versions(name: str, request: Request,
                   limit: Annotated[int | None, Query(ge=1, le=1000, description="page size (default: all)")] = None,
                   offset: Annotated[int, Query(ge=0)] = 0,
                   newest_first: Annotated[bool, Query(description="order versions newest first")] = False,
                   ) -> dict[str, Any]:
    if limit is None and not offset and not newest_first:
        return catalog.model_versions(_platform(request), name)
    return catalog.model_page(_platform(request), name, limit=limit, offset=offset, newest_first=newest_first)


@router.get("/{name}/versions/{version}", response_model=ModelVersion, summary="One version (a number or 'latest')")
def model_version(name: str, version: str, request: Request) -> dict[str, Any]:
    return lookup(_platform(request), name, parse_version(version, f"model {name!r}"))


@router.get("/{name}/versions/{version}/download", response_class=StreamingResponse,
            summary="The version's files as a zip (model.keras, model.onnx, loopml.json, tokenizer…)",
            responses={200: {"content": {"application/zip": {}}}})
def download_model_version(name: str, version: str, request: Request) -> StreamingResponse:
    import tempfile
    import zipfile

    from loopml.core.errors import CorruptArtifact

    platform = _platform(request)
    record = lookup(platform, name, parse_version(version, f"model {name!r}"))
    prefix = record["artifact_prefix"]
    keys = platform.artifacts.list(prefix)
    if not keys:
        raise CorruptArtifact(f"model version {record['ref']} has no files under {prefix!r}")
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)
    with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in keys:
            with platform.artifacts.open_read(key) as src, zf.open(key[len(prefix):].lstrip("/"), "w") as dst:
                while chunk := src.read(1024 * 1024):
                    dst.write(chunk)
    size = spool.tell()
    spool.seek(0)

    def chunks():
        with spool:
            while chunk := spool.read(1024 * 1024):
                yield chunk

    filename = f"{name}-{record['version']}.zip"
    return StreamingResponse(chunks(), media_type="application/zip", headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{filename}"',
        "X-LoopML-Model-Version": record["ref"]})


@router.get("/{name}/aliases/{alias}", response_model=ModelVersion, summary="The version an alias points at")
def get_alias(name: str, alias: str, request: Request) -> dict[str, Any]:
    return lookup(_platform(request), name, alias=alias)


@router.put("/{name}/aliases/{alias}", response_model=AliasMove, summary="Point an alias at a version")
def set_alias(name: str, alias: str, body: AliasIn, request: Request, actor: ActorHeader = None) -> dict[str, Any]:
    return aliases.set_alias(_platform(request), name, alias, body.version, actor=acting_as(request, actor))


@router.delete("/{name}/aliases/{alias}", response_model=AliasDeleted, response_model_exclude_unset=True,
               summary="Remove an alias; 409 listing the endpoints that follow it unless force=true")
def delete_alias(name: str, alias: str, request: Request, actor: ActorHeader = None,
                 force: bool = False) -> dict[str, Any]:
    return aliases.delete_alias(_platform(request), name, alias, actor=acting_as(request, actor), force=force)


@router.get("/{name}/alias-history", response_model=list[AliasEvent], summary="Every alias move, oldest first")
def alias_history(name: str, request: Request) -> list[dict[str, Any]]:
    return aliases.history(_platform(request), name)


_IN_USE = {409: {"description": "in use (an alias, an endpoint, a running job): the message lists them"}}


@router.delete("/{name}", response_model=Deleted, responses=_IN_USE,
               summary="Delete a model and all its versions (none may be in use)")
def delete_model(name: str, request: Request) -> dict[str, Any]:
    from loopml.registry.deletion import delete_model as delete

    return delete(_platform(request), name)


@router.delete("/{name}/versions/{version}", response_model=Deleted, responses=_IN_USE,
               summary="Delete one model version and its files")
def delete_model_version(name: str, version: str, request: Request) -> dict[str, Any]:
    from loopml.registry.deletion import delete_model as delete

    return delete(_platform(request), name, exact_version(version, f"model {name!r}"))
