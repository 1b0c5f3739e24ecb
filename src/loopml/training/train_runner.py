"""Runs one training job inside its worker process (Keras is imported here, never at CLI start)."""

from __future__ import annotations

import json
import os
import platform as pyplatform
import re
import tempfile
import time
from typing import Any, Callable, Protocol

import numpy as np

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput, JobNoLongerRunning, paths_shown_as
from loopml.core.timeutil import parse_iso, utcnow
from loopml.datasets.content import DatasetContent, raw_inputs
from loopml.datasets.service import load_version
from loopml.models.metrics import classification_report
from loopml.platform import Platform
from loopml.registry.registration import register_from_job
from loopml.core.jobstatus import CANCELLED, FAILED, RUNNING, SUCCEEDED

_CKPT_RE = re.compile(r"epoch-(\d+)\.npz$")
ARCH_FILE = "model.keras"  # the compiled architecture, once per job; epochs are variable snapshots


def last_checkpoint(platform: Platform, job_id: str) -> tuple[str, int] | None:
    best = None
    for key in platform.artifacts.list(join("jobs", job_id, "checkpoints")):
        m = _CKPT_RE.search(key)
        if m and (best is None or int(m.group(1)) > best[1]):
            best = (key, int(m.group(1)))
    return best


def _save_features(platform: Platform, job_id: str, features: Any) -> None:
    prefix = join("jobs", job_id, "features")
    for name, data in features.files().items():
        platform.artifacts.put_bytes(join(prefix, name), data)
    platform.artifacts.put_bytes(join(prefix, "features.json"), json.dumps(features.to_config()).encode())


def _load_features(platform: Platform, job_id: str) -> Any:
    from loopml.models.features import features_from_config

    prefix = join("jobs", job_id, "features")
    files = {k.rsplit("/", 1)[-1]: platform.artifacts.get_bytes(k) for k in platform.artifacts.list(prefix)}
    return features_from_config(json.loads(files.pop("features.json")), files)


def _load_checkpoint(platform: Platform, job_id: str, key: str) -> Any:
    """The job's architecture file with an epoch's variables (model and optimizer) put back."""
    import io

    import keras

    from loopml.core.errors import CorruptArtifact
    from loopml.training.callbacks import restore

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, ARCH_FILE)
        platform.artifacts.get_file(join("jobs", job_id, "checkpoints", ARCH_FILE), local)
        model = keras.saving.load_model(local, safe_mode=True)
    try:
        with np.load(io.BytesIO(platform.artifacts.get_bytes(key))) as z:
            restore(model, {k: z[k] for k in z.files})
    except (ValueError, OSError, KeyError) as exc:
        raise CorruptArtifact(f"checkpoint {key!r} cannot be restored: {exc}") from None
    return model


def _stopped_reason(reporter: Any, job_id: str, initial_epoch: int, resumed_from: str | None) -> str:
    """Why a job stopped early and how to go on: from its last finished epoch's checkpoint, or
    (no epoch finished) from where it started."""
    reason = reporter.stop_reason
    done = f" after epoch {reporter.full_epochs}"
    if reporter.cut is not None:
        epoch, ran = reporter.cut
        reason += f" during epoch {epoch} (batch {ran} of {reporter.batches})"
        done = f"; epoch {reporter.full_epochs} is the last finished"
    if reporter.full_epochs > initial_epoch:
        return f"{reason}{done}; continue with: loopml train --resume {job_id}"
    if resumed_from:
        return f"{reason}: no epoch finished; continue with: loopml train --resume {resumed_from}"
    return f"{reason}: no epoch finished (nothing to resume); train again with a longer --time-limit"


def _build_before_fit(model: Any, x: Any, y: np.ndarray, batch_size: int) -> None:
    """Create the variables the first train step would otherwise create while it is traced (the
    compiled metrics' and the optimizer's): a ``tf.function`` that creates variables is traced
    twice. Keras builds them up front itself only under a distribution strategy. Measured on the
    seed CNN: ~0.3 s CPU of the first batch each for the metrics and for the optimizer. Symbolic
    (no op runs, no random draw): the training is the same."""
    build = getattr(model, "_symbolic_build", None)  # Keras 3's own pre-build (private)
    if callable(build) and len(y):
        try:
            build(data_batch=(x[:batch_size], y[:batch_size], None))
        except Exception:  # noqa: BLE001 - only a speed-up: fit builds (and explains a failure) itself
            pass
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not getattr(optimizer, "built", True):
        optimizer.build(model.trainable_variables)


class BaselineWriter(Protocol):
    """Writes a version's monitoring baseline into its bundle folder before the upload; True when
    it did. Never raises (a baseline problem must not fail the training)."""

    def __call__(self, bundle_dir: str, *, model: Any, features: Any, content: DatasetContent,
                 splits: dict[str, np.ndarray], schema: dict[str, Any], class_names: list[str],
                 dataset_ref: str, job_id: str) -> bool: ...


def run(platform: Platform, job: dict[str, Any], sync_logs: Callable[[], None] = lambda: None, *,
        baseline: BaselineWriter | None = None) -> None:
    """Train, evaluate, register. ``sync_logs`` is called before each final status is recorded,
    so a job that reads as ended already has all of its logs. ``baseline``: the monitoring
    baseline step (the job runner passes monitoring.baseline_job.write_training_baseline, so
    training imports nothing of monitoring); None: the version has no baseline."""
    import keras

    import loopml.models.layers  # noqa: F401 - registers Standardize before any model is loaded
    from loopml.models.bundle import save_bundle
    from loopml.models.features import fit_features
    from loopml.models.templates import build_model

    job_id, spec = job["id"], job["spec"]
    hp = spec["hparams"]
    # The time limit counts from dispatch (the job's started_at), the same origin the control
    # plane's hard limit uses, so evaluation and export fit inside its grace period.
    started = time.monotonic() - max(0.0, (utcnow() - parse_iso(job["started_at"])).total_seconds()) \
        if job.get("started_at") else time.monotonic()
    keras.utils.set_random_seed(int(hp.get("seed", 42)))

    ds = platform.datasets.get(spec["dataset_name"], spec["dataset_version"])
    schema = ds["schema"]
    classes = list(schema["classes"])
    content, splits = load_version(platform, ds)
    index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([index[str(c)] for c in content.labels], dtype=np.int64)
    parts = {name: content.take(idx) for name, idx in splits.items()}
    ys = {name: y_all[idx] for name, idx in splits.items()}
    print(f"dataset {ds['ref']}: {len(content)} rows, {len(classes)} classes, "
          f"split {', '.join(f'{k}={len(v)}' for k, v in splits.items())}", flush=True)

    initial_epoch = 0
    # A job with checkpoints of its own is a retry (the executor lost its node): it continues
    # from its last finished epoch, as --resume continues another job's.
    own = last_checkpoint(platform, job_id)
    prev = job_id if own else spec.get("resume_from")
    if prev:
        ckpt = own or last_checkpoint(platform, prev)
        if ckpt is None:
            raise InvalidInput(f"job {prev!r} has no checkpoint to resume from")
        features = _load_features(platform, prev)
        model = _load_checkpoint(platform, prev, ckpt[0])
        initial_epoch = ckpt[1]
        print(f"{'continuing this job' if own else 'resuming'} from {ckpt[0]} (epoch {initial_epoch})", flush=True)
    else:
        features = fit_features(parts["train"], hp, schema)
        if spec["template"] == "file":
            filename = spec["user_model_key"].rsplit("/", 1)[-1]
            with tempfile.TemporaryDirectory() as tmp, paths_shown_as({os.path.join(tmp, filename): filename}):
                path = os.path.join(tmp, filename)  # a failure names the user's file, not this copy
                platform.artifacts.get_file(spec["user_model_key"], path)
                model = build_model("file:" + path, hp, schema, features)
        else:
            model = build_model(spec["template"], hp, schema, features)
    _save_features(platform, job_id, features)
    with tempfile.TemporaryDirectory() as tmp:
        arch = os.path.join(tmp, ARCH_FILE)
        model.save(arch)
        platform.artifacts.put_file(arch, join("jobs", job_id, "checkpoints", ARCH_FILE))

    xs = {name: features.transform(raw_inputs(part)) for name, part in parts.items()}
    epochs = int(hp["epochs"])
    batch_size = int(hp["batch_size"])
    n_train = len(ys["train"])
    batches = max(1, -(-n_train // batch_size))

    from loopml.training.callbacks import BackgroundIO, EpochSummaries, JobReporter, RestoreBest, cosine_schedule

    def save_checkpoint(arrays: dict[str, np.ndarray], epoch: int) -> None:  # on the I/O thread
        with platform.artifacts.open_write(join("jobs", job_id, "checkpoints", f"epoch-{epoch:03d}.npz")) as f:
            np.savez(f, **arrays)

    io = BackgroundIO()
    # TensorBoard event files go to jobs/<id>/tensorboard/ (tensorboard --logdir on it, or on jobs/)
    tb_dir = tempfile.TemporaryDirectory(prefix="loopml-tb-")
    summaries = EpochSummaries(
        tb_dir.name, lambda local: platform.artifacts.upload_dir(local, join("jobs", job_id, "tensorboard")), hp)

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:  # on the I/O thread, for finished epochs only
        platform.jobs.add_metrics(job_id, epoch, metrics)
        summaries.epoch(epoch, metrics)

    reporter = JobReporter(epochs=epochs, batches=batches, samples=n_train, io=io,
                           heartbeat=lambda p: platform.jobs.heartbeat(job_id, p), on_epoch=on_epoch,
                           save_checkpoint=save_checkpoint, time_limit_s=spec.get("time_limit_s"),
                           started=started)
    callbacks: list[Any] = [reporter]
    if hp.get("lr_schedule") == "cosine":
        callbacks.append(cosine_schedule(float(hp["learning_rate"]), epochs))
    if int(hp.get("patience", 0)) > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(hp["patience"]),
                                                       restore_best_weights=True))
    has_val = len(ys["validation"]) > 0
    best = RestoreBest("val_loss") if has_val and hp.get("restore_best", True) else None
    if best is not None:
        callbacks.append(best)
    _build_before_fit(model, xs["train"], ys["train"], batch_size)
    t0 = time.monotonic()
    try:
        history = model.fit(xs["train"], ys["train"],
                            validation_data=(xs["validation"], ys["validation"]) if has_val else None,
                            epochs=epochs, initial_epoch=initial_epoch, batch_size=batch_size,
                            callbacks=callbacks, verbose=2)
        fit_seconds = time.monotonic() - t0
        io.submit(summaries.close)
        io.drain()  # every metric and checkpoint is stored before the outcome is recorded
    finally:
        io.close()
        tb_dir.cleanup()
    epochs_run = len(history.history.get("loss", []))

    sync_logs()
    if reporter.stop_reason == "cancelled":
        platform.jobs.transition(job_id, CANCELLED, expect=[RUNNING], reason="cancelled while training")
        return
    if reporter.stop_reason and not reporter.completed:  # finished is finished, however late
        platform.jobs.transition(job_id, FAILED, expect=[RUNNING],
                                 reason=_stopped_reason(reporter, job_id, initial_epoch, spec.get("resume_from")))
        return

    proba = np.asarray(model.predict(xs["test"], batch_size=256, verbose=0))
    evaluation = classification_report(ys["test"], proba, classes)
    print(f"test accuracy {evaluation['accuracy']:.4f}  loss {evaluation['loss']}  "
          f"({evaluation['samples']} samples)", flush=True)
    last = platform.jobs.metrics(job_id)[-1] if epochs_run else {}
    metrics = {"test_accuracy": evaluation["accuracy"], "test_loss": evaluation["loss"],
               "test_macro_f1": evaluation["macro_f1"],
               **{k: last[k] for k in ("accuracy", "loss", "val_accuracy", "val_loss") if k in last},
               "epochs": initial_epoch + epochs_run,
               "best_epoch": best.best_epoch if best is not None else None,
               "train_samples_per_s": round(n_train * epochs_run / fit_seconds, 1) if fit_seconds > 0 else None}

    reference = raw_inputs(parts["test"].take(np.arange(min(5, len(ys["test"])))))
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = os.path.join(tmp, "bundle")
        meta = {"label_names": classes, "dataset": ds["ref"], "job_id": job_id, "template": spec["template"], "hparams": hp,
                "metrics": metrics, "label_column": content.label_column}
        info = save_bundle(bundle_dir, model, features, meta, reference_inputs=reference)
        has_baseline = baseline is not None and baseline(
            bundle_dir, model=model, features=features, content=content, splits=splits, schema=schema,
            class_names=classes, dataset_ref=ds["ref"], job_id=job_id)
        prefix = join("models", spec["register_as"], job_id)
        platform.artifacts.upload_dir(bundle_dir, prefix)
    lineage = {"dataset": ds["ref"], "dataset_hash": ds["content_hash"], "job_id": job_id,
               "resumed_from": spec.get("resume_from"), "frameworks": info.get("frameworks", {}),
               "python": pyplatform.python_version()}
    fields = {"dataset": ds["ref"], "kind": content.kind, "template": spec["model"], "hparams": hp,
              "metrics": metrics, "lineage": lineage, "runtimes": info.get("runtimes", ["keras"]),
              "artifact_prefix": prefix}
    result = {"metrics": metrics, "evaluation": evaluation, "epochs_run": epochs_run, "dataset": ds["ref"],
              "register_as": spec["register_as"], "artifact_prefix": prefix, "baseline": has_baseline}
    if not spec.get("register", True):
        _finish_unregistered(platform, job_id, prefix, {**result, "registered": False, "model_ref": f"job:{job_id}",
                                                         "registration": fields}, sync_logs)
        return
    print(f"registering {spec['register_as']} (runtimes: {', '.join(info.get('runtimes', ['keras']))})", flush=True)
    sync_logs()
    try:
        record = register_from_job(platform, job_id, spec["register_as"], fields=fields,
                                   result={**result, "registered": True})
    except JobNoLongerRunning:
        platform.artifacts.delete(prefix)
        print("job was cancelled before registration; model version not registered", flush=True)
        return
    print(f"registered model version {record['ref']}", flush=True)


def _finish_unregistered(platform: Platform, job_id: str, prefix: str, result: dict[str, Any],
                         sync_logs: Callable[[], None]) -> None:
    """register=False: the bundle is uploaded, the result says how to register it later."""
    print(f"model bundle saved under {prefix} (not registered: model_ref job:{job_id})", flush=True)
    sync_logs()
    if platform.jobs.get(job_id)["cancel_requested"] or not platform.jobs.transition(
            job_id, SUCCEEDED, expect=[RUNNING], reason=None, result=result):
        platform.artifacts.delete(prefix)
        platform.jobs.transition(job_id, CANCELLED, expect=[RUNNING], reason="cancelled before it finished")
        print("job was cancelled before it finished; model bundle discarded", flush=True)
