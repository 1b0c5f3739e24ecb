"""SDK methods for the model registry: versions, aliases, import, download, compare, delete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import httpx

from loopml.core.errors import InvalidInput, LoopMLError
from loopml.sdk.files import zip_folder
from loopml.sdk.http import segment
from loopml.sdk.jobs import JobsAPI


class ModelsAPI(JobsAPI):
    """Registry reads and writes; ``compare_models`` runs an evaluation job (hence JobsAPI)."""

    def models(self, *, name: str | None = None, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Registered models with version counts, aliases and latest metrics (``name`` substring
        filter and ``limit``/``offset`` paging are done by the server).

        Example::

            {m["name"]: m["aliases"] for m in c.models()}
        """
        params = {k: v for k, v in {"name": name, "limit": limit, "offset": offset or None}.items() if v is not None}
        return self._json("GET", "/models", params=params or None)

    def model(self, name: str) -> dict[str, Any]:
        """A model's versions and aliases: ``{"name", "aliases", "versions"}``.

        Example::

            c.model("mnist-cnn")["aliases"]
        """
        return self._json("GET", f"/models/{segment(name)}")

    def model_version(self, name: str, version: int | str = "latest") -> dict[str, Any]:
        """One model version (a number or ``"latest"``).

        Example::

            c.model_version("mnist-cnn", 2)["metrics"]
        """
        return self._json("GET", f"/models/{segment(name)}/versions/{segment(str(version))}")

    def model_alias(self, name: str, alias: str) -> dict[str, Any]:
        """The model version ``alias`` points at.

        Example::

            c.model_alias("mnist-cnn", "prod")["version"]
        """
        return self._json("GET", f"/models/{segment(name)}/aliases/{segment(alias)}")

    def set_alias(self, name: str, alias: str, version: int, actor: str | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (recorded in the alias history with ``actor``).

        Returns:
            ``{"name", "alias", "version", "previous"}``

        Example::

            c.set_alias("mnist-cnn", "prod", 3)
        """
        headers = {"X-LoopML-Actor": actor} if actor else None
        return self._json("PUT", f"/models/{segment(name)}/aliases/{segment(alias)}", json={"version": version},
                          headers=headers)

    def delete_alias(self, name: str, alias: str, actor: str | None = None, force: bool = False) -> dict[str, Any]:
        """Remove ``alias`` from model ``name``; refused (Conflict) while endpoints follow it,
        unless ``force`` (the answer's ``broken`` lists them).

        Example::

            c.delete_alias("mnist-cnn", "staging")
        """
        headers = {"X-LoopML-Actor": actor} if actor else None
        return self._json("DELETE", f"/models/{segment(name)}/aliases/{segment(alias)}", headers=headers,
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
        p = Path(path).expanduser()
        if not p.exists():
            raise InvalidInput(f"model file {os.fspath(path)!r} does not exist")
        fields: dict[str, str] = {"name": name}
        if labels is not None:
            fields["labels"] = json.dumps([str(x) for x in labels])
        if input_shape is not None:
            fields["input_shape"] = input_shape if isinstance(input_shape, str) else ",".join(map(str, input_shape))
        if kind is not None:
            fields["kind"] = kind
        if columns is not None:
            fields["columns"] = json.dumps([str(x) for x in columns])
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
            resp = self._send("GET", f"/models/{segment(record['name'])}/versions/{record['version']}/download",
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
        return self._json("DELETE", f"/models/{segment(name)}" + (f"/versions/{segment(version)}" if version else ""))

    def alias_history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move of model ``name``, oldest first (alias, from/to version, actor, at).

        Example::

            c.alias_history("mnist-cnn")[-1]
        """
        return self._json("GET", f"/models/{segment(name)}/alias-history")
