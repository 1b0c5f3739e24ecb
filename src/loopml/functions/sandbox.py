"""Where a function's process runs: a bubblewrap sandbox, or (without bwrap) an unprivileged user.

bwrap mode (``/usr/bin/bwrap`` works here): a fresh mount tree with read-only system paths, the
Python installation, the virtualenv and the ``loopml`` package only; the function's own code at
``/var/task`` (the working directory); a private ``/tmp``; a new PID namespace with its own
``/proc`` (other processes invisible; when its first process dies the kernel kills every other
one, also those that called ``setsid``); ``--die-with-parent`` ties it to its supervisor. LoopML's
home (metadata database, artifacts, every function's code) is not mounted, and masked when it lies
under a mounted path. The network is shared: a network namespace would cut the loopback the
function needs to reach the control plane's API.

fallback mode: no namespaces; the runner still drops to the unprivileged user (when the server
runs as root) with a process-count limit, and the supervisor, a child subreaper, kills every
descendant at the end. Files are protected only by their permissions (LoopML's home is 0700).

Both modes: the environment is built from nothing (``function_env``), never copied from the server.
Only the standard library is imported: the supervisor imports this module at its start.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BWRAP = "bwrap"
TASK_DIR = "/var/task"  # Lambda's path for the function's code
NOBODY = 65534
MAX_PROCESSES = 256  # per function user (RLIMIT_NPROC): a fork bomb fails, the machine does not
TMP_BYTES = 512 * 2**20  # the private /tmp (Lambda's default ephemeral storage)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/ssl", "/etc/ca-certificates",
              "/etc/hosts", "/etc/nsswitch.conf", "/etc/resolv.conf", "/etc/localtime", "/etc/mime.types",
              "/etc/passwd", "/etc/group")
# the fixed, non-secret part of a function's environment (nothing comes from the server's)
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "TMPDIR": "/tmp",
            "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LOOPML_CONFIG": os.devnull}


@dataclass(frozen=True)
class Sandbox:
    """How invocations are isolated on this machine (chosen once, at the control plane's start)."""

    mode: str  # "bwrap" | "fallback"
    reason: str = ""  # why the fallback (for the start-up warning)
    run_as: tuple[int, int] | None = (NOBODY, NOBODY)  # drop to (uid, gid); None: keep the server's
    max_processes: int = MAX_PROCESSES

    @property
    def warning(self) -> str | None:
        if self.mode == "bwrap":
            return None
        who = f"as uid {self.run_as[0]}" if self.run_as else "as the server's own user"
        return (f"functions run WITHOUT the bubblewrap sandbox ({self.reason}): each runs {who} with a "
                f"{self.max_processes}-process limit, but can read whatever that user can read; "
                "install bubblewrap (apt-get install bubblewrap) for the sandbox")


def _bwrap_works() -> str | None:
    """None when bwrap can build the sandbox here, else why not."""
    path = shutil.which(BWRAP)
    if path is None:
        return "bwrap not found"
    try:
        probe = subprocess.run([path, "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--ro-bind", "/", "/",
                                "--proc", "/proc", "--dev", "/dev", "--", "/bin/true"] if os.path.exists("/bin/true")
                               else [path, "--version"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bwrap failed: {exc}"
    if probe.returncode != 0:
        return "bwrap cannot create namespaces here: " + probe.stderr.decode(errors="replace").strip()[:200]
    return None


@functools.lru_cache(maxsize=1)
def detect() -> Sandbox:
    run_as = (NOBODY, NOBODY) if os.geteuid() == 0 else None
    problem = _bwrap_works()
    if problem is None:
        return Sandbox("bwrap", run_as=run_as)
    return Sandbox("fallback", reason=problem, run_as=run_as)


def package_root() -> Path:
    """The folder holding the ``loopml`` package (the child imports its runner and SDK from it)."""
    return Path(__file__).resolve().parent.parent.parent


def _under(path: str, roots: list[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def python_paths() -> list[str]:
    """What the venv's interpreter needs: the installation, the venv, the loopml package."""
    paths = [sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable)),
             str(package_root())]
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths}, key=len):
        if os.path.exists(p) and not _under(p, out) and not _under(p, list(_SYSTEM_DIRS)):
            out.append(p)
    return out


def bwrap_argv(code_dir: Path, command: list[str], hidden: list[str], *, root: bool) -> list[str]:
    """The bwrap command line that runs ``command`` with only what a function may see.

    ``hidden``: LoopML's home, database file, artifact folder — masked if a mounted path holds them."""
    argv = [shutil.which(BWRAP) or BWRAP, "--die-with-parent", "--new-session", "--unshare-pid",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "loopml-function"]
    if root:  # keep only what the runner needs to drop to the unprivileged user, then it has none
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    mounted: list[str] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            argv += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            argv += ["--ro-bind", d, d]
            mounted.append(d)
    for f in _ETC_FILES:
        if os.path.exists(f):
            argv += ["--ro-bind", f, f]
    made: set[str] = set()
    for p in python_paths():
        # parents bwrap would create with the umask's mode (0700 under umask 077): the function's
        # user must traverse them
        for parent in reversed(Path(p).parents[:-1] if len(Path(p).parents) > 1 else []):
            if str(parent) not in made and not _under(str(parent), mounted):
                made.add(str(parent))
                argv += ["--perms", "0755", "--dir", str(parent)]
        argv += ["--ro-bind", p, p]
        mounted.append(p)
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for h in hidden:  # e.g. a LOOPML_HOME inside the virtualenv's folder
        real = os.path.realpath(h)
        if os.path.exists(real) and _under(real, mounted):
            argv += ["--tmpfs", real] if os.path.isdir(real) else ["--ro-bind", "/dev/null", real]
    argv += ["--perms", "0755", "--dir", os.path.dirname(TASK_DIR),
             "--ro-bind", str(code_dir), TASK_DIR, "--chdir", TASK_DIR, "--", *command]
    return argv


def function_env(function: dict[str, Any], *, api_url: str, token: str | None) -> dict[str, str]:
    """A function's whole environment: fixed basics, its own ``--env`` values, and LoopML's three
    (the API's URL, the invocation's token, the function's name). Nothing of the server's."""
    env = dict(BASE_ENV)
    env["PYTHONPATH"] = str(package_root())
    env.update({str(k): str(v) for k, v in (function.get("environment") or {}).items()})
    env["LOOPML_API_URL"] = api_url
    if token:
        env["LOOPML_TOKEN"] = token
    env["LOOPML_FUNCTION_NAME"] = function["name"]
    return env
