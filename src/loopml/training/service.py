"""Submitting jobs: everything a worker needs is validated and written into the job spec first.

A job is self-describing (spec + metadata-store URL + artifact-store URI), so any executor —
the local subprocess pool now, Ray later — can run it on any node.
"""

from __future__ import annotations

import hashlib
import io
import re
import tempfile
from typing import Any, BinaryIO

from loopml.artifacts.keys import join, validate_key
from loopml.core.errors import InvalidInput, NotFound
from loopml.datasets.service import parse_ref, validate_name
from loopml.platform import Platform
from loopml.registry.refs import parse_model_ref

SPLITS = ("train", "validation", "test")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def upload_user_file(platform: Platform, filename: str, data: bytes | BinaryIO, kind: str = "model") -> str:
    """Store an uploaded user file (model code or prediction input) by content; returns its key.

    ``data`` may be a binary file: it is streamed through a temporary file while hashed, so an
    input larger than memory can be uploaded for batch prediction.
    """
    if kind not in ("model", "input"):
        raise InvalidInput(f"upload kind {kind!r} must be 'model' or 'input'")
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if not _FILE_RE.fullmatch(base):
        raise InvalidInput(f"file name {filename!r} is not valid")
    if kind == "model" and not base.endswith(".py"):
        raise InvalidInput(f"a user model must be a Python file exposing build_model(hparams, schema); got {base!r}")
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    sha, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(prefix="loopml-upload-") as tmp:
        while chunk := stream.read(1024 * 1024):
            sha.update(chunk)
            tmp.write(chunk)
            size += len(chunk)
        if size == 0:
            raise InvalidInput(f"uploaded file {base!r} is empty")
        tmp.flush()
        key = join("uploads", kind + "s", sha.hexdigest()[:16], base)
        if not platform.artifacts.exists(key):
            platform.artifacts.put_file(tmp.name, key)
    return key


def submit_training(platform: Platform, *, dataset: str | None = None, model: str | None = None, params: dict[str, Any] | None = None,
                    register_as: str | None = None, time_limit_s: float | None = None,
                    resume: str | None = None) -> dict[str, Any]:
    """Validate and queue a training job. Raises before queueing if anything is wrong."""
    from loopml.models.hparams import TEMPLATES, check_template_suits, template_for_kind, validate_hparams

    params = dict(params or {})
    resume_from = None
    if resume:
        prev = platform.jobs.get(resume)
        if prev["kind"] != "train":
            raise InvalidInput(f"job {resume!r} is not a training job; only training jobs can be resumed")
        if not any(k.endswith(".npz") for k in platform.artifacts.list(join("jobs", resume, "checkpoints"))):
            raise InvalidInput(f"job {resume!r} has no checkpoint to resume from")
        spec = prev["spec"]
        for given, original, what in ((dataset, spec["dataset"], "dataset"), (model, spec["model"], "model")):
            if given and given != original:
                raise InvalidInput(f"--resume {resume} continues {what} {original!r}; got {given!r}")
        dataset, model = spec["dataset"], spec["model"]
        params = {**spec["hparams"], **params}
        register_as = register_as or spec["register_as"]
        resume_from = resume

    if not dataset:
        raise InvalidInput("a dataset is required (--dataset NAME[:VERSION]) unless resuming a job")
    name, version = parse_ref(dataset)
    ds = platform.datasets.get(name, version)
    model = model or template_for_kind(ds["kind"])
    user_key = None
    if model.startswith("file:"):
        user_key = validate_key(model[5:])
        if not platform.artifacts.exists(user_key):
            raise NotFound(f"user model file {user_key!r} not found; upload it first")
        template = "file"
    elif model.strip().lower() in TEMPLATES:
        model = model.strip().lower()
        check_template_suits(model, ds["kind"])
        template = model
    else:
        raise InvalidInput(f"model {model!r} is not a template ({', '.join(TEMPLATES)}) or an uploaded .py file")
    hparams = validate_hparams(model if template != "file" else "file:" + user_key, params)
    if time_limit_s is not None and time_limit_s <= 0:
        raise InvalidInput(f"time limit must be positive seconds, got {time_limit_s}")
    register_as = validate_name(register_as or f"{name}-{template if template != 'file' else 'custom'}", "model")
    spec = {"dataset": ds["ref"], "dataset_name": name, "dataset_version": ds["version"], "kind": ds["kind"],
            "model": model, "template": template, "user_model_key": user_key, "hparams": hparams,
            "register_as": register_as, "time_limit_s": time_limit_s, "resume_from": resume_from}
    return platform.jobs.create("train", spec)


def parse_input(platform: Platform, spec: str) -> dict[str, Any]:
    """'dataset:NAME[:VERSION]:SPLIT', 'NAME[:VERSION]:SPLIT' or 'upload:KEY' → a resolved input."""
    if spec.startswith("upload:"):
        key = validate_key(spec[7:])
        if not platform.artifacts.exists(key):
            raise NotFound(f"uploaded input {key!r} not found")
        return {"type": "upload", "key": key}
    body = spec[8:] if spec.startswith("dataset:") else spec
    parts = body.split(":")
    if len(parts) == 2:
        name, version, split = parts[0], None, parts[1]
    elif len(parts) == 3:
        name, version, split = parts[0], parts[1], parts[2]
    else:
        raise InvalidInput(f"input {spec!r}: use NAME[:VERSION]:SPLIT (e.g. mnist:test) or a file")
    if split not in SPLITS:
        raise InvalidInput(f"input {spec!r}: split {split!r} must be one of {', '.join(SPLITS)}")
    if version is not None and version != "latest" and not version.isdigit():
        raise InvalidInput(f"input {spec!r}: version {version!r} must be a number")
    ds = platform.datasets.get(name, int(version) if version and version.isdigit() else None)
    return {"type": "dataset", "dataset": ds["ref"], "name": name, "version": ds["version"], "split": split}


def submit_prediction(platform: Platform, *, model: str, input: str, limit: int | None = None) -> dict[str, Any]:
    """Queue a batch prediction (SageMaker's batch transform) of a registered model version."""
    name, version, alias = parse_model_ref(model)
    mv = platform.models.get(name, version, alias)
    if limit is not None and limit <= 0:
        raise InvalidInput(f"limit must be a positive number of rows, got {limit}")
    source = parse_input(platform, input)
    spec = {"model": mv["ref"], "model_name": name, "model_version": mv["version"], "input": source,
            "limit": limit}
    return platform.jobs.create("predict", spec)
