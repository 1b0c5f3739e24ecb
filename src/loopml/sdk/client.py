"""Python client for the LoopML control plane (what the CLI uses, too).

Only httpx and LoopML's settings/errors are imported here: no store, no Keras, no numpy, so
``from loopml import Client`` stays light enough for notebooks and scripts.

Example::

    from loopml import Client

    c = Client()                                   # LOOPML_API_URL / LOOPML_TOKEN, else localhost:8080
    c.add_dataset("mnist", "sample:mnist")
    job = c.wait(c.train("mnist", model="cnn", params={"epochs": 2})["id"])
    print(job["status"], job["result"]["model"])
"""

from __future__ import annotations

import io
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx

from loopml import __version__
from loopml.core import FOLDER_ZIP_COMMENT
from loopml.core.errors import InvalidInput, LoopMLError, error_from_dict
from loopml.core.jobstatus import TERMINAL
from loopml.sdk.functions import FunctionsAPI
from loopml.sdk.monitors import MonitorsAPI
from loopml.sdk.triggers import TriggersAPI
from loopml.sdk.workflows import WorkflowsAPI

_REMOTE_PREFIXES = ("sample:", "s3://", "s3a://", "gs://", "http://", "https://", "file:")


def _visible(name: str) -> bool:
    return not (name.startswith(".") or name in ("__MACOSX", "__pycache__"))


def zip_folder(folder: str | os.PathLike) -> bytes:
    """The folder as an in-memory zip whose entries sit under the folder's own name."""
    root = Path(folder)
    top = root.resolve().name or "data"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.comment = FOLDER_ZIP_COMMENT
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if _visible(d))
            for fname in sorted(f for f in filenames if _visible(f)):
                path = Path(dirpath) / fname
                zf.write(path, f"{top}/{path.relative_to(root).as_posix()}")
    return buf.getvalue()


class _Counted:
    """A seekable binary file that reports (bytes read, size) as httpx streams it out."""

    def __init__(self, f: Any, callback: Callable[[int, int], None] | None) -> None:
        self._f, self._callback = f, callback
        self._size = f.seek(0, os.SEEK_END)
        f.seek(0)

    def read(self, n: int = -1) -> bytes:
        chunk = self._f.read(n)
        if self._callback is not None:
            self._callback(self._f.tell(), self._size)
        return chunk

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()


class _Keep:
    def __repr__(self) -> str:
        return "<unchanged>"


_KEEP: Any = _Keep()  # update_endpoint(shadow=...) left out: keep the shadow


class Client(FunctionsAPI, TriggersAPI, WorkflowsAPI, MonitorsAPI):
    """A connection to one LoopML control plane.

    Args:
        url: Base URL of the API; default ``Settings().resolved_api_url`` (``LOOPML_API_URL``,
            else ``http://127.0.0.1:8080``).
        token: Bearer token; default ``LOOPML_TOKEN``.
        timeout: Seconds to wait for an ordinary request (registering a dataset may take longer).

    Every failure raises a ``loopml.core.errors.LoopMLError`` subclass (``NotFound``,
    ``InvalidInput``, ``Conflict``, …) carrying the server's message.

    Example::

        with Client("http://ml-box:8080", token="s3cret") as c:
            print(c.health())
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30) -> None:
        if url is None or token is None:
            from loopml.core.settings import load_settings  # pydantic-settings: only when needed

            settings = load_settings()
            url = url or settings.resolved_api_url
            token = token if token is not None else settings.token
        self.url = url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"loopml-sdk/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise InvalidInput(f"API URL {self.url!r} is not valid: {exc}") from None

    # -- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            request = self._http.build_request(method, path, **kwargs)
            resp = self._http.send(request, stream=stream)
        except httpx.ConnectError:
            raise LoopMLError(f"the LoopML control plane is not reachable at {self.url}: "
                              "start it with `loopml server` (or set LOOPML_API_URL)") from None
        except httpx.TimeoutException:
            raise LoopMLError(f"the control plane at {self.url} did not answer {method} {path} in time") from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise InvalidInput(f"API URL {self.url!r} is not valid: {exc}") from None
        except httpx.TransportError as exc:
            raise LoopMLError(f"talking to the control plane at {self.url} failed: {exc}") from None
        if resp.status_code >= 400:
            if stream:
                resp.read()
                resp.close()
            raise self._error(resp)
        return resp

    @staticmethod
    def _error(resp: httpx.Response) -> LoopMLError:
        if resp.headers.get("x-loopml-plane") == "data":  # serving.app marks its errors
            url = resp.request.url
            err = LoopMLError(f"{url.scheme}://{url.netloc.decode()} is LoopML's data plane "
                              "(real-time endpoints), not the control plane; set LOOPML_API_URL "
                              "to the control plane's address (LOOPML_PORT, default "
                              f"http://{url.host}:8080)")
            err.exit_code = 2  # the caller's to fix
            return err
        try:
            body = resp.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "code" in body and "message" in body:
            err = error_from_dict(body)
            err.code, err.status = str(body["code"]), resp.status_code  # e.g. "unauthorized", 401
            if resp.status_code == 401:
                err.exit_code = 2  # a missing/wrong token is the user's to fix
            return err
        text = resp.text.strip().splitlines()[0][:200] if resp.text.strip() else resp.reason_phrase
        return LoopMLError(f"{resp.request.method} {resp.request.url.path} failed: HTTP {resp.status_code} {text}")

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def _upload_timeout(self) -> httpx.Timeout:
        # the server reads, hashes and stores the whole upload before it answers
        return httpx.Timeout(self.timeout, read=max(self.timeout, 3600.0), write=max(self.timeout, 3600.0))

    # -- health ----------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Check the control plane is up.

        Returns:
            ``{"status": "ok", "version": "...", "data_plane": "http://127.0.0.1:8081"}``
            (``data_plane``: where endpoints answer; absent when the server runs no control loop)

        Example::

            Client().health()["status"]  # "ok"
        """
        return self._json("GET", "/health")

    # -- datasets --------------------------------------------------------------------------
    def add_dataset(self, name: str, source: str | os.PathLike, format: str | None = None,
                    label: str | None = None, text: str | None = None, extend: bool = False,
                    on_upload: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Register ``source`` as a new version of dataset ``name`` (same content → same version).

        Args:
            name: Dataset name (lowercase letters, digits, ``.``, ``_``, ``-``).
            source: ``sample:NAME``, an ``s3://`` URI, a local file (uploaded), or a local
                folder (zipped in memory and uploaded). Anything else is sent as a path the
                server can see.
            format: ``npz``, ``csv``, ``parquet``, ``images`` or ``text``; inferred when None.
            label: Label column of a table. text: Text column of a table.
            extend: Append the source's rows to the newest version's rows (same kind, shape
                and classes) instead of registering the source on its own; ``label``, ``text``
                (and a ``text`` format) default to that version's.
            on_upload: Called with (bytes sent, total bytes) while a local file or folder uploads.

        Returns:
            The version record with ``created`` (False when identical content was already there).

        Example::

            v = c.add_dataset("penguins", "data/penguins.csv", label="species")
            print(v["ref"], v["created"])
        """
        source_str = os.fspath(source)
        fields = {k: v for k, v in {"name": name, "format": format, "label": label, "text": text}.items()
                  if v is not None}
        local = Path(source_str).expanduser()
        if source_str.startswith(_REMOTE_PREFIXES) or not local.exists():
            return self._json("POST", "/datasets", json={**fields, "source": source_str, "extend": extend})
        if extend:
            fields["extend"] = "true"
        fields["source"] = str(local.resolve())  # recorded as where the data came from
        if local.is_dir():
            zipped = _Counted(io.BytesIO(zip_folder(local)), on_upload)
            files = {"file": (f"{local.resolve().name or 'data'}.zip", zipped, "application/zip")}
            return self._json("POST", "/datasets/upload", data=fields, files=files, timeout=self._upload_timeout())
        with local.open("rb") as f:
            files = {"file": (local.name, _Counted(f, on_upload), "application/octet-stream")}
            return self._json("POST", "/datasets/upload", data=fields, files=files, timeout=self._upload_timeout())

    def list_datasets(self) -> list[dict[str, Any]]:
        """All datasets with their newest version.

        Returns:
            ``[{"name", "latest_version", "versions", "latest": {...}}, ...]``

        Example::

            [d["name"] for d in c.list_datasets()]
        """
        return self._json("GET", "/datasets")

    def dataset(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """One dataset version (schema, class counts, split sizes).

        Args:
            name: ``NAME`` or ``NAME:VERSION``.
            version: A number or ``"latest"``; default the version in ``name``, else the newest.

        Returns:
            The version record.

        Example::

            c.dataset("mnist:1")["schema"]["class_counts"]
        """
        if version is None and ":" in name:
            name, version = name.split(":", 1)
        which = "latest" if version is None else str(version)
        return self._json("GET", f"/datasets/{_seg(name)}/versions/{_seg(which)}")

    def dataset_versions(self, name: str) -> list[dict[str, Any]]:
        """Every version of dataset ``name``, oldest first.

        Example::

            len(c.dataset_versions("mnist"))
        """
        return self._json("GET", f"/datasets/{_seg(name)}")["versions"]

    def delete_dataset(self, ref: str, force: bool = False) -> dict[str, Any]:
        """Delete dataset version ``NAME:VERSION`` or, given ``NAME``, the dataset and every version.

        Refused (``Conflict``, naming them) while queued/running jobs read it, or registered model
        versions were trained on it unless ``force`` (the models stay). The files go with it.

        Returns:
            ``{"deleted": ["NAME:VERSION", ...], "artifacts_removed": [...]}``

        Example::

            c.delete_dataset("mnist:3")
        """
        name, _, version = ref.partition(":")
        path = f"/datasets/{_seg(name)}" + (f"/versions/{_seg(version)}" if version else "")
        return self._json("DELETE", path, params={"force": "true"} if force else None)

    # -- files -----------------------------------------------------------------------------
    def upload_file(self, path: str | os.PathLike, kind: str = "input") -> str:
        """Upload a model ``.py`` (``kind="model"``) or a prediction input (a folder is zipped).

        Returns:
            The artifact key (use as ``file:<key>`` / ``upload:<key>``).

        Example::

            key = c.upload_file("my_model.py", kind="model")
        """
        p = Path(path).expanduser()
        if not p.exists():
            raise InvalidInput(f"{kind} file {os.fspath(path)!r} does not exist")
        if p.is_dir():
            payload: Any = (f"{p.resolve().name or 'input'}.zip", zip_folder(p), "application/zip")
            return self._json("POST", "/files", data={"kind": kind}, files={"file": payload},
                              timeout=self._upload_timeout())["key"]
        with p.open("rb") as f:
            return self._json("POST", "/files", data={"kind": kind}, files={"file": (p.name, f)},
                              timeout=self._upload_timeout())["key"]

    # -- jobs ------------------------------------------------------------------------------
    def train(self, dataset: str | None = None, model: str | None = None, params: dict[str, Any] | None = None,
              register_as: str | None = None, time_limit_s: float | None = None,
              resume: str | None = None, register: bool = True) -> dict[str, Any]:
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

        Returns:
            The queued job record (``id``, ``status``, ``spec``…).

        Example::

            job = c.train("mnist", "cnn", {"epochs": 1}, register_as="mnist-cnn")
        """
        if model and model.endswith(".py") and not model.startswith("file:"):
            model = "file:" + self.upload_file(model, kind="model")
        body = {"dataset": dataset, "model": model, "params": dict(params or {}), "register_as": register_as,
                "time_limit_s": time_limit_s, "resume": resume, "register": register}
        return self._json("POST", "/jobs/train", json=body)

    def evaluate(self, models: dict[str, str], dataset: str, split: str = "test", metric: str = "accuracy",
                 min_improvement: float | None = None) -> dict[str, Any]:
        """Submit an evaluation job: every model in ``models`` (label → ``NAME[:VERSION|@ALIAS]`` or
        ``job:<id>``) on the same rows of ``dataset``'s ``split``. With labels ``challenger`` and
        ``champion`` the result also says whether to ``promote`` (by ``min_improvement``) and why."""
        body = {"models": models, "dataset": dataset, "split": split, "metric": metric,
                "min_improvement": min_improvement}
        return self._json("POST", "/jobs/evaluate", json=body)

    def register_trained(self, job_id: str, name: str | None = None) -> dict[str, Any]:
        """Register the model of a succeeded ``register=False`` training job (idempotent)."""
        return self._json("POST", f"/jobs/{_seg(job_id)}/register", json={"name": name})

    def predict(self, model: str, input: str | os.PathLike, limit: int | None = None) -> dict[str, Any]:
        """Submit a batch prediction.

        Args:
            model: ``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``.
            input: ``NAME[:VERSION]:SPLIT`` of a registered dataset (e.g. ``mnist:test``), a
                local npz/npy/csv/parquet file, or for image models a PNG/JPEG file, a folder or
                a .zip of images (uploaded; output rows name the file), or ``upload:<key>``.
                Checked against the model's input signature before the job is queued
                (``InvalidInput`` naming what the model takes).
            limit: Predict at most this many rows.

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
        return self._json("POST", "/jobs/predict", json={"model": model, "input": spec, "limit": limit})

    def delete_job(self, id: str) -> dict[str, Any]:
        """Delete an ended job with its events, metrics, logs and files (``Conflict`` while it
        is queued or running). A model version it registered stays.

        Example::

            c.delete_job("job-0123456789")
        """
        return self._json("DELETE", f"/jobs/{_seg(id)}")

    def job(self, id: str) -> dict[str, Any]:
        """A job with its status transitions (``events``) and per-epoch ``metrics``.

        Example::

            c.job("job-0123456789")["progress"]
        """
        return self._json("GET", f"/jobs/{_seg(id)}")

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
        return self._json("GET", f"/jobs/{_seg(id)}/metrics")

    def logs(self, id: str, after: int = 0) -> dict[str, Any]:
        """Log lines with an id greater than ``after``.

        Returns:
            ``{"job_id", "status", "lines": [{"id", "at", "text"}], "next_after"}``

        Example::

            page = c.logs(job_id); page = c.logs(job_id, after=page["next_after"])
        """
        return self._json("GET", f"/jobs/{_seg(id)}/logs", params={"after": after})

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
        return self._json("POST", f"/jobs/{_seg(id)}/cancel")

    def wait(self, id: str, poll: float = 0.5, timeout: float | None = None,
             on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job has ended.

        Args:
            poll: Seconds between polls. timeout: Give up (LoopMLError) after this many seconds.
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
                raise LoopMLError(f"job {id} is still {job['status']} after {timeout:g}s")
            time.sleep(poll)

    def prediction_output(self, id: str) -> bytes:
        """The CSV a succeeded prediction job wrote (``Conflict`` before it succeeded).

        Example::

            print(c.prediction_output(job_id).decode()[:200])
        """
        return self._send("GET", f"/jobs/{_seg(id)}/output").content

    def download_output(self, id: str, path: str | os.PathLike) -> Path:
        """Stream the prediction CSV into ``path`` (written whole or not at all).

        Returns:
            The path written.

        Example::

            c.download_output(job_id, "predictions.csv")
        """
        target = Path(path).expanduser()
        tmp = target.with_name(f".{target.name}.part")
        resp = self._send("GET", f"/jobs/{_seg(id)}/output", stream=True)
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

    # -- models ----------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Registered models with version counts, aliases and latest metrics.

        Example::

            {m["name"]: m["aliases"] for m in c.models()}
        """
        return self._json("GET", "/models")

    def model(self, name: str) -> dict[str, Any]:
        """A model's versions and aliases: ``{"name", "aliases", "versions"}``.

        Example::

            c.model("mnist-cnn")["aliases"]
        """
        return self._json("GET", f"/models/{_seg(name)}")

    def model_version(self, name: str, version: int | str = "latest") -> dict[str, Any]:
        """One model version (a number or ``"latest"``).

        Example::

            c.model_version("mnist-cnn", 2)["metrics"]
        """
        return self._json("GET", f"/models/{_seg(name)}/versions/{_seg(str(version))}")

    def model_alias(self, name: str, alias: str) -> dict[str, Any]:
        """The model version ``alias`` points at.

        Example::

            c.model_alias("mnist-cnn", "prod")["version"]
        """
        return self._json("GET", f"/models/{_seg(name)}/aliases/{_seg(alias)}")

    def set_alias(self, name: str, alias: str, version: int, actor: str | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (recorded in the alias history with ``actor``).

        Returns:
            ``{"name", "alias", "version", "previous"}``

        Example::

            c.set_alias("mnist-cnn", "prod", 3)
        """
        headers = {"X-LoopML-Actor": actor} if actor else None
        return self._json("PUT", f"/models/{_seg(name)}/aliases/{_seg(alias)}", json={"version": version},
                          headers=headers)

    def delete_alias(self, name: str, alias: str, actor: str | None = None, force: bool = False) -> dict[str, Any]:
        """Remove ``alias`` from model ``name``; refused (Conflict) while endpoints follow it,
        unless ``force`` (the answer's ``broken`` lists them).

        Example::

            c.delete_alias("mnist-cnn", "staging")
        """
        headers = {"X-LoopML-Actor": actor} if actor else None
        return self._json("DELETE", f"/models/{_seg(name)}/aliases/{_seg(alias)}", headers=headers,
                          params={"force": "true"} if force else None)

    def import_model(self, path: str | os.PathLike, name: str, labels: list[str] | None = None,
                     input_shape: list[int] | str | None = None, kind: str | None = None,
                     columns: list[str] | None = None, tokenizer: str | os.PathLike | None = None) -> dict[str, Any]:
        """Register a model trained elsewhere as the next version of ``name``.

        Args:
            path: A ``.keras`` file (loaded in Keras safe mode: Lambda layers are refused), an
                ``.onnx`` file, or a TensorFlow SavedModel folder (zipped and converted to ONNX).
                The model takes what clients send (pixels, numeric columns, token ids) and ends in
                a softmax (one probability per class).
            labels: Class names in output order; default ``"0".."N-1"`` from the output width.
            input_shape: One row's shape (e.g. ``[28, 28, 1]``) when the model leaves it open.
            kind: ``image``, ``text`` or ``tabular``; default from the input shape.
            columns: Tabular: the input column names in order (default ``x0..xN-1``).
            tokenizer: Text: a HuggingFace ``tokenizer.json`` turning texts into the model's ids.

        Returns:
            The version record (``ref``, ``lineage.source == "imported"``) with ``label_names``.

        Example::

            v = c.import_model("digits.keras", "digits", labels=[str(i) for i in range(10)])
            c.create_endpoint("digits", model=v["ref"], wait=True)
        """
        import json as _jsonlib

        p = Path(path).expanduser()
        if not p.exists():
            raise InvalidInput(f"model file {os.fspath(path)!r} does not exist")
        fields: dict[str, str] = {"name": name}
        if labels is not None:
            fields["labels"] = _jsonlib.dumps([str(x) for x in labels])
        if input_shape is not None:
            fields["input_shape"] = input_shape if isinstance(input_shape, str) else ",".join(map(str, input_shape))
        if kind is not None:
            fields["kind"] = kind
        if columns is not None:
            fields["columns"] = _jsonlib.dumps([str(x) for x in columns])
        files: dict[str, Any] = {}
        if tokenizer is not None:
            t = Path(tokenizer).expanduser()
            if not t.is_file():
                raise InvalidInput(f"tokenizer file {os.fspath(tokenizer)!r} does not exist")
            files["tokenizer"] = (t.name, t.read_bytes(), "application/json")
        if p.is_dir():
            files["file"] = (f"{p.resolve().name or 'model'}.zip", zip_folder(p), "application/zip")
            return self._json("POST", "/models/import", data=fields, files=files, timeout=self._upload_timeout())
        with p.open("rb") as f:
            files["file"] = (p.name, f, "application/octet-stream")
            return self._json("POST", "/models/import", data=fields, files=files, timeout=self._upload_timeout())

    def download_model(self, ref: str, path: str | os.PathLike, force: bool = False) -> dict[str, Any]:
        """Write a model version's files (``model.keras``, ``model.onnx``, ``loopml.json``,
        ``tokenizer.json``…) into the folder ``path``.

        Args:
            ref: ``NAME:VERSION``, ``NAME@ALIAS`` or ``NAME`` (the newest version).
            force: Write into a folder that is not empty (same-named files are replaced).

        Returns:
            ``{"ref": "NAME:VERSION", "path": "...", "files": [...]}``

        Example::

            c.download_model("mnist-cnn@production", "exported/")
        """
        import shutil
        import tempfile

        target = Path(path).expanduser()
        if target.exists() and not target.is_dir():
            raise InvalidInput(f"{os.fspath(path)!r} is a file; give a folder to download into")
        if target.is_dir() and any(target.iterdir()) and not force:
            raise InvalidInput(f"folder {os.fspath(path)!r} is not empty: pass force=True to write into it",
                               field="force")
        record = self._version_of(ref)  # resolved first: a missing version creates no folder
        resolved = record["ref"]
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
            archive = Path(tmp) / "bundle.zip"
            resp = self._send("GET", f"/models/{_seg(record['name'])}/versions/{record['version']}/download",
                              stream=True, timeout=self._upload_timeout())
            try:
                with archive.open("wb") as f:
                    for chunk in resp.iter_bytes():
                        f.write(chunk)
            except httpx.TransportError as exc:
                raise LoopMLError(f"downloading {ref} from {self.url} broke off: {exc}") from None
            finally:
                resp.close()
            unpacked = Path(tmp) / "files"
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if any(n.startswith("/") or ".." in n.split("/") for n in names):
                    raise LoopMLError(f"the archive of {resolved} has unsafe member names")
                zf.extractall(unpacked)
            for n in names:  # every file is complete before it replaces anything
                dest = target / n
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(unpacked / n), dest)
        return {"ref": resolved, "path": str(target), "files": sorted(names)}

    def _version_of(self, ref: str) -> dict[str, Any]:
        """``NAME:VERSION``, ``NAME@ALIAS`` or ``NAME`` (newest) → the version record."""
        name, sep, alias = ref.partition("@")
        if sep:
            return self.model_alias(name, alias)
        name, _, version = ref.partition(":")
        return self.model_version(name, version or "latest")

    def compare_models(self, a: str, b: str, dataset: str | None = None, timeout: float | None = None,
                       poll: float = 0.5) -> dict[str, Any]:
        """Two model versions side by side: metrics, per-class metrics, confusion matrices and
        hyperparameters.

        Args:
            a, b: ``NAME:VERSION``, ``NAME@ALIAS`` or ``NAME`` (newest).
            dataset: ``NAME[:VERSION][:SPLIT]`` (split default ``test``): evaluate both on the
                same rows (an ``evaluate`` job, waited for). Without it: the test metrics each
                version recorded when it was trained (an imported version has none).
            timeout: Give up waiting for the evaluation after this many seconds.

        Returns:
            ``{"a": {...}, "b": {...}, "source": "recorded" | "evaluated", "dataset", "split", "job_id"}``;
            each side has ``ref``, ``metrics``, ``hparams``, ``labels``, ``per_class``, ``confusion_matrix``.

        Example::

            cmp = c.compare_models("mnist-cnn:1", "mnist-cnn:2", dataset="mnist:test")
            cmp["a"]["metrics"]["accuracy"], cmp["b"]["metrics"]["accuracy"]
        """
        records = {"a": self._version_of(a), "b": self._version_of(b)}
        sides: dict[str, Any] = {label: {"ref": r["ref"], "dataset": r.get("dataset"), "template": r.get("template"),
                                         "job_id": r.get("job_id"), "source": (r.get("lineage") or {}).get("source"),
                                         "hparams": r.get("hparams") or {}}
                                 for label, r in records.items()}
        if dataset is None:
            for label, r in records.items():
                evaluation: dict[str, Any] = {}
                if r.get("job_id"):
                    try:
                        evaluation = (self.job(r["job_id"]).get("result") or {}).get("evaluation") or {}
                    except LoopMLError:
                        evaluation = {}  # the job was deleted: the version's metrics remain
                sides[label].update(metrics=r.get("metrics") or {}, labels=evaluation.get("labels"),
                                    per_class=evaluation.get("per_class"),
                                    confusion_matrix=evaluation.get("confusion_matrix"))
            return {**sides, "source": "recorded", "dataset": None, "split": None, "job_id": None}
        parts = dataset.split(":")
        split = "test"
        if len(parts) > 1 and not parts[-1].isdigit() and parts[-1] != "latest":
            split = parts.pop()
        job = self.evaluate({"a": records["a"]["ref"], "b": records["b"]["ref"]}, ":".join(parts), split=split)
        done = self.wait(job["id"], poll=poll, timeout=timeout)
        if done["status"] != "succeeded":
            raise LoopMLError(f"evaluation job {job['id']} {done['status']}: {done.get('reason') or 'no reason given'}")
        result = done["result"]
        for label in ("a", "b"):
            r = result["results"][label]
            sides[label].update(metrics={k: r.get(k) for k in ("accuracy", "macro_f1", "loss", "rows")},
                                labels=r.get("labels"), per_class=r.get("per_class"),
                                confusion_matrix=r.get("confusion_matrix"))
        return {**sides, "source": "evaluated", "dataset": result["dataset"], "split": result["split"],
                "job_id": job["id"]}

    def delete_model(self, ref: str) -> dict[str, Any]:
        """Delete model version ``NAME:VERSION`` or, given ``NAME``, every version of the model.

        Refused (``Conflict``, naming them) while a version is behind an alias, served by an
        endpoint (pinned or through its alias) or used by a queued/running job. The version's
        files go with it; its number is never handed out again.

        Example::

            c.delete_model("mnist-cnn:2")
        """
        if "@" in ref:
            raise InvalidInput(f"model {ref!r}: delete a version by number (NAME:VERSION), not through an alias")
        name, _, version = ref.partition(":")
        return self._json("DELETE", f"/models/{_seg(name)}" + (f"/versions/{_seg(version)}" if version else ""))

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move of model ``name``, oldest first (alias, from/to version, actor, at).

        Example::

            c.alias_history("mnist-cnn")[-1]
        """
        return self._json("GET", f"/models/{_seg(name)}/alias-history")

    # -- endpoints (real-time serving) -----------------------------------------------------
    def create_endpoint(self, name: str, model: str | None = None,
                        variants: list[dict[str, Any]] | None = None, shadow: str | None = None,
                        capture_percent: float | None = None, max_batch_size: int | None = None,
                        max_batch_delay_ms: float | None = None, multi_model: bool | None = None,
                        wait: bool = False, timeout: float = 300,
                        new_key: bool = False) -> dict[str, Any]:
        """Create a real-time endpoint serving ``model`` (and/or weighted ``variants``).

        Args:
            name: Endpoint name (letters, digits, hyphens; it becomes part of the URL).
            model: ``MODEL@ALIAS`` (follows the alias when it moves) or ``MODEL:VERSION``;
                shorthand for one variant named ``primary``.
            variants: Production variants ``[{"name", "ref", "weight"}]``; traffic share is
                weight / sum of weights.
            shadow: ``MODEL:VERSION`` or ``MODEL@ALIAS`` that gets a copy of the traffic (its
                answers are captured, never returned).
            capture_percent: Share of requests (0-100) whose input and output are captured.
            max_batch_size, max_batch_delay_ms: Adaptive batching (defaults 64 rows, 2 ms).
            multi_model: Allow ``target_model`` on invocations.
            new_key: Make an API key; the record's ``api_key`` shows it once (invoke with
                ``api_key=``).
            wait: Return only once the endpoint serves (``wait_endpoint``).
            timeout: Seconds ``wait`` may take.

        Returns:
            The endpoint record (``status``, ``ready``, ``generation``, ``url``…).

        Example::

            ep = c.create_endpoint("digits", model="digits-cnn@production", wait=True)
            print(c.invoke("digits", instances=images[:2]))
        """
        body: dict[str, Any] = {"name": name, **_endpoint_fields(
            model=model, variants=variants, capture_percent=capture_percent,
            max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms,
            multi_model=multi_model)}
        if shadow is not None:
            body["shadow"] = shadow
        if new_key:
            body["new_key"] = True
        record = self._json("POST", "/endpoints", json=body)
        return self._settled(name, record, wait, timeout)

    def _settled(self, name: str, record: dict[str, Any], wait: bool,
                 timeout: float) -> dict[str, Any]:
        if not wait:
            return record
        try:
            ready = self.wait_endpoint(name, timeout=timeout)
        except LoopMLError as exc:
            exc.api_key = record.get("api_key")  # made and shown once: never lose it
            raise
        if record.get("api_key"):
            ready["api_key"] = record["api_key"]  # shown once: keep it in what we return
        return ready

    def update_endpoint(self, name: str, model: str | None = None,
                        variants: list[dict[str, Any]] | None = None, shadow: Any = _KEEP,
                        capture_percent: float | None = None, max_batch_size: int | None = None,
                        max_batch_delay_ms: float | None = None, multi_model: bool | None = None,
                        wait: bool = False, timeout: float = 300, new_key: bool = False,
                        clear_keys: bool = False) -> dict[str, Any]:
        """Change an endpoint: only the arguments given change (a new ``generation``).

        ``model`` replaces the variants by one ``primary``; ``variants`` replaces them all.
        ``shadow=None`` removes the shadow; leaving ``shadow`` out keeps it. The old versions
        keep answering until the new ones are loaded (no failed requests on a switch).

        Returns:
            The endpoint record (once it serves the new generation with ``wait=True``).

        Example::

            c.update_endpoint("digits", variants=[
                {"name": "primary", "ref": "digits-cnn:3", "weight": 90},
                {"name": "canary", "ref": "digits-cnn:4", "weight": 10}], wait=True)
        """
        body = _endpoint_fields(model=model, variants=variants, capture_percent=capture_percent,
                                max_batch_size=max_batch_size,
                                max_batch_delay_ms=max_batch_delay_ms, multi_model=multi_model)
        if shadow is not _KEEP:
            body["shadow"] = shadow
        if new_key:
            body["new_key"] = True
        if clear_keys:
            body["clear_keys"] = True
        record = self._json("PATCH", f"/endpoints/{_seg(name)}", json=body)
        return self._settled(name, record, wait, timeout)

    def endpoints(self) -> list[dict[str, Any]]:
        """All endpoints, by name, with their status.

        Example::

            {e["name"]: e["status"] for e in c.endpoints()}
        """
        return self._json("GET", "/endpoints")

    def endpoint(self, name: str) -> dict[str, Any]:
        """One endpoint record: ``spec`` (as written), ``resolved`` (the versions to serve),
        ``status`` (Creating | Updating | InService | Failed), ``message``, ``ready``, ``url``.

        Example::

            c.endpoint("digits")["ready"]
        """
        return self._json("GET", f"/endpoints/{_seg(name)}")

    def delete_endpoint(self, name: str, force: bool = False) -> dict[str, Any]:
        """Delete an endpoint (the serving process stops serving it). Refused (Conflict) while
        monitors watch it or workflows deploy to it, unless ``force``.

        Returns:
            ``{"deleted": name, "broken": [dependents]}``

        Example::

            c.delete_endpoint("digits")
        """
        return self._json("DELETE", f"/endpoints/{_seg(name)}", params={"force": "true"} if force else None)

    def wait_endpoint(self, name: str, timeout: float = 300, poll: float = 0.25,
                      on_poll: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the endpoint serves its current generation (``ready``).

        Args:
            timeout: Give up after this many seconds (``EndpointTimeout``).
            poll: Seconds between polls.
            on_poll: Called with every record read (progress display).

        Returns:
            The ready record.

        Raises:
            EndpointFailed: the serving process could not load the current generation (the
                record's message says why; the record is on ``.record``).
            EndpointTimeout: not ready within ``timeout``.

        Example::

            c.wait_endpoint("digits", timeout=120)
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.endpoint(name)
            if on_poll is not None:
                on_poll(record)
            if record.get("ready"):
                return record
            if record.get("status") == "Failed":
                raise EndpointFailed(f"endpoint {name!r} failed (generation "
                                     f"{record.get('generation')}): "
                                     f"{record.get('message') or 'no reason given'}", record)
            if time.monotonic() >= deadline:
                why = f": {record['message']}" if record.get("message") else ""
                raise EndpointTimeout(f"endpoint {name!r} is still {record.get('status')} after "
                                      f"{timeout:g}s{why}", record)
            time.sleep(poll)

    def invoke(self, name: str, instances: Any = None, body: Any = None,
               content_type: str = "application/json", variant: str | None = None,
               target_model: str | None = None, inference_id: str | None = None,
               api_key: str | None = None) -> Any:
        """Predict with a real-time endpoint (the data plane's ``invocations``, SageMaker-style).

        Args:
            instances: Rows as JSON-able values (images as nested lists, texts as strings,
                records as dicts); sent as ``{"instances": [...]}``.
            body: Instead of ``instances``: raw ``bytes``/``str`` sent as-is with
                ``content_type`` (``application/x-npy``, ``text/csv``, ``text/plain``), or any
                JSON-able value.
            variant: Send to this production variant (else weighted random).
            target_model: ``MODEL:VERSION`` on a multi-model endpoint.
            inference_id: Recorded with captured traffic.
            api_key: The endpoint's API key, when it has keys (else LOOPML_SERVING_TOKEN, when set).

        Returns:
            The parsed JSON answer: ``{"predictions": [{"label", "confidence", "probabilities"}]}``.

        Raises:
            InvalidInput (HTTP 400), NotFound (404), UnsupportedFormat (415), else
            InvocationError with the data plane's message, ``.code`` (its x-amzn-ErrorType)
            and ``.status``.

        Example::

            out = c.invoke("digits", instances=images[:4].tolist())
            [p["label"] for p in out["predictions"]]
        """
        return self._invocation(name, instances=instances, body=body, content_type=content_type,
                                variant=variant, target_model=target_model,
                                inference_id=inference_id, api_key=api_key).json()

    def _invocation(self, name: str, *, instances: Any = None, body: Any = None,
                    content_type: str = "application/json", variant: str | None = None,
                    target_model: str | None = None,
                    inference_id: str | None = None,
                    api_key: str | None = None) -> httpx.Response:
        """The data plane's raw 200 response (the CLI also reads its variant header)."""
        import json as _jsonlib

        if (instances is None) == (body is None):
            raise InvalidInput("give either instances or body")
        if instances is not None:
            content, content_type = _jsonlib.dumps({"instances": instances}).encode(), "application/json"
        elif isinstance(body, (bytes, bytearray, memoryview)):
            content = bytes(body)
        elif isinstance(body, str):
            content = body.encode("utf-8")
        else:
            content = _jsonlib.dumps(body).encode()
        headers = {"Content-Type": content_type}
        for header, value in (("X-Amzn-SageMaker-Target-Variant", variant),
                              ("X-Amzn-SageMaker-Target-Model", target_model),
                              ("X-Amzn-SageMaker-Inference-Id", inference_id)):
            if value:
                headers[header] = value
        for attempt in (0, 1):
            url = self._invocation_url(name, fresh=attempt > 0)
            request = self._http.build_request("POST", url, content=content, headers=headers)
            # the control plane's token is not the data plane's: send LOOPML_SERVING_TOKEN only
            request.headers.pop("Authorization", None)
            serving_token = api_key or self._serving_token()
            if serving_token:
                request.headers["Authorization"] = f"Bearer {serving_token}"
            try:
                resp = self._http.send(request)
            except httpx.ConnectError:
                if attempt == 0:
                    continue  # the data plane may have moved (control plane restarted): ask again
                raise LoopMLError(f"the data plane of endpoint {name!r} is not reachable at "
                                  f"{url}") from None
            except httpx.TimeoutException:
                raise LoopMLError(f"endpoint {name!r} did not answer in {self.timeout:g}s") from None
            except httpx.TransportError as exc:
                raise LoopMLError(f"invoking endpoint {name!r} at {url} failed: {exc}") from None
            if resp.status_code == 401:
                raise self._unauthorised(name, resp, api_key=api_key)
            if resp.status_code >= 400:
                raise _invocation_error(name, resp)
            return resp
        raise AssertionError("unreachable")

    def _unauthorised(self, name: str, resp: httpx.Response, *, api_key: str | None) -> LoopMLError:
        """A 401 says what to send: the endpoint's key (it has keys) or the data plane's token."""
        try:
            keyed = bool((self.endpoint(name).get("spec") or {}).get("key_hashes"))
        except LoopMLError:
            keyed = False
        if keyed and api_key:
            message, field = f"endpoint {name!r} refused the API key given: it is not one of its keys", None
        elif keyed:
            message, field = f"endpoint {name!r} needs one of its API keys: pass api_key=KEY", "api_key"
        elif api_key:
            message, field = (f"endpoint {name!r} has no API keys: the data plane wants its own token "
                              "(set LOOPML_SERVING_TOKEN)"), None
        elif self._serving_token():
            message, field = "LOOPML_SERVING_TOKEN does not match the data plane's token", None
        else:
            message, field = "the data plane needs its token: set LOOPML_SERVING_TOKEN", None
        err = _invocation_error(name, resp)  # its code, status and exit code; these words
        err.message, err.args = message, (message,)
        if field:
            err.details = {"field": field}
        return err

    def _invocation_url(self, name: str, *, fresh: bool = False) -> str:
        cache: dict[str, str] = self.__dict__.setdefault("_endpoint_urls", {})
        if fresh or name not in cache:
            url = self.endpoint(name).get("url")
            if not url:
                raise LoopMLError(f"endpoint {name!r} has no data-plane address: the control plane "
                                  f"at {self.url} runs no data plane (started without its control loop?)")
            cache[name] = _reachable(url, self.url)
        return cache[name]

    def _serving_token(self) -> str | None:
        if "_serving_token_value" not in self.__dict__:
            from loopml.core.settings import load_settings

            self.__dict__["_serving_token_value"] = load_settings().serving_token
        return self.__dict__["_serving_token_value"]


class EndpointFailed(LoopMLError):
    """The serving process could not load an endpoint's current generation (``.record``)."""

    code = "endpoint_failed"

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record


class EndpointTimeout(LoopMLError):
    """An endpoint did not become ready in time (``.record`` is the last one read)."""

    code = "timeout"

    def __init__(self, message: str, record: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.record = record


class InvocationError(LoopMLError):
    """The data plane refused or failed an invocation: ``code`` is its ``x-amzn-ErrorType``
    (ModelError, ServiceUnavailable, ModelNotReadyException…), ``status`` the HTTP status,
    ``retry_after`` its Retry-After seconds (503/429: try again shortly)."""

    code = "invocation_error"

    def __init__(self, message: str, *, code: str | None = None, status: int = 500,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code
        self.status = status
        self.retry_after = retry_after


def _endpoint_fields(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _reachable(url: str, api_url: str) -> str:
    """The control plane names the data plane as it sees it (127.0.0.1 when bound locally or to
    every interface); a client on another machine reaches it at the API's host instead."""
    from urllib.parse import urlsplit, urlunsplit

    loopback = ("127.0.0.1", "localhost", "::1")
    dp, api = urlsplit(url), urlsplit(api_url)
    if dp.hostname in loopback and api.hostname and api.hostname not in loopback:
        host = f"[{api.hostname}]" if ":" in api.hostname else api.hostname
        return urlunsplit(dp._replace(netloc=f"{host}:{dp.port}" if dp.port else host))
    return url


def _invocation_error(name: str, resp: httpx.Response) -> LoopMLError:
    from loopml.core.errors import NotFound, UnsupportedFormat

    kind = resp.headers.get("x-amzn-errortype") or ""
    try:
        body = resp.json()
    except ValueError:
        body = None
    message = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("Message") or body.get("error")
    if not message:
        text = resp.text.strip()
        message = text.splitlines()[0][:200] if text else f"HTTP {resp.status_code} {resp.reason_phrase}"
    message = str(message)
    if resp.status_code == 400:
        return InvalidInput(message)
    if resp.status_code == 404:
        return NotFound(message)
    if resp.status_code == 415:
        return UnsupportedFormat(message)
    retry = resp.headers.get("retry-after")
    try:
        retry_after = float(retry) if retry else None
    except ValueError:
        retry_after = None
    err = InvocationError(f"endpoint {name!r}: {message}", code=kind or None,
                          status=resp.status_code, retry_after=retry_after)
    if resp.status_code in (401, 403, 413):
        err.exit_code = 2  # the caller's to fix
    return err


def _seg(value: str) -> str:
    """One URL path segment: '/', '?', '#' and spaces cannot leak into the route."""
    from urllib.parse import quote

    if not value:
        raise InvalidInput("an empty name was given")
    return quote(value, safe="")
