"""Status names of the things that run, each set defined once: store, API, SDK, CLI and the
control loop all import them from here (the SDK may import nothing but ``core``)."""

from __future__ import annotations

# jobs: queued → running → succeeded | failed | cancelled (queued → cancelled, too)
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)  # a job in one of these still holds (or waits for) a worker

# workflow executions (Step Functions' names)
EXEC_PENDING, EXEC_RUNNING, EXEC_SUCCEEDED, EXEC_FAILED, EXEC_TIMED_OUT, EXEC_ABORTED = (
    "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
EXECUTION_TERMINAL = (EXEC_SUCCEEDED, EXEC_FAILED, EXEC_TIMED_OUT, EXEC_ABORTED)
EXECUTION_ACTIVE = (EXEC_PENDING, EXEC_RUNNING)

# function invocations: queued → running → succeeded | failed
INVOCATION_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED)
INVOCATION_TERMINAL = (SUCCEEDED, FAILED)

# tuning jobs (SageMaker's InProgress/Stopping/Completed/Stopped/Failed, in LoopML's words)
TUNING_RUNNING, TUNING_STOPPING, TUNING_SUCCEEDED, TUNING_STOPPED, TUNING_FAILED = (
    "running", "stopping", "succeeded", "stopped", "failed")
TUNING_STATUSES = (TUNING_RUNNING, TUNING_STOPPING, TUNING_SUCCEEDED, TUNING_STOPPED, TUNING_FAILED)
TUNING_ACTIVE = (TUNING_RUNNING, TUNING_STOPPING)
TUNING_TERMINAL = (TUNING_SUCCEEDED, TUNING_STOPPED, TUNING_FAILED)
# a tuning job's trials: each is one training job
TRIAL_RUNNING, TRIAL_COMPLETE, TRIAL_PRUNED, TRIAL_FAILED, TRIAL_STOPPED = (
    "running", "complete", "pruned", "failed", "stopped")
TRIAL_STATES = (TRIAL_RUNNING, TRIAL_COMPLETE, TRIAL_PRUNED, TRIAL_FAILED, TRIAL_STOPPED)
