"""Worker entry point: ``python -m loopml.jobs.worker JOB_ID [--echo]``.

Self-describing: the job id is the only argument; the store locations come from the
environment (``LOOPML_*``, as ``Settings.child_env("worker")`` writes it — never on the
command line, where ``ps`` shows them), so the same command runs under any executor. The
runner is the job kind's (``core.jobkinds.KINDS``), imported by name. The worker owns the job's
outcome (succeeded / failed / cancelled); the control plane only notices workers that vanish.
A warm spare (jobs/warm.py) runs the same ``main`` with the job id it is handed, after its imports.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import Any, Callable


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def _imported(reference: str) -> Callable[..., Any]:
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def runner_for(kind: str) -> Callable[..., Any]:
    """The kind's ``run(platform, job, sync_logs, **hooks)``, its hooks bound, imported from
    their "module:function" references."""
    from functools import partial

    from loopml.core.errors import LoopMLError
    from loopml.core.jobkinds import KINDS

    if kind not in KINDS:
        raise LoopMLError(f"unknown job kind {kind!r}")
    entry = KINDS[kind]
    return partial(_imported(entry.runner), **{key: _imported(ref) for key, ref in entry.hooks.items()})


def check_spec(job: dict[str, Any]) -> None:
    from loopml.core.errors import InvalidInput
    from loopml.core.jobkinds import KINDS

    spec = job.get("spec") or {}
    missing = [key for key in KINDS[job["kind"]].required() if key not in spec] if job["kind"] in KINDS else []
    if missing:
        raise InvalidInput(f"{job['kind']} job {job['id']}: its spec lacks {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopml-worker")
    parser.add_argument("job_id")
    parser.add_argument("--echo", action="store_true", help="also copy the job's output to this terminal")
    args = parser.parse_args(argv)

    from loopml.core.jobstatus import FAILED, RUNNING
    from loopml.core.settings import load_settings
    from loopml.jobs.logsink import LogSink
    from loopml.platform import Platform

    platform = Platform(load_settings(), create_schema=False)
    job_id = args.job_id
    job = platform.jobs.get(job_id)
    if job["status"] != RUNNING:
        return 0  # cancelled (or finished) before this process got going
    sink = LogSink(lambda lines: platform.jobs.append_logs(job_id, lines),
                   echo_fd=os.dup(1) if args.echo else None).start()
    code = 0
    try:
        print(f"worker pid {os.getpid()} on {os.uname().nodename}: {job['kind']} job {job_id}", flush=True)
        check_spec(job)
        runner_for(job["kind"])(platform, job, sync_logs=sink.sync)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a recorded, explained status
        code = 1
        traceback.print_exc()
        sink.sync()  # the traceback is in the job's logs before the job reads as failed
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else _one_line(exc)
        platform.jobs.transition(job_id, FAILED, expect=[RUNNING], reason=reason)
    finally:
        sink.close()
        platform.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
