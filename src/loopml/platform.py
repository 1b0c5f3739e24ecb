"""The wiring of one LoopML installation: settings, metadata store, artifact store, repositories.

Built once by the server (or a worker) from the settings and passed down; nothing global.
"""

from __future__ import annotations

from functools import cached_property

from loopml.artifacts.store import ArtifactStore, open_store
from loopml.core.filemodes import private_dir, private_sqlite_file
from loopml.core.settings import Settings
from loopml.store.datasets_repo import DatasetRepo
from loopml.store.db import MetadataStore
from loopml.store.deletions_repo import DeletionRepo
from loopml.store.endpoints_repo import EndpointRepo
from loopml.store.functions_repo import FunctionRepo
from loopml.store.identity_repo import AuditRepo, IdentityRepo
from loopml.store.jobs_repo import JobRepo
from loopml.store.leases_repo import LeaseRepo
from loopml.store.models_repo import ModelRepo
from loopml.store.monitors_repo import MonitorRepo
from loopml.store.nodes_repo import NodeRepo
from loopml.store.triggers_repo import TriggerRepo
from loopml.store.tuning_repo import TuningRepo
from loopml.store.workflows_repo import WorkflowRepo


class Platform:
    def __init__(self, settings: Settings, *, create_schema: bool = True) -> None:
        self.settings = settings
        if settings.database_url is None or settings.artifact_uri is None:  # something lives in home
            private_dir(settings.home)
        private_sqlite_file(settings.resolved_database_url)  # before SQLite creates it 0644
        self.meta = MetadataStore(settings.resolved_database_url, create=create_schema)
        self.artifacts: ArtifactStore = open_store(settings)

    @cached_property
    def datasets(self) -> DatasetRepo:
        return DatasetRepo(self.meta)

    @cached_property
    def deletions(self) -> DeletionRepo:
        return DeletionRepo(self.meta)

    @cached_property
    def jobs(self) -> JobRepo:
        return JobRepo(self.meta)

    @cached_property
    def leases(self) -> LeaseRepo:
        return LeaseRepo(self.meta)

    @cached_property
    def models(self) -> ModelRepo:
        return ModelRepo(self.meta)

    @cached_property
    def endpoints(self) -> EndpointRepo:
        return EndpointRepo(self.meta)

    @cached_property
    def nodes(self) -> NodeRepo:
        return NodeRepo(self.meta)

    @cached_property
    def functions(self) -> FunctionRepo:
        return FunctionRepo(self.meta)

    @cached_property
    def triggers(self) -> TriggerRepo:
        return TriggerRepo(self.meta)

    @cached_property
    def workflows(self) -> WorkflowRepo:
        return WorkflowRepo(self.meta)

    @cached_property
    def monitors(self) -> MonitorRepo:
        return MonitorRepo(self.meta)

    @cached_property
    def tuning(self) -> TuningRepo:
        return TuningRepo(self.meta)

    @cached_property
    def identity(self) -> IdentityRepo:
        return IdentityRepo(self.meta)

    @cached_property
    def audit(self) -> AuditRepo:
        return AuditRepo(self.meta)

    def close(self) -> None:
        self.meta.dispose()
