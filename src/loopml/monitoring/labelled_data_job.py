"""The ``labelled-data`` job: a monitor's labelled captured requests as a dataset version, in a
worker process (it may read 30 days of capture, which must not hold up the control loop).

``submit`` queues it (the workflow action ``loopml:labelled-data`` does); ``run`` is the worker's
runner around ``monitoring.labelled_data.labelled_dataset``. Too few labels is an ordinary outcome,
not a crash: the job fails with ``result = {"error": "Monitor.NotEnoughLabels", "cause": …}`` so
the workflow can raise that ASL error (and a Retry waits for labels to arrive).
"""

from __future__ import annotations

from typing import Any, Callable

from loopml.core.errors import InvalidInput
from loopml.core.jobstatus import FAILED, RUNNING, SUCCEEDED
from loopml.platform import Platform


def submit(platform: Platform, *, monitor: str, dataset: str, extend: bool = True, min_labels: int = 100,
           job_id: str | None = None) -> dict[str, Any]:
    """Queue the job after every check that needs no capture read (the monitor exists, the
    dataset name, extend, min_labels), so a bad value never costs a worker."""
    from loopml.core.names import dataset_name
    from loopml.monitoring.labelled_data import min_labels_value

    platform.monitors.get(monitor)
    if not isinstance(dataset, str) or not dataset.strip():
        raise InvalidInput("dataset: name the dataset the labelled requests go to")
    if not isinstance(extend, bool):
        raise InvalidInput(f"extend must be true or false, got {extend!r}")
    spec = {"monitor": monitor, "dataset": dataset_name(dataset.strip()), "extend": extend,
            "min_labels": min_labels_value(min_labels)}
    return platform.jobs.create("labelled-data", spec, job_id=job_id)


def run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None] = lambda: None) -> None:
    from loopml.monitoring.labelled_data import NotEnoughLabels, labelled_dataset

    spec = job["spec"]
    print(f"monitor {spec['monitor']}: labelled requests -> dataset {spec['dataset']}", flush=True)
    try:
        record = labelled_dataset(platform, spec["monitor"], spec["dataset"], extend=spec.get("extend", True),
                                  min_labels=spec.get("min_labels", 100))
    except NotEnoughLabels as exc:
        print(exc.message, flush=True)
        sync_logs()
        platform.jobs.transition(job["id"], FAILED, expect=[RUNNING], reason=exc.message,
                                 result={"error": NotEnoughLabels.asl_error, "cause": exc.message})
        return
    result = {"ref": record["ref"], "dataset": record["name"], "version": record["version"],
              "rows": record["rows"], "labelled": record["labelled"], "created": record["created"],
              "skipped": record.get("skipped") or {}}
    print(f"{record['ref']}: {record['labelled']} labelled requests", flush=True)
    sync_logs()
    platform.jobs.transition(job["id"], SUCCEEDED, expect=[RUNNING], result=result)
