"""Progress for long CLI work (uploads, waits, jobs): a transient Rich bar or spinner.

Drawn only for a person watching: stdout is a terminal and ``--json`` was not given. Piped or
``--json`` output gets no progress bytes at all (the same calls become no-ops); lines printed with
``Tracker.print`` still appear, above the bar on a terminal. Rich honours ``TTY_COMPATIBLE=1`` /
``FORCE_COLOR`` to force terminal mode (how the tests see the bar).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator

from loopml.cli.output import console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def shown(quiet: bool = False) -> bool:
    """Whether progress is drawn: not ``quiet`` (--json) and stdout is a terminal."""
    return not quiet and console().is_terminal


class Tracker:
    """One task of a live display; every method is safe to call when nothing is drawn."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self._progress, self._task = progress, task

    def update(self, description: str | None = None, *, completed: float | None = None,
               total: float | None = None, detail: str | None = None) -> None:
        fields: dict[str, Any] = {}
        if detail is not None:
            fields["detail"] = detail
        if total is not None:  # Rich keeps the old total on None; a known total turns the spinner into a bar
            fields["total"] = total
        self._progress.update(self._task, description=description, completed=completed, **fields)

    def transferred(self, sent: int, total: int) -> None:
        """Byte-count callback for uploads (the SDK's ``on_upload``)."""
        self._progress.update(self._task, completed=sent, total=total or None, transfer=True)

    def upload(self, then: str) -> Callable[[int, int], None]:
        """An ``on_upload`` callback: bytes sent, then (once, when all are sent) the phase ``then``."""
        def sent(done: int, total: int) -> None:
            self.transferred(done, total)
            if done >= total and not finished:
                finished.append(True)  # httpx reads once more at the end: switch only once
                self.then(then)

        finished: list[bool] = []
        return sent

    def then(self, description: str) -> None:
        """The next phase, of unknown length (e.g. the server processing an upload): a new row
        with its own spinner and clock below the finished one, which would look stuck."""
        self._task = self._progress.add_task(description, total=None, detail="", transfer=False)

    def print(self, *objects: Any, **kwargs: Any) -> None:
        """Print a line above the bar (or plainly when nothing is drawn)."""
        self._progress.console.print(*objects, **kwargs)


@contextmanager
def track(description: str, *, quiet: bool = False, total: float | None = None,
          transfer: bool = False) -> Iterator[Tracker]:
    """A spinner (``total`` None) or bar with elapsed time; ``transfer``: bytes and speed once sent.

    Transient: the display is erased when the block ends, so only printed lines remain.
    """
    from rich.progress import (BarColumn, DownloadColumn, Progress, ProgressColumn, SpinnerColumn, Task, TextColumn,
                               TimeElapsedColumn, TransferSpeedColumn)
    from rich.text import Text

    class WhileSending(ProgressColumn):  # bytes and speed only while bytes are being sent
        def __init__(self, column: ProgressColumn) -> None:
            super().__init__()
            self.column = column

        def render(self, task: Task) -> Any:
            return self.column.render(task) if task.fields.get("transfer") else Text("")

    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), WhileSending(DownloadColumn()),
               WhileSending(TransferSpeedColumn()), TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console(), transient=True, disable=not shown(quiet)) as progress:
        yield Tracker(progress, progress.add_task(description, total=total, detail="", transfer=transfer))
