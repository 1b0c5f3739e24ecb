"""One step of a tuning job, run by the control plane every tick (controlplane/tuning.py).

Reads each running trial's training job: new per-epoch metrics go to the pruner (a pruned trial's job
is cancelled through the ordinary cancel path), a finished job's objective goes to the sampler. Then
new trials are asked for up to ``parallel`` running jobs and ``max_trials`` in all; when the budget
is spent, the target reached or a stop requested and no trial job is left running, the tuning job
ends and its best trial's model is registered (``register_as``). Every decision is written to the
store before the next one, so a control plane started afresh rebuilds the same search.
"""

from __future__ import annotations

import logging
from typing import Any

from loopml.core.errors import Conflict, LoopMLError, NotFound
from loopml.core.jobstatus import (ACTIVE, CANCELLED, SUCCEEDED, TRIAL_COMPLETE, TRIAL_FAILED, TRIAL_PRUNED,
                                   TRIAL_RUNNING, TRIAL_STOPPED, TUNING_FAILED, TUNING_STOPPED, TUNING_STOPPING,
                                   TUNING_SUCCEEDED)
from loopml.platform import Platform
from loopml.registry.registration import register_trained
from loopml.tuning.service import trial_job_id
from loopml.tuning.space import better, per_epoch_metric, reached
from loopml.tuning.study import Search, rebuild

log = logging.getLogger("loopml.tuning")


def submit_trial(platform: Platform, name: str, spec: dict[str, Any], number: int,
                 params: dict[str, Any]) -> dict[str, Any]:
    """The trial's training job: an ordinary train job (logs, curves, checkpoints) that registers
    nothing; the best trial's bundle is registered when the search ends."""
    from loopml.training.service import submit_training

    job_id = trial_job_id(name, number)
    try:
        return submit_training(platform, dataset=spec["dataset"], model=spec["model"],
                               params={**spec["params"], **params}, register_as=spec["bundle_name"],
                               register=False, job_id=job_id, resources=spec.get("resources"))
    except Conflict:  # queued before a restart: the same trial, never a second job
        return platform.jobs.get(job_id)


def final_value(spec: dict[str, Any], job: dict[str, Any], epochs: list[dict[str, Any]]) -> float | None:
    """The objective of the model the job ended with: test_* from its evaluation; a per-epoch metric
    at the epoch whose weights it kept (best_epoch with restore_best, else the last)."""
    objective = spec["objective"]
    metrics = (job.get("result") or {}).get("metrics") or {}
    if objective.startswith("test_"):
        return metrics.get(objective)
    epoch = metrics.get("best_epoch") or metrics.get("epochs")
    for row in epochs:
        if row["epoch"] == epoch and row.get(objective) is not None:
            return row[objective]
    return metrics.get(objective)


def best_trial(spec: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    best = None
    for row in rows:
        if row["state"] == TRIAL_COMPLETE and row["value"] is not None:
            if best is None or better(spec["direction"], row["value"], best["value"]):
                best = row
    return best


def summary(spec: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = best_trial(spec, rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    out: dict[str, Any] = {"objective": spec["objective"], "trials": counts}
    if best is not None:
        out["best"] = {"trial": best["number"], "job_id": best["job_id"], "value": best["value"],
                       "params": best["params"]}
    return out


class Advancer:
    """Holds each active tuning job's rebuilt study between ticks (a cache: the store decides)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.searches: dict[str, Search] = {}

    def forget(self, name: str) -> None:
        self.searches.pop(name, None)

    def step(self, name: str) -> bool:
        """Advance one tuning job; True when it queued trials."""
        platform = self.platform
        record = platform.tuning.get(name)
        spec = record["spec"]
        rows = platform.tuning.trials(name)
        search = self.searches.get(name)
        if search is None:
            search = self.searches[name] = rebuild(name, spec, rows)
            if any(r["state"] == TRIAL_RUNNING for r in rows):
                log.warning("tuning job %s: re-attached %d running trial(s)", name, len(search.running))
        stopping = record["status"] == TUNING_STOPPING
        jobs = {row["number"]: self._observe(search, name, spec, row, stopping) for row in rows}

        best = best_trial(spec, rows)
        target_hit = (spec.get("target") is not None and best is not None
                      and reached(spec["direction"], best["value"], spec["target"]))
        winding_down = stopping or target_hit
        if target_hit:
            for row in rows:
                if row["state"] == TRIAL_RUNNING:
                    self._end(search, name, row, TRIAL_STOPPED, cancel=True)

        started = 0
        if not winding_down:
            active = sum(1 for job in jobs.values() if job is not None and job["status"] in ACTIVE)
            while len(rows) < spec["max_trials"] and active < spec["parallel"]:
                rows.append(self._start_trial(search, name, spec, len(rows) + 1))
                jobs[rows[-1]["number"]] = None
                active += 1
                started += 1

        result = summary(spec, rows)
        if result != record["result"]:
            platform.tuning.set_result(name, result)
        budget_spent = len(rows) >= spec["max_trials"]
        # a trial job deleted after its trial ended is no longer busy
        busy = any(r["state"] == TRIAL_RUNNING for r in rows) or any(
            job is not None and job["status"] in ACTIVE for job in (self._job(r["job_id"]) for r in rows))
        if (winding_down or budget_spent) and not busy:
            self._finish(name, spec, rows, result, stopped=stopping, target_hit=target_hit)
        return started > 0

    # -- trials ---------------------------------------------------------------------------------
    def _job(self, job_id: str) -> dict[str, Any] | None:
        try:
            return self.platform.jobs.get(job_id)
        except NotFound:
            return None

    def _start_trial(self, search: Search, name: str, spec: dict[str, Any], number: int) -> dict[str, Any]:
        trial, params = search.ask()
        row = self.platform.tuning.add_trial(name, number, trial_job_id(name, number), params,
                                             system_attrs=search.system_attrs(trial))
        search.running[number] = trial
        try:
            submit_trial(self.platform, name, search.spec, number, params)
        except LoopMLError as exc:  # e.g. the dataset was deleted: the trial fails, the search goes on
            log.warning("tuning job %s: trial %d could not be queued: %s", name, number, exc)
            self._end(search, name, row, TRIAL_FAILED)
        return row

    def _observe(self, search: Search, name: str, spec: dict[str, Any], row: dict[str, Any],
                 stopping: bool) -> dict[str, Any] | None:
        """One running trial: report its new epochs, then complete, fail, prune or stop it."""
        if row["state"] != TRIAL_RUNNING:
            return self._job(row["job_id"])
        job = self._job(row["job_id"])
        if job is None:  # recorded, never queued (a crash in between): queue it now
            try:
                job = submit_trial(self.platform, name, spec, row["number"], row["params"])
            except LoopMLError as exc:
                log.warning("tuning job %s: trial %d could not be queued: %s", name, row["number"], exc)
                self._end(search, name, row, TRIAL_FAILED)
                return None
        trial = search.running[row["number"]]
        metric = per_epoch_metric(spec["objective"])
        epochs = self.platform.jobs.metrics(row["job_id"])
        new = {m["epoch"]: m.get(metric) for m in epochs
               if str(m["epoch"]) not in row["intermediate"] and m.get(metric) is not None}
        if new:
            search.report(trial, new)
            row["intermediate"] = {**row["intermediate"], **{str(k): v for k, v in new.items()}}
        if stopping:
            self._end(search, name, row, TRIAL_STOPPED, cancel=True)
        elif job["status"] == SUCCEEDED:
            value = final_value(spec, job, epochs)
            self._end(search, name, row, TRIAL_COMPLETE if value is not None else TRIAL_FAILED, value=value)
        elif job["status"] == CANCELLED:
            self._end(search, name, row, TRIAL_STOPPED)
        elif job["status"] not in ACTIVE:
            self._end(search, name, row, TRIAL_FAILED)
        elif new and trial.should_prune():
            last = new[max(new)]
            log.info("tuning job %s: trial %d pruned at epoch %d (%s %s)", name, row["number"], max(new), metric, last)
            self._end(search, name, row, TRIAL_PRUNED, value=last, cancel=True)
        elif new:
            self.platform.tuning.update_trial(name, row["number"], intermediate=row["intermediate"],
                                              system_attrs=search.system_attrs(trial))
        return job

    def _end(self, search: Search, name: str, row: dict[str, Any], state: str, *, value: float | None = None,
             cancel: bool = False) -> None:
        trial = search.running[row["number"]]
        if cancel:
            job = self._job(row["job_id"])
            if job is not None and job["status"] in ACTIVE:
                self.platform.jobs.request_cancel(row["job_id"])
        search.tell(row["number"], state, value)
        attrs = search.system_attrs(trial)
        self.platform.tuning.update_trial(name, row["number"], state=state, value=value,
                                          intermediate=row["intermediate"], system_attrs=attrs)
        row.update(state=state, value=value, system_attrs=attrs)

    # -- the end --------------------------------------------------------------------------------
    def _finish(self, name: str, spec: dict[str, Any], rows: list[dict[str, Any]], result: dict[str, Any], *,
                stopped: bool, target_hit: bool) -> None:
        best = best_trial(spec, rows)
        reason = None
        if stopped:
            status, reason = TUNING_STOPPED, "stopped by request"
        elif best is None:
            status, reason = TUNING_FAILED, f"no trial completed ({_counted(result['trials'])})"
        else:
            status = TUNING_SUCCEEDED
            if target_hit:
                reason = f"target {spec['objective']} {spec['target']:g} reached by trial {best['number']}"
            if spec.get("register_as"):
                try:
                    version = register_trained(self.platform, best["job_id"], spec["register_as"])
                    result = {**result, "model": {"name": version["name"], "version": version["version"],
                                                  "ref": version["ref"]}}
                except LoopMLError as exc:
                    status, reason = TUNING_FAILED, f"registering the best trial ({best['job_id']}) failed: {exc}"
        self.platform.tuning.finish(name, status, reason=reason, result=result)
        self.forget(name)
        log.info("tuning job %s %s%s", name, status, f": {reason}" if reason else "")


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no trial ran"
