"""A model version's baseline: the profile of its dataset's HELD-OUT rows, stored with the version.

    {artifact_prefix}/baseline/profile.json    monitoring.profile.build_profile of ≤ 5,000 held-out
                                               rows (+ "schema": the dataset schema, "source",
                                               "calibration": the accuracy estimate's map, or None)
    {artifact_prefix}/baseline/embeddings.npy  penultimate-layer embeddings of ≤ 2,000 of them

Written at registration by the training job (the job runner hands ``write_training_baseline`` to
``training/train_runner.py``: the files go into the bundle folder and upload with it) and, for versions
that have none, by a ``baseline`` job (``loopml monitors baseline NAME:V`` → ``submit_baseline`` →
the worker runs ``run``). ``load_baseline`` is what a monitor run reads.

Held-out rows (validation + test splits), not the training split: live traffic is unseen data,
and a model is more confident on rows it was trained on — a training-split baseline makes the
confidence (and embedding) distributions of perfectly normal traffic look drifted. With fewer
than ``MIN_HELD_OUT`` held-out rows the training split is used instead (a tiny baseline would
make every test weak).

"calibration" (monitoring.estimate.fit_calibration) is always fit on held-out rows with their
labels — on the training split a model is right more often than its confidence says elsewhere, so
a map fit there would overestimate live accuracy. With the training-split fallback the few held-out
rows are predicted apart for it; fewer than estimate.MIN_CALIBRATION_ROWS of them: None (a run then
says why it has no estimate). A profile without the key predates accuracy estimates.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from loopml.artifacts.keys import join
from loopml.core.errors import CorruptArtifact, InvalidInput, NotFound
from loopml.platform import Platform
from loopml.registry.resolve import lookup

__all__ = ["BASELINE_DIR", "PROFILE_FILE", "EMBEDDINGS_FILE", "compute_baseline", "calibration_args",
           "calibration_of", "write_baseline", "write_training_baseline", "load_baseline", "submit_baseline",
           "run", "vocab_of"]

log = logging.getLogger(__name__)

BASELINE_DIR = "baseline"
PROFILE_FILE = "profile.json"
EMBEDDINGS_FILE = "embeddings.npy"
MAX_PROFILE_ROWS = 5_000
MAX_EMBED_ROWS = 2_000
MIN_HELD_OUT = 200


def _held_out(splits: dict[str, np.ndarray]) -> np.ndarray:
    return np.sort(np.concatenate([np.asarray(splits.get(k, []), dtype=np.int64) for k in ("validation", "test")]))


def baseline_rows(content: Any, splits: dict[str, np.ndarray]) -> tuple[Any, str]:
    """(rows to profile, which split) of a dataset version: validation+test, or the training
    split when those hold fewer than MIN_HELD_OUT rows."""
    held_out = _held_out(splits)
    if len(held_out) >= MIN_HELD_OUT:
        return content.take(held_out), "validation+test"
    return content.take(np.asarray(splits["train"], dtype=np.int64)), "train"


def calibration_args(content: Any, splits: dict[str, np.ndarray], rows: Any, split: str) -> dict[str, Any]:
    """compute_baseline's labelled held-out rows for the calibration map: the profiled rows' own
    labels when they are held out, else the held-out rows apart (raw inputs, labels)."""
    from loopml.datasets.content import raw_inputs

    if split != "train":
        return {"labels": rows.labels}
    held = content.take(_held_out(splits))
    return {"calibration_rows": (raw_inputs(held), held.labels)} if len(held) else {}


def calibration_of(proba: Any, labels: Any, class_names: list[str]) -> tuple[dict[str, Any] | None, str]:
    """(the calibration map of held-out rows, a one-line note): top-class confidence as profile.py
    and served answers give it (rounded to ANSWER_DECIMALS) against "was the prediction right"."""
    from loopml.monitoring.estimate import MIN_CALIBRATION_ROWS, fit_calibration
    from loopml.serving.codecs import ANSWER_DECIMALS

    p = np.asarray(proba, dtype=np.float64)
    truth = np.asarray([str(v) for v in labels], dtype=object)
    names = np.asarray([str(c) for c in class_names], dtype=object)
    if p.ndim != 2 or p.shape[0] != truth.size or p.shape[1] != names.size or truth.size == 0:
        return None, f"no calibration: {truth.size} labelled held-out rows"
    if not np.isin(truth, names).any():
        return None, "no calibration: none of the held-out labels is one of the model's classes"
    finite = np.where(np.isfinite(p), p, -np.inf)
    confidence = np.where(np.isfinite(p).all(axis=1), np.round(finite.max(axis=1), ANSWER_DECIMALS), np.nan)
    correct = names[finite.argmax(axis=1)] == truth
    calibration = fit_calibration(confidence, correct)
    if calibration is None:
        return None, f"no calibration: {truth.size} labelled held-out rows < {MIN_CALIBRATION_ROWS}"
    return calibration, f"calibrated on {calibration['n']} held-out rows (accuracy {calibration['accuracy']:.3f})"


def vocab_of(features: Any) -> dict[str, int] | None:
    """A text pipeline's vocabulary (token → id) from its tokenizer file; None for other kinds."""
    if getattr(features, "kind", None) != "text":
        return None
    for name, content in features.files().items():
        if name.endswith(".json"):
            doc = json.loads(content)
            vocab = (doc.get("model") or {}).get("vocab")
            if isinstance(vocab, dict):
                return {str(k): int(v) for k, v in vocab.items()}
    return None


def compute_baseline(*, kind: str, raw: Any, schema: dict[str, Any], class_names: list[str],
                     predict_proba: Callable[[Any], np.ndarray],
                     embed_rows: Callable[[Any], np.ndarray] | None, vocab: dict[str, int] | None = None,
                     seed: int = 0, source: dict[str, Any] | None = None, labels: Any = None,
                     calibration_rows: tuple[Any, Any] | None = None
                     ) -> tuple[dict[str, Any], np.ndarray | None]:
    """(profile, embeddings) of ≤ MAX_PROFILE_ROWS rows (sampled with ``seed``).

    The accuracy estimate's calibration map needs labelled held-out rows: ``labels`` (the true
    classes of ``raw``, when ``raw`` is held out: its sample's predictions are reused) or
    ``calibration_rows`` = (raw inputs, labels) of held-out rows predicted apart; neither: None."""
    from loopml.models.embeddings import sample_rows, take_rows
    from loopml.monitoring.profile import build_profile

    n = len(raw)
    if n == 0:
        raise InvalidInput("no rows to profile: no baseline")
    sample = take_rows(raw, sample_rows(n, MAX_PROFILE_ROWS, seed))
    proba = np.asarray(predict_proba(sample), dtype=np.float32)
    embeddings = None
    if embed_rows is not None:
        embeddings = np.asarray(embed_rows(take_rows(sample, sample_rows(len(sample), MAX_EMBED_ROWS, seed))),
                                dtype=np.float32)
    profile = build_profile(kind=kind, raw=sample, proba=proba, class_names=[str(c) for c in class_names],
                            schema=schema, vocab=vocab, embeddings=embeddings, seed=seed)
    profile["schema"] = schema  # what decode_window / a run need to read captured rows
    names = [str(c) for c in class_names]
    if labels is not None:
        calibration, note = calibration_of(proba, take_rows(np.asarray(labels, dtype=object),
                                                            sample_rows(n, MAX_PROFILE_ROWS, seed)), names)
    elif calibration_rows is not None and len(calibration_rows[1]):
        calibration, note = calibration_of(predict_proba(calibration_rows[0]), calibration_rows[1], names)
    else:
        calibration, note = None, "no calibration: no labelled held-out rows"
    profile["calibration"] = calibration
    profile["source"] = {**(source or {}), "rows": int(n), "profiled_rows": int(len(sample)),
                         "embedded_rows": 0 if embeddings is None else int(len(embeddings)), "seed": seed,
                         "calibration": note}
    return profile, embeddings


def _profile_bytes(profile: dict[str, Any]) -> bytes:
    def default(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")

    return json.dumps(profile, default=default).encode("utf-8")


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def write_baseline(folder: str | Path, profile: dict[str, Any], embeddings: np.ndarray | None) -> list[str]:
    """Write baseline/profile.json (+ embeddings.npy) into a bundle folder; returns the files."""
    out = Path(folder) / BASELINE_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / PROFILE_FILE).write_bytes(_profile_bytes(profile))
    written = [f"{BASELINE_DIR}/{PROFILE_FILE}"]
    if embeddings is not None:
        (out / EMBEDDINGS_FILE).write_bytes(_npy_bytes(embeddings))
        written.append(f"{BASELINE_DIR}/{EMBEDDINGS_FILE}")
    return written


def write_training_baseline(bundle_dir: str, *, model: Any, features: Any, content: Any,
                            splits: dict[str, np.ndarray], schema: dict[str, Any], class_names: list[str],
                            dataset_ref: str, job_id: str) -> bool:
    """The train job's baseline step (training/train_runner.py's ``baseline=``): the profile and
    embeddings of the dataset's held-out rows through the just-trained Keras model, into the
    bundle folder so they upload with it. Never fails the job: on any error one line, no baseline
    (``loopml monitors baseline NAME:V`` backfills it)."""
    t0 = time.monotonic()
    try:
        from loopml.datasets.content import raw_inputs
        from loopml.models.bundle import keras_probabilities
        from loopml.models.embeddings import embed_transformed

        rows, split = baseline_rows(content, splits)
        profile, embeddings = compute_baseline(
            kind=features.kind, raw=raw_inputs(rows), schema=schema, class_names=class_names,
            predict_proba=lambda rows: keras_probabilities(model, features.transform(rows)),
            embed_rows=lambda rows: embed_transformed(model, features.transform(rows)),
            vocab=vocab_of(features), source={"dataset": dataset_ref, "split": split, "by": f"job {job_id}"},
            **calibration_args(content, splits, rows, split))
        write_baseline(bundle_dir, profile, embeddings)
    except Exception as exc:  # noqa: BLE001 - a baseline problem must never fail the training
        print(f"baseline skipped ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
              f"backfill it later with `loopml monitors baseline`", flush=True)
        return False
    source = profile.get("source", {})
    print(f"baseline: {source.get('profiled_rows')} {source.get('split')} rows profiled, {source.get('embedded_rows')} "
          f"embedded in {time.monotonic() - t0:.1f} s; {source.get('calibration')}", flush=True)
    return True


def _hint(record: dict[str, Any]) -> str:
    return f"run `loopml monitors baseline {record['name']}:{record['version']}`"


def load_baseline(platform: Platform, model_version_record: dict[str, Any]
                  ) -> tuple[dict[str, Any], np.ndarray | None]:
    """(profile, embeddings or None) of a model version; NotFound (saying how to backfill) when
    it has no baseline, CorruptArtifact when its files cannot be read."""
    record = model_version_record
    base = join(record["artifact_prefix"], BASELINE_DIR)
    try:
        data = platform.artifacts.get_bytes(join(base, PROFILE_FILE))
    except NotFound:
        raise NotFound(f"model version {record['name']}:{record['version']} has no baseline; "
                       f"{_hint(record)}") from None
    try:
        profile = json.loads(data)
        if not isinstance(profile, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptArtifact(f"baseline of {record['name']}:{record['version']} cannot be read ({exc}); "
                              f"{_hint(record)} again") from None
    try:
        raw = platform.artifacts.get_bytes(join(base, EMBEDDINGS_FILE))
    except NotFound:
        return profile, None
    try:
        embeddings = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CorruptArtifact(f"baseline embeddings of {record['name']}:{record['version']} cannot be "
                              f"read ({exc}); {_hint(record)} again") from None
    return profile, embeddings


def submit_baseline(platform: Platform, model_ref: str, dataset: str | None = None) -> dict[str, Any]:
    """Queue a baseline job for NAME:VERSION | NAME@ALIAS | NAME (newest); unknown → NotFound.
    ``dataset`` (NAME[:VERSION]): profile its rows instead of those the version was trained on
    (an imported version records none)."""
    from loopml.datasets.service import parse_ref
    from loopml.registry.resolve import resolve

    if not isinstance(model_ref, str) or not model_ref.strip():
        raise InvalidInput("a baseline needs a model reference: NAME:VERSION, NAME@ALIAS or NAME")
    record = resolve(platform, model_ref)
    if "keras" not in (record.get("runtimes") or ["keras"]):
        raise InvalidInput(f"model version {record['ref']} has no Keras model (runtimes: "
                           f"{', '.join(record['runtimes'])}): a baseline needs its layers for the embeddings")
    spec: dict[str, Any] = {"model": record["name"], "version": int(record["version"])}
    if dataset:
        ds = platform.datasets.get(*parse_ref(dataset))
        if ds["kind"] != record["kind"]:
            raise InvalidInput(f"dataset {ds['ref']} is {ds['kind']}; model version {record['ref']} takes "
                               f"{record['kind']} data", field="dataset")
        spec["dataset"] = ds["ref"]
    elif not record.get("dataset"):
        raise InvalidInput(f"model version {record['ref']} records no dataset (imported): give the rows to "
                           "profile with dataset=NAME[:VERSION]", field="dataset")
    return platform.jobs.create("baseline", spec)


def run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None] = lambda: None) -> None:
    """The ``baseline`` job: profile the version's held-out rows, upload baseline/*."""
    from loopml.datasets.service import load_version, parse_ref
    from loopml.models.bundle import load_bundle
    from loopml.core.jobstatus import CANCELLED, RUNNING, SUCCEEDED

    job_id, spec = job["id"], job["spec"]
    record = lookup(platform, str(spec["model"]), int(spec["version"]))
    source = spec.get("dataset") or record.get("dataset")
    if not source:
        raise InvalidInput(f"model version {record['ref']} records no dataset: no rows to profile")
    ds_name, ds_version = parse_ref(str(source))
    ds = platform.datasets.get(ds_name, ds_version)
    if platform.jobs.heartbeat(job_id, {"step": "loading"}):
        _cancelled(platform, job_id, sync_logs, CANCELLED, RUNNING)
        return
    t0 = time.monotonic()
    content, splits = load_version(platform, ds)
    rows, split = baseline_rows(content, splits)
    print(f"model {record['ref']}: {split} split of {ds['ref']}, {len(rows)} rows", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        platform.artifacts.download_dir(record["artifact_prefix"], tmp, required=("loopml.json",))
        trusted = bool(record.get("trusted"))
        bundle = load_bundle(tmp, runtime="auto", trusted=trusted)
        if platform.jobs.heartbeat(job_id, {"step": "profiling"}):
            _cancelled(platform, job_id, sync_logs, CANCELLED, RUNNING)
            return

        def embed_rows(rows: Any) -> np.ndarray | None:
            from loopml.models.embeddings import embed

            return embed(tmp, rows, max_rows=MAX_EMBED_ROWS, trusted=trusted)

        embedder: Callable[[Any], np.ndarray] | None = embed_rows
        if importlib.util.find_spec("keras") is None:  # embeddings need the Keras model
            print("keras is not installed: the baseline has no embeddings", flush=True)
            embedder = None
        from loopml.datasets.content import raw_inputs

        profile, embeddings = compute_baseline(
            kind=bundle.kind, raw=raw_inputs(rows), schema=ds["schema"], class_names=bundle.label_names,
            predict_proba=bundle.predict_proba, embed_rows=embedder, vocab=vocab_of(bundle.features),
            source={"dataset": ds["ref"], "split": split, "by": f"job {job_id}"},
            **calibration_args(content, splits, rows, split))
    base = join(record["artifact_prefix"], BASELINE_DIR)
    if embeddings is not None:
        platform.artifacts.put_bytes(join(base, EMBEDDINGS_FILE), _npy_bytes(embeddings))
    else:
        platform.artifacts.delete(join(base, EMBEDDINGS_FILE))  # never keep a stale one
    platform.artifacts.put_bytes(join(base, PROFILE_FILE), _profile_bytes(profile))  # last: it marks done
    seconds = round(time.monotonic() - t0, 2)
    result = {"model": record["name"], "version": record["version"], "model_ref": record["ref"],
              "dataset": ds["ref"], "profile_key": join(base, PROFILE_FILE),
              "embeddings_key": join(base, EMBEDDINGS_FILE) if embeddings is not None else None,
              "rows": profile["source"]["profiled_rows"], "embedded_rows": profile["source"]["embedded_rows"],
              "calibrated_rows": (profile.get("calibration") or {}).get("n", 0), "seconds": seconds}
    print(f"baseline of {record['ref']}: {result['rows']} rows profiled, {result['embedded_rows']} embedded "
          f"in {seconds} s → {result['profile_key']}; {profile['source']['calibration']}", flush=True)
    sync_logs()
    platform.jobs.transition(job_id, SUCCEEDED, expect=[RUNNING], result=result)


def _cancelled(platform: Platform, job_id: str, sync_logs: Callable[[], None], cancelled: str,
               running: str) -> None:
    print("cancelled", flush=True)
    sync_logs()
    platform.jobs.transition(job_id, cancelled, expect=[running], reason="cancelled by request")
