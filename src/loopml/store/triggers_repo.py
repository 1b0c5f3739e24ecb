"""Triggers, the objects they have seen, and their firings."""

from __future__ import annotations

from loopml.store.db import MetadataStore


class TriggerRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
