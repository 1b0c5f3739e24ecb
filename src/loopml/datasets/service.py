"""Registering dataset versions: read → hash → (same content? same version) → write → record.

Artifacts are written before the record that points at them, so a failure never leaves a
half-registered version; identical content maps to the existing version without a copy.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from typing import Any

import numpy as np

from loopml.artifacts.keys import join
from loopml.core.errors import Conflict, CorruptArtifact, InvalidInput, paths_shown_as
from loopml.core.names import dataset_name as validate_name
from loopml.datasets.content import DatasetContent
from loopml.platform import Platform
from loopml.datasets.splits import SPLITS


def parse_ref(ref: str) -> tuple[str, int | None]:
    """'mnist' -> ('mnist', None); 'mnist:2' -> ('mnist', 2)."""
    name, _, version = ref.partition(":")
    if version == "" or version == "latest":
        return name, None
    if not version.isdigit():
        raise InvalidInput(f"dataset reference {ref!r}: version must be a number")
    return name, int(version)


def read_any(source: str, fmt: str | None, label: str | None, text: str | None,
             s3_endpoint_url: str | None = None, min_classes: int = 2) -> DatasetContent:
    if source.startswith("sample:"):
        from loopml.datasets.samples import load_sample

        return load_sample(source.split(":", 1)[1])
    if "://" in source and not source.startswith("file://"):
        return _read_remote(source, fmt, label, text, s3_endpoint_url, min_classes)
    source = source[len("file://"):] if source.startswith("file://") else source
    if not os.path.exists(source):
        raise InvalidInput(f"source {source!r} does not exist (use a file, a folder, or sample:NAME)")
    return _read_local(source, fmt, label, text, min_classes)


def _read_local(path: str, fmt: str | None, label: str | None, text: str | None,
                min_classes: int = 2) -> DatasetContent:
    """A local file or folder; a .zip (of class folders, or of one data file) is unpacked first."""
    from loopml.datasets.formats import read_source

    if path.lower().endswith(".zip") and os.path.isfile(path):
        import tempfile
        from pathlib import Path

        from loopml.datasets.archive import dataset_root, safe_unzip

        with tempfile.TemporaryDirectory(prefix="loopml-unzip-") as tmp, \
                paths_shown_as({str(Path(tmp) / "data"): path, tmp: path}):
            root = dataset_root(safe_unzip(Path(path), Path(tmp) / "data"))
            content = read_source(str(root), fmt, label=label, text=text, min_classes=min_classes)
            content.meta["source"] = path
            return content
    return read_source(path, fmt, label=label, text=text, min_classes=min_classes)


REMOTE_SCHEMES = ("s3", "s3a")


def _remote_problem(uri: str, exc: Exception) -> str:
    """What went wrong reaching ``uri``, in the user's terms (credentials, access, the endpoint)."""
    names = {c.__name__ for c in type(exc).__mro__}
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return (f"source {uri!r}: the server has no S3 credentials: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) where `loopml server` runs")
    if isinstance(exc, PermissionError) or "AccessDenied" in str(exc):
        return f"source {uri!r}: access denied (check the server's S3 credentials and the bucket policy)"
    if isinstance(exc, FileNotFoundError):
        return f"source {uri!r} does not exist"
    if names & {"EndpointConnectionError", "ConnectTimeoutError"} or isinstance(exc, (ConnectionError, TimeoutError)):
        return f"source {uri!r}: cannot reach the S3 endpoint (LOOPML_S3_ENDPOINT_URL?): {type(exc).__name__}"
    return f"source {uri!r} cannot be read: {type(exc).__name__}: {exc}"[:500]


def _read_remote(uri: str, fmt: str | None, label: str | None, text: str | None,
                 s3_endpoint_url: str | None, min_classes: int = 2) -> DatasetContent:
    """An s3:// file or folder: copied to a temporary folder, then read. Other schemes (ftp://,
    http://, …) are refused: the server reads S3 and its own files, nothing else."""
    import tempfile

    import fsspec

    protocol = uri.split("://", 1)[0].lower()
    if protocol not in REMOTE_SCHEMES:
        raise InvalidInput(f"source {uri!r}: unsupported scheme {protocol!r}; use s3://BUCKET/KEY, a path on "
                           "the server (or file://), an upload, or sample:NAME")
    opts = {"client_kwargs": {"endpoint_url": s3_endpoint_url}} if s3_endpoint_url else {}
    path = uri.split("://", 1)[1].rstrip("/")
    with tempfile.TemporaryDirectory(prefix="loopml-source-") as tmp:
        local = os.path.join(tmp, path.rsplit("/", 1)[-1] or "data")
        try:
            fs = fsspec.filesystem(protocol, **opts)
            if not fs.exists(path):
                raise InvalidInput(f"source {uri!r} does not exist")
            if fs.isdir(path):
                fs.get(path + "/", local + "/", recursive=True)
            else:
                fs.get_file(path, local)
        except InvalidInput:
            raise
        except ImportError as exc:
            raise InvalidInput(f"source {uri!r}: {protocol}:// needs {exc.name or 's3fs'} installed") from None
        except Exception as exc:  # noqa: BLE001 - botocore/s3fs errors: the user's setup, said in one line
            raise InvalidInput(_remote_problem(uri, exc)) from None
        with paths_shown_as({local: uri.rstrip("/")}):
            return _read_local(local, fmt, label, text, min_classes)


def register(platform: Platform, name: str, source: str, *, fmt: str | None = None, label: str | None = None,
             text: str | None = None, seed: int = 42, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
             source_label: str | None = None, extend: bool = False) -> dict[str, Any]:
    """Add ``source`` as a version of ``name``; returns the version record and whether it was new.

    ``extend=True``: the new version is the newest version's rows plus the rows of ``source``
    (same kind, shape and classes). The old rows keep their split; only the new rows are split,
    so a model trained on the previous version never finds its training rows in the new test
    split. Extending a dataset that has no version yet registers ``source`` as version 1.
    """
    validate_name(name)
    base = _latest_or_none(platform, name) if extend else None
    if base is not None:
        fmt, label, text = inherited_options(base, source, fmt, label, text)
    # a batch appended to a dataset may hold a single class; a dataset on its own needs two
    content = read_any(source, fmt, label, text, platform.settings.s3_endpoint_url,
                       min_classes=1 if base is not None else 2)
    fmt_used = fmt or content.meta.get("format") or ("sample" if source.startswith("sample:") else "auto")
    return _store_version(platform, name, content, base=base, seed=seed, fractions=fractions,
                          source=source, source_label=source_label, fmt=fmt_used)


def inherited_options(base: dict[str, Any], source: str, fmt: str | None, label: str | None,
                      text: str | None) -> tuple[str | None, str | None, str | None]:
    """The reading options an extension takes from the version it extends, unless given.

    Label and text column: always (a batch is read as the dataset was). Format: a forced
    ``text`` always (short texts would not be guessed), any other only when the new file's
    extension names none — a CSV dataset may still grow from a Parquet file or a zip; a table's
    csv/parquet batch is read as a table (no free-text guess).
    """
    from loopml.datasets.formats import FORMATS, extension_format

    schema = base.get("schema") or {}
    if base.get("kind") in ("tabular", "text") and base.get("format") != "npz":
        label = label or schema.get("label")  # a column; npz keys and image folders are found anyway
    text = text or schema.get("text")
    recorded = base.get("format")
    name = PurePosixPath(source.rstrip("/")).name
    named = extension_format(name)
    if fmt is None and recorded in FORMATS:
        unnamed_file = "." in name and not name.lower().endswith(".zip") and named is None
        if recorded == "text" or unnamed_file:
            fmt = recorded
    if fmt is None and base.get("kind") == "tabular" and named in ("csv", "parquet"):
        fmt = named  # a format given: the batch is read as a table, like the rows it joins
    return fmt, label, text


def register_content(platform: Platform, name: str, content: DatasetContent, *, extend: bool = True,
                     source_label: str, seed: int = 42,
                     fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> dict[str, Any]:
    """Register rows built in memory (e.g. labelled captured traffic) as a version of ``name``,
    exactly as ``register`` does with a source read from disk (``extend``: appended to the newest
    version's rows, old rows keep their split)."""
    validate_name(name)
    if len(content) == 0:
        raise InvalidInput(f"dataset {name}: no rows to register")
    base = _latest_or_none(platform, name) if extend else None
    if base is None and len(set(content.labels.tolist())) < 2:
        raise InvalidInput(f"dataset {name}: a new dataset needs at least 2 classes, these rows have "
                           f"{len(set(content.labels.tolist()))}")
    return _store_version(platform, name, content, base=base, seed=seed, fractions=fractions,
                          source=source_label, source_label=source_label, fmt="rows")


def _store_version(platform: Platform, name: str, content: DatasetContent, *, base: dict[str, Any] | None,
                   seed: int, fractions: tuple[float, float, float], source: str, source_label: str | None,
                   fmt: str) -> dict[str, Any]:
    """hash → (same content? same version) → write artifacts → record (the shared tail of registering)."""
    from loopml.datasets.hashing import content_hash
    from loopml.datasets.labels import check_classifiable
    from loopml.datasets.schema import infer_schema
    from loopml.datasets.serialize import dump_content
    from loopml.datasets.splits import stratified_split

    if base is not None:
        from loopml.datasets.extend import append_rows

        base_content, base_splits = load_version(platform, base)
        new_rows = stratified_split(content.labels, seed=seed, fractions=fractions)
        content = append_rows(base_content, content, what=f"{base['ref']} + {source}")
        splits = {k: np.concatenate([base_splits[k], new_rows[k] + len(base_content)]).astype(np.int64)
                  for k in SPLITS}
        source_label = f"{base['ref']} + {source_label or source}"
    else:
        splits = None
    check_classifiable(content)
    digest = content_hash(content)
    existing = platform.datasets.find_by_hash(name, digest)
    if existing is not None:
        return {**existing, "created": False}

    schema = infer_schema(content)
    if splits is None:
        splits = stratified_split(content.labels, seed=seed, fractions=fractions)
    prefix = join("datasets", name, digest[:16])
    for fname, data in dump_content(content).items():
        platform.artifacts.put_bytes(join(prefix, fname), data)
    buf = _npz_bytes({k: v.astype(np.int64) for k, v in splits.items()})
    platform.artifacts.put_bytes(join(prefix, "splits.npz"), buf)
    for _attempt in range(3):  # two writers racing for the same number: retry with the next one
        version = platform.datasets.next_version(name)
        try:
            record = platform.datasets.add_version(
                name, version, content_hash=digest, kind=content.kind, source=source_label or source,
                format=fmt, rows=len(content), schema=schema, artifact_prefix=prefix,
                splits={"seed": seed, "fractions": list(fractions),
                        "counts": {k: int(len(v)) for k, v in splits.items()}})
            return {**record, "created": True}
        except Conflict:
            again = platform.datasets.find_by_hash(name, digest)
            if again is not None:
                return {**again, "created": False}
    raise InvalidInput(f"could not allocate a version for dataset {name!r}; try again")


def _latest_or_none(platform: Platform, name: str) -> dict[str, Any] | None:
    from loopml.core.errors import NotFound

    try:
        return platform.datasets.get(name)
    except NotFound:
        return None


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_version(platform: Platform, record: dict[str, Any]) -> tuple[DatasetContent, dict[str, np.ndarray]]:
    """The content and split indices of a registered version; missing/corrupt files say so."""
    import io

    from loopml.datasets.serialize import load_content

    what = record["ref"]
    prefix = record["artifact_prefix"]
    files: dict[str, bytes] = {}
    for key in platform.artifacts.list(prefix):
        files[key.rsplit("/", 1)[-1]] = platform.artifacts.get_bytes(key)
    if "splits.npz" not in files or not any(f.startswith("data.") for f in files):
        raise CorruptArtifact(f"dataset {what} is damaged: files missing under {prefix!r} "
                              f"(found: {', '.join(sorted(files)) or 'nothing'})")
    content = load_content(files, record["schema"], what=what)
    try:
        with np.load(io.BytesIO(files["splits.npz"])) as z:
            splits = {k: z[k] for k in SPLITS}
    except Exception as exc:  # noqa: BLE001
        raise CorruptArtifact(f"dataset {what} is damaged: splits.npz cannot be read ({exc})") from None
    if sum(len(v) for v in splits.values()) != len(content):
        raise CorruptArtifact(f"dataset {what} is damaged: splits do not cover its {len(content)} rows")
    return content, splits
