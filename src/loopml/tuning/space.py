"""What a tuning job searches and for what: the search space, the objective, the strategy.

Pure parsing (no Optuna, no numpy): the API validates a request with it before anything is
stored, and tuning/study.py turns the parsed dimensions into Optuna distributions.

A dimension is written ``NAME=FUNCTION(ARGS)``:
    uniform(LOW,HIGH)      a float (an int hyperparameter: a whole number) between the bounds
    loguniform(LOW,HIGH)   the same on a log scale (LOW > 0)
    int(LOW,HIGH)          a whole number, bounds included
    choice(A,B,...)        one of the values (grid search needs choice for every dimension)
"""

from __future__ import annotations

import math
import re
from typing import Any

from loopml.core.errors import InvalidInput
from loopml.models.hparams import HPARAMS, coerce_value, params_for

STRATEGIES = ("bayesian", "random", "grid", "hyperband")
EARLY_STOPPING = ("off", "auto")
# objective → direction; per-epoch metrics can be pruned on, test_* are read once at the end
# (their pruning signal is the per-epoch validation metric of the same name)
OBJECTIVES: dict[str, str] = {"val_accuracy": "maximize", "val_loss": "minimize", "accuracy": "maximize",
                              "loss": "minimize", "test_accuracy": "maximize", "test_loss": "minimize",
                              "test_macro_f1": "maximize"}
FUNCTIONS = ("uniform", "loguniform", "int", "choice")
_DIM_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$")
MAX_TRIALS = 999  # trial jobs are NAME-001 … NAME-999


def parse_space(model: str, space: list[str] | dict[str, str]) -> dict[str, dict[str, Any]]:
    """``["learning_rate=loguniform(1e-4,1e-2)", ...]`` (or ``{"learning_rate": "loguniform(…)"}``)
    → ``{name: {"type": "float"|"int"|"categorical", ...}}`` checked against ``model``'s hyperparameters."""
    if isinstance(space, dict):
        items = [f"{k}={v}" for k, v in space.items()]
    elif isinstance(space, (list, tuple)):
        items = list(space)
    else:
        raise InvalidInput("space must be a list of NAME=FUNCTION(ARGS) or an object NAME → FUNCTION(ARGS)")
    if not items:
        raise InvalidInput("a search space is required, e.g. --space 'learning_rate=loguniform(1e-4,1e-2)'")
    known = params_for(model)
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        if not isinstance(item, str):
            raise InvalidInput(f"space entry {item!r} must be a string NAME=FUNCTION(ARGS)")
        m = _DIM_RE.fullmatch(item)
        if m is None:
            raise InvalidInput(f"space {item!r} must look like NAME=FUNCTION(ARGS) with FUNCTION one of "
                               f"{', '.join(FUNCTIONS)}, e.g. learning_rate=loguniform(1e-4,1e-2)")
        name, fn, raw = m.group(1), m.group(2), m.group(3)
        spec = known.get(name)
        if spec is None:
            hint = f" (it is only used by {', '.join(HPARAMS[name].templates)})" if name in HPARAMS else ""
            raise InvalidInput(f"space: {name!r} is not a hyperparameter of model {model!r}{hint}; "
                               f"valid names: {', '.join(sorted(known))}")
        if name in out:
            raise InvalidInput(f"space: {name!r} is given twice")
        if fn not in FUNCTIONS:
            raise InvalidInput(f"space {item!r}: unknown function {fn!r}; use one of {', '.join(FUNCTIONS)}")
        args = [a.strip() for a in raw.split(",")] if raw.strip() else []
        if fn == "choice":
            if not args or any(not a for a in args):
                raise InvalidInput(f"space {item!r}: choice needs one or more values, e.g. choice(16,32,64)")
            values = [_value(item, spec, a.strip("'\"")) for a in args]
            if len(set(map(repr, values))) != len(values):
                raise InvalidInput(f"space {item!r}: a value is given twice")
            out[name] = {"type": "categorical", "choices": values}
            continue
        if len(args) != 2:
            raise InvalidInput(f"space {item!r}: {fn} takes two bounds, e.g. {fn}(1e-4,1e-2)")
        if spec.type not in ("int", "float"):
            raise InvalidInput(f"space {item!r}: {name} is a {spec.type}; use choice(...)")
        if fn == "int" and spec.type != "int":
            raise InvalidInput(f"space {item!r}: {name} is a {spec.type}; use uniform or loguniform")
        low, high = (_value(item, spec, a) for a in args)  # in the hyperparameter's own range
        if not low < high:
            raise InvalidInput(f"space {item!r}: the lower bound must be below the upper bound")
        log = fn == "loguniform"
        if log and low <= 0:
            raise InvalidInput(f"space {item!r}: loguniform needs a lower bound above 0")
        kind = "int" if spec.type == "int" else "float"
        out[name] = {"type": kind, "low": low, "high": high, "log": log}
    return out


def _value(item: str, spec: Any, raw: str) -> Any:
    try:
        return coerce_value(spec, raw)
    except InvalidInput as exc:
        raise InvalidInput(f"space {item!r}: {exc.message}") from None


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        import difflib

        close = difflib.get_close_matches(str(objective), OBJECTIVES, n=1)
        raise InvalidInput(f"objective {objective!r} must be one of {', '.join(OBJECTIVES)}"
                           + (f"; did you mean {close[0]!r}?" if close else ""))
    return objective


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise InvalidInput(f"strategy {strategy!r} must be one of {', '.join(STRATEGIES)}")
    return strategy


def check_early_stopping(value: str) -> str:
    if value not in EARLY_STOPPING:
        raise InvalidInput(f"early stopping {value!r} must be one of {', '.join(EARLY_STOPPING)}")
    return value


def grid_size(space: dict[str, dict[str, Any]]) -> int:
    """Cells of a grid search; every dimension must be a choice."""
    size = 1
    for name, dim in space.items():
        if dim["type"] != "categorical":
            raise InvalidInput(f"strategy grid needs choice(...) for every dimension; {name} is "
                               f"{'loguniform' if dim.get('log') else 'int' if dim['type'] == 'int' else 'uniform'}")
        size *= len(dim["choices"])
    return size


def per_epoch_metric(objective: str) -> str:
    """The per-epoch metric the pruner watches for ``objective``."""
    return "val_" + objective[5:] if objective.startswith("test_") else objective


def contains(dim: dict[str, Any], value: Any) -> bool:
    """Whether a (warm-start) value lies in a dimension."""
    if dim["type"] == "categorical":
        return value in dim["choices"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if dim["type"] == "int" and float(value) != int(value):
        return False
    return dim["low"] <= value <= dim["high"]


def better(direction: str, a: float, b: float) -> bool:
    return a > b if direction == "maximize" else a < b


def reached(direction: str, value: float, target: float) -> bool:
    return value >= target if direction == "maximize" else value <= target
