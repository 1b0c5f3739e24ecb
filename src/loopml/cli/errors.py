"""API errors in the CLI's words: the API names its request fields, the CLI its flags.

An error about a request field carries ``details["field"]`` (a name or a list); its message names it as
``FIELD=VALUE`` or, first thing in the message, as ``FIELD``. The CLI rewrites those to the
flag from the one table below (``label=COLUMN`` → ``--label COLUMN``, ``force=True`` → ``--force``),
so the API and SDK keep saying ``label=COLUMN`` and the command line says ``--label COLUMN``.
"""

from __future__ import annotations

import re

from loopml.core.errors import LoopMLError

# request field → the flag that sets it (the same name in every command that has it)
FLAGS = {
    "label": "--label",
    "text": "--text",
    "format": "--format",
    "capture_percent": "--capture",
    "max_batch_size": "--max-batch-size",
    "max_batch_delay_ms": "--max-batch-delay-ms",
    "multi_model": "--multi-model",
    "replicas": "--replicas",
    "api_key": "--key",
    "window": "--window",
    "min_samples": "--min-samples",
    "min_labels": "--min-labels",
    "variant": "--variant",
    "objects_uri": "--objects",
    "model": "--model",
    "dataset": "--dataset",
    "force": "--force",
}
# flags that also read an environment variable, named where the message asks for the flag
ENVVARS = {"api_key": "LOOPML_ENDPOINT_KEY"}


def cli_message(err: LoopMLError) -> str:
    """``err.message`` with its field(s) named as CLI flags, where the table has them."""
    fields = (err.details or {}).get("field")
    message = err.message
    for field in [fields] if isinstance(fields, str) else fields if isinstance(fields, list) else []:
        flag = FLAGS.get(field) if isinstance(field, str) else None
        if flag is None:
            continue
        name = re.escape(field)
        message, asked = re.subn(rf"(?<![\w.-]){name}=([^\s,;)]+)",  # a switch: force=True → --force
                                 lambda m: flag if m[1] == "True" else f"{flag} {m[1]}", message)
        if asked and field in ENVVARS:
            message = re.sub(rf"{re.escape(flag)} (\S+)", rf"{flag} \1 (or set {ENVVARS[field]})", message,
                             count=1)
        message = re.sub(rf"^{name}(?![\w.=-])", flag, message)
    return message
