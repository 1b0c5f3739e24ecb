"""Where an object trigger looks: a local folder or an S3 prefix, listed as key → (size, etag, time).

A location is a root (a local folder, or an S3 bucket) plus a key prefix inside it; keys are
relative to the root, like S3 keys are relative to their bucket. Local etags are
``f"{size}-{mtime_ns}"`` (any rewrite changes them); S3 etags come from the listing.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loopml.core.errors import InvalidInput
from loopml.core.settings import Settings
from loopml.core.timeutil import iso

SETTLE_S = 0.2  # a local file must be this old: a half-written file never fires (then fires again)
_SKIPPED_SUFFIXES = (".tmp", ".part", ".crdownload", ".swp")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    time: str | None  # ISO, UTC


@dataclass(frozen=True)
class Location:
    scheme: str  # "file" | "s3"
    root: str  # local folder (absolute) | bucket name
    prefix: str  # key prefix inside the root ("" = everything)

    @property
    def uri(self) -> str:
        base = f"file://{self.root}" if self.scheme == "file" else f"s3://{self.root}"
        return f"{base}/{self.prefix}" if self.prefix else f"{base}/"

    def object_uri(self, key: str) -> str:
        return f"file://{self.root}/{key}" if self.scheme == "file" else f"s3://{self.root}/{key}"

    def to_spec(self) -> dict[str, str]:
        return {"scheme": self.scheme, "root": self.root, "prefix": self.prefix}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Location:
        return cls(spec["scheme"], spec["root"], spec["prefix"])


def _invalid(message: str) -> InvalidInput:
    """An error about the ``objects_uri`` field (the CLI names it ``--objects``)."""
    return InvalidInput(message, field="objects_uri")


def _clean_prefix(prefix: str, what: str) -> str:
    prefix = prefix.lstrip("/")
    if any(part in ("..", ".") for part in prefix.split("/")):
        raise _invalid(f"objects_uri: {what!r} must not contain '.' or '..' segments")
    return prefix


def _local_folder(path: Path, uri: str) -> Location:
    """A folder on the control plane's machine: it must exist (a typo would never fire)."""
    resolved = path.resolve()
    if not resolved.is_dir():
        what = "is not a folder" if resolved.exists() else "does not exist"
        raise _invalid(f"objects_uri: {uri!r} {what} on the control plane's machine (create the folder "
                       "first; a relative path would mean a key prefix inside LoopML's artifact store)")
    return Location("file", str(resolved), "")


def parse_location(uri: str, settings: Settings) -> Location:
    """``s3://bucket/prefix/``, ``file:///abs/dir/``, ``/abs/dir``, or a key prefix inside LoopML's
    own artifact store (which may itself be local or s3://)."""
    uri = (uri or "").strip()
    if not uri:
        raise _invalid("objects_uri: give s3://bucket/prefix/, file:///abs/dir/, /abs/dir or an "
                       "artifact-store key prefix")
    if uri.startswith(("s3://", "s3a://")):
        bucket, _, prefix = uri.split("://", 1)[1].partition("/")
        if not bucket:
            raise _invalid(f"objects_uri: {uri!r} names no bucket")
        return Location("s3", bucket, _clean_prefix(prefix, uri))
    if uri.startswith("file://"):
        path = uri[len("file://"):]
        if not path.startswith("/"):
            raise _invalid(f"objects_uri: {uri!r} must be an absolute file:///path")
        return _local_folder(Path(path), uri)
    if "://" in uri:
        raise _invalid(f"objects_uri: {uri!r}: unsupported scheme (use s3://, file:// or a folder)")
    if uri.startswith("/") or uri.startswith("~"):
        return _local_folder(Path(uri).expanduser(), uri)
    # a relative path: a key prefix inside the artifact store (which may itself be s3://)
    if uri.startswith(("./", "../")) or uri in (".", ".."):
        raise _invalid(f"objects_uri: {uri!r}: a relative path means a key prefix inside LoopML's artifact "
                       "store, without '.' or '..'; for a local folder give its absolute path")
    prefix = _clean_prefix(uri, uri)
    base = settings.resolved_artifact_uri.rstrip("/")
    if base.startswith(("s3://", "s3a://")):
        bucket, _, inner = base.split("://", 1)[1].partition("/")
        inner = inner.strip("/")
        return Location("s3", bucket, f"{inner}/{prefix}" if inner else prefix)
    if base.startswith("file://"):
        base = base[len("file://"):]
    return Location("file", str(Path(base).expanduser().resolve()), prefix)


def _visible(name: str) -> bool:
    """Hidden files and in-progress writes never fire (the artifact store writes NAME.tmp-HEX)."""
    return not (name.startswith(".") or name.endswith(_SKIPPED_SUFFIXES) or ".tmp-" in name)


class ObjectLister:
    """Lists a location; one per trigger, kept by the poller (the S3 client is reused)."""

    def __init__(self, location: Location, settings: Settings, suffix: str | None = None) -> None:
        self.location = location
        self.suffix = suffix or None
        self._fs: Any = None
        if location.scheme == "s3":
            import fsspec

            opts: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": True}
            if settings.s3_endpoint_url:
                opts["client_kwargs"] = {"endpoint_url": settings.s3_endpoint_url}
            self._fs = fsspec.filesystem("s3", **opts)

    def _wanted(self, key: str) -> bool:
        return key.startswith(self.location.prefix) and _visible(key.rsplit("/", 1)[-1]) and (
            self.suffix is None or key.endswith(self.suffix))

    def list(self, *, settled_only: bool = True) -> dict[str, ObjectInfo]:
        if self.location.scheme == "file":
            return self._list_local(settled_only)
        return self._list_s3()

    def _list_local(self, settled_only: bool) -> dict[str, ObjectInfo]:
        root, prefix = self.location.root, self.location.prefix
        start = os.path.join(root, prefix.rsplit("/", 1)[0]) if "/" in prefix else root
        if not os.path.isdir(start):
            return {}
        newest_allowed = time.time_ns() - int(SETTLE_S * 1e9)
        found: dict[str, ObjectInfo] = {}
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for fname in filenames:
                path = os.path.join(dirpath, fname)
                key = os.path.relpath(path, root).replace(os.sep, "/")
                if not self._wanted(key):
                    continue
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue  # removed while we listed
                if settled_only and st.st_mtime_ns > newest_allowed:
                    continue  # still being written, maybe: next poll
                when = datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)
                found[key] = ObjectInfo(key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", iso(when))
        return found

    def _list_s3(self) -> dict[str, ObjectInfo]:
        fs, bucket, prefix = self._fs, self.location.root, self.location.prefix
        fs.invalidate_cache()  # s3fs caches listings: every poll must see the bucket as it is now
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        path = f"{bucket}/{directory}" if directory else bucket
        try:
            entries = fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        found: dict[str, ObjectInfo] = {}
        for full, info in entries.items():
            if info.get("type") == "directory" or full.endswith("/"):
                continue
            key = full.split("/", 1)[1] if "/" in full else ""
            if not key or not self._wanted(key):
                continue
            etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
            size = int(info.get("size") or 0)
            modified = info.get("LastModified")
            when = iso(modified) if isinstance(modified, datetime) else None
            found[key] = ObjectInfo(key, size, etag or f"{size}-{when}", when)
        return found
