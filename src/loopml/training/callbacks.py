"""Keras callbacks that report a running job: live progress, per-epoch metrics, checkpoints,
cancellation and the time limit. Per-batch work is a clock read unless 0.5 s have passed."""

from __future__ import annotations

import math
import queue
import threading
import time
from typing import Any, Callable

import keras
import numpy as np

from loopml.core.timeutil import iso, utcnow

PROGRESS_EVERY_S = 0.5


def _clean(logs: dict[str, Any] | None) -> dict[str, float | None]:
    """Plain floats for JSON; a diverged (NaN/inf) metric becomes None, which every store accepts."""
    out: dict[str, float | None] = {}
    for k, v in (logs or {}).items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        out[k] = round(f, 6) if math.isfinite(f) else None
    return out


def cosine_schedule(base_rate: float, epochs: int) -> keras.callbacks.Callback:
    """Per-epoch cosine decay; epoch indices are absolute, so a resumed job continues the curve."""
    def rate(epoch: int, _current: float) -> float:
        return float(base_rate * 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / max(epochs, 1))))

    return keras.callbacks.LearningRateScheduler(rate)


class RestoreBest(keras.callbacks.Callback):
    """Keep the weights of the epoch with the lowest ``monitor`` and put them back at the end.

    Unlike EarlyStopping(restore_best_weights=True) this restores even when training runs its
    full budget — what a registered model version should be (measured on the seed RNN: the
    best-val_loss epoch scored up to 10 points more test accuracy than the last epoch).
    """

    def __init__(self, monitor: str = "val_loss") -> None:
        super().__init__()
        self.monitor = monitor
        self.best = math.inf
        self.best_epoch: int | None = None
        self._weights: list | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and math.isfinite(float(value)) and float(value) < self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self._weights = self.model.get_weights()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._weights is not None:
            self.model.set_weights(self._weights)
            print(f"restored the weights of epoch {self.best_epoch} ({self.monitor} {self.best:.4f})", flush=True)


class BackgroundIO:
    """One thread that does the reporting I/O (database writes, checkpoint files and uploads) so
    the training thread only hands over work: the fit loop never waits on storage."""

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="loopml-report-io", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                fn, args = item
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - surfaced on drain()
                self._error = self._error or exc
            finally:
                self._queue.task_done()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put((fn, args))

    def drain(self) -> None:
        """Wait for everything submitted so far; re-raise the first failure."""
        self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)


def snapshot(model: Any) -> dict[str, np.ndarray]:
    """Copies of the model's and optimizer's variables (milliseconds), safe to write later."""
    arrays = {f"model_{i:04d}": np.array(v) for i, v in enumerate(model.weights)}
    optimizer = getattr(model, "optimizer", None)
    for i, v in enumerate(getattr(optimizer, "variables", []) or []):
        arrays[f"optimizer_{i:04d}"] = np.array(v)
    return arrays


def restore(model: Any, arrays: dict[str, np.ndarray]) -> None:
    """Put a ``snapshot`` back into a model loaded from the job's architecture file."""
    weights = [arrays[k] for k in sorted(arrays) if k.startswith("model_")]
    opt = [arrays[k] for k in sorted(arrays) if k.startswith("optimizer_")]
    if len(weights) != len(model.weights):
        raise ValueError(f"checkpoint has {len(weights)} model variables, the model {len(model.weights)}")
    for var, value in zip(model.weights, weights):
        var.assign(value)
    if opt and getattr(model, "optimizer", None) is not None:
        model.optimizer.build(model.trainable_variables)
        if len(opt) != len(model.optimizer.variables):
            raise ValueError(f"checkpoint has {len(opt)} optimizer variables, the optimizer "
                             f"{len(model.optimizer.variables)}")
        for var, value in zip(model.optimizer.variables, opt):
            var.assign(value)


class JobReporter(keras.callbacks.Callback):
    """Reports progress/heartbeat, records epoch metrics, checkpoints every epoch.

    Per batch: a clock read (progress goes out at most every 0.5 s). Per epoch: a copy of the
    variables. All storage I/O runs on a BackgroundIO thread.
    """

    # Thread-safe (only a clock read and a queue put): lets Keras keep its async callback
    # dispatch instead of syncing the device after every batch to hand us the logs.
    async_safe = True

    def __init__(self, *, epochs: int, batches: int, samples: int, io: BackgroundIO,
                 heartbeat: Callable[[dict[str, Any]], bool],
                 on_epoch: Callable[[int, dict[str, Any]], None],
                 save_checkpoint: Callable[[dict[str, np.ndarray], int], None],
                 time_limit_s: float | None = None, started: float | None = None) -> None:
        super().__init__()
        self.epochs, self.batches, self.samples = epochs, batches, samples
        self._io = io
        self._heartbeat, self._on_epoch, self._save_checkpoint = heartbeat, on_epoch, save_checkpoint
        self.time_limit_s = time_limit_s
        self.started = started or time.monotonic()
        self.stop_reason: str | None = None
        self._cancel_requested = False
        self._last = 0.0
        self._epoch = 0
        self._epoch_start = 0.0
        self._last_epoch_logs: dict[str, float | None] = {}
        self._epochs_done = 0
        self._batches_done = 0
        self.full_epochs = 0  # epochs (counted from 0, not from a resumed job's) that ran every batch
        self.first_batch_at: str | None = None  # wall time the first batch ended (bench/job_start.py reads it)
        self.first_batch_cpu_s: float | None = None  # this process's CPU seconds by then (ditto)
        self.cut: tuple[int, int] | None = None  # (epoch, batches run) of an epoch stopped part-way

    @property
    def completed(self) -> bool:
        """Every epoch ran every batch: a time limit that trips during the last batch or the last
        validation pass stopped nothing, so the job is finished, not out of time."""
        return self._epochs_done >= self.epochs and self._batches_done >= self.batches

    def _beat(self, progress: dict[str, Any]) -> None:  # on the I/O thread
        try:
            if self._heartbeat(progress):
                self._cancel_requested = True
        except Exception as exc:  # noqa: BLE001 - a missed heartbeat must not fail the job; metrics/checkpoints still do
            print(f"warning: progress update failed ({type(exc).__name__}: {exc})", flush=True)

    def _progress(self, batch: int, logs: dict[str, Any] | None, force: bool = False) -> None:
        now = time.monotonic()
        if self._cancel_requested and self.stop_reason is None:
            self.stop_reason = "cancelled"
            self.model.stop_training = True
        elif self.time_limit_s is not None and now - self.started > self.time_limit_s and self.stop_reason is None:
            self.stop_reason = f"time limit of {self.time_limit_s:g} s reached"
            self.model.stop_training = True
        if not force and now - self._last < PROGRESS_EVERY_S:
            return
        self._last = now
        progress = {"epoch": self._epoch + 1, "epochs": self.epochs, "batch": batch, "batches": self.batches,
                    **_clean(logs), "elapsed_s": round(now - self.started, 2)}
        if self.first_batch_at:
            progress["first_batch_at"] = self.first_batch_at
            progress["first_batch_cpu_s"] = self.first_batch_cpu_s
        progress.update({k: v for k, v in self._last_epoch_logs.items() if k.startswith("val_")})
        self._io.submit(self._beat, progress)

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = time.monotonic()
        self._batches_done = 0
        self._progress(0, {}, force=True)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches_done = batch + 1
        first = self.first_batch_at is None
        if first:
            self.first_batch_at = iso(utcnow())
            self.first_batch_cpu_s = round(time.process_time(), 3)
        self._progress(batch + 1, logs, force=first)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epochs_done = epoch + 1
        if self._batches_done < self.batches:
            # stopped part-way (time limit, cancel): not an epoch, so no metrics and no checkpoint
            # that a --resume would take for a finished epoch
            self.cut = (epoch + 1, self._batches_done)
            return
        self.full_epochs = epoch + 1
        seconds = time.monotonic() - self._epoch_start
        metrics = {**_clean(logs), "epoch_seconds": round(seconds, 3),
                   "samples_per_s": round(self.samples / seconds, 1) if seconds > 0 else None}
        self._last_epoch_logs = metrics
        self._io.submit(self._on_epoch, epoch + 1, metrics)
        self._io.submit(self._save_checkpoint, snapshot(self.model), epoch + 1)
        self._progress(self.batches, logs, force=True)


class EpochSummaries:
    """TensorBoard event files of the epoch metrics, laid out as keras.callbacks.TensorBoard lays
    them out (``train/`` and ``validation/`` runs, tags ``epoch_loss``, ``epoch_accuracy``…), step =
    the 1-based epoch as in ``loopml jobs metrics``. Not a Keras callback: JobReporter's ``on_epoch``
    feeds it the metrics of each finished epoch, so it writes what the job records, on the
    BackgroundIO thread. ``upload(local_dir)`` copies the files to the artifact store."""

    NOT_PLOTTED = frozenset({"epoch_seconds", "samples_per_s"})  # the reporter's timings, not Keras's metrics

    def __init__(self, local_dir: str, upload: Callable[[str], None],
                 hparams: dict[str, Any] | None = None) -> None:
        import tensorflow as tf

        self._tf, self._dir, self._upload = tf, local_dir, upload
        self._failed = False
        # written with the first epoch (or at close), not at the start: a summary write costs
        # CPU (~0.1 s the first time) that the job's first batch need not wait for
        self._hparams = hparams
        self._writers = {run: tf.summary.create_file_writer(f"{local_dir}/{run}") for run in ("train", "validation")}

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        """TensorBoard files are a convenience: a problem with them is one line, never a failed job."""
        if self._failed:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            self._failed = True
            print(f"warning: TensorBoard event files not written ({type(exc).__name__}: {exc})", flush=True)

    def _pending_hparams(self) -> None:
        hparams, self._hparams = self._hparams, None
        if hparams is not None:
            self._guarded(self._write_text, "hparams",
                          "\n".join(f"    {k} = {v}" for k, v in sorted(hparams.items())))

    def epoch(self, epoch: int, metrics: dict[str, float | None]) -> None:  # on the I/O thread
        self._pending_hparams()
        self._guarded(self._write, epoch, metrics)

    def close(self) -> None:  # on the I/O thread
        self._pending_hparams()
        self._guarded(self._close)

    def _write_text(self, tag: str, text: str) -> None:  # indented: TensorBoard shows it monospaced
        with self._writers["train"].as_default():
            self._tf.summary.text(tag, text, step=0)
        self._writers["train"].flush()

    def _write(self, step: int, metrics: dict[str, float | None]) -> None:
        logs = {k: v for k, v in metrics.items() if k not in self.NOT_PLOTTED}
        for run, items in (("train", {k: v for k, v in logs.items() if not k.startswith("val_")}),
                           ("validation", {k[4:]: v for k, v in logs.items() if k.startswith("val_")})):
            with self._writers[run].as_default():
                for name, value in items.items():
                    if value is not None:
                        self._tf.summary.scalar(f"epoch_{name}", value, step=step)
            self._writers[run].flush()
        self._upload(self._dir)

    def _close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._upload(self._dir)
