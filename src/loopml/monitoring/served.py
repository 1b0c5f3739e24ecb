"""What a monitored variant serves now, and what a run needs to know of that model version."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput, LoopMLError, NotFound
from loopml.models.signature import InputSignature, read_manifest
from loopml.platform import Platform
from loopml.datasets.service import parse_ref

__all__ = ["ModelContext", "model_context", "served_variant"]


def served_variant(endpoint: dict[str, Any], variant: str | None) -> tuple[dict[str, Any], bool]:
    """(resolved variant, is_shadow) of the monitored variant (None: the first one)."""
    resolved = endpoint.get("resolved") or {}
    variants = list(resolved.get("variants") or [])
    shadow = resolved.get("shadow")
    if variant is None:
        if not variants:
            raise InvalidInput(f"endpoint {endpoint['name']!r} serves no variant")
        return variants[0], False
    for v in variants:
        if v["name"] == variant:
            return v, False
    if shadow and shadow.get("name") == variant:
        return shadow, True
    raise InvalidInput(f"endpoint {endpoint['name']!r} has no variant {variant!r} any more")


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """What a run needs of a model version: its input signature (to decode captured bodies), the
    schema of the data it learned from (to profile rows on the baseline's terms) and, for text,
    its vocabulary (the OOV rate)."""

    signature: InputSignature
    schema: dict[str, Any]
    vocab: dict[str, int] | None = None

    @property
    def kind(self) -> str:
        return self.signature.kind

    @property
    def class_names(self) -> list[str]:
        return list(self.signature.class_names)


def model_context(platform: Platform, version: dict[str, Any]) -> ModelContext:
    """A model version's signature (from its loopml.json), data schema and (text) vocabulary."""
    prefix = version["artifact_prefix"]
    try:
        manifest = read_manifest(platform.artifacts, prefix)
    except Exception as exc:  # noqa: BLE001 - say which version's files are missing
        raise NotFound(f"model {version['ref']}: its bundle manifest {prefix}/loopml.json cannot be read "
                       f"({type(exc).__name__})") from None
    signature = InputSignature.from_manifest(manifest, kind=version["kind"])
    schema = manifest.get("schema") or {}
    if not schema and version.get("dataset"):
        try:
            schema = platform.datasets.get(*parse_ref(str(version["dataset"])))["schema"]
        except LoopMLError:
            schema = {}
    if not schema:  # profiles read a bundle manifest too (an imported version with no dataset)
        schema = manifest
    if not signature.class_names and schema.get("classes"):
        signature = dataclasses.replace(signature, class_names=tuple(str(c) for c in schema["classes"]))
    vocab = None
    if signature.kind == "text":
        try:
            tokenizer = json.loads(platform.artifacts.get_bytes(join(prefix, "tokenizer.json")))
            vocab = dict((tokenizer.get("model") or {}).get("vocab") or {}) or None
        except Exception:  # noqa: BLE001 - without a vocabulary the OOV rate is simply not computed
            vocab = None
    return ModelContext(signature=signature, schema=schema, vocab=vocab)
