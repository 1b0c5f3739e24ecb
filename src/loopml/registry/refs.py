"""Model references — the one grammar every context reads:

    NAME            the newest version             mnist-cnn
    NAME:VERSION    one version (NAME:latest too)  mnist-cnn:3
    NAME@ALIAS      the version the alias names    mnist-cnn@production
    job:ID          a training job's bundle        job:job-0123456789

Pure string rules (no store): the CLI imports this module, so it stays free of SQLAlchemy and
numpy. Resolving a reference to a version record is ``registry.resolve``.
"""

from __future__ import annotations

from dataclasses import dataclass

from loopml.core import names
from loopml.core.errors import InvalidInput

__all__ = ["ModelRef", "parse_model_ref", "check_alias_name", "ALIAS_RE", "RESERVED_ALIASES", "JOB_PREFIX",
           "FORMS"]

JOB_PREFIX = "job:"
FORMS = "NAME, NAME:VERSION, NAME@ALIAS or job:ID"
ALIAS_RE = names.ALIAS_RE
# "latest" already means the newest version (NAME:latest): an alias of that name would shadow it
RESERVED_ALIASES = frozenset({"latest"})


@dataclass(frozen=True)
class ModelRef:
    """One parsed reference: exactly one of (name [+ version | alias]) or job_id is set."""

    name: str | None = None
    version: int | None = None
    alias: str | None = None
    job_id: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        return parse_model_ref(text)

    @property
    def is_job(self) -> bool:
        return self.job_id is not None

    @property
    def is_latest(self) -> bool:
        """A bare name: whatever version is newest when it is resolved."""
        return self.job_id is None and self.version is None and self.alias is None

    def __str__(self) -> str:
        if self.job_id is not None:
            return JOB_PREFIX + self.job_id
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return f"{self.name}:{self.version}" if self.version is not None else str(self.name)


def parse_model_ref(text: str) -> ModelRef:
    """``text`` → ModelRef; anything else is InvalidInput naming the forms that are accepted."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput(f"model reference is empty; use {FORMS}")
    ref = text.strip()
    if ref.startswith(JOB_PREFIX):
        job_id = ref[len(JOB_PREFIX):]
        if not job_id or any(c in job_id for c in ":@"):
            raise InvalidInput(f"model reference {ref!r}: use job:ID (the id of a training job)")
        return ModelRef(job_id=job_id)
    if "@" in ref:
        name, _, alias = ref.partition("@")
        if not name or not alias or "@" in alias:
            raise InvalidInput(f"model reference {ref!r}: use NAME@ALIAS")
        if ":" in name or ":" in alias:
            raise InvalidInput(f"model reference {ref!r}: give NAME:VERSION or NAME@ALIAS, not both")
        return ModelRef(name=name, alias=alias)
    name, _, version = ref.partition(":")
    if not name:
        raise InvalidInput(f"model reference {ref!r} names no model; use {FORMS}")
    if version in ("", "latest"):
        return ModelRef(name=name)
    if not version.isdigit():
        raise InvalidInput(f"model reference {ref!r}: version {version!r} must be a number")
    return ModelRef(name=name, version=int(version))


def check_alias_name(alias: str) -> str:
    """The alias naming rule (checked before any alias is set)."""
    if not isinstance(alias, str) or not ALIAS_RE.fullmatch(alias) or alias in RESERVED_ALIASES:
        raise InvalidInput(f"alias {alias!r} is not valid: use letters, digits, '-' or '_', "
                           f"starting with a letter ({', '.join(map(repr, sorted(RESERVED_ALIASES)))} is reserved)")
    return alias
