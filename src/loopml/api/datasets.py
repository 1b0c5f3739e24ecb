"""/datasets: register (from a server-visible source or an upload) and browse versions."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.auth import check_server_path
from loopml.core.errors import InvalidInput, paths_shown_as
from loopml.datasets.archive import dataset_root, safe_unzip
from loopml.platform import Platform

router = APIRouter(prefix="/datasets", tags=["datasets"])

Format = Literal["npz", "csv", "parquet", "images", "text"]


class DatasetIn(BaseModel):
    name: str = Field(description="lowercase letters, digits, '.', '_' or '-'", examples=["mnist"])
    source: str = Field(description="sample:NAME or a file/folder path visible to the server",
                        examples=["sample:mnist"])
    format: Format | None = Field(None, description="inferred from the source when omitted")
    label: str | None = Field(None, description="label column of a table")
    text: str | None = Field(None, description="text column of a table")
    extend: bool = Field(False, description="append the source's rows to the newest version's rows "
                         "(same kind, shape and classes) instead of replacing them; label and text "
                         "default to that version's")


class DatasetVersion(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    name: str
    version: int
    ref: str
    content_hash: str
    kind: str
    source: str
    format: str | None = None
    rows: int
    schema_: dict[str, Any] = Field(alias="schema", description="kind, classes, class_counts, features")
    splits: dict[str, Any] = Field(description="seed, fractions and row counts per split")
    created_at: str | None = None


class DatasetRegistered(DatasetVersion):
    created: bool = Field(description="false when identical content was already registered")


class DatasetSummary(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    latest_version: int
    versions: int
    latest: DatasetVersion


class DatasetVersions(BaseModel):
    name: str
    versions: list[DatasetVersion]


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def parse_version(version: str, what: str) -> int | None:
    """'latest' -> None, '3' -> 3; anything else is the caller's mistake."""
    if version == "latest":
        return None
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(f"{what} version {version!r} is not valid: use a positive number or 'latest'")
    return int(version)


def _register(platform: Platform, response: Response, name: str, source: str, fmt: str | None,
              label: str | None, text: str | None, source_label: str | None = None,
              extend: bool = False) -> dict[str, Any]:
    from loopml.datasets.service import register  # numpy/pandas: only when a dataset is added

    record = register(platform, name, source, fmt=fmt, label=label, text=text, source_label=source_label,
                      extend=extend)
    response.status_code = 201 if record["created"] else 200
    return record


@router.get("", response_model=list[DatasetSummary], summary="List datasets with their newest version")
def list_datasets(request: Request,
                  name: Annotated[str | None, Query(max_length=128, description="only names containing this (any case)")] = None,
                  kind: Annotated[Literal["image", "text", "tabular"] | None, Query(description="kind of the newest version")] = None,
                  limit: Annotated[int | None, Query(ge=1, le=1000, description="page size (default: all)")] = None,
                  offset: Annotated[int, Query(ge=0, description="skip this many (paging)")] = 0,
                  ) -> list[dict[str, Any]]:
    return _platform(request).datasets.list(name_contains=name, kind=kind, limit=limit, offset=offset)


@router.post("", response_model=DatasetRegistered, status_code=201,
             responses={200: {"description": "identical content already registered (created=false)"}},
             summary="Register a sample or a server-visible file/folder")
def add_dataset(body: DatasetIn, request: Request, response: Response) -> dict[str, Any]:
    source = body.source.strip()
    if not source.startswith("sample:") and ("://" not in source or source.startswith("file://")):
        check_server_path(request, source, "source")
    return _register(_platform(request), response, body.name, body.source, body.format, body.label, body.text,
                     extend=body.extend)


@router.post("/upload", response_model=DatasetRegistered, status_code=201,
             responses={200: {"description": "identical content already registered (created=false)"}},
             summary="Register an uploaded data file or a .zip of a folder")
def upload_dataset(
    request: Request,
    response: Response,
    name: Annotated[str, Form()],
    file: Annotated[UploadFile, File(description="npz/csv/parquet file, or a .zip of a folder")],
    fmt: Annotated[Format | None, Form(alias="format")] = None,
    label: Annotated[str | None, Form()] = None,
    text: Annotated[str | None, Form()] = None,
    source: Annotated[str | None, Form(description="where the upload came from (recorded only)")] = None,
    extend: Annotated[bool, Form(description="append to the newest version's rows")] = False,
) -> dict[str, Any]:
    platform = _platform(request)
    with saved_upload(platform, file) as saved:
        path = saved
        if saved.suffix.lower() == ".zip":
            path = dataset_root(safe_unzip(saved, unzipped(saved)))
        label_src = source or f"upload:{file.filename or saved.name}"
        return _register(platform, response, name, str(path), fmt, label, text, source_label=label_src,
                         extend=extend)


@router.get("/{name}", response_model=DatasetVersions, summary="Every version of a dataset")
def dataset_versions(name: str, request: Request) -> dict[str, Any]:
    return {"name": name, "versions": _platform(request).datasets.versions(name)}


@router.get("/{name}/versions/{version}", response_model=DatasetVersion,
            summary="One version (a number or 'latest')")
def dataset_version(name: str, version: str, request: Request) -> dict[str, Any]:
    return _platform(request).datasets.get(name, parse_version(version, f"dataset {name!r}"))


class PreviewRow(BaseModel):
    index: int = Field(description="the row's position in the version")
    label: str
    image: list[Any] | None = Field(None, description="image rows: pixels as nested lists (H, W, C), raw scale")
    text: str | None = Field(None, description="text rows: the text (first 2,000 characters)")
    truncated: bool | None = None
    values: dict[str, Any] | None = Field(None, description="tabular rows: column -> value (null: missing)")


class Preview(BaseModel):
    name: str
    version: int
    kind: str
    split: str | None = Field(description="null: all rows in stored order")
    total: int = Field(description="rows in the split (or the version)")
    offset: int
    columns: list[str] | None = Field(None, description="tabular: the feature columns in order")
    rows: list[PreviewRow]


@router.get("/{name}/versions/{version}/rows", response_model=Preview, response_model_exclude_none=True,
            summary="A page of a version's rows (images as pixels, texts, table rows) to look at")
def dataset_rows(name: str, version: str, request: Request,
                 split: Annotated[Literal["train", "validation", "test"] | None, Query()] = None,
                 offset: Annotated[int, Query(ge=0)] = 0,
                 limit: Annotated[int, Query(ge=1, le=200)] = 24) -> dict[str, Any]:
    from loopml.datasets.preview import preview_rows  # numpy/pandas: only when rows are asked for

    platform = _platform(request)
    record = platform.datasets.get(name, parse_version(version, f"dataset {name!r}"))
    return preview_rows(platform, record, split, offset, limit)


@router.get("/{name}/versions/{version}/models", summary="Model versions trained on this dataset version "
            "(lineage), newest first")
def dataset_models(name: str, version: str, request: Request) -> list[dict[str, Any]]:
    platform = _platform(request)
    ref = platform.datasets.get(name, parse_version(version, f"dataset {name!r}"))["ref"]
    return platform.models.trained_on(ref)


class Deleted(BaseModel):
    deleted: list[str] = Field(description="the versions deleted (NAME:VERSION)")
    artifacts_removed: list[str] = Field(description="artifact prefixes removed with them")


def exact_version(version: str, what: str) -> int:
    """Deleting needs a number: 'latest' would delete whatever is newest at that moment."""
    if not version.isdigit() or int(version) < 1:
        raise InvalidInput(f"{what} version {version!r} is not valid: deleting needs a version number")
    return int(version)


_FORCE = Query(description="delete even if registered model versions were trained on it (they stay)")


@router.delete("/{name}", response_model=Deleted, summary="Delete a dataset and all its versions",
               responses={409: {"description": "in use: the message lists the dependents"}})
def delete_dataset(name: str, request: Request, force: Annotated[bool, _FORCE] = False) -> dict[str, Any]:
    from loopml.registry.deletion import delete_dataset as delete

    return delete(_platform(request), name, force=force)


@router.delete("/{name}/versions/{version}", response_model=Deleted, summary="Delete one dataset version",
               responses={409: {"description": "in use: the message lists the dependents"}})
def delete_dataset_version(name: str, version: str, request: Request,
                           force: Annotated[bool, _FORCE] = False) -> dict[str, Any]:
    from loopml.registry.deletion import delete_dataset as delete

    return delete(_platform(request), name, exact_version(version, f"dataset {name!r}"), force=force)


# ------------------------------------------------------------------ uploads


@contextmanager
def saved_upload(platform: Platform, file: UploadFile, default: str = "upload") -> Iterator[Path]:
    """The upload streamed into a temporary folder (removed on exit), as a safe file name; a
    LoopMLError raised inside names the user's file, not this copy (nor ``unzipped(saved)``)."""
    filename = safe_filename(file.filename or default)
    tmp_root = platform.settings.home / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root, prefix="upload-") as tmp, \
            paths_shown_as({str(Path(tmp) / "unzipped"): filename, tmp + os.sep: ""}):
        saved = Path(tmp) / filename
        with saved.open("wb") as out:
            shutil.copyfileobj(file.file, out, 1024 * 1024)
        yield saved


def unzipped(saved: Path) -> Path:
    """Where to unpack the zip ``saved`` by ``saved_upload`` (inside its temporary folder)."""
    return saved.parent / "unzipped"


def safe_filename(name: str) -> str:
    """The last path component, with only harmless characters (the suffix picks the reader)."""
    base = re.split(r"[\\/]", name)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)[-128:]
    return re.sub(r"^[^A-Za-z0-9]+", "", base) or "upload"  # no hidden files, no leading '-'



