"""SDK methods for model monitors, their runs, ground-truth labels and alerts."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from loopml.core.errors import InvalidInput, LoopMLError
from loopml.sdk.http import segment
from loopml.sdk.jobs import JobsAPI

_RUN_DONE = ("succeeded", "failed", "insufficient")


class MonitorsAPI(JobsAPI):
    """A monitor run and a baseline are jobs (hence JobsAPI: ``wait``)."""

    def create_monitor(self, name: str, endpoint: str, *, variant: str | None = None, schedule: str | None = None,
                       tz: str | None = None, window: str | int = "1h", min_samples: int = 200,
                       thresholds: dict[str, float] | list[str] | None = None,
                       webhooks: list[str] | None = None) -> dict[str, Any]:
        """Watch an endpoint's captured traffic: drift against the served model's baseline and,
        with uploaded labels, quality.

        Args:
            endpoint: An endpoint that captures traffic (``capture_percent`` > 0).
            variant: One of its variants (default: the first).
            schedule: Cron (``"*/5 * * * *"``) in ``tz`` (default UTC); without it, run on demand.
            window: How far back the first run looks (``"30m"``, ``"1h"``, ``"2d"``); later runs read
                everything since the previous one.
            min_samples: Decoded rows for the full tests; fewer: only already-decisive shifts are
                judged (an early verdict), else the run is ``insufficient``.
            thresholds: ``{"shift": 0.1, "js_distance": 0.1, "mmd": 0.02, "ks_pvalue": 0.05,
                "chi2_pvalue": 0.05, "mmd_pvalue": 0.05, "early_level": 0.01, "accuracy": 0.9}`` (any
                subset; ``psi`` adds an optional floor) or ``["shift=0.2", ...]``.
            webhooks: URLs POSTed a JSON body ``{"alert", "monitor", "endpoint", "run", ...}`` on
                every new alert.

        Example::

            c.create_monitor("mnist-drift", "mnist", schedule="*/5 * * * *", thresholds={"accuracy": 0.9})
        """
        body = {"name": name, "endpoint": endpoint, "variant": variant, "schedule": schedule, "tz": tz,
                "window": window, "min_samples": min_samples, "thresholds": thresholds, "webhooks": webhooks}
        return self._json("POST", "/monitors", json={k: v for k, v in body.items() if v is not None})

    def monitors(self) -> list[dict[str, Any]]:
        """Every monitor, by name, with its last run and the number of open alerts."""
        return self._json("GET", "/monitors")

    def monitor(self, name: str) -> dict[str, Any]:
        """One monitor with its last runs (``runs``), open alerts (``alerts``) and label count."""
        return self._json("GET", f"/monitors/{segment(name)}")

    def pause_monitor(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/monitors/{segment(name)}/pause")

    def resume_monitor(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/monitors/{segment(name)}/resume")

    def delete_monitor(self, name: str) -> dict[str, Any]:
        return self._json("DELETE", f"/monitors/{segment(name)}")

    def run_monitor(self, name: str, wait: bool = True, timeout: float = 900, poll: float = 0.5,
                    on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Run the monitor now. With ``wait`` (default) block until the run has ended and return
        its record (``status`` succeeded | insufficient | failed, ``violations``, ``summary``,
        ``report_key``); else return ``{"run", "job"}`` at once. ``on_poll`` gets the run's job
        record at every poll (progress display).

        Example::

            run = c.run_monitor("mnist-drift")
            print(run["status"], [v["key"] for v in run["violations"]])
        """
        answer = self._json("POST", f"/monitors/{segment(name)}/runs")
        if not wait:
            return answer
        run_id, job_id = answer["run"]["id"], answer["job"]["id"]
        deadline = time.monotonic() + timeout
        job = self.wait(job_id, poll=poll, timeout=timeout, on_poll=on_poll)
        while True:  # the job ends right after the run row is written; both are normally final here
            run = self.monitor_run(name, run_id)
            if run["status"] in _RUN_DONE:
                return run
            if job["status"] in ("failed", "cancelled") or time.monotonic() >= deadline:
                raise LoopMLError(f"monitor {name} run {run_id} is still {run['status']}; its job {job_id} "
                                  f"is {job['status']}" + (f": {job.get('reason')}" if job.get("reason") else ""))
            time.sleep(poll)

    def monitor_runs(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The monitor's runs, newest first."""
        return self._json("GET", f"/monitors/{segment(name)}/runs", params={"limit": limit})

    def monitor_run(self, name: str, run_id: str) -> dict[str, Any]:
        return self._json("GET", f"/monitors/{segment(name)}/runs/{segment(run_id)}")

    def monitor_report(self, name: str, run_id: str, format: str = "json") -> Any:
        """The run's report: a dict (``format="json"``) or the self-contained HTML page (a str)."""
        if format not in ("json", "html"):
            raise InvalidInput(f"format must be json or html, got {format!r}")
        resp = self._send("GET", f"/monitors/{segment(name)}/runs/{segment(run_id)}/report", params={"format": format})
        return resp.json() if format == "json" else resp.text

    def upload_labels(self, name: str, file_or_rows: str | os.PathLike | list[dict[str, Any]],
                      format: str | None = None) -> dict[str, Any]:
        """Upload true labels keyed by inference id: a csv (header ``inference_id,label``) or jsonl
        file, or a list of ``{"inference_id", "label"}``. A re-upload replaces a label.

        Returns:
            ``{"received", "stored", "invalid", "unknown_ids": {"count", "first"}, "labels"}``
        """
        if isinstance(file_or_rows, (list, tuple)):
            return self._json("POST", f"/monitors/{segment(name)}/labels", json={"labels": list(file_or_rows)})
        path = Path(file_or_rows).expanduser()
        if not path.is_file():
            raise InvalidInput(f"labels file {os.fspath(file_or_rows)!r} does not exist")
        with path.open("rb") as f:
            return self._json("POST", f"/monitors/{segment(name)}/labels", files={"file": (path.name, f)},
                              data={"format": format} if format else None)

    def labelled_dataset(self, name: str, dataset: str, extend: bool = True, min_labels: int = 100) -> dict[str, Any]:
        """Register monitor ``name``'s labelled captured requests (true labels uploaded with
        :meth:`upload_labels`) as a new version of ``dataset`` — appended to its newest version
        with ``extend``. Raises Conflict while fewer than ``min_labels`` are labelled.

        Returns:
            The dataset version record (``ref``, ``rows``, …) + ``labelled`` and ``skipped`` counts.
        """
        return self._json("POST", f"/monitors/{segment(name)}/dataset",
                          json={"dataset": dataset, "extend": extend, "min_labels": min_labels})

    def baseline(self, model_ref: str, wait: bool = False, timeout: float = 900,
                 dataset: str | None = None) -> dict[str, Any]:
        """Compute (backfill) the baseline of ``MODEL:VERSION``: returns the job (the final one with ``wait``).
        ``dataset``: ``NAME[:VERSION]`` to profile instead of the training data (an imported version has none)."""
        body = {"model": model_ref, **({"dataset": dataset} if dataset else {})}
        job = self._json("POST", "/monitors/baselines", json=body)
        return self.wait(job["id"], timeout=timeout) if wait else job

    def alerts(self, open: bool | None = None, monitor: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Alerts, newest first; ``open=True`` only the open ones, ``monitor`` only that monitor's."""
        params: dict[str, Any] = {"limit": limit}
        if open is not None:
            params["open"] = "true" if open else "false"
        if monitor:
            params["monitor"] = monitor
        return self._json("GET", "/alerts", params=params)

    def alert(self, id: str) -> dict[str, Any]:
        """One alert: key, status, statistic, count, first/last seen, notifications."""
        return self._json("GET", f"/alerts/{segment(id)}")

    def ack_alert(self, id: str, actor: str | None = None) -> dict[str, Any]:
        """Acknowledge an open alert: it stays open (``acked_at``/``acked_by`` set) until it recovers
        or is resolved. Conflict for a resolved one."""
        return self._json("POST", f"/alerts/{segment(id)}/ack", headers={"X-LoopML-Actor": actor} if actor else None)

    def resolve_alert(self, id: str, actor: str | None = None) -> dict[str, Any]:
        """Close an open alert by hand (``resolved_by`` set); the next violation of its key opens a
        new alert. Conflict when it is already resolved."""
        return self._json("POST", f"/alerts/{segment(id)}/resolve",
                          headers={"X-LoopML-Actor": actor} if actor else None)
