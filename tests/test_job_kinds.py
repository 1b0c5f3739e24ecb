"""The one table of job kinds (core.jobkinds) drives the worker, the API enum and the CLI choices;
a worker takes its settings from the environment and only the job id on its command line."""

from __future__ import annotations

import importlib
import subprocess
import sys
from dataclasses import fields, is_dataclass

import pytest

from loopml.core.errors import InvalidInput
from loopml.core.jobkinds import JOB_KINDS, KINDS
from loopml.core.jobstatus import FAILED, JOB_STATUSES, RUNNING, TERMINAL


def _resolve(ref: str):
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def test_every_kind_names_a_real_submit_function_runner_and_params_schema() -> None:
    assert JOB_KINDS == ("train", "predict", "evaluate", "monitor", "baseline", "labelled-data")
    for kind in KINDS.values():
        assert callable(_resolve(kind.submit)), kind.submit
        runner = _resolve(kind.runner)
        assert "sync_logs" in runner.__code__.co_varnames, f"{kind.runner} takes no sync_logs"
        assert is_dataclass(kind.params) and kind.params.__dataclass_params__.frozen
        assert set(kind.required()) <= {f.name for f in fields(kind.params)}
        for keyword, ref in kind.hooks.items():
            assert callable(_resolve(ref)) and keyword in runner.__code__.co_varnames, (kind.name, keyword)
        assert kind.warmup is None or callable(_resolve(kind.warmup)), kind.warmup
    assert KINDS["labelled-data"].required() == ("monitor", "dataset")
    # train writes the version's monitoring baseline through a hook: training imports no monitoring
    assert KINDS["train"].hooks == {"baseline": "loopml.monitoring.baseline_job:write_training_baseline"}
    # a spare worker trains a throwaway model before it has a job (jobs/warm.py)
    assert KINDS["train"].warmup == "loopml.training.warmup:warm_up"


def test_api_and_cli_enums_come_from_the_table() -> None:
    from typing import get_args

    from loopml.api.jobs import Kind, Status
    from loopml.cli.jobs import Kind as CliKind, Status as CliStatus

    assert get_args(Kind) == JOB_KINDS and [k.value for k in CliKind] == list(JOB_KINDS)
    assert get_args(Status) == JOB_STATUSES and [s.value for s in CliStatus] == list(JOB_STATUSES)
    assert set(TERMINAL) < set(JOB_STATUSES)


def test_a_worker_reads_its_settings_from_the_environment_and_checks_the_spec(platform) -> None:
    job_id = platform.jobs.create("labelled-data", {"dataset": "d"})["id"]
    assert platform.jobs.transition(job_id, RUNNING, expect=["queued"])
    env = platform.settings.child_env("worker")
    proc = subprocess.run([sys.executable, "-m", "loopml.jobs.worker", job_id], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    job = platform.jobs.get(job_id)
    assert job["status"] == FAILED and "spec lacks monitor" in job["reason"]
    assert any("spec lacks monitor" in row["text"] for row in platform.jobs.logs(job_id))  # the traceback


def test_the_labelled_data_task_runs_as_a_job_and_too_few_labels_is_its_asl_error(platform) -> None:
    """loopml:labelled-data submits a job (the capture read happens in a worker, not on the control
    loop's thread); a worker finding too few labels fails it with Monitor.NotEnoughLabels, which the
    task reports as that error (so the retrain template's Retry waits for labels)."""
    from loopml.core.timeutil import utcnow
    from loopml.workflows.actions import TaskContext, action_for

    variant = {"name": "primary", "model": "digits", "version": 1, "weight": 1.0}
    platform.endpoints.create("ep", {"variants": [variant]}, {"variants": [variant]})
    platform.monitors.create("mon", endpoint="ep", variant=None, schedule=None, tz="UTC", window_s=3600,
                             min_samples=10, thresholds={}, webhooks=[], next_run_at=None)
    ctx = TaskContext(platform, "exec-1", "token-1", "CollectLabelled", utcnow())
    action = action_for("loopml:labelled-data")
    handle = action.start(ctx, {"monitor": "mon", "dataset": "live", "min_labels": 5})
    job = platform.jobs.get(handle["job_id"])
    assert (job["kind"], job["status"]) == ("labelled-data", "queued")
    assert action.poll(ctx, handle) is None  # nothing ran on the caller's thread
    assert action.start(ctx, {"monitor": "mon", "dataset": "live"}) == handle  # idempotent start

    assert platform.jobs.transition(job["id"], RUNNING, expect=["queued"])
    proc = subprocess.run([sys.executable, "-m", "loopml.jobs.worker", job["id"]],
                          env=platform.settings.child_env("worker"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    outcome = action.poll(ctx, handle)
    assert outcome is not None and outcome.error == "Monitor.NotEnoughLabels"
    assert outcome.cause.startswith("0 labelled requests, 5 needed")
    # a bad dataset name or min_labels never costs a worker: refused before any job is queued
    before = len(platform.jobs.list(kind="labelled-data"))
    for bad in ({"dataset": "Not Valid"}, {"dataset": "live", "min_labels": "abc"}):
        other = TaskContext(platform, "exec-2", "token-2", "CollectLabelled", utcnow())
        with pytest.raises(InvalidInput) as refused:
            action.start(other, {"monitor": "mon", **bad})
        assert "dataset name" in str(refused.value) or "min_labels" in str(refused.value)
    assert len(platform.jobs.list(kind="labelled-data")) == before
