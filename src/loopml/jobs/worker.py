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


# TensorFlow refuses to change its runtime configuration once it has run an op (RuntimeError
# "Intra op parallelism cannot be modified after initialization.", "Visible devices cannot be
# modified after being initialized", …). A warm worker has run ops before it got its job.
_TF_RUNTIME_FROZEN = "cannot be modified after"
WARM_TF_HINT = ("this warm worker initialised TensorFlow before it got the job, so the model cannot configure "
                "TensorFlow's runtime (tf.config.threading.*, set_memory_growth, set_visible_devices) here: "
                "run such jobs with LOOPML_WARM_WORKERS=0 on the control plane (every worker then starts cold)")


def failure_reason(exc: BaseException, warm: bool = False) -> str:
    """The one line a failed job records: the exception, plus the way out when it is a model
    configuring TensorFlow's runtime in a warm worker (where that cannot work)."""
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else _one_line(exc)
    return f"{reason[:300]} ({WARM_TF_HINT})" if warm and _tf_runtime_frozen(exc) else reason


def _tf_runtime_frozen(exc: BaseException | None) -> bool:
    """Anywhere in the exception's chain: TensorFlow refusing a runtime configuration change."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if _TF_RUNTIME_FROZEN in str(exc):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


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


def main(argv: list[str] | None = None, warm: bool = False) -> int:
    """``warm``: this process is a spare (jobs/warm.py) that imported and warmed up TensorFlow
    before it was handed the job."""
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
        if warm and _tf_runtime_frozen(exc):
            print(WARM_TF_HINT[0].upper() + WARM_TF_HINT[1:], flush=True)  # in the job's logs too
        sink.sync()  # the traceback is in the job's logs before the job reads as failed
        platform.jobs.transition(job_id, FAILED, expect=[RUNNING], reason=failure_reason(exc, warm))
    finally:
        sink.close()
        platform.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
