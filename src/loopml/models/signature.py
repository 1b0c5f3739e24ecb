"""A model version's input signature: what its requests' rows look like, read from loopml.json once.

Serving (one per loaded version, never per request), monitoring's decoder of captured bodies and
batch prediction all take their image shape, tabular column order and text field from this one
object, so they cannot read the manifest differently. Imports nothing heavy (no numpy, no Keras):
the serving process and the API import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput

KINDS = ("image", "text", "tabular")
MANIFEST = "loopml.json"  # a bundle's description: kind, labels, input signature, features

__all__ = ["InputSignature", "KINDS", "MANIFEST", "read_manifest"]


@dataclass(frozen=True, slots=True)
class InputSignature:
    kind: str  # image | text | tabular
    shape: tuple[int, ...] | None = None  # image: (H, W, C) of one row
    columns: tuple[str, ...] | None = None  # tabular: the model's column order
    numeric_columns: bool = False  # tabular: every column numeric (one FP32 tensor fits)
    text_column: str = "text"  # text: the record field (or table column) holding the text
    dtype: str | None = None  # the tensor the model takes (after its features), e.g. "float32"
    class_names: tuple[str, ...] = ()
    label_column: str | None = None  # the training data's label column (a batch input may carry it)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(f"unknown model kind {self.kind!r}; expected image, text or tabular")

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], *, kind: str | None = None) -> "InputSignature":
        """From a bundle's loopml.json (``kind``, ``features``, ``input``, ``label_names``);
        ``kind`` is the fallback for a manifest that does not say (the registry record's)."""
        kind = str(manifest.get("kind") or kind or "")
        features = manifest.get("features") if isinstance(manifest.get("features"), Mapping) else {}
        shape = columns = None
        numeric = False
        if kind == "image":
            dims = features.get("shape")
            if not dims and isinstance(manifest.get("input"), Mapping):
                dims = (manifest["input"].get("shape") or [None])[1:]  # [None, H, W, C]
            if dims:
                shape = tuple(int(d) for d in dims)
                shape = shape + (1,) * (3 - len(shape))  # (H, W) → (H, W, 1)
        elif kind == "tabular":
            listed = features.get("columns") or []
            columns = tuple(c["name"] if isinstance(c, Mapping) else str(c) for c in listed) or None
            numeric = bool(listed) and all(isinstance(c, Mapping) and c.get("type") == "numeric" for c in listed)
        signature = manifest.get("input") if isinstance(manifest.get("input"), Mapping) else {}
        return cls(kind=kind, shape=shape, columns=columns, numeric_columns=numeric,
                   text_column=str(features.get("text_column") or "text"), dtype=signature.get("dtype"),
                   class_names=tuple(str(c) for c in manifest.get("label_names") or ()),
                   label_column=manifest.get("label_column"))

    def describe(self) -> str:
        """What the model takes, in words (for error messages)."""
        if self.kind == "image" and self.shape:
            h, w, c = self.shape
            return f"{h}x{w} images with {c} channel{'s' if c != 1 else ''}"
        if self.kind == "tabular" and self.columns:
            return "tabular rows with columns " + ", ".join(self.columns)
        if self.kind == "text":
            return f"texts (column {self.text_column!r})"
        return f"{self.kind} inputs"


def read_manifest(artifacts: Any, prefix: str) -> dict[str, Any]:
    """A stored version's loopml.json (``artifacts``: an ArtifactStore, ``prefix``: the version's
    artifact prefix); raises what reading or parsing raises (NotFound, ValueError)."""
    import json

    doc = json.loads(artifacts.get_bytes(join(prefix, MANIFEST)))
    if not isinstance(doc, dict):
        raise ValueError(f"{prefix}/{MANIFEST} is not a JSON object")
    return doc
