"""Workflows (ASL definitions), their executions and execution histories."""

from __future__ import annotations

from loopml.store.db import MetadataStore


class WorkflowRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
