"""Is a label column something to classify? LoopML's templates are classifiers, so a label that
is a measurement (body mass, price, age in days) is refused before it becomes hundreds of
one-row "classes".

The rule (documented in the README's "Using it"): the labels all read as numbers, there are more than
``MAX_NUMERIC_CLASSES`` distinct values, and either some value has a fractional part or there
are fewer than ``MIN_ROWS_PER_CLASS`` rows per distinct value on average. Integer class codes
with enough rows each (CIFAR-100's 0..99) stay classes; so do 20 or fewer distinct values.
"""

from __future__ import annotations

import math

from loopml.core.errors import InvalidInput
from loopml.datasets.content import DatasetContent

MAX_NUMERIC_CLASSES = 20
MIN_ROWS_PER_CLASS = 5


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def check_classifiable(content: DatasetContent) -> None:
    """InvalidInput (field ``label``) when the labels look like a continuous measurement."""
    distinct = set(content.labels.tolist())
    if len(distinct) <= MAX_NUMERIC_CLASSES:
        return
    numbers = [_number(str(v)) for v in distinct]
    if any(n is None for n in numbers):
        return  # names, not numbers
    rows = len(content)
    fractional = any(not float(n).is_integer() for n in numbers if n is not None)
    if fractional or len(distinct) * MIN_ROWS_PER_CLASS > rows:
        raise InvalidInput(
            f"label column {content.label_column} looks continuous ({len(distinct)} distinct numeric values "
            f"in {rows} rows): LoopML's models classify; bin it first or choose a categorical column "
            "(label=COLUMN)", field="label")
