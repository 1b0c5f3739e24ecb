"""ArtifactStore: datasets, checkpoints, model versions and outputs over fsspec.

A local folder by default, ``s3://bucket/prefix`` for any S3-compatible server (s3fs).
Writes are atomic: local files are written beside the target and renamed into place (files
0600, folders 0700: captured traffic and datasets are nobody else's to read);
S3 objects appear in one PUT (or one completed multipart upload) only after the data is
complete. Every key is validated (see ``keys.validate_key``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Iterator

import fsspec

from loopml.artifacts.keys import join, validate_key
from loopml.core.errors import CorruptArtifact, InvalidInput, NotFound
from loopml.core.filemodes import create_private, make_dirs


class ArtifactStore:
    def __init__(self, uri: str, *, s3_endpoint_url: str | None = None) -> None:
        self.uri = uri.rstrip("/")
        if "://" not in self.uri:
            self.uri = str(Path(self.uri).expanduser().resolve())
        protocol = fsspec.utils.get_protocol(self.uri)
        self.is_local = protocol in ("file", "local")
        if self.is_local:
            self._root = self.uri[len("file://"):] if self.uri.startswith("file://") else self.uri
            self.fs = fsspec.filesystem("file")
            make_dirs(self._root)
        elif protocol in ("s3", "s3a"):
            opts: dict = {"use_listings_cache": False, "skip_instance_cache": True}
            if s3_endpoint_url:
                opts["client_kwargs"] = {"endpoint_url": s3_endpoint_url}
            self.fs = fsspec.filesystem("s3", **opts)
            self._root = self.uri.split("://", 1)[1]
        else:
            raise InvalidInput(f"artifact URI {uri!r}: unsupported scheme {protocol!r} (use a folder or s3://)")

    # -- paths ---------------------------------------------------------------------------
    @property
    def local_root(self) -> str:
        """The folder of a local store (its files are under it)."""
        if not self.is_local:
            raise InvalidInput(f"artifact store {self.uri} is not a local folder")
        return self._root

    def _path(self, key: str, *, allow_empty: bool = False) -> str:
        validate_key(key, allow_empty=allow_empty)
        return f"{self._root}/{key}" if key else self._root

    def url(self, key: str) -> str:
        return f"{self.uri}/{validate_key(key)}"

    # -- writes --------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if self.is_local:
            make_dirs(os.path.dirname(path))
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(create_private(tmp), "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def put_file(self, local_path: str | os.PathLike, key: str) -> None:
        path = self._path(key)
        if self.is_local:
            make_dirs(os.path.dirname(path))
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(local_path, "rb") as src, open(create_private(tmp), "wb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.replace(tmp, path)
        else:
            self.fs.put_file(str(local_path), path)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[IO[bytes]]:
        """Stream a large object; it becomes visible only if the block exits cleanly."""
        path = self._path(key)
        if self.is_local:
            make_dirs(os.path.dirname(path))
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            try:
                with open(create_private(tmp), "wb") as f:
                    yield f
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            with tempfile.NamedTemporaryFile(suffix=".part") as f:
                yield f
                f.flush()
                self.fs.put_file(f.name, path)

    def upload_dir(self, local_dir: str | os.PathLike, prefix: str) -> list[str]:
        """Upload every file under ``local_dir``; returns the keys written."""
        keys = []
        base = Path(local_dir)
        for p in sorted(base.rglob("*")):
            if p.is_file():
                key = join(prefix, p.relative_to(base).as_posix())
                self.put_file(p, key)
                keys.append(key)
        return keys

    def delete(self, key_or_prefix: str) -> None:
        path = self._path(key_or_prefix)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    def remove_empty(self, prefix: str) -> None:
        """Remove the folder of ``prefix`` when nothing is left in it. Local stores only: an S3
        prefix disappears with its last object."""
        if self.is_local:
            with contextlib.suppress(OSError):  # not empty (still in use) or already gone
                os.rmdir(self._path(prefix))

    # -- reads ---------------------------------------------------------------------------
    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise NotFound(f"artifact {key!r} not found in {self.uri}") from None

    @contextlib.contextmanager
    def open_read(self, key: str) -> Iterator[IO[bytes]]:
        path = self._path(key)
        try:
            f = self.fs.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"artifact {key!r} not found in {self.uri}") from None
        with f:
            yield f

    def size(self, key: str) -> int:
        try:
            return int(self.fs.size(self._path(key)))
        except FileNotFoundError:
            raise NotFound(f"artifact {key!r} not found in {self.uri}") from None

    def list(self, prefix: str = "") -> list[str]:
        """Keys of every object under ``prefix`` (recursive, sorted, no temp files)."""
        root = self._path(prefix, allow_empty=True)
        if not self.fs.exists(root):
            return []
        found = self.fs.find(root)
        strip = self._root.rstrip("/") + "/"
        keys = []
        for p in found:
            p = p if not self.is_local else p.replace(os.sep, "/")
            rel = p[len(strip):] if p.startswith(strip) else p
            if ".tmp-" in rel.rsplit("/", 1)[-1]:
                continue
            keys.append(rel)
        return sorted(keys)

    def get_file(self, key: str, local_path: str | os.PathLike) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(os.fspath(local_path)) or ".", exist_ok=True)
        try:
            self.fs.get_file(path, os.fspath(local_path))
        except FileNotFoundError:
            raise NotFound(f"artifact {key!r} not found in {self.uri}") from None

    def download_dir(self, prefix: str, local_dir: str | os.PathLike, *, required: tuple[str, ...] = ()) -> Path:
        """Copy every object under ``prefix`` into ``local_dir``; check ``required`` names exist."""
        keys = self.list(prefix)
        out = Path(local_dir)
        out.mkdir(parents=True, exist_ok=True)
        for key in keys:
            rel = key[len(prefix):].lstrip("/")
            self.get_file(key, out / rel)
        missing = [name for name in required if not (out / name).exists()]
        if missing:
            raise CorruptArtifact(f"{prefix!r} in {self.uri} is missing {', '.join(missing)}")
        return out


def open_store(settings) -> ArtifactStore:  # settings: loopml.core.settings.Settings
    return ArtifactStore(settings.resolved_artifact_uri, s3_endpoint_url=settings.s3_endpoint_url)
