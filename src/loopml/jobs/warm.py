"""A spare worker: ``python -m loopml.jobs.warm --ready-fd N``, started before any job needs it.

It imports what jobs need (TensorFlow/Keras, numpy, every job kind's runner) and runs each job
kind's warm-up (core.jobkinds ``warmup``: train's trains a throwaway model for one batch, then
clears Keras's state) while nothing waits on it, writes one byte to the ready pipe ``N``, then
blocks on stdin for ONE handover line from the LocalExecutor (jobs/spares.py):
``{"job_id": ..., "env": {...}}``. From then on it is that job's ordinary worker (``loopml.jobs.worker.main``) and ends with it: a fresh process per job, as
Keras keeps global state. EOF on stdin instead (the executor shut down, or its process died)
ends the spare without a job.

Settings are the job's, not the spare's: ``env`` is ``Settings.child_env("worker")`` computed at
submit time and replaces this process's environment before ``worker.main`` reads any setting. A
variable that was already consumed by the imports (KERAS_BACKEND, TF_*, thread counts, PYTHON*…)
cannot be applied afterwards, so if one of those differs the spare execs the cold worker command
with the job's environment (same pid, so the recorded placement stays true).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

# Read while importing (TensorFlow, Keras, BLAS thread pools, the interpreter itself): a job
# whose environment differs in one of these cannot run in this already-initialised process.
IMPORT_TIME_PREFIXES = ("KERAS_", "TF_", "XLA_", "CUDA_", "OMP_", "MKL_", "OPENBLAS_", "PYTHON", "LD_",
                        "JAX_", "TORCH")
# Imported lazily by the runners (inside run(), so the CLI never pays for them): preloaded here.
PRELOAD = ("numpy", "keras", "loopml.models.layers", "loopml.models.templates", "loopml.models.features",
           "loopml.training.callbacks", "loopml.models.bundle", "loopml.models.runtime", "loopml.jobs.logsink",
           "tf2onnx", "onnxruntime", "sqlite3")


def preload() -> list[str]:
    """Import every job kind's runner and hooks and the heavy modules they import lazily; the
    names that could not be imported (an optional extra not installed: the job will say so)."""
    from loopml.core.jobkinds import KINDS

    modules = list(PRELOAD)
    for entry in KINDS.values():
        modules += [ref.partition(":")[0] for ref in (entry.runner, *entry.hooks.values())]
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        modules.insert(1, "tensorflow")
    missing = []
    for name in dict.fromkeys(modules):
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a spare must not die of an optional module
            missing.append(name)
    return missing


def warm_up() -> list[str]:
    """Run every job kind's warm-up (core.jobkinds ``warmup``: e.g. train one batch of a tiny
    model, so a job's first step does not pay TensorFlow's first-use costs); the ones that failed."""
    from loopml.core.jobkinds import KINDS

    failed = []
    for entry in KINDS.values():
        if entry.warmup is None:
            continue
        module, _, name = entry.warmup.partition(":")
        try:
            getattr(importlib.import_module(module), name)()
        except Exception as exc:  # noqa: BLE001 - a spare must not die of its warm-up: jobs run without it
            failed.append(f"{entry.warmup} ({type(exc).__name__}: {exc})")
    return failed


def import_time_differences(current: dict[str, str], job: dict[str, str]) -> list[str]:
    """Variables read at import time whose value for the job differs from this process's."""
    names = {k for k in (*current, *job) if k.startswith(IMPORT_TIME_PREFIXES)}
    return sorted(k for k in names if current.get(k) != job.get(k))


def cold_command(job_id: str) -> list[str]:
    return [sys.executable, "-m", "loopml.jobs.worker", job_id]


def _read_handover() -> dict | None:
    line = sys.stdin.buffer.readline()
    if not line.strip():
        return None  # EOF: the executor is gone or shut down
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopml-spare-worker")
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args(argv)

    missing = preload()
    if missing:
        print(f"spare worker {os.getpid()}: not preloaded: {', '.join(missing)}", flush=True)
    failed = warm_up()
    if failed:
        print(f"spare worker {os.getpid()}: warm-up failed: {'; '.join(failed)}", flush=True)
    if args.ready_fd is not None:
        try:
            os.write(args.ready_fd, b"r")
            os.close(args.ready_fd)
        except OSError:
            pass  # the executor stopped listening: the handover (or EOF) still comes on stdin
    handover = _read_handover()
    if handover is None:
        return 0
    job_id, env = handover["job_id"], {str(k): str(v) for k, v in handover["env"].items()}
    devnull = os.open(os.devnull, os.O_RDONLY)  # as a cold worker: nothing to read on stdin
    os.dup2(devnull, 0)
    os.close(devnull)
    stale = import_time_differences(dict(os.environ), env)
    if stale:
        print(f"spare worker {os.getpid()}: {', '.join(stale)} differ for job {job_id}; starting it cold",
              flush=True)
        os.execve(sys.executable, cold_command(job_id), env)
    os.environ.clear()
    os.environ.update(env)
    from loopml.jobs import worker

    return worker.main([job_id], warm=True)


if __name__ == "__main__":
    sys.exit(main())
