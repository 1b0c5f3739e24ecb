"""Functions and their invocations (tables ``functions``, ``function_invocations``)."""

from __future__ import annotations

from loopml.store.db import MetadataStore


class FunctionRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store
