"""SDK methods for hyperparameter tuning jobs: start, list, show, follow, stop, trials."""

from __future__ import annotations

import time
from typing import Any, Callable

from loopml.core.errors import TimedOut
from loopml.core.jobstatus import TUNING_TERMINAL
from loopml.sdk.http import segment
from loopml.sdk.jobs import JobsAPI, _resources


class TuningAPI(JobsAPI):
    """Every trial is a training job (hence JobsAPI: ``job``, ``logs``, ``wait`` work on trials)."""

    def tune(self, dataset: str, space: list[str] | dict[str, str], *, model: str | None = None,
             objective: str = "val_accuracy", strategy: str = "bayesian", max_trials: int = 10, parallel: int = 2,
             early_stopping: str = "off", warm_start: list[str] | None = None, target: float | None = None,
             register_as: str | None = None, params: dict[str, Any] | None = None, seed: int = 0,
             name: str | None = None, cpus: float | None = None, memory_gb: float | None = None,
             gpus: float | None = None) -> dict[str, Any]:
        """Start a hyperparameter tuning job (validated before it is stored).

        Args:
            dataset: ``NAME`` or ``NAME:VERSION``; every trial trains on the same version.
            space: ``["learning_rate=loguniform(1e-4,1e-2)", "filters=choice(16,32,64)",
                "dropout=uniform(0,0.5)"]`` (or a dict NAME → FUNCTION(ARGS)); functions uniform,
                loguniform, int, choice.
            objective: ``val_accuracy`` (default), ``val_loss``, ``accuracy``, ``loss``, ``test_accuracy``,
                ``test_loss`` or ``test_macro_f1``; losses are minimised.
            strategy: ``bayesian`` (TPE), ``random``, ``grid`` (choice dimensions only) or ``hyperband``.
            max_trials: Trials in all. parallel: Trials at once.
            early_stopping: ``auto`` stops a trial worse than the median at the same epoch (hyperband
                always stops unpromising trials).
            warm_start: Earlier tuning jobs whose completed trials seed the search.
            target: End the search once a trial reaches this objective value.
            register_as: Register the best trial's model under this name when the search ends.
            params: Fixed hyperparameters of every trial, e.g. ``{"epochs": 3}``.
            name: The tuning job's name (default ``tune-<random>``); trials are jobs ``NAME-001``, ….
            cpus, memory_gb, gpus: What every trial's job asks of its node (as for :meth:`train`).

        Returns:
            The tuning job record (``name``, ``status``, ``spec``, ``trials``…).

        Example::

            t = c.tune("mnist", ["learning_rate=loguniform(1e-4,1e-2)"], strategy="hyperband",
                       max_trials=20, parallel=4, params={"epochs": 5}, register_as="mnist-tuned")
            final = c.wait_tuning(t["name"])
            print(final["result"]["best"])
        """
        body = {"name": name, "dataset": dataset, "model": model, "space": space, "objective": objective,
                "strategy": strategy, "max_trials": max_trials, "parallel": parallel,
                "early_stopping": early_stopping, "warm_start": warm_start, "target": target,
                "register_as": register_as, "params": dict(params or {}), "seed": seed,
                "resources": _resources(cpus, memory_gb, gpus)}
        return self._json("POST", "/tuning", json=body)

    def tuning_jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        """Tuning jobs, newest first, with their trial counts and best trial so far."""
        return self._json("GET", "/tuning", params={"status": status} if status else None)

    def tuning_job(self, name: str) -> dict[str, Any]:
        """One tuning job with its trials (``trials``: number, job_id, params, state, value, job_status)."""
        return self._json("GET", f"/tuning/{segment(name)}")

    def tuning_trials(self, name: str) -> list[dict[str, Any]]:
        """The trials of a tuning job, in the order they were started."""
        return self._json("GET", f"/tuning/{segment(name)}/trials")

    def stop_tuning(self, name: str) -> dict[str, Any]:
        """Stop a tuning job: no new trials, running trials cancelled (its best so far is not registered)."""
        return self._json("POST", f"/tuning/{segment(name)}/stop")

    def delete_tuning(self, name: str) -> dict[str, Any]:
        """Delete an ended tuning job and its trial records; its trial jobs are kept (``kept_jobs``),
        delete them with :meth:`delete_job`. Conflict while it is running: stop it first."""
        return self._json("DELETE", f"/tuning/{segment(name)}")

    def wait_tuning(self, name: str, poll: float = 1.0, timeout: float | None = None,
                    on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the tuning job has ended; returns its final record (check ``status``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.tuning_job(name)
            if on_poll is not None:
                on_poll(record)
            if record["status"] in TUNING_TERMINAL:
                return record
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"tuning job {name} is still {record['status']} after {timeout:g}s")
            time.sleep(poll)
