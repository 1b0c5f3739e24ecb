"""Shared CLI plumbing: the API client, JSON output and Rich tables.

Rich and the SDK are imported on first use so ``loopml --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from loopml.sdk.client import Client


def client() -> Client:
    from loopml.sdk.client import Client

    return Client()  # LOOPML_API_URL / LOOPML_TOKEN / loopml.toml


# Rich reads these when a Console is made (terminal or not, interactive, colours, width): one
# Console per stream and setting, so a changed environment (tests forcing a terminal) gets its own.
_CONSOLE_ENV = ("TTY_COMPATIBLE", "TTY_INTERACTIVE", "FORCE_COLOR", "NO_COLOR", "TERM", "COLUMNS", "LINES")


@lru_cache(maxsize=None)
def _consoles(stream_id: int, _env: tuple[str | None, ...]) -> Console:
    from rich.console import Console

    out = Console(stderr=stream_id == 2, highlight=False, soft_wrap=True)  # long lines stay greppable
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPED_WIDTH  # a file or a pipe has no width: tables keep URLs and messages on a line
    return out


PIPED_WIDTH = 200


def console() -> Console:
    return _consoles(1, tuple(os.environ.get(k) for k in _CONSOLE_ENV))


def err_console() -> Console:
    return _consoles(2, tuple(os.environ.get(k) for k in _CONSOLE_ENV))


def json_text(obj: Any, **kwargs: Any) -> str:
    """JSON as people read it: '≥', 'é' as themselves, not '\\u2265' (still valid JSON).
    Escaped only when the terminal's encoding cannot show them."""
    text = json.dumps(obj, default=str, ensure_ascii=False, **kwargs)
    try:
        text.encode(sys.stdout.encoding or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return json.dumps(obj, default=str, **kwargs)
    return text


def print_json(obj: Any) -> None:
    """Plain JSON on stdout (never Rich-styled, so it pipes into jq)."""
    sys.stdout.write(json_text(obj, indent=2) + "\n")
    sys.stdout.flush()


def emit(obj: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    """What every list/show command does: JSON for scripts, else the human rendering."""
    if as_json:
        print_json(obj)
    else:
        render(obj)


def print_broken(answer: dict[str, Any]) -> None:
    """After a forced delete: what it broke (on stderr, so it is seen even when stdout is piped)."""
    broken = answer.get("broken") or []
    if broken:
        names = ", ".join(f"{d['kind']} {d['name']}" + (f" (state {d['state']})" if d.get("state") else "")
                          for d in broken)
        err_console().print(f"warning: this breaks {names}", markup=False)


def actor() -> str:
    """Who is acting, as recorded in alias history and alert acks: ``cli:<login name>``."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "cli"


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** -(digits - 1):
            return f"{value:.{max(digits - 1, 1)}g}"  # 1e-05, not 0.0000
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.{digits}f}"
    return str(value)


def when(iso: str | None) -> str:
    """'2025-01-02T03:04:05.678Z' -> '2025-01-02 03:04:05'."""
    return iso.replace("T", " ")[:19] if iso else "-"


def table(*columns: str, title: str | None = None, rows: Iterable[Iterable[Any]] = ()) -> Table:
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for i, name in enumerate(columns):
        # The first column names the thing (job id, dataset, model): never cut it, users copy it.
        # The others fold inside long words (URLs, ids, paths) instead of being cut with "…"; when
        # the terminal is narrow Rich takes the width from the widest columns (messages) first.
        t.add_column(name, no_wrap=i == 0, overflow="fold", min_width=len(name))
    for row in rows:
        t.add_row(*(num(v) if not isinstance(v, str) else v for v in row))
    return t


def fields_table(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    from rich.table import Table

    t = Table(show_header=False, title=title, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")  # a long URL or path folds; it is never cut with "…"
    for key, value in pairs:
        t.add_row(key, value if isinstance(value, str) else num(value))
    return t


def print_evaluation(evaluation: dict[str, Any] | None, metrics: dict[str, Any] | None = None) -> None:
    """Test metrics: headline numbers, per-class precision/recall/F1, the confusion matrix."""
    out = console()
    if not evaluation and not metrics:
        return
    evaluation = evaluation or {}
    headline = [(k, evaluation[k]) for k in ("accuracy", "loss", "macro_f1", "samples") if k in evaluation]
    if not headline and metrics:
        headline = [(k, v) for k, v in metrics.items() if k.startswith("test_")]
    if headline:
        out.print(fields_table([(f"test {k}", v) for k, v in headline], title="Test metrics"))
    per_class = evaluation.get("per_class") or {}
    if per_class:
        out.print(table("class", "precision", "recall", "f1", "support", title="Per class",
                        rows=[(str(c), m.get("precision"), m.get("recall"), m.get("f1"), m.get("support"))
                              for c, m in per_class.items()]))
    cm, labels = evaluation.get("confusion_matrix"), evaluation.get("labels")
    if cm and labels and len(labels) == len(cm):
        out.print(table("true \\ predicted", *map(str, labels), title="Confusion matrix",
                        rows=[(str(lab), *row) for lab, row in zip(labels, cm)]))
