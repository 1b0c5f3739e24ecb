r"""What each kind of LoopML object may be called, in one place: one pattern and one validator
per kind of name, each returning the name or raising InvalidInput that says the rule.

The patterns end with ``\Z`` (not ``$``, which also matches before a trailing newline) and are
matched whole (``fullmatch``): ``"v\n"`` is no name, whichever ``re`` function a caller uses. Names end up in URL paths, artifact keys and CLI arguments; the rules differ by kind because
each follows the service it mirrors (SageMaker endpoint names, Lambda function names, …).
"""

from __future__ import annotations

import re
from typing import Any

from loopml.core.errors import InvalidInput

# datasets and models: lowercase, they name folders and files
DATASET_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}\Z")
# SageMaker's endpoint-name pattern: the data plane puts the name in a URL path; variants alike
ENDPOINT_NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}\Z")
VARIANT_NAME_RE = ENDPOINT_NAME_RE
# Lambda-like function names
FUNCTION_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
# triggers, workflows and monitors
RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}\Z")
EXECUTION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}\Z")
# tuning jobs: a trial's training job is NAME-NNN, and job ids are at most 32 characters
TUNING_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,26}\Z")
# training jobs' ids and the files a job writes (labels, uploads); model aliases
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}\Z")
FILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}\Z")


def is_valid(pattern: re.Pattern[str], name: Any) -> bool:
    """Whether ``name`` is a string ``pattern`` matches whole (the one test every rule uses)."""
    return isinstance(name, str) and pattern.fullmatch(name) is not None
# users: they appear in the audit log and in permissions' owners; lowercase like datasets
USER_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}\Z")


def _checked(pattern: re.Pattern[str], name: Any, rule: str) -> str:
    """``name`` when it matches ``pattern`` whole; else InvalidInput with ``rule`` (``{name!r}`` in it)."""
    if not is_valid(pattern, name):
        raise InvalidInput(rule.format(name=name))
    return name


def dataset_name(name: Any, what: str = "dataset") -> str:
    """A dataset's name, or (``what="model"``) a model's: they follow the same rule."""
    return _checked(DATASET_NAME_RE, name,
                    what + " name {name!r} is not valid: use lowercase letters, digits, '.', '_' or '-'")


def model_name(name: Any) -> str:
    return dataset_name(name, "model")


def endpoint_name(name: Any) -> str:
    return _checked(ENDPOINT_NAME_RE, name, "endpoint name {name!r} is invalid: letters, digits and hyphens, "
                    "starting and ending with a letter or digit, at most 63 characters")


def function_name(name: Any) -> str:
    return _checked(FUNCTION_NAME_RE, name, "function name {name!r} is not valid: use lowercase letters, digits "
                    "and '-' (starting with a letter or digit, at most 63 characters)")


def workflow_name(name: Any) -> str:
    return _checked(RESOURCE_NAME_RE, name, "workflow name {name!r} is not valid: use letters, digits, '-' and "
                    "'_' (at most 63 characters, starting with a letter or digit)")


def execution_name(name: Any) -> str:
    return _checked(EXECUTION_NAME_RE, name, "execution name {name!r} is not valid: letters, digits, '.', '-' "
                    "and '_' (at most 80 characters)")


def trigger_name(name: Any) -> str:
    """Triggers and monitors: the API's ``name`` field, named as such in the message."""
    return _checked(RESOURCE_NAME_RE, name, "name: {name!r} must be 1-63 letters, digits, '-' or '_' (starting "
                    "with a letter or digit)")


monitor_name = trigger_name


def tuning_name(name: Any) -> str:
    return _checked(TUNING_NAME_RE, name, "tuning job name {name!r} is not valid: 1-27 letters, digits, '-' or '_' "
                    "(starting with a letter or digit; its trials are jobs NAME-001, NAME-002, ...)")


def user_name(name: Any) -> str:
    return _checked(USER_NAME_RE, name, "user name {name!r} is not valid: use lowercase letters, digits, '.', '_' "
                    "or '-' (starting with a letter or digit, at most 63 characters)")
