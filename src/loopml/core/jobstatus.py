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
