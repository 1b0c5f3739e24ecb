"""Warm workers on the local executor: spare processes with TensorFlow already imported take
real jobs (tiny trainings on `digits`), are cancelled, re-attached after a control-plane restart,
replaced when they die, and never left behind; LOOPML_WARM_WORKERS=0 still starts workers cold.
No timing assertions (bench/job_start.py measures the start latency)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loopml.controlplane import ControlLoop
from loopml.core.settings import Settings
from loopml.datasets.service import register
from loopml.jobs.local import LocalExecutor, _pid_runs_job
from loopml.jobs.spares import pid_file
from loopml.jobs.warm import import_time_differences
from loopml.jobs.worker import WARM_TF_HINT, failure_reason
from loopml.platform import Platform
from loopml.training.service import submit_training, upload_user_file
from tests.process_support import free_port, server_env, wait_for, wait_job

pytestmark = pytest.mark.warm_workers


class NoDataPlane:
    """The endpoints' supervisor is not under test (it would start a serving process)."""

    url = None
    log_path = Path("/dev/null")

    def bind(self) -> None: ...

    def tick(self) -> None: ...

    def stop(self) -> None: ...


def _settings(home: Path, warm: int) -> Settings:
    return Settings(home=home, warm_workers=warm, reconcile_interval_s=0.2, serving_port=0, max_concurrent_jobs=1)


@pytest.fixture
def plat(tmp_path):
    p = Platform(_settings(tmp_path / "home", 1))
    register(p, "digits", "sample:digits")
    yield p
    p.close()


def _loop(plat: Platform) -> ControlLoop:
    loop = ControlLoop(plat, endpoints=NoDataPlane())
    loop.start()
    return loop


def _alive(pid: int) -> bool:
    """A live, not-yet-reaped-zombie process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ready_spare(executor: LocalExecutor) -> int:
    """The pid of a spare that has finished its imports."""
    spare = wait_for(lambda: next((s for s in executor.spares.spares if s.check_ready()), None), timeout=240,
                     what="a ready spare worker")
    return spare.proc.pid


def _epochs(plat: Platform, job_id: str) -> list[float]:
    return [m[key] for m in plat.jobs.metrics(job_id) for key in ("loss", "val_loss")]


def test_a_warm_worker_runs_a_real_job_exactly_as_a_cold_one(plat, tmp_path):
    params = {"epochs": 2, "batch_size": 64}
    cold_plat = Platform(_settings(tmp_path / "cold", 0))
    register(cold_plat, "digits", "sample:digits")
    cold = _loop(cold_plat)
    try:
        assert cold.executor.spares.spares == []  # LOOPML_WARM_WORKERS=0: no spare at all
        cold_job = submit_training(cold_plat, dataset="digits", model="cnn", params=params)
        cold_done = wait_job(cold_plat, cold_job["id"])
        assert cold_done["status"] == "succeeded", cold_done["reason"]
        assert not list((tmp_path / "cold" / "workers").glob("spare-*"))
        cold_epochs = _epochs(cold_plat, cold_job["id"])
    finally:
        cold.stop()
        cold_plat.close()

    loop = _loop(plat)
    try:
        spare_pid = _ready_spare(loop.executor)
        job = submit_training(plat, dataset="digits", model="cnn", params=params)
        loop.wake()
        done = wait_job(plat, job["id"])
        assert done["status"] == "succeeded", done["reason"]
        assert done["worker"]["pid"] == spare_pid  # the spare became the job's worker
        assert plat.models.get("digits-cnn")["version"] == 1
        logs = "\n".join(line["text"] for line in plat.jobs.logs(job["id"]))
        assert f"worker pid {spare_pid}" in logs and "test accuracy" in logs
        spare_output = (plat.settings.home / "workers" / f"{job['id']}.out").read_text()
        assert "warm-up failed" not in spare_output and "not preloaded" not in spare_output
        assert done["progress"]["first_batch_at"] >= done["started_at"]
        # same seed, same data: the same training as in a fresh process (Keras state was clean)
        assert _epochs(plat, job["id"]) == pytest.approx(cold_epochs, rel=1e-4)
        # a spare serves once: a new one replaced it, and the used one ended with its job
        wait_for(lambda: not _alive(spare_pid), timeout=60, what="the used spare to end")
        # the replacement starts REFILL_AFTER_HANDOVER_S after the handover (a short job may end first)
        pids = wait_for(lambda: [s.proc.pid for s in loop.executor.spares.spares], timeout=60,
                        what="a replacement spare")
        assert len(pids) == 1 and spare_pid not in pids
    finally:
        loop.stop()
    assert not list((plat.settings.home / "workers").glob("spare-*"))  # shutdown removed the idle spare's file


def test_the_spares_warm_up_and_the_pre_fit_build_leave_the_training_unchanged():
    """In this process, as in a spare: a model trained after the warm-up (a throwaway model trained
    and forgotten) and with the pre-fit build (the metrics' and optimizer's variables made before
    fit) ends with the same losses and weights as one trained without either."""
    import keras
    import numpy as np

    from loopml.datasets.content import DatasetContent
    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model
    from loopml.training.train_runner import _build_before_fit
    from loopml.training.warmup import warm_up

    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, size=(96, 8, 8, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, size=96)
    schema = {"kind": "image", "classes": ["0", "1", "2"]}
    hp = validate_hparams("cnn", {"epochs": 2, "batch_size": 32, "filters": 4, "dense_units": 8})
    features = fit_features(DatasetContent(kind="image", labels=labels.astype(str).astype(object), images=images),
                            hp, schema)
    x = features.transform(images)

    def train(pre_build: bool) -> tuple[dict, list]:
        keras.backend.clear_session()  # what a fresh process starts with
        model = build_model("cnn", hp, schema, features)  # seeds itself, as the job does
        if pre_build:
            _build_before_fit(model, x[:80], labels[:80], 32)
        history = model.fit(x[:80], labels[:80], validation_data=(x[80:], labels[80:]), epochs=2, batch_size=32,
                            verbose=0)
        return history.history, model.get_weights()

    plain_history, plain_weights = train(pre_build=False)
    warm_up()
    history, weights = train(pre_build=True)
    assert history.keys() == plain_history.keys()
    for key, values in plain_history.items():
        assert history[key] == pytest.approx(values, rel=1e-6), key
    for got, want in zip(weights, plain_weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_cancel_reaches_a_job_on_a_warm_worker(plat):
    loop = _loop(plat)
    try:
        spare_pid = _ready_spare(loop.executor)
        job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 500})
        loop.wake()
        wait_job(plat, job["id"], until=("running",), check=lambda j: (j["progress"] or {}).get("batch", 0) >= 1)
        assert plat.jobs.get(job["id"])["worker"]["pid"] == spare_pid
        plat.jobs.request_cancel(job["id"])  # polite: the worker stops itself at its next heartbeat
        done = wait_job(plat, job["id"])
        assert done["status"] == "cancelled" and done["reason"] == "cancelled while training"
        wait_for(lambda: not _alive(spare_pid), timeout=60, what="the cancelled worker to exit")
    finally:
        loop.stop()


def test_a_restarted_control_plane_adopts_a_job_on_a_warm_worker(plat):
    first = _loop(plat)
    spare_pid = _ready_spare(first.executor)
    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 500})
    first.wake()
    wait_job(plat, job["id"], until=("running",), check=lambda j: (j["progress"] or {}).get("epoch", 0) >= 1)
    # the replacement spare starts a few seconds after the handover (REFILL_AFTER_HANDOVER_S)
    wait_for(lambda: first.executor.spares.spares, timeout=60, what="a replacement spare")
    replacement = [s.proc.pid for s in first.executor.spares.spares]
    first.stop()  # the control plane goes away: its idle spare ends, the job's worker does not
    assert replacement and all(not _alive(pid) for pid in replacement)
    assert _alive(spare_pid)

    workers = plat.settings.home / "workers"
    # the worker's command line does not name the job: the pid file written at handover does
    assert job["id"].encode() not in Path(f"/proc/{spare_pid}/cmdline").read_bytes()
    assert _pid_runs_job(spare_pid, job["id"], workers)
    assert not _pid_runs_job(spare_pid, "job-someoneelse", workers)
    assert not _pid_runs_job(os.getpid(), job["id"], workers)  # a pid the file does not name

    second = _loop(plat)
    try:
        wait_for(lambda: second.executor.owns(job["id"]), timeout=120, what="the job to be re-attached")
        assert plat.jobs.get(job["id"])["status"] == "running"
        plat.jobs.request_cancel(job["id"])
        second.executor.cancel(job["id"])  # the signal path: SIGTERM to the adopted worker's group
        done = wait_job(plat, job["id"])
        assert done["status"] == "cancelled", done["reason"]
        # the worker records "cancelled" itself, then exits: its process may outlive the record a moment
        wait_for(lambda: not _alive(spare_pid), timeout=60, what="the cancelled worker to exit")
        wait_for(lambda: not pid_file(workers, job["id"]).exists(), timeout=60, what="the pid file to go")
    finally:
        second.stop()


def test_a_spare_killed_from_outside_is_replaced_and_none_outlives_shutdown(tmp_path):
    executor = LocalExecutor(_settings(tmp_path / "home", 1))
    try:
        [spare] = executor.spares.spares
        first = spare.proc.pid
        os.killpg(first, signal.SIGKILL)
        spare.proc.wait(30)
        replaced = wait_for(lambda: (executor.poll(), [s.proc.pid for s in executor.spares.spares])[1], timeout=60,
                            what="a replacement spare")
        assert replaced != [first] and len(replaced) == 1 and _alive(replaced[0])
    finally:
        executor.shutdown()
    assert not _alive(replaced[0]) and executor.spares.spares == []
    assert not list((tmp_path / "home" / "workers").glob("spare-*"))


def test_idle_spares_end_with_a_control_plane_killed_without_shutdown(tmp_path):
    """SIGKILL to the server: no shutdown hook runs, yet its spare sees EOF on stdin and exits."""
    env = server_env(tmp_path, free_port(), LOOPML_WARM_WORKERS="1", LOOPML_RECONCILE_INTERVAL_S="0.2")
    server = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "server"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        def spares() -> list[int]:
            out = subprocess.run(["ps", "-o", "pid=,ppid=,args=", "-A"], capture_output=True, text=True).stdout
            return [int(f.split()[0]) for f in out.splitlines()
                    if "loopml.jobs.warm" in f and int(f.split()[1]) == server.pid]
        spare = wait_for(spares, timeout=120, what="the server's spare worker")[0]
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(30)
    wait_for(lambda: not _alive(spare), timeout=240, what="the orphaned spare to exit")


def test_only_import_time_variables_that_differ_make_a_spare_start_the_job_cold():
    spare = {"KERAS_BACKEND": "tensorflow", "LOOPML_HOME": "/a", "PYTEST_CURRENT_TEST": "x", "TF_CPP_MIN_LOG_LEVEL": "2"}
    assert import_time_differences(spare, {**spare, "LOOPML_HOME": "/b", "PYTEST_CURRENT_TEST": "y"}) == []
    assert import_time_differences(spare, {**spare, "KERAS_BACKEND": "jax"}) == ["KERAS_BACKEND"]
    assert import_time_differences(spare, {**spare, "OMP_NUM_THREADS": "1"}) == ["OMP_NUM_THREADS"]


def test_a_job_whose_environment_changed_since_the_spare_started_gets_the_new_one(plat, monkeypatch):
    loop = _loop(plat)
    try:
        spare_pid = _ready_spare(loop.executor)
        monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")  # read by TensorFlow's import: the spare cannot apply it
        job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 1}, register=False)
        loop.wake()
        done = wait_job(plat, job["id"])
        assert done["status"] == "succeeded", done["reason"]
        assert done["worker"]["pid"] == spare_pid  # exec'd in place: the recorded pid stays true
        out = (plat.settings.home / "workers" / f"{job['id']}.out").read_text()
        assert "TF_CPP_MIN_LOG_LEVEL differ" in out and "starting it cold" in out
    finally:
        loop.stop()


def test_a_job_submitted_through_the_api_is_dispatched_without_waiting_for_a_tick(settings, tmp_path):
    """The loop ticks once at start and then only every 600 s: only the API's wake-up can
    dispatch the job while this test waits."""
    from loopml.api.app import create_app
    from loopml.sdk.client import Client
    from tests.asgi_server import serve_asgi

    slow = settings.model_copy(update={"reconcile_interval_s": 600.0, "warm_workers": 0})
    with serve_asgi(create_app(slow, start_loop=True)) as url:
        client = Client(url, token="")
        client.add_dataset("digits", "sample:digits")
        job = client.train("digits", "cnn", params={"epochs": 1})
        running = wait_for(lambda: client.job(job["id"])["status"] != "queued", timeout=60,
                           what="the job to leave the queue")
        assert running
        client.cancel(job["id"])


THREADS_MODEL = b"""
import keras
import tensorflow as tf


def build_model(hparams, schema):
    tf.config.threading.set_intra_op_parallelism_threads(1)  # only possible before TensorFlow runs an op
    inp = keras.Input(shape=tuple(schema["input"]["shape"][1:]))
    x = keras.layers.Flatten()(inp)
    out = keras.layers.Dense(len(schema["classes"]), activation="softmax")(x)
    return keras.Model(inp, out)
"""


def test_a_model_configuring_tensorflows_threads_fails_on_a_warm_worker_saying_how_to_run_it(plat, tmp_path):
    """TensorFlow cannot be reconfigured in a warmed-up process: the job says so and names the way
    out (LOOPML_WARM_WORKERS=0), which works."""
    key = upload_user_file(plat, "threads.py", THREADS_MODEL)
    loop = _loop(plat)
    try:
        spare_pid = _ready_spare(loop.executor)
        job = submit_training(plat, dataset="digits", model=f"file:{key}", params={"epochs": 1})
        loop.wake()
        done = wait_job(plat, job["id"])
    finally:
        loop.stop()
    assert done["worker"]["pid"] == spare_pid
    assert done["status"] == "failed"
    assert "cannot be modified after initialization" in done["reason"] and "\n" not in done["reason"]
    assert "LOOPML_WARM_WORKERS=0" in done["reason"]
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job["id"]))
    assert "Traceback" in logs and "LOOPML_WARM_WORKERS=0" in logs

    cold_plat = Platform(_settings(tmp_path / "cold", 0))  # the advice: every worker starts cold
    register(cold_plat, "digits", "sample:digits")
    key = upload_user_file(cold_plat, "threads.py", THREADS_MODEL)
    cold = _loop(cold_plat)
    try:
        job = submit_training(cold_plat, dataset="digits", model=f"file:{key}", params={"epochs": 1})
        cold_done = wait_job(cold_plat, job["id"])
    finally:
        cold.stop()
        cold_plat.close()
    assert cold_done["status"] == "succeeded", cold_done["reason"]


def test_the_warm_worker_hint_is_only_for_tensorflows_frozen_runtime_on_a_warm_worker():
    try:
        try:
            raise RuntimeError("Visible devices cannot be modified after being initialized")
        except RuntimeError as inner:
            raise ValueError("build_model in 'm.py' raised RuntimeError") from inner
    except ValueError as exc:
        frozen = exc
    assert failure_reason(frozen, warm=True).endswith(f"({WARM_TF_HINT})")
    assert WARM_TF_HINT not in failure_reason(frozen, warm=False)  # a cold worker: the model's own doing
    assert failure_reason(ValueError("bad"), warm=True) == "ValueError: bad"
    assert failure_reason(KeyboardInterrupt(), warm=True) == "interrupted"
