"""Replicas on a Ray cluster (issue 14, point 2): the two designs measured in one run, same model.

    .venv/bin/python bench/serving_designs.py [--duration 10] [--replicas 1,2] [--workdir DIR]

A tiny digits CNN (8×8 images, 10 classes; trained in-process for 2 epochs, saved as a LoopML
bundle) answers one image per request (SageMaker JSON ``{"instances": [8×8 floats]}``), wrk
c=32 (one thread), ``--duration`` seconds after a warm-up, per row:

  (a) ray-serve          a Ray Serve deployment whose replicas host LoopML's own serving runtime
                         (``ModelHost``: batcher + ONNX Runtime, and LoopML's data-plane ASGI app,
                         so the wire is LoopML's) behind Ray Serve's HTTP proxy
  (a) ray-serve-haproxy  the same, with Ray Serve's HAProxy ingress (RAY_SERVE_ENABLE_HA_PROXY=1,
                         Ray's bundled HAProxy) in place of the Python proxy — only if it starts
  (b) loopml+haproxy     LoopML's serving process (``python -m loopml.serving.server --host
                         --port``, standalone, reading its endpoint from a metadata store: what a
                         Ray-placed replica actor runs) × N behind Debian's HAProxy
                         (``option httpchk GET /readyz``, keep-alive to the backends)
  direct                 one LoopML serving process, no load balancer (the ceiling)

for N in ``--replicas`` (default 1,2; this machine has 2 cores, shared with wrk, Ray's own
processes and HAProxy). Each Ray Serve variant runs in a child process with its own local Ray
instance (Ray reads the HAProxy flag at start). Figures only: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
ENDPOINT = "digits"
HAPROXY = "/usr/sbin/haproxy"

from _common import free_port, stop_group  # noqa: E402 - bench/_common.py


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------- model and store
def train_bundle(folder: Path) -> tuple[Path, list[float], str]:
    """The tiny digits CNN as a LoopML bundle; returns (folder, a test image's rows, its label)."""
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    from loopml.datasets.content import DatasetContent
    from loopml.models.bundle import save_bundle
    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model

    keras.utils.set_random_seed(1)
    data = load_digits()
    images = data.images.astype(np.float32)[..., np.newaxis]
    labels = np.array([str(t) for t in data.target], dtype=object)
    content = DatasetContent(kind="image", images=images, labels=labels)
    classes = sorted(set(labels.tolist()))
    hp = validate_hparams("cnn", {"epochs": 2, "filters": 8, "dense_units": 32, "batch_size": 32})
    features = fit_features(content, hp)
    model = build_model("cnn", hp, {"kind": "image", "rows": len(labels), "classes": classes}, features)
    y = np.array([classes.index(x) for x in labels], dtype=np.int64)
    model.fit(features.transform(images), y, epochs=hp["epochs"], batch_size=hp["batch_size"], verbose=0)
    save_bundle(folder, model, features, {"label_names": classes, "template": "cnn", "hparams": hp})
    return folder, data.images[0].tolist(), str(data.target[0])


def make_home(home: Path, bundle: Path) -> dict[str, str]:
    """A LoopML home (SQLite + folder) holding the bundle as model digits:1 and endpoint
    ``digits``; returns the environment a serving process needs to serve it."""
    env = {"LOOPML_HOME": str(home), "LOOPML_LOG_LEVEL": "WARNING"}
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        from loopml.core.settings import load_settings
        from loopml.platform import Platform
        from loopml.serving.service import create_endpoint

        platform = Platform(load_settings())
        prefix = "models/digits/v1"
        platform.artifacts.upload_dir(bundle, prefix)
        platform.models.add_version("digits", 1, dataset="digits:1", kind="image", template="cnn", hparams={},
                                    metrics={}, lineage={}, runtimes=["onnx", "keras"], artifact_prefix=prefix)
        create_endpoint(platform, ENDPOINT, {"model": "digits:1"})
        platform.close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return env


# -------------------------------------------------------------------------- processes
class Proc:
    def __init__(self, name: str, cmd: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        full = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
                **(env or {})}
        self.proc = subprocess.Popen(cmd, env=full, stdout=open(self.log_path, "wb"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.PIPE, start_new_session=True)

    def stop(self) -> None:
        stop_group(self.proc, 30, 10)

    def tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""


def _kill_leftovers(workdir: Path) -> None:
    """Processes a Ray Serve child left behind (Ray's HAProxy runs in its own session): any whose
    command line names this run's Ray or HAProxy folder."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            if any(str(workdir / sub).encode() in cmdline for sub in ("hap", "ray")):
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass


def post(url: str, body: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_answer(url: str, body: bytes, label: str, proc: Proc, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    status, out = 0, b""
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.proc.returncode}):\n{proc.tail()}")
        status, out = post(url, body)
        if status == 200:
            got = json.loads(out)["predictions"][0]
            got = got.get("label") if isinstance(got, dict) else got
            if str(got) != label:
                raise RuntimeError(f"{proc.name} answered {got!r}, expected {label!r}")
            return
        time.sleep(0.5)
    raise RuntimeError(f"{proc.name} did not answer at {url} (last {status} {out[:200]!r}):\n{proc.tail()}")


def serving_process(i: int, env: dict[str, str], workdir: Path) -> tuple[Proc, int]:
    port = free_port()
    return Proc(f"loopml-node-{i}", [sys.executable, "-m", "loopml.serving.server", "--host", "127.0.0.1",
                                     "--port", str(port)], workdir, env), port


def haproxy(ports: list[int], workdir: Path) -> tuple[Proc, int]:
    front = free_port()
    servers = "\n".join(f"    server r{i} 127.0.0.1:{p} check inter 1s fall 2 rise 1"
                        for i, p in enumerate(ports))
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(f"""global
    maxconn 4096
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend loopml
    bind 127.0.0.1:{front}
    default_backend replicas
backend replicas
    balance leastconn
    option httpchk GET /readyz
{servers}
""")
    return Proc("haproxy", [HAPROXY, "-f", str(cfg), "-db"], workdir), front


# -------------------------------------------------------------------------- Ray Serve (child)
def serve_child(bundle: str, port: int, replicas: int) -> None:
    """Runs in a child process: a local Ray instance, the Ray Serve app, then waits on stdin."""
    import ray
    from ray import serve

    def build_app():  # evaluated on each replica: LoopML's runtime and wire inside Ray Serve
        from loopml.serving.app import create_data_plane
        from loopml.serving.host import ModelHost

        return create_data_plane({ENDPOINT: ModelHost.load(bundle, name=ENDPOINT)})

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(SRC)}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})

    @serve.deployment(num_replicas=replicas, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
    @serve.ingress(build_app)
    class LoopMLHost:
        pass

    serve.run(LoopMLHost.bind(), route_prefix="/", name="digits")
    print("READY", flush=True)
    sys.stdin.read()  # until the bench closes it
    serve.shutdown()
    ray.shutdown()


def ray_serve(bundle: Path, replicas: int, haproxy_ingress: bool, workdir: Path) -> tuple[Proc, int]:
    port = free_port()
    env = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_SERVE_ENABLE_HA_PROXY": "1" if haproxy_ingress else "0",
           "RAY_TMPDIR": str(workdir / "ray"), "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(workdir / "hap/haproxy.cfg"),
           "RAY_SERVE_HAPROXY_SOCKET_PATH": str(workdir / "hap/admin.sock"),
           "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(workdir / "hap"),
           "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(workdir / "hap/server-state")}
    (workdir / "hap").mkdir(exist_ok=True)
    name = f"ray-serve{'-haproxy' if haproxy_ingress else ''}-{replicas}"
    return Proc(name, [sys.executable, __file__, "--serve-child", str(bundle), str(port), str(replicas)],
                workdir, env), port


# -------------------------------------------------------------------------- wrk
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS_MS[m.group(2)] if m else float("nan")


def wrk(url: str, body_path: Path, seconds: float, concurrency: int = 32) -> dict[str, float]:
    lua = body_path.with_suffix(".lua")
    lua.write_text(f'local f = assert(io.open({json.dumps(str(body_path))}, "rb"))\nwrk.method = "POST"\n'
                   'wrk.body = f:read("*a")\nf:close()\nwrk.headers["Content-Type"] = "application/json"\n')
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
                          "--timeout", "5s", "-s", str(lua), url], capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": _ms(re.search(r"\n\s+50%\s+(\S+)", out).group(1)),
            "p99": _ms(re.search(r"\n\s+99%\s+(\S+)", out).group(1)),
            "errors": (int(errors.group(1)) if errors else 0) + (sum(map(int, sock.groups())) if sock else 0)}


def measure(name: str, url: str, body: bytes, body_path: Path, label: str, procs: list[Proc],
            args: argparse.Namespace) -> dict[str, Any]:
    wait_answer(url, body, label, procs[-1])  # through the front: the last process started
    wrk(url, body_path, args.warmup)
    r = wrk(url, body_path, args.duration)
    r.update(name=name, load=os.getloadavg()[0])
    log(f"{name}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, errors {r['errors']:g}")
    return r


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        serve_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--replicas", default="1,2")
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--no-ray-haproxy", action="store_true", help="skip Ray Serve's HAProxy ingress row")
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loopml-designs-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(SRC))
    log(f"training the tiny digits CNN in {workdir}")
    bundle, image, label = train_bundle(workdir / "bundle")
    env = make_home(workdir / "home", bundle)
    body = json.dumps({"instances": [image]}).encode()
    body_path = workdir / "body.json"
    body_path.write_bytes(body)
    path = f"/endpoints/{ENDPOINT}/invocations"
    rows: list[dict[str, Any]] = []

    def run(name: str, start) -> None:
        procs: list[Proc] = []
        try:
            procs, port = start(procs)
            rows.append(measure(name, f"http://127.0.0.1:{port}{path}", body, body_path, label, procs, args))
        except Exception as exc:  # noqa: BLE001 - a row that fails is reported, not fatal
            log(f"{name}: FAILED: {exc}")
            rows.append({"name": name, "failed": str(exc).splitlines()[0][:200]})
        finally:
            for proc in reversed(procs):
                if proc.proc.stdin:
                    try:
                        proc.proc.stdin.close()
                    except OSError:
                        pass
                proc.stop()
            _kill_leftovers(workdir)
            time.sleep(2)

    def direct(procs: list[Proc]):
        node, port = serving_process(0, env, workdir)
        procs.append(node)
        return procs, port

    run("direct (1 LoopML serving process)", direct)
    for n in [int(x) for x in args.replicas.split(",")]:
        def loopml_lb(procs: list[Proc], n=n):
            ports = []
            for i in range(n):
                node, port = serving_process(i, env, workdir)
                procs.append(node)
                ports.append(port)
            for node, port in zip(procs, ports):
                wait_answer(f"http://127.0.0.1:{port}{path}", body, label, node)
            lb, front = haproxy(ports, workdir)
            procs.append(lb)
            return procs, front

        def serve_proxy(procs: list[Proc], n=n, hap=False):
            child, port = ray_serve(bundle, n, hap, workdir)
            procs.append(child)
            deadline = time.monotonic() + 240
            while b"READY" not in child.log_path.read_bytes():
                if child.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Ray Serve did not start:\n{child.tail()}")
                time.sleep(0.5)
            return procs, port

        run(f"(b) LoopML x{n} behind HAProxy", loopml_lb)
        run(f"(a) Ray Serve x{n}, Python proxy", serve_proxy)
        if not args.no_ray_haproxy:
            run(f"(a) Ray Serve x{n}, HAProxy ingress", lambda procs, n=n: serve_proxy(procs, n, True))

    print(f"\nc=32, {args.duration:g} s per row, wrk -t1; one 8x8 image per request; {os.cpu_count()} cores\n")
    print(f"{'design':42} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'load1':>6}")
    for r in rows:
        if "failed" in r:
            print(f"{r['name']:42} FAILED: {r['failed']}")
        else:
            print(f"{r['name']:42} {r['rps']:8.0f} {r['p50']:8.2f} {r['p99']:8.2f} {r['errors']:7g} {r['load']:6.2f}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
