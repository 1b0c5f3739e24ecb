"""SDK methods for jobs: submit training, evaluation and batch prediction, follow, wait, fetch output."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from loopml.core.errors import InvalidInput, LoopMLError, TimedOut
from loopml.core.jobstatus import TERMINAL
from loopml.sdk.files import FilesAPI
from loopml.sdk.http import segment


def _resources(cpus: float | None, memory_gb: float | None, gpus: float | None) -> dict[str, float] | None:
    given = {k: v for k, v in (("cpus", cpus), ("memory_gb", memory_gb), ("gpus", gpus)) if v is not None}
    return given or None


class JobsAPI(FilesAPI):
    """A local model file or prediction input is uploaded first (hence FilesAPI)."""

    def train(self, dataset: str | None = None, model: str | None = None, params: dict[str, Any] | None = None,
              register_as: str | None = None, time_limit_s: float | None = None,
              resume: str | None = None, register: bool = True, *, cpus: float | None = None,
              memory_gb: float | None = None, gpus: float | None = None) -> dict[str, Any]:
        """Submit a training job (validated before it is queued).

        Args:
            dataset: ``NAME`` or ``NAME:VERSION`` (taken from the original job when resuming).
            model: ``cnn``, ``rnn``, ``mlp``, a local ``.py`` file exposing
                ``build_model(hparams, schema)`` (uploaded first), or ``file:<key>``;
                default: the template for the dataset's kind (image→cnn, text→rnn, tabular→mlp).
            params: Hyperparameters, e.g. ``{"epochs": 3, "learning_rate": 1e-3}``.
            register_as: Model name to register the result under.
            time_limit_s: Stop after this many seconds. resume: Job id to resume from.
            register: False trains and uploads the model but registers no version (the result's
                ``model_ref`` is ``job:<id>``; evaluate it, then :meth:`register_trained`).
            cpus, memory_gb, gpus: What the job asks of its node (on a Ray cluster only a node with
                that much free runs it); default per kind (train: 1 CPU, 2 GB, no GPU).

        Returns:
            The queued job record (``id``, ``status``, ``spec``…).

        Example::

            job = c.train("mnist", "cnn", {"epochs": 1}, register_as="mnist-cnn")
        """
        if model and model.endswith(".py") and not model.startswith("file:"):
            model = "file:" + self.upload_file(model, kind="model")
        body = {"dataset": dataset, "model": model, "params": dict(params or {}), "register_as": register_as,
                "time_limit_s": time_limit_s, "resume": resume, "register": register,
                "resources": _resources(cpus, memory_gb, gpus)}
        return self._json("POST", "/jobs/train", json=body)

    def evaluate(self, models: dict[str, str], dataset: str, split: str = "test", metric: str = "accuracy",
                 min_improvement: float | None = None, *, cpus: float | None = None,
                 memory_gb: float | None = None, gpus: float | None = None) -> dict[str, Any]:
        """Submit an evaluation job: every model in ``models`` (label → ``NAME[:VERSION|@ALIAS]`` or
        ``job:<id>``) on the same rows of ``dataset``'s ``split``. With labels ``challenger`` and
        ``champion`` the result also says whether to ``promote`` (by ``min_improvement``) and why.
        ``cpus``, ``memory_gb``, ``gpus``: what the job asks of its node (as for :meth:`train`)."""
        body = {"models": models, "dataset": dataset, "split": split, "metric": metric,
                "min_improvement": min_improvement, "resources": _resources(cpus, memory_gb, gpus)}
        return self._json("POST", "/jobs/evaluate", json=body)

    def register_trained(self, job_id: str, name: str | None = None) -> dict[str, Any]:
        """Register the model of a succeeded ``register=False`` training job (idempotent)."""
        return self._json("POST", f"/jobs/{segment(job_id)}/register", json={"name": name})

    def predict(self, model: str, input: str | os.PathLike, limit: int | None = None, *,
                cpus: float | None = None, memory_gb: float | None = None,
                gpus: float | None = None) -> dict[str, Any]:
        """Submit a batch prediction.

        Args:
            model: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
            input: ``NAME[:VERSION]:SPLIT`` of a registered dataset (e.g. ``mnist:test``), a
                local npz/npy/csv/parquet file, or for image models a PNG/JPEG file, a folder or
                a .zip of images (uploaded; output rows name the file), or ``upload:<key>``.
                Checked against the model's input signature before the job is queued
                (``InvalidInput`` naming what the model takes).
            limit: Predict at most this many rows.
            cpus, memory_gb, gpus: What the job asks of its node (as for :meth:`train`).

        Returns:
            The queued job record; fetch the CSV with ``prediction_output`` once it succeeded.

        Example::

            job = c.wait(c.predict("mnist-cnn@prod", "mnist:test", limit=100)["id"])
            csv_bytes = c.prediction_output(job["id"])
        """
        spec = os.fspath(input)
        if not spec.startswith(("dataset:", "upload:")):
            if Path(spec).expanduser().exists():
                spec = "upload:" + self.upload_file(spec, kind="input")
            elif ":" not in spec:
                raise InvalidInput(f"input {spec!r} is not a file; use NAME[:VERSION]:SPLIT of a dataset "
                                   "(e.g. mnist:test) or a local file")
            else:
                spec = "dataset:" + spec
        return self._json("POST", "/jobs/predict", json={"model": model, "input": spec, "limit": limit,
                                                         "resources": _resources(cpus, memory_gb, gpus)})

    def cluster_status(self) -> dict[str, Any]:
        """Where jobs run: the executor, its nodes with their resources (total and free) and the
        jobs running on each (the local executor: this one host).

        Example::

            for node in c.cluster_status()["nodes"]:
                print(node["node"], node["alive"], [j["id"] for j in node["jobs"]])
        """
        return self._json("GET", "/cluster")

    def delete_job(self, id: str) -> dict[str, Any]:
        """Delete an ended job with its events, metrics, logs and files (``Conflict`` while it
        is queued or running). A model version it registered stays.

        Example::

            c.delete_job("job-0123456789")
        """
        return self._json("DELETE", f"/jobs/{segment(id)}")

    def job(self, id: str) -> dict[str, Any]:
        """A job with its status transitions (``events``) and per-epoch ``metrics``.

        Example::

            c.job("job-0123456789")["progress"]
        """
        return self._json("GET", f"/jobs/{segment(id)}")

    def jobs(self, status: str | None = None, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Jobs, newest first, optionally filtered by ``status`` and ``kind``
        (train, predict, evaluate, monitor or baseline).

        Example::

            running = c.jobs(status="running")
        """
        params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit}.items() if v is not None}
        return self._json("GET", "/jobs", params=params)

    def job_metrics(self, id: str) -> list[dict[str, Any]]:
        """Per-epoch metrics of a training job: ``[{"epoch": 1, "loss": …, "val_accuracy": …}, …]``.

        Example::

            best = min(c.job_metrics(job_id), key=lambda m: m["val_loss"])
        """
        return self._json("GET", f"/jobs/{segment(id)}/metrics")

    def logs(self, id: str, after: int = 0) -> dict[str, Any]:
        """Log lines with an id greater than ``after``.

        Returns:
            ``{"job_id", "status", "lines": [{"id", "at", "text"}], "next_after"}``

        Example::

            page = c.logs(job_id); page = c.logs(job_id, after=page["next_after"])
        """
        return self._json("GET", f"/jobs/{segment(id)}/logs", params={"after": after})

    def follow_logs(self, id: str, poll: float = 0.5) -> Iterator[str]:
        """Yield log lines as they are written, until the job has ended and all are read.

        Example::

            for line in c.follow_logs(job_id):
                print(line)
        """
        after = 0
        while True:
            page = self.logs(id, after=after)
            for line in page["lines"]:
                yield line["text"]
            after = page["next_after"]
            if not page["lines"]:
                if page["status"] in TERMINAL:
                    return
                time.sleep(poll)

    def cancel(self, id: str) -> dict[str, Any]:
        """Cancel a queued job at once, or ask a running one to stop.

        Example::

            c.cancel(job_id)["status"]  # "cancelled", or "running" with cancel_requested
        """
        return self._json("POST", f"/jobs/{segment(id)}/cancel")

    def wait(self, id: str, poll: float = 0.5, timeout: float | None = None,
             on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job has ended.

        Args:
            poll: Seconds between polls. timeout: Give up (TimedOut) after this many seconds.
            on_poll: Called with every job record read (progress display).

        Returns:
            The final job record (check ``status`` and ``reason``).

        Example::

            job = c.wait(c.train("digits", params={"epochs": 1})["id"], timeout=600)
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job(id)
            if on_poll is not None:
                on_poll(job)
            if job["status"] in TERMINAL:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimedOut(f"job {id} is still {job['status']} after {timeout:g}s")
            time.sleep(poll)

    def prediction_output(self, id: str) -> bytes:
        """The CSV a succeeded prediction job wrote (``Conflict`` before it succeeded).

        Example::

            print(c.prediction_output(job_id).decode()[:200])
        """
        return self._send("GET", f"/jobs/{segment(id)}/output").content

    def download_output(self, id: str, path: str | os.PathLike) -> Path:
        """Stream the prediction CSV into ``path`` (written whole or not at all).

        Returns:
            The path written.

        Example::

            c.download_output(job_id, "predictions.csv")
        """
        target = Path(path).expanduser()
        tmp = target.with_name(f".{target.name}.part")
        resp = self._send("GET", f"/jobs/{segment(id)}/output", stream=True)
        try:
            with tmp.open("wb") as f:
                for chunk in resp.iter_bytes():
                    f.write(chunk)
            os.replace(tmp, target)
        except httpx.TransportError as exc:
            raise LoopMLError(f"downloading the output of job {id} from {self.url} broke off: {exc}") from None
        finally:
            resp.close()
            tmp.unlink(missing_ok=True)
        return target
