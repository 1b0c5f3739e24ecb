"""SDK methods for datasets: register (a URI, a local file or folder), read, delete."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

from loopml.sdk.files import Counted, zip_folder
from loopml.sdk.http import Connection, segment

# sent as a reference for the server to read; anything else that exists locally is uploaded
_REMOTE_PREFIXES = ("sample:", "s3://", "s3a://", "gs://", "http://", "https://", "file:")


class DatasetsAPI(Connection):
    def add_dataset(self, name: str, source: str | os.PathLike, format: str | None = None,
                    label: str | None = None, text: str | None = None, extend: bool = False,
                    on_upload: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Register ``source`` as a new version of dataset ``name`` (same content → same version).

        Args:
            name: Dataset name (lowercase letters, digits, ``.``, ``_``, ``-``).
            source: ``sample:NAME``, an ``s3://`` URI, a local file (uploaded), or a local
                folder (zipped in memory and uploaded). Anything else is sent as a path the
                server can see.
            format: ``npz``, ``csv``, ``parquet``, ``images`` or ``text``; inferred when None.
            label: Label column of a table. text: Text column of a table.
            extend: Append the source's rows to the newest version's rows (same kind, shape
                and classes) instead of registering the source on its own; ``label``, ``text``
                (and a ``text`` format) default to that version's.
            on_upload: Called with (bytes sent, total bytes) while a local file or folder uploads.

        Returns:
            The version record with ``created`` (False when identical content was already there).

        Example::

            v = c.add_dataset("penguins", "data/penguins.csv", label="species")
            print(v["ref"], v["created"])
        """
        source_str = os.fspath(source)
        fields = {k: v for k, v in {"name": name, "format": format, "label": label, "text": text}.items()
                  if v is not None}
        local = Path(source_str).expanduser()
        if source_str.startswith(_REMOTE_PREFIXES) or not local.exists():
            return self._json("POST", "/datasets", json={**fields, "source": source_str, "extend": extend})
        if extend:
            fields["extend"] = "true"
        fields["source"] = str(local.resolve())  # recorded as where the data came from
        if local.is_dir():
            zipped = Counted(io.BytesIO(zip_folder(local)), on_upload)
            files = {"file": (f"{local.resolve().name or 'data'}.zip", zipped, "application/zip")}
            return self._json("POST", "/datasets/upload", data=fields, files=files, timeout=self._upload_timeout())
        with local.open("rb") as f:
            files = {"file": (local.name, Counted(f, on_upload), "application/octet-stream")}
            return self._json("POST", "/datasets/upload", data=fields, files=files, timeout=self._upload_timeout())

    def list_datasets(self, *, name: str | None = None, kind: str | None = None, limit: int | None = None,
                      offset: int = 0) -> list[dict[str, Any]]:
        """All datasets with their newest version (``name`` substring / ``kind`` filters and
        ``limit``/``offset`` paging are done by the server).

        Returns:
            ``[{"name", "latest_version", "versions", "latest": {...}}, ...]``

        Example::

            [d["name"] for d in c.list_datasets()]
        """
        params = {k: v for k, v in {"name": name, "kind": kind, "limit": limit, "offset": offset or None}.items()
                  if v is not None}
        return self._json("GET", "/datasets", params=params or None)

    def dataset(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """One dataset version (schema, class counts, split sizes).

        Args:
            name: ``NAME`` or ``NAME:VERSION``.
            version: A number or ``"latest"``; default the version in ``name``, else the newest.

        Returns:
            The version record.

        Example::

            c.dataset("mnist:1")["schema"]["class_counts"]
        """
        if version is None and ":" in name:
            name, version = name.split(":", 1)
        which = "latest" if version is None else str(version)
        return self._json("GET", f"/datasets/{segment(name)}/versions/{segment(which)}")

    def dataset_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of dataset ``name``, oldest first.

        Example::

            len(c.dataset_versions("mnist"))
        """
        return self._json("GET", f"/datasets/{segment(name)}")["versions"]

    def delete_dataset(self, ref: str, force: bool = False) -> dict[str, Any]:
        """Delete dataset version ``NAME:VERSION`` or, given ``NAME``, the dataset and every version.

        Refused (``Conflict``, naming them) while queued/running jobs read it, or registered model
        versions were trained on it unless ``force`` (the models stay). The files go with it.

        Returns:
            ``{"deleted": ["NAME:VERSION", ...], "artifacts_removed": [...]}``

        Example::

            c.delete_dataset("mnist:3")
        """
        name, _, version = ref.partition(":")
        path = f"/datasets/{segment(name)}" + (f"/versions/{segment(version)}" if version else "")
        return self._json("DELETE", path, params={"force": "true"} if force else None)
