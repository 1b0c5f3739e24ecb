"""Worker entry point: ``python -m loopml.training.worker JOB_ID --database-url URL --artifact-uri URI``.

Self-describing: the job id and the two store locations are all a worker needs, so the same
command runs under the local executor or on another node. The worker owns the job's outcome
(succeeded / failed / cancelled); the control plane only notices workers that vanish.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")[:500]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loopml-worker")
    parser.add_argument("job_id")
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--artifact-uri", required=True)
    parser.add_argument("--s3-endpoint-url", default=None)
    parser.add_argument("--echo", action="store_true", help="also copy the job's output to this terminal")
    args = parser.parse_args(argv)

    from loopml.core.errors import LoopMLError
    from loopml.core.settings import Settings
    from loopml.platform import Platform
    from loopml.store.jobs_repo import FAILED, RUNNING
    from loopml.training.logsink import LogSink

    settings = Settings(database_url=args.database_url, artifact_uri=args.artifact_uri,
                        s3_endpoint_url=args.s3_endpoint_url)
    platform = Platform(settings, create_schema=False)
    job_id = args.job_id
    job = platform.jobs.get(job_id)
    if job["status"] != RUNNING:
        return 0  # cancelled (or finished) before this process got going
    sink = LogSink(lambda lines: platform.jobs.append_logs(job_id, lines),
                   echo_fd=os.dup(1) if args.echo else None).start()
    code = 0
    try:
        print(f"worker pid {os.getpid()} on {os.uname().nodename}: {job['kind']} job {job_id}", flush=True)
        if job["kind"] == "train":
            from loopml.monitoring.baseline_job import write_training_baseline
            from loopml.training import train_runner

            # the version's monitoring baseline is written with its bundle (training never imports monitoring)
            train_runner.run(platform, job, sync_logs=sink.sync, baseline=write_training_baseline)
        elif job["kind"] == "predict":
            from loopml.training import predict_runner

            predict_runner.run(platform, job, sync_logs=sink.sync)
        elif job["kind"] == "evaluate":
            from loopml.training import evaluate_runner

            evaluate_runner.run(platform, job, sync_logs=sink.sync)
        elif job["kind"] == "monitor":
            from loopml.monitoring import run as monitor_run

            monitor_run.run(platform, job)
        elif job["kind"] == "baseline":
            from loopml.monitoring import baseline_job

            baseline_job.run(platform, job)
        else:
            raise LoopMLError(f"unknown job kind {job['kind']!r}")
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
