"""Status names of the things that run, each set defined once: store, API, SDK, CLI and the
control loop all import them from here (the SDK may import nothing but ``core``)."""

from __future__ import annotations

# jobs: queued → running → succeeded | failed | cancelled (queued → cancelled, too)
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
JOB_STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ACTIVE = (QUEUED, RUNNING)  # a job in one of these still holds (or waits for) a worker

# workflow executions (Step Functions' names)
EXECUTION_TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")
