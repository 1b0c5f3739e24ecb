"""Submitting jobs: everything a worker needs is validated and written into the job spec first.

A job is self-describing (spec + metadata-store URL + artifact-store URI), so any executor —
the local subprocess pool now, Ray later — can run it on any node.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
from typing import Any, BinaryIO

from loopml.artifacts.keys import join, validate_key
from loopml.core.errors import InvalidInput, NotFound
from loopml.core.names import FILE_NAME_RE, JOB_ID_RE
from loopml.core.resources import job_resources
from loopml.datasets.service import parse_ref
from loopml.platform import Platform
from loopml.registry.champion import METRICS
from loopml.registry.registration import validate_model_name
from loopml.registry.resolve import candidate, resolve
from loopml.datasets.splits import SPLITS

_FILE_RE, _JOB_ID_RE = FILE_NAME_RE, JOB_ID_RE


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


def validate_job_id(job_id: str | None) -> str | None:
    """A caller-chosen job id (workflows derive them, for exactly-once dispatch): it names artifact folders."""
    if job_id is not None and not _JOB_ID_RE.fullmatch(job_id):
        raise InvalidInput(f"job id {job_id!r} is not valid: letters, digits, '.', '_' or '-', at most 32 characters")
    return job_id


def submit_training(platform: Platform, *, dataset: str | None = None, model: str | None = None, params: dict[str, Any] | None = None,
                    register_as: str | None = None, time_limit_s: float | None = None,
                    resume: str | None = None, register: bool = True, job_id: str | None = None,
                    resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and queue a training job. Raises before queueing if anything is wrong.

    ``register=False``: the job trains, evaluates and uploads the bundle but registers no
    version; its result carries ``model_ref="job:<id>"`` and what the registry's
    ``register_trained`` needs.
    ``job_id``: a caller-chosen id (an existing one raises Conflict).
    ``resources``: cpus / memory_gb / gpus the job asks of its node (core.resources; a resumed
    job asks what the job it continues asked, unless given).
    """
    from loopml.models.hparams import TEMPLATES, check_template_suits, template_for_kind, validate_hparams

    validate_job_id(job_id)
    if not isinstance(register, bool):
        raise InvalidInput(f"register must be true or false, got {register!r}")
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
        resources = {**(spec.get("resources") or {}), **{k: v for k, v in (resources or {}).items() if v is not None}}
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
        import difflib

        close = difflib.get_close_matches(model.strip().lower(), TEMPLATES, n=1)
        raise InvalidInput(f"model {model!r} is not a template ({', '.join(TEMPLATES)}) or an uploaded .py file"
                           + (f"; did you mean {close[0]!r}?" if close else ""))
    hparams = validate_hparams(model if template != "file" else "file:" + user_key, params)
    if time_limit_s is not None and time_limit_s <= 0:
        raise InvalidInput(f"time limit must be positive seconds, got {time_limit_s}")
    register_as = validate_model_name(register_as or f"{name}-{template if template != 'file' else 'custom'}")
    spec = {"dataset": ds["ref"], "dataset_name": name, "dataset_version": ds["version"], "kind": ds["kind"],
            "model": model, "template": template, "user_model_key": user_key, "hparams": hparams,
            "register_as": register_as, "time_limit_s": time_limit_s, "resume_from": resume_from,
            "register": register, "resources": job_resources("train", resources)}
    return platform.jobs.create("train", spec, job_id=job_id)


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
        raise InvalidInput(f"input {body!r}: use NAME[:VERSION]:SPLIT (e.g. mnist:test) or a file")
    if split not in SPLITS:  # in the user's words: "dataset:" is the SDK's prefix, not theirs
        import difflib

        close = difflib.get_close_matches(split, SPLITS, n=1)
        raise InvalidInput(f"dataset {name} has no split {split!r} ({', '.join(SPLITS)})"
                           + (f"; did you mean {close[0]!r}?" if close else ""))
    if version is not None and version != "latest" and not version.isdigit():
        raise InvalidInput(f"input {body!r}: version {version!r} must be a number")
    ds = platform.datasets.get(name, int(version) if version and version.isdigit() else None)
    return {"type": "dataset", "dataset": ds["ref"], "name": name, "version": ds["version"], "split": split}


def submit_prediction(platform: Platform, *, model: str, input: str, limit: int | None = None,
                      job_id: str | None = None, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Queue a batch prediction (SageMaker's batch transform) of a registered model version."""
    mv = resolve(platform, model)
    asked = job_resources("predict", resources)
    if limit is not None and limit <= 0:
        raise InvalidInput(f"limit must be a positive number of rows, got {limit}")
    source = parse_input(platform, input)
    from loopml.training.predict_input import check_input

    check_input(platform, mv, source)  # the input against the model's signature, before anything is queued
    spec = {"model": mv["ref"], "model_name": mv["name"], "model_version": mv["version"], "input": source,
            "limit": limit, "resources": asked}
    return platform.jobs.create("predict", spec, job_id=validate_job_id(job_id))


# ------------------------------------------------------------------ evaluation


def submit_evaluation(platform: Platform, *, models: dict[str, str], dataset: str, split: str = "test",
                      metric: str = "accuracy", min_improvement: float | None = None,
                      job_id: str | None = None, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Queue an "evaluate" job: every model on the same rows of one dataset version's split.

    With labels "challenger" and "champion" the result also says whether to promote.
    """
    validate_job_id(job_id)
    asked = job_resources("evaluate", resources)
    if not isinstance(models, dict) or not models:
        raise InvalidInput("models must map labels to model references, e.g. {\"challenger\": \"job:…\", "
                           "\"champion\": \"mnist-cnn@production\"}")
    if not isinstance(dataset, str) or not dataset:
        raise InvalidInput("a dataset is required (NAME or NAME:VERSION)")
    if split not in SPLITS:
        raise InvalidInput(f"split {split!r} must be one of {', '.join(SPLITS)}")
    if metric not in METRICS:
        raise InvalidInput(f"metric {metric!r} must be one of {', '.join(METRICS)}")
    if min_improvement is not None and (isinstance(min_improvement, bool)
                                        or not isinstance(min_improvement, (int, float))):
        raise InvalidInput(f"min_improvement must be a number, got {min_improvement!r}")
    name, version = parse_ref(dataset)
    try:
        ds = platform.datasets.get(name, version)
    except NotFound as exc:
        raise InvalidInput(exc.message) from None
    entries = {}
    for label, ref in models.items():
        if not isinstance(label, str) or not _FILE_RE.fullmatch(label):
            raise InvalidInput(f"model label {label!r} is not valid: letters, digits, '.', '_' or '-'")
        entry = candidate(platform, label, ref)
        if "missing" not in entry and entry["kind"] != ds["kind"]:
            raise InvalidInput(f"{entry['ref']} is a {entry['kind']} model; "
                               f"dataset {ds['ref']} is {ds['kind']}")
        entries[label] = entry
    spec = {"dataset": ds["ref"], "dataset_name": name, "dataset_version": ds["version"], "split": split,
            "metric": metric, "min_improvement": float(min_improvement or 0.0), "models": entries,
            "resources": asked}
    return platform.jobs.create("evaluate", spec, job_id=job_id)
