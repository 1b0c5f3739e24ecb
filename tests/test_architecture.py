"""docs/architecture.md's import rules, enforced by import-linter (contracts in ``.importlinter``).

That importing the SDK and the CLI (and running ``loopml --help``) loads neither Keras,
TensorFlow, numpy nor SQLAlchemy is checked at run time in tests/test_cli.py
(test_help_does_not_import_heavy_modules, test_sdk_import_is_light).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / ("lint-imports.exe" if sys.platform == "win32" else "lint-imports")


def test_import_contracts_hold():
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} not found: install the test extras (pip install -e '.[test]')")
    assert (REPO / ".importlinter").is_file(), f"no .importlinter in {REPO}"
    # --no-cache: leave no cache folder behind in the working tree
    out = subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"lint-imports exited {out.returncode}\n{out.stdout}\n{out.stderr}"


def test_no_merge_conflict_markers_are_left():
    """Branches are merged by hand: a conflict marker left in a doc or a module is caught here."""
    markers = ("<<<<<<< ", ">>>>>>> ")
    found = []
    for folder in ("src", "tests", "docs", "scripts", "bench", "examples"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".sh", ".yaml", ".yml", ".toml", ".txt"} and path.is_file():
                for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                    if line.startswith(markers):
                        found.append(f"{path.relative_to(REPO)}:{n}")
    for name in ("README.md", "Makefile", "pyproject.toml", ".importlinter"):
        text = (REPO / name).read_text(errors="replace")
        found += [f"{name}:{n}" for n, line in enumerate(text.splitlines(), 1) if line.startswith(markers)]
    assert not found, f"merge conflict markers left in: {found}"
