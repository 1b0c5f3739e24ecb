"""Model references: NAME, NAME:VERSION, NAME@ALIAS (and NAME:latest)."""

from __future__ import annotations

from loopml.core.errors import InvalidInput


def parse_model_ref(ref: str) -> tuple[str, int | None, str | None]:
    """'mnist-cnn' → (name, None, None); 'mnist-cnn:3' → (name, 3, None); 'mnist-cnn@production' → alias."""
    if not ref:
        raise InvalidInput("model reference is empty; use NAME, NAME:VERSION or NAME@ALIAS")
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if not name or not alias:
            raise InvalidInput(f"model reference {ref!r}: use NAME@ALIAS")
        return name, None, alias
    name, _, version = ref.partition(":")
    if version in ("", "latest"):
        return name, None, None
    if not version.isdigit():
        raise InvalidInput(f"model reference {ref!r}: version {version!r} must be a number")
    return name, int(version), None
