"""jobs.logtail.read_tail: the end of a worker's output, as every executor reports it when the worker exits."""

from __future__ import annotations

import ast
from pathlib import Path

from loopml.jobs.logtail import read_tail

JOBS = Path(__file__).resolve().parents[1] / "src" / "loopml" / "jobs"


def test_it_returns_the_last_bytes_of_a_big_file(tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    out.write_bytes(b"x" * 1_000_000 + b"\nTraceback ...\nValueError: bad input\n")
    tail = read_tail(out, 30)
    assert len(tail) == 30
    assert tail.endswith("ValueError: bad input\n")
    assert read_tail(str(out), 10**9).startswith("xxx")  # a limit above the size: the whole file


def test_a_cut_through_a_character_or_a_missing_file_never_raises(tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    out.write_bytes("é".encode() * 10)  # 2 bytes each: an odd limit cuts one
    assert read_tail(out, 5).endswith("éé")
    assert read_tail(tmp_path / "never-written.out", 100) == ""


def test_the_executors_read_tails_only_through_it() -> None:
    """One helper: no executor module opens its worker's output to read the tail itself."""
    for name in ("ray_executor.py", "ray_replicas.py", "local.py", "spares.py"):
        tree = ast.parse((JOBS / name).read_text())
        seeks = [n.lineno for n in ast.walk(tree)
                 if isinstance(n, ast.Attribute) and n.attr in ("seek", "getsize")  # f.seek(size - N)
                 or isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Slice)  # read_bytes()[-N:]
                 and isinstance(n.slice.lower, ast.UnaryOp) and isinstance(n.value, ast.Call)
                 and getattr(n.value.func, "attr", "") == "read_bytes"]
        assert not seeks, f"{name} reads a file's tail itself at line(s) {seeks}: use jobs.logtail.read_tail"
