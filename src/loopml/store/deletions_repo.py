"""Deleting datasets, dataset versions, model versions and jobs: refused while in use, and
crash-safe.

Design (the simplest one that is crash-safe): in ONE transaction the records are deleted and the
artifact prefixes they pointed at are written to ``artifact_deletions`` (an outbox). After the
commit the caller removes the artifacts and then the outbox rows (``finish``). A crash at any
point leaves either the records untouched (the transaction rolled back) or records gone with
their prefixes still listed in the outbox, which the control plane's sweep empties at its next
start (``pending``). Nothing ever points at removed artifacts, and nothing is "half deleted"
from a user's point of view: the record is gone at once, the bytes follow.

A prefix still used by a live record (a dataset re-added with the same content gets the same
content-addressed prefix; a job's bundle registered as a model version) is never removed
(``prefix_in_use``).
"""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import delete, or_, select

from loopml.core.errors import Conflict, NotFound
from loopml.core.jobstatus import ACTIVE
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.endpoints_repo import model_refs
from loopml.store.names import missing
from loopml.store.retired import retire



def _conflict(what: str, dependents: list[str], hint: str = "") -> Conflict:
    return Conflict(f"{what} is in use by {', '.join(dependents)}{hint}", dependents=dependents)


class DeletionRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- what depends on what ---------------------------------------------------------------------
    @staticmethod
    def _active_jobs(s) -> list[t.Job]:
        return list(s.execute(select(t.Job).where(t.Job.status.in_(ACTIVE))).scalars())

    def _model_dependents(self, s, m: t.Model, versions: set[int]) -> list[str]:
        """Aliases pointing at ``versions``, endpoints serving them (pinned or through an alias),
        and queued/running jobs using them."""
        aliases = {a.alias: a.version for a in s.execute(
            select(t.ModelAlias).where(t.ModelAlias.model_id == m.id)).scalars()}
        mine = {a for a, v in aliases.items() if v in versions}
        out = [f"alias {m.name}@{a} (-> {aliases[a]})" for a in sorted(mine)]
        for e in s.execute(select(t.Endpoint).order_by(t.Endpoint.name)).scalars():
            uses = any(r.get("model") == m.name and (r.get("version") in versions or r.get("alias") in mine)
                       for r in [*model_refs(e.spec), *model_refs(e.resolved)])
            if uses:
                out.append(f"endpoint {e.name}")
        for job in self._active_jobs(s):
            spec = job.spec or {}
            used = {(spec.get("model_name"), spec.get("model_version"))} if job.kind == "predict" else \
                {(spec.get("model"), spec.get("version"))} if job.kind == "baseline" else set()
            used |= {(entry.get("name"), entry.get("version")) for entry in (spec.get("models") or {}).values()
                     if isinstance(entry, dict)}
            if any(name == m.name and v in versions for name, v in used):
                out.append(f"{job.status} job {job.id}")
        return out

    def _dataset_dependents(self, s, name: str, versions: set[int]) -> tuple[list[str], list[str]]:
        """(queued/running jobs reading ``versions`` — always refused; model versions trained on
        them — refused unless forced)."""
        jobs = []
        for job in self._active_jobs(s):
            spec = job.spec or {}
            source = spec.get("input") if isinstance(spec.get("input"), dict) else {}
            if (spec.get("dataset_name") == name and spec.get("dataset_version") in versions) or \
                    (source.get("name") == name and source.get("version") in versions):
                jobs.append(f"{job.status} job {job.id}")
        refs = [f"{name}:{v}" for v in sorted(versions)]
        models = [f"{mname}:{mv.version}" for mv, mname in s.execute(
            select(t.ModelVersion, t.Model.name).join(t.Model).where(t.ModelVersion.dataset.in_(refs))
            .order_by(t.Model.name, t.ModelVersion.version)).all()]
        return jobs, models

    # -- deletions (one transaction each; return the outbox rows to purge) ------------------------
    def _outbox(self, s, prefixes: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        rows = [t.ArtifactDeletion(prefix=p, what=what[:255]) for p, what in prefixes if p]
        s.add_all(rows)
        s.flush()
        return [{"id": r.id, "prefix": r.prefix, "what": r.what} for r in rows]

    # one shape for models and datasets: a locked parent row, its numbered version rows
    @staticmethod
    def _parent(s, table, noun: str, name: str):
        row = s.execute(select(table).where(table.name == name).with_for_update()).scalar()
        if row is None:
            raise missing(s, table, noun, name)
        return row

    @staticmethod
    def _versions(s, table, parent_fk, parent, noun: str, version: int | None = None) -> list:
        """Every version row of ``parent``, or the one numbered ``version`` (NotFound if absent)."""
        q = select(table).where(parent_fk == parent.id)
        if version is None:
            return list(s.execute(q.order_by(table.version)).scalars())
        row = s.execute(q.where(table.version == version)).scalar()
        if row is None:
            raise NotFound(f"{noun} {parent.name!r} has no version {version}")
        return [row]

    def _drop(self, s, noun: str, parent, rows: list, *, whole: bool) -> dict[str, Any]:
        """Delete ``rows`` (or ``parent`` with all of them) in session ``s``; their numbers are
        never handed out again; their artifact prefixes go to the outbox."""
        name = parent.name
        outbox = self._outbox(s, [(r.artifact_prefix, f"{noun} {name}:{r.version}") for r in rows])
        top = max([parent.retired_version or 0, *(r.version for r in rows)])
        if whole:
            retire(s, noun, name, top)
            s.delete(parent)  # its versions (and a model's aliases, alias events) go by ON DELETE CASCADE
        else:
            parent.retired_version = top
            for r in rows:
                s.delete(r)
        return {"deleted": [f"{name}:{r.version}" for r in rows] or [name], "artifacts": outbox}

    def delete_model_version(self, name: str, version: int) -> dict[str, Any]:
        with self.store.session() as s:
            m = self._parent(s, t.Model, "model", name)
            rows = self._versions(s, t.ModelVersion, t.ModelVersion.model_id, m, "model", version)
            dependents = self._model_dependents(s, m, {version})
            if dependents:
                raise _conflict(f"model version {name}:{version}", dependents,
                                "; move or delete those first")
            return self._drop(s, "model", m, rows, whole=False)

    def delete_model(self, name: str) -> dict[str, Any]:
        """Every version of ``name`` and the model itself (its alias history too)."""
        with self.store.session() as s:
            m = self._parent(s, t.Model, "model", name)
            rows = self._versions(s, t.ModelVersion, t.ModelVersion.model_id, m, "model")
            dependents = self._model_dependents(s, m, {r.version for r in rows})
            if dependents:
                raise _conflict(f"model {name}", dependents, "; move or delete those first")
            return self._drop(s, "model", m, rows, whole=True)

    def _check_dataset(self, s, name: str, what: str, versions: set[int], force: bool) -> None:
        jobs, models = self._dataset_dependents(s, name, versions)
        if jobs:
            raise _conflict(what, jobs, "; wait for them or cancel them first")
        if models and not force:
            raise _conflict(what, [f"model version {ref}" for ref in models],
                            " (trained on it); --force deletes the data anyway, the models stay")

    def delete_dataset_version(self, name: str, version: int, *, force: bool = False) -> dict[str, Any]:
        with self.store.session() as s:
            ds = self._parent(s, t.Dataset, "dataset", name)
            rows = self._versions(s, t.DatasetVersion, t.DatasetVersion.dataset_id, ds, "dataset", version)
            self._check_dataset(s, name, f"dataset version {name}:{version}", {version}, force)
            return self._drop(s, "dataset", ds, rows, whole=False)

    def delete_dataset(self, name: str, *, force: bool = False) -> dict[str, Any]:
        with self.store.session() as s:
            ds = self._parent(s, t.Dataset, "dataset", name)
            rows = self._versions(s, t.DatasetVersion, t.DatasetVersion.dataset_id, ds, "dataset")
            self._check_dataset(s, name, f"dataset {name}", {r.version for r in rows}, force)
            return self._drop(s, "dataset", ds, rows, whole=True)

    def delete_job(self, job_id: str) -> dict[str, Any]:
        """A job that has ended, with its events, metrics and logs; its files (checkpoints,
        features, outputs, an unregistered bundle) follow. A model version it registered stays."""
        with self.store.session() as s:
            job = s.get(t.Job, job_id, with_for_update=True)
            if job is None:
                raise NotFound(f"job {job_id!r} not found")
            if job.status in ACTIVE:
                raise Conflict(f"job {job_id} is {job.status}; cancel it first: loopml jobs cancel {job_id}",
                               dependents=[])
            users = [f"{j.status} job {j.id}" for j in self._active_jobs(s)
                     if any(isinstance(e, dict) and e.get("job_id") == job_id
                            for e in ((j.spec or {}).get("models") or {}).values())]
            if users:
                raise _conflict(f"job {job_id}", users, "; wait for them or cancel them first")
            prefixes = [(f"jobs/{job_id}", f"job {job_id}")]
            bundle = (job.result or {}).get("artifact_prefix")
            if bundle:
                prefixes.append((bundle, f"job {job_id} model bundle"))
            outbox = self._outbox(s, prefixes)
            s.execute(delete(t.JobEvent).where(t.JobEvent.job_id == job_id))  # also without FK cascades
            s.execute(delete(t.JobMetric).where(t.JobMetric.job_id == job_id))
            s.execute(delete(t.JobLog).where(t.JobLog.job_id == job_id))
            s.delete(job)
            return {"deleted": [job_id], "artifacts": outbox}

    # -- the outbox ---------------------------------------------------------------------------------
    def pending(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.ArtifactDeletion).order_by(t.ArtifactDeletion.id)).scalars()
            return [{"id": r.id, "prefix": r.prefix, "what": r.what} for r in rows]

    def prefix_in_use(self, prefix: str) -> bool:
        """A live dataset or model version keeps files at (or under) ``prefix``."""
        under = prefix.rstrip("/") + "/%"
        with self.store.session() as s:
            for col in (t.ModelVersion.artifact_prefix, t.DatasetVersion.artifact_prefix):
                if s.execute(select(col).where(or_(col == prefix, col.like(under))).limit(1)).first():
                    return True
            return False

    def finish(self, deletion_id: int) -> None:
        with self.store.session() as s:
            s.execute(delete(t.ArtifactDeletion).where(t.ArtifactDeletion.id == deletion_id))
