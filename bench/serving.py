"""Serving speed (issue 3): LoopML's data plane vs its in-process ceiling and two peers, one run.

    .venv/bin/python bench/serving.py [--duration 10] [--quick] [--no-bentoml]
                                      [--soak 300] [--profile 15] [--workdir DIR]
                                      [--servers loopml,fastapi,bentoml] [--loopml-static]
                                      [--layouts [--layouts-vs REV]]

Trains the seed CNN (`cnn` template) on the `mnist` sample for 2 epochs in-process, saves a
LoopML bundle, and measures, one 28×28 grayscale image per request (JSON body
``{"instances": [[[28 floats] x 28]]}``, raw pixel values 0.0–255.0):

  in-process   the ceiling, no HTTP: ONNX Runtime ``bundle.runtime.predict`` (1 intra-op
               thread, as the data plane loads it) and, for reference, Keras
               ``predict_on_batch``, at batch 1 and 32: samples/s, p50/p99 ms per call
  loopml       LoopML itself: ``loopml server`` (the control plane) in a fresh LOOPML_HOME,
               the bundle registered as model ``mnist-cnn`` version 1, endpoint ``mnist``
               created with the SDK (``create_endpoint(..., wait=True)``); the control plane's
               serving process (``python -m loopml.serving.server``) answers on the data-plane
               port. Three rows: POST /endpoints/mnist/invocations with the JSON body and with
               the same image as one (1, 28, 28) float32 ``application/x-npy`` body, and the
               Open Inference Protocol's binary path as tritonclient sends it:
               POST /v2/models/mnist/infer, ``Inference-Header-Content-Length`` + a JSON header
               + the raw FP32 [1, 28, 28] tensor (3,136 bytes), label and confidence asked for
               in JSON. Its server CPU / RSS / py-spy figures are the serving process's (pid
               from the endpoint record's ``served.pid``); the control plane's own CPU is
               printed apart (and is part of the others' CPU column).
  loopml-static  (``--loopml-static``) the earlier stand-in, for comparison: ModelHost +
               ``create_data_plane({name: host})`` under uvicorn (bench/peers/loopml_server.py),
               no control plane, no metadata store
  fastapi      FastAPI + uvicorn, Keras predict_on_batch per request (bench/peers/fastapi_plain.py)
  bentoml      BentoML with adaptive batching (batchable API, max_batch_size=32, Keras
               predict_on_batch padded to bucket sizes; bench/peers/bentoml_service.py)

``--layouts`` adds, for LoopML at concurrency 32, one row per JSON layout of the same check
image (``{"instances": [...]}``, json.dumps' separators: 28×28 floats — the JSON row's body —
and integers, 28×28×1 integers and floats, flat 784 integers). ``--layouts-vs REV`` instead
compares those layouts, the npy and the OIP binary body on two LoopMLs up at once, this tree's and git revision REV's (its
``src`` from ``git archive``, first on PYTHONPATH), same model: ``--layout-rounds`` rounds,
each running every layout on one then the other (interleaved, so the shared machine's drift
hits both alike), medians reported — the codec before/after in one run.

each at concurrency 1 and 32: requests/s, p50, p99, errors (non-2xx + socket errors), the
server's RSS after its cells and its CPU ms per request (utime+stime of its process tree over
the cell). Every row, in-process ones too, also shows the CPU other processes used meanwhile
(/proc/stat busy time minus the server's, wrk's and the bench's, in cores of 2): the machine is
shared, this says how noisy that row was. Then the ratios issue 3 sets goals for. Every server
is first checked to answer the right label for a known MNIST test image (one the model
classifies correctly in-process), then warmed up at concurrency 32 (``--warmup``-second wrk
runs until at least 300 requests) before measuring.
``--soak S`` then runs LoopML at concurrency 32 for S s and reports its RSS at start and end;
``--profile S`` samples LoopML with py-spy during an extra S-second c=32 run and prints where
its time goes. Not a test: figures only. On this 2-core shared machine the load generator and
the server share the cores: read the ratios, not the absolutes.

Why these choices:
  * wrk (C, epoll, closed loop: each connection sends its next request when the previous
    answer arrives) as the load generator: a Python client costs more CPU per request than the
    servers under test and would measure itself. One wrk thread (``-t1``) leaves the second
    core to the server. Its body comes from a file through a tiny Lua script, so JSON and npy
    bodies go through the same path. Latency percentiles are wrk's (``--latency``).
  * Servers run as subprocesses (fresh interpreter each, nothing shared with the bench
    process, killed by process group: for LoopML the control plane's group, which holds its
    serving process). LoopML's launch lives in ``launch_loopml`` alone.
  * BentoML lives in its own venv (../bench-venvs/bentoml beside the checkout, created on first use with the
    project's keras and tensorflow-cpu versions): bentoml pins its own web stack (starlette,
    uvicorn, pydantic, opentelemetry...) that must not leak into the project's venv, and the
    peer must not be able to import loopml. ``--no-bentoml`` skips it.
  * The peers load a plain Keras file, not the bundle's model.keras: that one starts with
    LoopML's custom ``Standardize`` layer, which a process without loopml cannot deserialise.
    ``export_peer_model`` rebuilds the same graph with the built-in ``Rescaling(1/std,
    -mean/std)`` in its place (the same affine map, weights shared with the trained layers) and
    checks its outputs match the bundle's; so peers get the same raw-pixel bodies as LoopML and
    compute the same function, loaded with ``safe_mode=True``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from _common import free_port, log_stderr as log, stop_group, workdir as make_workdir  # noqa: E402 - bench/_common.py

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
# peers' venvs live beside the checkout (never inside the project's .venv); override with
# LOOPML_BENCH_VENVS
VENVS = Path(os.environ.get("LOOPML_BENCH_VENVS", HERE.parent.parent / "bench-venvs"))
BENTO_VENV = VENVS / "bentoml"
PY_SPY = VENVS / "tools" / "bin" / "py-spy"
ENDPOINT = "mnist"
LOOPML_MODEL = "mnist-cnn"
CONCURRENCIES = (1, 32)
BATCHES = (1, 32)
JSON_TYPE, NPY_TYPE = "application/json", "application/x-npy"
OCTET_TYPE = "application/octet-stream"
ONNX = "ONNX Runtime"
ONNX_PACED = "ONNX Runtime, 1 ms idle between calls"
PACED_GAP_S = 0.001            # like c=1 over HTTP: each call follows an idle gap (cold caches)
READY_TIMEOUT_S = 180.0
WARMUP_REQUESTS = 300          # at least, per server, at c=32
WARMUP_MAX_S = 90.0
SERVERS = ("loopml", "fastapi", "bentoml", "loopml-static")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# issue 3's goals
GOAL_VS_BENTOML = 4.0          # LoopML / BentoML req/s at c=32, at least
GOAL_OF_CEILING = 0.25         # LoopML c=32 req/s / in-process ONNX batch-32 samples/s, at least
GOAL_OVERHEAD_MS = 1.0         # LoopML c=1 p50 - in-process batch-1 p50, at most
GOAL_P99_MS = 25.0             # LoopML p99 at c=32, at most


# --------------------------------------------------------------------------- the model


@dataclass
class Model:
    bundle: Path                 # LoopML bundle folder
    peer_model: Path             # plain Keras file for the peers
    label_names: list[str]
    x_test: np.ndarray           # raw test images (N, 28, 28, 1) uint8
    check_image: np.ndarray      # (28, 28) raw pixels the model classifies right
    check_label: str


def prepare_model(folder: Path, epochs: int) -> Model:
    """Train the seed CNN on mnist (or reuse ``folder``'s), save the bundle and the peer model."""
    from loopml.datasets.samples import load_sample
    from loopml.datasets.schema import infer_schema
    from loopml.datasets.splits import stratified_split
    from loopml.models.bundle import load_bundle

    content = load_sample("mnist")
    schema = infer_schema(content)
    classes = [str(c) for c in schema["classes"]]
    splits = stratified_split(content.labels, seed=42)
    train, test = content.take(splits["train"]), content.take(splits["test"])
    bundle, peer_model = folder / "bundle", folder / "peer" / "model.keras"
    if (bundle / "loopml.json").is_file() and peer_model.is_file():
        log(f"reusing the model in {folder}")
    else:
        train_bundle(bundle, train, schema, classes, epochs)
        export_peer_model(bundle, peer_model, test.images[:256])
    onnx = load_bundle(bundle, runtime="onnx", intra_op_threads=1)
    predicted = onnx.predict_proba(test.images).argmax(axis=1)
    truth = np.array([classes.index(str(c)) for c in test.labels])
    log(f"test accuracy (ONNX, {len(truth)} images): {np.mean(predicted == truth):.3f}")
    i = int(np.flatnonzero(predicted == truth)[0])
    return Model(bundle, peer_model, classes, test.images, test.images[i, :, :, 0],
                 classes[truth[i]])


def train_bundle(folder: Path, train: Any, schema: dict[str, Any], classes: list[str],
                 epochs: int) -> None:
    from loopml.models.bundle import save_bundle
    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model

    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[str(c)] for c in train.labels], dtype=np.int64)
    hp = validate_hparams("cnn", {"epochs": epochs})
    features = fit_features(train, hp, schema)
    model = build_model("cnn", hp, schema, features)
    t0 = time.perf_counter()
    model.fit(features.transform(train.images), y, epochs=epochs, batch_size=hp["batch_size"],
              verbose=0)
    log(f"trained cnn on {len(y)} mnist images, {epochs} epoch(s), "
        f"{time.perf_counter() - t0:.1f} s")
    manifest = save_bundle(folder, model, features, {"label_names": classes})
    log(f"bundle saved to {folder}, runtimes {manifest['runtimes']}")


def export_peer_model(bundle: Path, path: Path, probe_raw: np.ndarray) -> None:
    """The bundle's Keras model with ``Standardize`` replaced by the built-in ``Rescaling``."""
    import keras

    from loopml.models.runtime import load_keras_model

    model = load_keras_model(bundle / "model.keras")
    standardize = model.get_layer("standardize")
    mean = float(np.asarray(standardize.mean.numpy()))
    std = float(np.asarray(standardize.std.numpy()))
    inputs = keras.Input(model.input_shape[1:], name="image")
    x = keras.layers.Rescaling(1.0 / std, offset=-mean / std, name="standardize")(inputs)
    for layer in model.layers:
        if layer is standardize or isinstance(layer, keras.layers.InputLayer):
            continue
        x = layer(x)
    peer = keras.Model(inputs, x, name="cnn_plain")
    probe = probe_raw.astype(np.float32)
    diff = float(np.max(np.abs(peer.predict_on_batch(probe) - model.predict_on_batch(probe))))
    if diff > 1e-4:
        raise SystemExit(f"peer model differs from the bundle's by {diff:.2e}")
    path.parent.mkdir(parents=True, exist_ok=True)
    peer.save(path)
    log(f"peer model (Rescaling instead of Standardize, max |diff| {diff:.1e}) saved to {path}")


# --------------------------------------------------------------------------- in-process ceiling


@dataclass
class InProcess:
    name: str
    batch: int
    samples_s: float
    p50_ms: float
    p99_ms: float
    others_cores: float          # CPU used by other processes on the machine meanwhile


def time_calls(fn: Callable[[np.ndarray], Any], batches: list[np.ndarray], seconds: float,
               gap_s: float = 0.0) -> tuple[float, list[float]]:
    """(samples/s while calling, per-call seconds) of fn over ``seconds``, a different input each
    call, sleeping ``gap_s`` between calls (not counted)."""
    for x in batches[:3]:
        fn(x)  # warm-up
    times: list[float] = []
    samples = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 20:
        x = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
        samples += len(x)
        if gap_s:
            time.sleep(gap_s)
    return samples / sum(times), times


def in_process(model: Model, seconds: float) -> list[InProcess]:
    from loopml.models.bundle import load_bundle

    onnx = load_bundle(model.bundle, runtime="onnx", intra_op_threads=1)
    keras_bundle = load_bundle(model.bundle, runtime="keras")
    variants = [(ONNX, onnx, batch, 0.0) for batch in BATCHES]
    variants += [(ONNX_PACED, onnx, 1, PACED_GAP_S)]
    variants += [("Keras predict_on_batch", keras_bundle, batch, 0.0) for batch in BATCHES]
    rows = []
    for name, bundle, batch, gap_s in variants:
        x_all = bundle.features.transform(model.x_test)
        batches = [x_all[i:i + batch] for i in range(0, len(x_all) - batch + 1, batch)][:64]
        t0, busy0, ours0 = time.perf_counter(), machine_busy_seconds(), children_cpu_seconds()
        samples_s, times = time_calls(bundle.runtime.predict, batches, seconds, gap_s)
        ours = children_cpu_seconds() - ours0
        others = (machine_busy_seconds() - busy0 - ours) / (time.perf_counter() - t0)
        ms = np.array(times) * 1e3
        rows.append(InProcess(name, batch, samples_s, float(np.percentile(ms, 50)),
                              float(np.percentile(ms, 99)), max(0.0, others)))
        log(f"in-process {name} batch {batch}: {samples_s:,.0f} samples/s, "
            f"p50 {rows[-1].p50_ms:.3f} ms, other processes {others:.2f} cores")
    return rows


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    proc: subprocess.Popen       # what we started (and stop, by process group)
    url: str                     # http://127.0.0.1:PORT/path
    log_path: Path
    started: float = field(default_factory=time.perf_counter)
    serving_pid: int | None = None  # the process that answers, when not proc (LoopML: the
                                    # serving process the control plane supervises)
    note: str = ""                  # how it was started, for the report

    @property
    def pid(self) -> int:
        """The process whose CPU, RSS and stacks are the server's figures."""
        return self.serving_pid or self.proc.pid

    @property
    def host_port(self) -> tuple[str, int]:
        m = re.match(r"http://([^:/]+):(\d+)", self.url)
        assert m
        return m.group(1), int(m.group(2))

    @property
    def path(self) -> str:
        return "/" + self.url.split("/", 3)[3]


def spawn(name: str, cmd: list[str], url: str, workdir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Server:
    """Start a server in its own process group, output to workdir/NAME.log."""
    log_path = workdir / f"{name}.log"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}
    full_env = {**inherited, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow",
                **(env or {})}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                cwd=cwd, start_new_session=True)
    log(f"{name}: started pid {proc.pid}: {' '.join(map(str, cmd))}")
    return Server(name, proc, url, log_path)


def launch_loopml(model: Model, workdir: Path, name: str = "loopml",
                  pythonpath: Path | None = None, extra_env: dict[str, str] | None = None) -> Server:
    """LoopML itself: ``loopml server`` (control plane) in a fresh LOOPML_HOME, the bundle
    registered as ``mnist-cnn`` version 1, endpoint ``mnist`` created with the SDK (``wait``).

    The control plane starts the serving process (``python -m loopml.serving.server``) on the
    data-plane port; the returned Server's ``pid`` is that serving process (from the endpoint
    record's ``served.pid``), so CPU, RSS and py-spy figures are the data plane's alone.
    Stopping the control plane's process group stops the serving process too."""
    from loopml.sdk.client import Client

    home = workdir / f"{name}-home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    api_port, data_port = free_port(), free_port()
    env = {"LOOPML_HOME": str(home), "LOOPML_PORT": str(api_port),
           "LOOPML_SERVING_PORT": str(data_port), "LOOPML_API_URL": f"http://127.0.0.1:{api_port}"}
    version = register_bundle(env, model.bundle, LOOPML_MODEL)
    env.update(extra_env or {})  # e.g. LOOPML_SERVING_WORKERS (bench/serving_workers.py)
    if pythonpath is not None:  # another revision's code (the serving process inherits it)
        env["PYTHONPATH"] = str(pythonpath)
    loopml_bin = Path(sys.executable).with_name("loopml")
    server = spawn(name, [str(loopml_bin), "server", "--port", str(api_port)],
                   f"http://127.0.0.1:{data_port}/endpoints/{ENDPOINT}/invocations", workdir,
                   env=env)
    client = Client(f"http://127.0.0.1:{api_port}", token="", timeout=10)
    try:
        deadline = time.perf_counter() + READY_TIMEOUT_S
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"loopml server exited with {server.proc.returncode}:\n"
                                   f"{log_tail(server)}")
            try:
                client.endpoints()
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"loopml server not up after {READY_TIMEOUT_S:.0f} s:\n"
                                       f"{log_tail(server)}") from None
                time.sleep(0.25)
        log(f"loopml: control plane up after {time.perf_counter() - server.started:.1f} s; "
            f"creating endpoint {ENDPOINT} → {LOOPML_MODEL}:{version}")
        t0 = time.perf_counter()
        record = client.create_endpoint(ENDPOINT, model=f"{LOOPML_MODEL}:{version}", wait=True,
                                        timeout=READY_TIMEOUT_S)
        served = record.get("served") or {}
        if not record.get("ready") or not served.get("pid"):
            raise RuntimeError(f"endpoint {ENDPOINT} not serving: {record}")
        # the record's url is the endpoint's invocation URL on the data plane
        parts = urlsplit(str(record.get("url") or ""))
        if not parts.netloc:
            raise RuntimeError(f"endpoint {ENDPOINT} record has no url: {record}")
        data_plane = f"{parts.scheme}://{parts.netloc}"
        server.url = f"{data_plane}/endpoints/{ENDPOINT}/invocations"
        server.serving_pid = int(served["pid"])
        runtime = ",".join(v.get("runtime", "?") for v in served.get("variants", []))
        server.note = (f"{name}: `loopml server` (control plane, pid {server.proc.pid}) → "
                       f"serving process pid {server.serving_pid} on {data_plane}, endpoint "
                       f"{ENDPOINT} = {LOOPML_MODEL}:{version} ({runtime}), status "
                       f"{record.get('status')}")
        log(f"{server.note}; create_endpoint(wait=True) took {time.perf_counter() - t0:.1f} s")
    except BaseException:
        stop(server)
        raise
    finally:
        client.close()
    return server


def loopml_at(rev: str) -> Callable[[Model, Path], Server]:
    """A launcher of LoopML as it was at git revision ``rev`` (its ``src`` extracted with
    ``git archive`` into the workdir, put first on the control plane's PYTHONPATH)."""
    def launch(model: Model, workdir: Path) -> Server:
        src = workdir / f"src-{rev}"
        if not src.is_dir():
            src.mkdir(parents=True)
            archive = subprocess.run(["git", "archive", rev, "src"], cwd=HERE.parent,
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        return launch_loopml(model, workdir, name=f"loopml@{rev}", pythonpath=src / "src")

    launch.__name__ = f"launch_loopml@{rev}"
    return launch


def register_bundle(env: dict[str, str], bundle: Path, name: str) -> int:
    """Record ``bundle`` as the next version of model ``name`` in the LOOPML_HOME of ``env``
    (artifact upload + ``models.add_version``, as tests/serving_support.py does) → version."""
    from loopml.core.settings import load_settings
    from loopml.platform import Platform

    saved = {k: v for k, v in os.environ.items() if k.startswith("LOOPML_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        platform = Platform(load_settings())
    finally:
        for k in env:
            os.environ.pop(k, None)
        os.environ.update(saved)
    try:
        manifest = json.loads((bundle / "loopml.json").read_text())
        version = platform.models.next_version(name)
        prefix = f"models/{name}/v{version}"
        platform.artifacts.upload_dir(bundle, prefix)
        platform.models.add_version(
            name, version, dataset="mnist:bench", kind=manifest["kind"], template="cnn",
            hparams={}, metrics={}, lineage={"source": "bench/serving.py"},
            runtimes=manifest["runtimes"], trusted=False, artifact_prefix=prefix)
    finally:
        platform.close()
    log(f"loopml: registered {bundle} as {name}:{version} in {env['LOOPML_HOME']}")
    return version


def launch_loopml_static(model: Model, workdir: Path) -> Server:
    """The earlier stand-in (``--loopml-static``): ModelHost + create_data_plane({name: host})
    under uvicorn (bench/peers/loopml_server.py), no control plane, no metadata store."""
    port = free_port()
    return spawn("loopml-static", [sys.executable, str(PEERS / "loopml_server.py"),
                                   str(model.bundle), str(port), ENDPOINT],
                 f"http://127.0.0.1:{port}/endpoints/{ENDPOINT}/invocations", workdir)


def launch_fastapi(model: Model, workdir: Path) -> Server:
    port = free_port()
    return spawn("fastapi", [sys.executable, str(PEERS / "fastapi_plain.py"),
                             str(model.peer_model), str(port)],
                 f"http://127.0.0.1:{port}/predict", workdir)


def launch_bentoml(model: Model, workdir: Path) -> Server:
    port = free_port()
    home = workdir / "bentoml-home"
    home.mkdir(exist_ok=True)
    return spawn("bentoml", [str(BENTO_VENV / "bin" / "bentoml"), "serve",
                             "bentoml_service:Mnist", "--host", "127.0.0.1", "--port", str(port)],
                 f"http://127.0.0.1:{port}/predict", workdir,
                 env={"LOOPML_BENCH_PEER_MODEL": str(model.peer_model),
                      "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
                      "PATH": f"{BENTO_VENV / 'bin'}:{os.environ.get('PATH', '')}"},
                 cwd=PEERS)


def ensure_bentoml_venv() -> None:
    """Create the BentoML venv (bentoml + the project's keras/tensorflow-cpu) if missing."""
    if (BENTO_VENV / "bin" / "bentoml").is_file():
        return
    python = shutil.which("python3.11") or sys.executable
    pins = [f"keras=={metadata.version('keras')}",
            f"tensorflow-cpu=={metadata.version('tensorflow-cpu')}"]
    steps = [[python, "-m", "venv", str(BENTO_VENV)],
             [str(BENTO_VENV / "bin" / "pip"), "install", "--quiet", "bentoml", *pins]]
    log(f"BentoML venv {BENTO_VENV} missing: creating it (a few minutes, once)")
    for cmd in steps:
        log("  $ " + " ".join(cmd))
        subprocess.run(cmd, check=True)
    torch = subprocess.run([str(BENTO_VENV / "bin" / "pip"), "show", "torch"],
                           capture_output=True)
    if torch.returncode == 0:
        log(f"  warning: torch got installed into {BENTO_VENV}; the peer does not use it")


def stop(server: Server) -> None:
    """SIGTERM the server's process group, SIGKILL it after 15 s."""
    stop_group(server.proc, 15, 5)


def log_tail(server: Server, lines: int = 30) -> str:
    try:
        return "\n".join(server.log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- HTTP checks


@dataclass
class Body:
    label: str                   # e.g. "JSON" / "npy"
    content_type: str
    path: Path                   # the body, on disk for wrk
    route: str | None = None     # request path instead of the server's (e.g. OIP's /v2/...)
    headers: dict[str, str] = field(default_factory=dict)  # more request headers
    concurrencies: tuple[int, ...] = CONCURRENCIES

    def all_headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, **self.headers}


def post(server: Server, body: Body, timeout: float = 30.0) -> tuple[int, bytes]:
    host, port = server.host_port
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", body.route or server.path, body=body.path.read_bytes(),
                     headers=body.all_headers())
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def predicted_label(payload: Any, label_names: list[str]) -> str:
    """The label of the first prediction in any of the servers' answer shapes."""
    if isinstance(payload, dict) and "outputs" in payload:          # OIP v2 (JSON outputs)
        outputs = {o["name"]: o for o in payload["outputs"]}
        return str(outputs["label"]["data"][0])
    first = payload["predictions"][0] if isinstance(payload, dict) else payload[0]
    if isinstance(first, dict):
        return str(first["label"])                     # LoopML
    return label_names[int(np.argmax(first))]          # probability rows (FastAPI, BentoML)


def wait_ready(server: Server, body: Body) -> None:
    """Poll with a real request until it answers 200 (or the process dies / times out)."""
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}:\n"
                               f"{log_tail(server)}")
        try:
            status, _ = post(server, body, timeout=5)
            if status == 200:
                log(f"{server.name}: ready after {time.perf_counter() - server.started:.1f} s")
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT_S:.0f} s:\n"
                       f"{log_tail(server)}")


def check_answer(server: Server, body: Body, model: Model) -> None:
    status, answer = post(server, body)
    if status != 200:
        raise RuntimeError(f"{server.name} ({body.label}): HTTP {status}: {answer[:300]!r}")
    label = predicted_label(json.loads(answer), model.label_names)
    if label != model.check_label:
        raise RuntimeError(f"{server.name} ({body.label}) answered {label!r} for an image of "
                           f"{model.check_label!r}: {answer[:300]!r}")
    log(f"{server.name} ({body.label}): answers {label!r} for the check image, "
        f"{len(answer)} bytes")


# --------------------------------------------------------------------------- wrk


@dataclass
class Cell:
    server: str
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_req: float | None = None
    others_cores: float | None = None  # CPU used by other processes on the machine meanwhile
    rss_mb: float | None = None


LUA = """local f = assert(io.open({path}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
"""

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def lua_script(body: Body) -> Path:
    script = body.path.with_name(body.path.name + ".lua")
    # a JSON string literal is a valid Lua one for these plain ASCII paths / header values
    text = LUA.format(path=json.dumps(str(body.path)))
    text += "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n"
                    for k, v in body.all_headers().items())
    script.write_text(text)
    return script


def duration_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    def find(pattern: str, default: str | None = None) -> str:
        m = re.search(pattern, out)
        if m is None:
            if default is None:
                raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
            return default
        return m.group(1)

    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    return {
        "requests": int(find(r"(\d+) requests in")),
        "rps": float(find(r"Requests/sec:\s+([\d.]+)")),
        "p50_ms": duration_ms(find(r"\n\s+50%\s+(\S+)")),
        "p99_ms": duration_ms(find(r"\n\s+99%\s+(\S+)")),
        "errors": int(find(r"Non-2xx or 3xx responses: (\d+)", "0"))
                  + (sum(int(g) for g in socket_errors.groups()) if socket_errors else 0),
    }


def url_of(server: Server, body: Body) -> str:
    if body.route is None:
        return server.url
    host, port = server.host_port
    return f"http://{host}:{port}{body.route}"


def run_wrk(server: Server, body: Body, concurrency: int, seconds: float) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
           "--timeout", "5s", "-s", str(lua_script(body)), url_of(server, body)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse_wrk(done.stdout)


# --------------------------------------------------------------------------- /proc


def process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def rss_mb(pid: int) -> float:
    """Resident memory of the process tree rooted at pid, MiB."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent non-idle since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children (wrk runs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree rooted at pid (live processes only), seconds."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


# --------------------------------------------------------------------------- measuring


def measure(server: Server, body: Body, label: str, seconds: float) -> list[Cell]:
    cells = []
    for concurrency in body.concurrencies:
        t0, busy0 = time.perf_counter(), machine_busy_seconds()
        cpu0, ours0 = cpu_seconds(server.pid), children_cpu_seconds()
        r = run_wrk(server, body, concurrency, seconds)
        cpu = cpu_seconds(server.pid) - cpu0
        ours = children_cpu_seconds() - ours0
        others = (machine_busy_seconds() - busy0 - cpu - ours) / (time.perf_counter() - t0)
        cells.append(Cell(label, concurrency, int(r["requests"]), r["rps"], r["p50_ms"],
                          r["p99_ms"], int(r["errors"]),
                          cpu * 1e3 / r["requests"] if r["requests"] else None,
                          max(0.0, others)))
        log(f"{label} c={concurrency}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {int(r['errors'])}, "
            f"other processes {others:.2f} cores")
    rss = rss_mb(server.pid)
    for cell in cells:
        cell.rss_mb = rss
    return cells


def bench_server(server: Server, bodies: list[Body], model: Model, args: argparse.Namespace
                 ) -> list[Cell]:
    """Ready → right answer for every body → warm-up → the cells of every body."""
    wait_ready(server, bodies[0])
    for body in bodies:
        check_answer(server, body, model)
    warmed = errors = 0
    start = time.perf_counter()
    while warmed < WARMUP_REQUESTS and time.perf_counter() - start < WARMUP_MAX_S:
        warm = run_wrk(server, bodies[0], 32, args.warmup)
        warmed, errors = warmed + int(warm["requests"]), errors + int(warm["errors"])
    log(f"{server.name}: warm-up {warmed} requests in {time.perf_counter() - start:.0f} s, "
        f"{errors} errors")
    cells = []
    for body in bodies:
        label = server.name if len(bodies) == 1 else f"{server.name} ({body.label})"
        cells += measure(server, body, label, args.duration)
    return cells


def run_server(launch: Callable[[Model, Path], Server], bodies: list[Body], model: Model,
               workdir: Path, args: argparse.Namespace) -> tuple[list[Cell], list[str]]:
    """Launch, measure, (LoopML: soak, profile), stop → (cells, extra report lines).

    A server that fails (does not start, answers wrong, wrk errors) is reported, not fatal."""
    failures = (RuntimeError, OSError, ValueError, subprocess.SubprocessError)

    def failed(name: str, exc: BaseException) -> tuple[list[Cell], list[str]]:
        log(f"{name}: FAILED, left out of the table: {exc}")
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return [], [f"{name}: FAILED ({type(exc).__name__}): {first_line}"]

    try:
        server = launch(model, workdir)
    except failures as exc:
        return failed(launch.__name__.removeprefix("launch_").replace("_", "-"), exc)
    try:
        supervisor0 = supervisor_cpu_seconds(server)
        t0 = time.perf_counter()
        cells = bench_server(server, bodies, model, args)
        extras = [server.note] if server.note else []
        if server.serving_pid:
            cpu = supervisor_cpu_seconds(server) - supervisor0
            rss = rss_mb(server.proc.pid) - rss_mb(server.pid)
            extras.append(f"{server.name} control plane (pid {server.proc.pid}, not in the "
                          f"server columns, counted in others' CPU): {cpu:.2f} CPU s over the "
                          f"{time.perf_counter() - t0:.0f} s of its checks, warm-up and cells "
                          f"({cpu / (time.perf_counter() - t0):.3f} cores), RSS {rss:,.0f} MiB")
        if server.name == "loopml" and args.soak > 0:
            extras.append(soak(server, bodies[0], args.soak))
        if server.name == "loopml" and args.profile > 0:
            extras.append(profile(server, bodies[0], args.profile, workdir))
        return cells, extras
    except failures as exc:
        return failed(server.name, exc)
    finally:
        stop(server)


def supervisor_cpu_seconds(server: Server) -> float:
    """CPU seconds of what we started minus the serving process's (0 when they are one)."""
    if not server.serving_pid:
        return 0.0
    return cpu_seconds(server.proc.pid) - cpu_seconds(server.pid)


def soak(server: Server, body: Body, seconds: float) -> str:
    """LoopML at c=32 for ``seconds``: throughput, latency, errors, RSS at start and end."""
    rss_start = rss_mb(server.pid)
    log(f"soak: {server.name} at c=32 for {seconds:.0f} s, RSS at start {rss_start:.1f} MiB")
    r = run_wrk(server, body, 32, seconds)
    rss_end = rss_mb(server.pid)
    return (f"soak: {server.name} ({body.label}) at c=32 for {seconds:.0f} s: "
            f"{r['rps']:,.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
            f"errors {int(r['errors'])}; server RSS {rss_start:.1f} MiB at start, "
            f"{rss_end:.1f} MiB at end ({rss_end - rss_start:+.1f} MiB)")


def profile(server: Server, body: Body, seconds: float, workdir: Path) -> str:
    """py-spy samples of the server during a c=32 wrk run → top functions (text)."""
    if not PY_SPY.is_file():
        return (f"py-spy not found at {PY_SPY}: python3.11 -m venv /work/bench-venvs/tools && "
                f"/work/bench-venvs/tools/bin/pip install py-spy")
    raw = workdir / "loopml.pyspy.txt"
    rate = 250
    spy = subprocess.Popen([str(PY_SPY), "record", "--pid", str(server.pid), "--duration",
                            str(max(1, round(seconds))), "--rate", str(rate), "--format", "raw",
                            "--threads", "--function", "--nonblocking", "--output", str(raw)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    r = run_wrk(server, body, 32, seconds)
    _, err = spy.communicate(timeout=60)
    if not raw.is_file():
        return f"py-spy failed: {err.decode(errors='replace')[-500:]}"
    return summarize_profile(raw.read_text(), f"LoopML (JSON) at c=32, {seconds:.0f} s, "
                             f"{r['rps']:,.0f} req/s under the profiler", seconds, rate)


def summarize_profile(raw: str, title: str, seconds: float, rate: int, top: int = 18) -> str:
    """Collapsed stacks → samples per thread, top functions by self and by inclusive samples."""
    threads: dict[str, int] = {}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        total += count
        threads[thread] = threads.get(thread, 0) + count
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f} %"

    out = [f"py-spy, {title}: {total} samples of non-idle threads at {rate} Hz"]
    out.append("  per thread: share of samples, (share of the wall time it was running)")
    out += [f"    {pct(n)}  ({100 * n / (rate * seconds):3.0f} % busy)  {t}"
            for t, n in sorted(threads.items(), key=lambda kv: -kv[1])]
    out.append("  top functions by own samples:")
    out += [f"    {pct(n)}  {f}" for f, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]]
    out.append("  top functions by inclusive samples:")
    out += [f"    {pct(n)}  {f}" for f, n in
            sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]]
    return "\n".join(out) if total else "py-spy recorded no samples"


# --------------------------------------------------------------------------- report


def write_bodies(model: Model, folder: Path) -> tuple[Body, Body, Body]:
    """The check image as a JSON body, an npy body and an OIP v2 binary-tensor body."""
    image = model.check_image.astype(np.float64)
    json_path, npy_path, oip_path = folder / "body.json", folder / "body.npy", folder / "body.oip"
    json_path.write_text(json.dumps({"instances": [image.tolist()]}))
    with open(npy_path, "wb") as f:
        np.save(f, model.check_image[np.newaxis].astype(np.float32))
    header, tensor = oip_binary_body(model.check_image)
    oip_path.write_bytes(header + tensor)
    oip = Body("OIP binary", OCTET_TYPE, oip_path, route=f"/v2/models/{ENDPOINT}/infer",
               headers={"Inference-Header-Content-Length": str(len(header))})
    return Body("JSON", JSON_TYPE, json_path), Body("npy", NPY_TYPE, npy_path), oip


def compare_layouts(model: Model, workdir: Path, bodies: list[Body], rev: str,
                    args: argparse.Namespace) -> str:
    """This tree's LoopML vs REV's, both up, bodies interleaved per round → markdown table."""
    servers: list[Server] = []
    try:
        for launch in (loopml_at(rev), launch_loopml):
            servers.append(launch(model, workdir))
        for server in servers:
            wait_ready(server, bodies[0])
            for body in bodies:
                check_answer(server, body, model)
            run_wrk(server, bodies[0], 32, max(args.warmup, 3.0))
        got: dict[tuple[str, str], list[dict[str, float]]] = {}
        for i in range(args.layout_rounds):
            for body in bodies:
                for server in servers:
                    r = run_wrk(server, body, 32, args.duration)
                    got.setdefault((server.name, body.label), []).append(r)
                    log(f"round {i + 1}: {server.name} ({body.label}) c=32: {r['rps']:,.0f} "
                        f"req/s, p99 {r['p99_ms']:.2f} ms, errors {int(r['errors'])}")
    finally:
        for server in servers:
            stop(server)
    old, new = (server.name for server in servers)
    med = {key: (statistics.median(r["rps"] for r in rs),
                 statistics.median(r["p99_ms"] for r in rs), sum(r["errors"] for r in rs))
           for key, rs in got.items()}
    out = [f"| body, c=32 (median of {args.layout_rounds} interleaved rounds) | "
           f"{old} req/s | p99 ms | {new} req/s | p99 ms | errors |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for body in bodies:
        (r0, p0, e0), (r1, p1, e1) = med[old, body.label], med[new, body.label]
        out.append(f"| {body.label} | {r0:,.0f} | {p0:.2f} | {r1:,.0f} | "
                   f"{p1:.2f} | {int(e0 + e1)} |")
    return "\n".join(out)


def layout_bodies(model: Model, folder: Path) -> list[Body]:
    """The check image in each JSON layout a Keras user may send (c=32 rows only)."""
    pixels = model.check_image.astype(np.int64)  # (28, 28), 0–255
    floats = pixels.astype(np.float64)  # raw 0.0–255.0, as the JSON row's body
    forms = {"28×28 floats": floats, "28×28 ints": pixels, "28×28×1 ints": pixels[:, :, None],
             "28×28×1 floats": floats[:, :, None], "flat 784 ints": pixels.reshape(-1)}
    bodies = []
    for i, (label, image) in enumerate(forms.items()):
        path = folder / f"layout-{i}.json"
        path.write_text(json.dumps({"instances": [image.tolist()]}))
        bodies.append(Body(f"JSON {label}", JSON_TYPE, path, concurrencies=(32,)))
    return bodies


def oip_binary_body(image: np.ndarray) -> tuple[bytes, bytes]:
    """(JSON header, raw tensor) of a tritonclient-style infer request: one FP32 [1, 28, 28]
    input in binary, the label and confidence outputs asked for in JSON."""
    tensor = np.ascontiguousarray(image[np.newaxis], dtype="<f4").tobytes()
    header = {"inputs": [{"name": "input", "shape": [1, *image.shape], "datatype": "FP32",
                          "parameters": {"binary_data_size": len(tensor)}}],
              "outputs": [{"name": "label", "parameters": {"binary_data": False}},
                          {"name": "confidence", "parameters": {"binary_data": False}}]}
    return json.dumps(header, separators=(",", ":")).encode(), tensor


def markdown_tables(ceiling: list[InProcess], cells: list[Cell]) -> str:
    out = ["| in-process (no HTTP) | batch | samples/s | p50 ms | p99 ms | others' CPU (cores) |",
           "| --- | ---: | ---: | ---: | ---: | ---: |"]
    out += [f"| {r.name} | {r.batch} | {r.samples_s:,.0f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
            f"{r.others_cores:.2f} |" for r in ceiling]
    out += ["", "| server | concurrency | req/s | p50 ms | p99 ms | errors | server CPU ms/req "
                "| server RSS MiB | others' CPU (cores) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in cells:
        cpu = "" if c.cpu_ms_per_req is None else f"{c.cpu_ms_per_req:.2f}"
        rss = "" if c.rss_mb is None else f"{c.rss_mb:,.0f}"
        others = "" if c.others_cores is None else f"{c.others_cores:.2f}"
        out.append(f"| {c.server} | {c.concurrency} | {c.rps:,.0f} | {c.p50_ms:.2f} | "
                   f"{c.p99_ms:.2f} | {c.errors} | {cpu} | {rss} | {others} |")
    return "\n".join(out)


def goals(ceiling: list[InProcess], cells: list[Cell]) -> str:
    def cell(server: str, concurrency: int) -> Cell | None:
        return next((c for c in cells if c.server == server and c.concurrency == concurrency),
                    None)

    onnx = {r.batch: r for r in ceiling if r.name == ONNX}
    loopml1, loopml32 = cell("loopml (JSON)", 1), cell("loopml (JSON)", 32)
    bento32 = cell("bentoml", 32)
    rows = ["| goal (issue 3), LoopML JSON | measured | target | met |",
            "| --- | ---: | ---: | :-: |"]

    def row(name: str, value: float | None, fmt: str, target: str, ok: bool | None) -> None:
        shown = "n/a" if value is None else format(value, fmt)
        met = "" if ok is None else ("yes" if ok else "NO")
        rows.append(f"| {name} | {shown} | {target} | {met} |")

    if loopml32 and bento32:
        ratio = loopml32.rps / bento32.rps
        row("req/s at c=32, LoopML / BentoML", ratio, ".1f", f"≥ {GOAL_VS_BENTOML:.0f}×",
            ratio >= GOAL_VS_BENTOML)
    else:
        row("req/s at c=32, LoopML / BentoML", None, "", f"≥ {GOAL_VS_BENTOML:.0f}×", None)
    if loopml32:
        share = loopml32.rps / onnx[32].samples_s
        row("c=32 req/s / in-process ONNX batch-32 samples/s", 100 * share, ".0f",
            f"≥ {100 * GOAL_OF_CEILING:.0f} %", share >= GOAL_OF_CEILING)
        row("p99 at c=32, ms", loopml32.p99_ms, ".2f", f"≤ {GOAL_P99_MS:.0f}",
            loopml32.p99_ms <= GOAL_P99_MS)
    if loopml1:
        overhead = loopml1.p50_ms - onnx[1].p50_ms
        row("c=1 p50 − in-process batch-1 p50, ms", overhead, ".2f", f"≤ {GOAL_OVERHEAD_MS:.0f}",
            overhead <= GOAL_OVERHEAD_MS)
    return "\n".join(rows)


def versions() -> str:
    names = ["onnxruntime", "keras", "tensorflow-cpu", "uvicorn", "fastapi"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    bento = BENTO_VENV / "bin" / "python"
    if bento.is_file():
        v = subprocess.run([str(bento), "-c", "import importlib.metadata as m; "
                                              "print(m.version('bentoml'))"],
                           capture_output=True, text=True).stdout.strip()
        if v:
            found.append(f"bentoml {v}")
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    found.append((wrk.stdout or wrk.stderr).split(" Copyright")[0].strip())
    return ", ".join(found)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per measured cell (default 10, --quick 3)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of each warm-up wrk run at c=32, repeated until "
                         f"{WARMUP_REQUESTS} requests (default 3, --quick 1)")
    ap.add_argument("--quick", action="store_true", help="1 epoch, short cells")
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default 2)")
    ap.add_argument("--no-bentoml", action="store_true", help="skip the BentoML peer")
    ap.add_argument("--servers", default=",".join(SERVERS[:3]),
                    help=f"comma-separated subset of {','.join(SERVERS)} "
                         f"(default: {','.join(SERVERS[:3])})")
    ap.add_argument("--loopml-static", action="store_true",
                    help="also run the earlier static stand-in (create_data_plane({name: host}) "
                         "under uvicorn, no control plane) for comparison")
    ap.add_argument("--soak", type=float, default=0.0,
                    help="then run LoopML at c=32 this many seconds, RSS at start/end "
                         "(issue 3: 300)")
    ap.add_argument("--profile", type=float, default=0.0,
                    help="then py-spy LoopML during a c=32 run of this many seconds")
    ap.add_argument("--layouts", action="store_true",
                    help="also measure LoopML at c=32 per JSON layout of the same image")
    ap.add_argument("--layouts-vs", default=None, metavar="REV",
                    help="with --layouts: the same layout rows on LoopML at git revision REV")
    ap.add_argument("--layout-rounds", type=int, default=3,
                    help="with --layouts-vs: interleaved rounds per layout (default 3)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the model, bodies and server logs here (a model already there "
                         "is reused); default: a temporary folder, removed")
    args = ap.parse_args()
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup or (1.0 if args.quick else 3.0)
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        ap.error(f"unknown --servers {sorted(unknown)}; choose from {', '.join(SERVERS)}")
    if args.loopml_static and "loopml-static" not in args.servers:
        args.servers.append("loopml-static")
    if args.no_bentoml and "bentoml" in args.servers:
        args.servers.remove("bentoml")
        log("--no-bentoml: skipping the BentoML peer (no LoopML/BentoML ratio in this run)")
    return args


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get update && apt-get install -y wrk")
    if "bentoml" in args.servers:
        ensure_bentoml_venv()
    t_start = time.perf_counter()
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # tf2onnx's np.object probe
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")

    tmp, workdir = make_workdir(args.workdir, "loopml-bench-serving-")
    try:
        model = prepare_model(workdir, args.epochs)
        json_body, npy_body, oip_body = write_bodies(model, workdir)
        log(f"check image: a {model.check_label!r}; JSON body {json_body.path.stat().st_size:,} "
            f"bytes, npy body {npy_body.path.stat().st_size:,} bytes, OIP binary body "
            f"{oip_body.path.stat().st_size:,} bytes")
        ceiling = in_process(model, args.duration / 2)

        layouts = layout_bodies(model, workdir) if args.layouts else []
        every: dict[str, tuple[Callable[[Model, Path], Server], list[Body]]] = {
            "loopml": (launch_loopml, [json_body, npy_body, oip_body,
                                       *(layouts if not args.layouts_vs else [])]),
            "fastapi": (launch_fastapi, [json_body]),
            "bentoml": (launch_bentoml, [json_body]),
            "loopml-static": (launch_loopml_static, [json_body, npy_body, oip_body])}
        launchers = [every[name] for name in args.servers]
        comparison = ""
        if layouts and args.layouts_vs:
            # the npy and OIP binary rows too: the whole data plane, old and new, in one run
            comparison = compare_layouts(model, workdir, [*layouts, npy_body, oip_body], args.layouts_vs, args)
        cells: list[Cell] = []
        extras: list[str] = []
        for launch, bodies in launchers:
            server_cells, server_extras = run_server(launch, bodies, model, workdir, args)
            cells += server_cells
            extras += server_extras

        print("\n## Serving benchmark: seed CNN on mnist, one 28×28 image per request\n")
        print(f"wrk -t1 -c{{1,32}} -d{args.duration:.0f}s --latency, closed loop; warm-up ≥ "
              f"{WARMUP_REQUESTS} requests at c=32 per server; JSON body "
              f"{json_body.path.stat().st_size:,} B, npy body {npy_body.path.stat().st_size:,} B, "
              f"OIP binary body {oip_body.path.stat().st_size:,} B "
              f"(POST /v2/models/{ENDPOINT}/infer); "
              f"in-process: {args.duration / 2:.0f} s per row\n")
        print(markdown_tables(ceiling, cells))
        print()
        print(goals(ceiling, cells))
        if comparison:
            print(f"\n{comparison}")
        for extra in extras:
            print("\n" + extra)
        print(f"\n{versions()}; {os.cpu_count()} CPUs, load avg "
              f"{os.getloadavg()[0]:.1f}, total {time.perf_counter() - t_start:.0f} s")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
