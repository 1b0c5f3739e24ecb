"""Dataset names and their content-addressed versions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, NotFound
from loopml.store import records
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.names import missing
from loopml.store.retired import retired_top


class DatasetRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def find_by_hash(self, name: str, content_hash: str) -> dict[str, Any] | None:
        with self.store.session() as s:
            row = s.execute(select(t.DatasetVersion).join(t.Dataset)
                            .where(t.Dataset.name == name, t.DatasetVersion.content_hash == content_hash)).scalar()
            return records.dataset_version(row, name) if row else None

    def next_version(self, name: str) -> int:
        with self.store.session() as s:
            top = s.execute(select(func.max(t.DatasetVersion.version)).join(t.Dataset)
                            .where(t.Dataset.name == name)).scalar()
            retired = s.execute(select(t.Dataset.retired_version).where(t.Dataset.name == name)).scalar()
            if retired is None:  # no row: the name is new, or was deleted whole
                retired = retired_top(s, "dataset", name)
            return max(top or 0, retired) + 1  # deleted numbers are never handed out again

    def add_version(self, name: str, version: int, **fields: Any) -> dict[str, Any]:
        """Insert a version whose artifacts are already written (so no record points at nothing).

        Raises Conflict when the version number or the content is already taken (a race).
        """
        try:
            return self._add_version(name, version, **fields)
        except IntegrityError:
            with self.store.session() as s:  # a taken number or content is a race; anything else a bug
                taken = s.execute(select(t.DatasetVersion.id).join(t.Dataset).where(
                    t.Dataset.name == name, (t.DatasetVersion.version == version)
                    | (t.DatasetVersion.content_hash == fields.get("content_hash")))).first()
            if taken is None:
                raise
            raise Conflict(f"dataset {name!r} version {version} (or this content) is already registered") from None

    def _add_version(self, name: str, version: int, **fields: Any) -> dict[str, Any]:
        with self.store.session() as s:
            ds = s.execute(select(t.Dataset).where(t.Dataset.name == name)).scalar()
            if ds is None:
                ds = t.Dataset(name=name, retired_version=retired_top(s, "dataset", name))
                s.add(ds)
                s.flush()
            schema = fields.pop("schema")
            row = t.DatasetVersion(dataset_id=ds.id, version=version, schema_=schema, **fields)
            s.add(row)
            s.flush()
            return records.dataset_version(row, name)

    def list(self, *, name_contains: str | None = None, kind: str | None = None, limit: int | None = None,
             offset: int = 0) -> list[dict[str, Any]]:
        """Datasets by name with their newest version; filtered and paged in SQL when asked."""
        with self.store.session() as s:
            q = (select(t.Dataset.name, func.max(t.DatasetVersion.version), func.count())
                 .join(t.DatasetVersion).group_by(t.Dataset.name).order_by(t.Dataset.name).offset(offset))
            if name_contains:
                q = q.where(t.Dataset.name.icontains(name_contains, autoescape=True))
            if kind:
                newest = (select(t.DatasetVersion.dataset_id, func.max(t.DatasetVersion.version).label("v"))
                          .group_by(t.DatasetVersion.dataset_id).subquery())
                newest_kind = (select(t.DatasetVersion.dataset_id).join(
                    newest, (newest.c.dataset_id == t.DatasetVersion.dataset_id) & (newest.c.v == t.DatasetVersion.version))
                    .where(t.DatasetVersion.kind == kind))
                q = q.where(t.Dataset.id.in_(newest_kind))
            if limit is not None:
                q = q.limit(limit)
            out = []
            for name, latest, count in s.execute(q).all():
                out.append({"name": name, "latest_version": latest, "versions": count,
                            "latest": self.get(name, latest, session=s)})
            return out

    def versions(self, name: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.DatasetVersion).join(t.Dataset).where(t.Dataset.name == name)
                             .order_by(t.DatasetVersion.version)).scalars().all()
            if not rows:
                raise missing(s, t.Dataset, "dataset", name)
            return [records.dataset_version(r, name) for r in rows]

    def get(self, name: str, version: int | None = None, *, session=None) -> dict[str, Any]:
        """A version (the newest when ``version`` is None); NotFound names what is missing."""
        def _get(s):
            q = select(t.DatasetVersion).join(t.Dataset).where(t.Dataset.name == name)
            q = q.where(t.DatasetVersion.version == version) if version is not None else \
                q.order_by(t.DatasetVersion.version.desc()).limit(1)
            row = s.execute(q).scalar()
            if row is None:
                exists = s.execute(select(t.Dataset.id).where(t.Dataset.name == name)).scalar()
                if exists is None:
                    raise missing(s, t.Dataset, "dataset", name)
                raise NotFound(f"dataset {name!r} has no version {version}" if version is not None
                               else f"dataset {name!r} has no versions (they were deleted)")
            return records.dataset_version(row, name)
        if session is not None:
            return _get(session)
        with self.store.session() as s:
            return _get(s)
