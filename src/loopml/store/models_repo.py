"""Registered models, their versions, aliases and the audit history of alias moves: the SQL only.
What a reference means and which alias moves are allowed is ``loopml.registry``'s."""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, JobNoLongerRunning, NotFound
from loopml.core.timeutil import iso, utcnow
from loopml.store import records
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.names import missing
from loopml.store.retired import retired_top



class ModelRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def _model(self, s, name: str, *, create: bool = False, lock: bool = False) -> t.Model:
        q = select(t.Model).where(t.Model.name == name)
        m = s.execute(q.with_for_update() if lock else q).scalar()
        if m is None:
            if not create:
                raise missing(s, t.Model, "model", name)
            m = t.Model(name=name, retired_version=retired_top(s, "model", name))
            s.add(m)
            s.flush()
        return m

    def _aliases(self, s, model_id: int) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {}
        for a in s.execute(select(t.ModelAlias).where(t.ModelAlias.model_id == model_id)).scalars():
            out.setdefault(a.version, []).append(a.alias)
        return out

    def next_version(self, name: str) -> int:
        with self.store.session() as s:
            m = s.execute(select(t.Model).where(t.Model.name == name)).scalar()
            return (retired_top(s, "model", name) if m is None else self._top(s, m)) + 1

    @staticmethod
    def _top(s, m: t.Model) -> int:
        """The highest version number ever used (deleted numbers are never handed out again)."""
        top = s.execute(select(func.max(t.ModelVersion.version)).where(t.ModelVersion.model_id == m.id)).scalar()
        return max(top or 0, m.retired_version or 0)

    def add_version(self, name: str, version: int, *, session=None, **fields: Any) -> dict[str, Any]:
        def _add(s):
            m = self._model(s, name, create=True)
            row = t.ModelVersion(model_id=m.id, version=version, **fields)
            s.add(row)
            s.flush()
            return records.model_version(row, name, [])
        if session is not None:
            return _add(session)
        with self.store.session() as s:
            return _add(s)

    def list(self, *, name_contains: str | None = None, limit: int | None = None,
             offset: int = 0) -> list[dict[str, Any]]:
        """Models by name; a page of them when ``limit`` is given. Counts and the newest version
        come from SQL, so a model with thousands of versions costs no more than one with two."""
        with self.store.session() as s:
            q = select(t.Model).order_by(t.Model.name).offset(offset)
            if name_contains:
                q = q.where(t.Model.name.icontains(name_contains, autoescape=True))
            if limit is not None:
                q = q.limit(limit)
            out = []
            for m in s.execute(q).scalars():
                count = s.execute(select(func.count()).where(t.ModelVersion.model_id == m.id)).scalar()
                latest = s.execute(select(t.ModelVersion).where(t.ModelVersion.model_id == m.id)
                                   .order_by(t.ModelVersion.version.desc()).limit(1)).scalar()
                aliases = {a.alias: a.version for a in
                           s.execute(select(t.ModelAlias).where(t.ModelAlias.model_id == m.id)).scalars()}
                out.append({"name": m.name, "versions": count,
                            "latest_version": latest.version if latest else None,
                            "aliases": aliases, "latest_metrics": latest.metrics if latest else {},
                            "created_at": iso(m.created_at)})
            return out

    def versions(self, name: str, *, limit: int | None = None, offset: int = 0,
                 newest_first: bool = False) -> list[dict[str, Any]]:
        with self.store.session() as s:
            m = self._model(s, name)
            aliases = self._aliases(s, m.id)
            order = t.ModelVersion.version.desc() if newest_first else t.ModelVersion.version
            q = select(t.ModelVersion).where(t.ModelVersion.model_id == m.id).order_by(order).offset(offset)
            if limit is not None:
                q = q.limit(limit)
            return [records.model_version(v, name, aliases.get(v.version, [])) for v in s.execute(q).scalars()]

    def trained_on(self, dataset_ref: str) -> list[dict[str, Any]]:
        """Every model version trained on ``dataset_ref`` ("name:version"), newest first."""
        with self.store.session() as s:
            rows = s.execute(select(t.ModelVersion, t.Model.name).join(t.Model)
                             .where(t.ModelVersion.dataset == dataset_ref)
                             .order_by(t.ModelVersion.created_at.desc(), t.ModelVersion.id.desc())).all()
            aliases: dict[int, dict[int, list[str]]] = {}
            out = []
            for v, name in rows:
                if v.model_id not in aliases:
                    aliases[v.model_id] = self._aliases(s, v.model_id)
                out.append(records.model_version(v, name, aliases[v.model_id].get(v.version, [])))
            return out

    def version_count(self, name: str) -> tuple[int, dict[str, int]]:
        """(how many versions, {alias: version}) without loading the versions."""
        with self.store.session() as s:
            m = self._model(s, name)
            count = s.execute(select(func.count()).where(t.ModelVersion.model_id == m.id)).scalar()
            aliases = {a: v for v, names in self._aliases(s, m.id).items() for a in names}
            return count, dict(sorted(aliases.items()))

    def get(self, name: str, version: int | None = None, alias: str | None = None) -> dict[str, Any]:
        """Version ``version`` of ``name``, the one ``alias`` names, or the newest (neither given)."""
        with self.store.session() as s:
            m = self._model(s, name)
            if alias is not None:
                a = s.get(t.ModelAlias, (m.id, alias))
                if a is None:
                    raise NotFound(f"model {name!r} has no alias {alias!r}")
                version = a.version
            q = select(t.ModelVersion).where(t.ModelVersion.model_id == m.id)
            q = q.where(t.ModelVersion.version == version) if version is not None else \
                q.order_by(t.ModelVersion.version.desc()).limit(1)
            row = s.execute(q).scalar()
            if row is None:
                raise NotFound(f"model {name!r} has no version {version}" if version is not None
                               else f"model {name!r} has no versions")
            return records.model_version(row, name, self._aliases(s, m.id).get(row.version, []))

    def set_alias(self, name: str, alias: str, version: int, actor: str | None = None) -> dict[str, Any]:
        with self.store.session() as s:
            m = self._model(s, name, lock=True)  # a concurrent version delete waits (or is waited for)
            exists = s.execute(select(t.ModelVersion.id).where(t.ModelVersion.model_id == m.id,
                                                               t.ModelVersion.version == version)).scalar()
            if exists is None:
                raise NotFound(f"model {name!r} has no version {version}")
            current = s.get(t.ModelAlias, (m.id, alias), with_for_update=True)
            before = current.version if current else None
            if current is None:
                s.add(t.ModelAlias(model_id=m.id, alias=alias, version=version))
            else:
                current.version, current.updated_at = version, utcnow()
            s.add(t.AliasEvent(model_id=m.id, alias=alias, from_version=before, to_version=version, actor=actor))
        return {"name": name, "alias": alias, "version": version, "previous": before}

    def delete_alias(self, name: str, alias: str, actor: str | None = None) -> None:
        with self.store.session() as s:
            m = self._model(s, name)
            current = s.get(t.ModelAlias, (m.id, alias))
            if current is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            s.add(t.AliasEvent(model_id=m.id, alias=alias, from_version=current.version, to_version=None, actor=actor))
            s.delete(current)

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            m = self._model(s, name)
            rows = s.execute(select(t.AliasEvent).where(t.AliasEvent.model_id == m.id).order_by(t.AliasEvent.id))
            return [{"alias": e.alias, "from_version": e.from_version, "to_version": e.to_version,
                     "actor": e.actor, "at": iso(e.at)} for e in rows.scalars()]

    def _insert_next_version(self, s, name: str, job_id: str | None,
                             fields: dict[str, Any]) -> tuple[t.ModelVersion, dict[str, Any]]:
        """Version ``name``:<highest + 1> in session ``s`` (a racing writer → IntegrityError: retry)."""
        m = self._model(s, name, create=True)
        row = t.ModelVersion(model_id=m.id, version=self._top(s, m) + 1, job_id=job_id, **fields)
        s.add(row)
        s.flush()
        return row, records.model_version(row, name, [])

    def _numbering(self, name: str, work: Callable[[Any], Any]) -> Any:
        """``work(session)`` in a transaction of its own, again when a concurrent registration of
        ``name`` took the same version number (IntegrityError)."""
        for _attempt in range(5):
            try:
                with self.store.session() as s:
                    return work(s)
            except IntegrityError:
                continue
        raise Conflict(f"could not allocate a version number for model {name!r}")

    def add_next_version(self, name: str, *, fields: dict[str, Any]) -> dict[str, Any]:
        """Version ``name``:<next> of a model that no job produced (an imported one)."""
        return self._numbering(name, lambda s: self._insert_next_version(s, name, None, fields)[1])

    def register_from_job(self, job_id: str, name: str, *, fields: dict[str, Any],
                          result: dict[str, Any]) -> dict[str, Any]:
        """Insert version ``name``:<next> and mark the job succeeded in ONE transaction, so a
        version is never half-registered and a job never succeeds without its version."""
        def work(s) -> dict[str, Any]:
            row, record = self._insert_next_version(s, name, job_id, fields)
            now = utcnow()
            full = {**result, "model": {"name": name, "version": row.version, "ref": record["ref"]},
                    "model_ref": record["ref"]}
            moved = s.execute(update(t.Job).where(t.Job.id == job_id, t.Job.status == "running",
                                                  t.Job.cancel_requested.is_(False))
                              .values(status="succeeded", ended_at=now, result=full, reason=None)).rowcount
            if not moved:
                raise JobNoLongerRunning(job_id)
            s.add(t.JobEvent(job_id=job_id, status="succeeded", at=now, message=f"registered {record['ref']}"))
            return record

        return self._numbering(name, work)

    def register_job_bundle(self, job_id: str, name: str, *, fields: dict[str, Any]) -> dict[str, Any]:
        """Register the bundle of an already-succeeded job (trained with register=False) as
        ``name``:<next>, once: if a version of this job exists it is returned instead. The
        version and the job's result (``model_ref``, ``registered``) are written in ONE transaction."""
        def work(s) -> dict[str, Any]:
            job = s.get(t.Job, job_id, with_for_update=True)
            if job is None:
                raise NotFound(f"job {job_id!r} not found")
            found = s.execute(select(t.ModelVersion, t.Model.name).join(t.Model)
                              .where(t.ModelVersion.job_id == job_id)
                              .order_by(t.ModelVersion.id).limit(1)).first()
            if found is not None:
                row, existing_name = found
                return records.model_version(row, existing_name, self._aliases(s, row.model_id).get(row.version, []))
            row, record = self._insert_next_version(s, name, job_id, fields)
            job.result = {**(job.result or {}), "registered": True, "model_ref": record["ref"],
                          "model": {"name": name, "version": row.version, "ref": record["ref"]}}
            return record

        return self._numbering(name, work)
