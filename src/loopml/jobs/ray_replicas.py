"""RayReplicas: an endpoint's data-plane replicas as detached Ray actors (the ReplicaPlacer protocol).

Imported only when LOOPML_EXECUTOR=ray (jobs.replicas); with jobs/ray_executor.py the only
modules that import Ray. A replica is the actor ``replica:<endpoint>:<index>`` (namespace
``loopml``) reserving the replica's resources on a node; it binds a listening socket on its
node's address (port chosen by the kernel) and runs LoopML's own serving process on it
(``python -m loopml.serving.server --fd N``, the same process and wire as on one machine) as its
child, which dies with it (PR_SET_PDEATHSIG). The serving process reads desired state from the
shared PostgreSQL and models from s3:// like any data-plane node.

Restarts are Ray's (``max_restarts=-1``): when the serving process exits the actor ends itself,
and when the actor or its node dies Ray starts it again, re-running its constructor on a node
with room — a new serving process at a new address. The controller (controlplane/replicas.py)
only keeps the number of actors right and reports what it sees; a replica keeps serving while no
control plane runs. Each replica slot has its own LOOPML_HOME on its node
(``$TMPDIR/loopml-replicas/<endpoint>-<index>``), so its capture spool is its own and the next
incarnation of the slot uploads what a killed one left there.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray

from loopml.core.errors import LoopMLError
from loopml.jobs.logtail import read_tail
from loopml.jobs.ray_executor import NAMESPACE, _die_with_parent
from loopml.jobs.replicas import DEAD, PENDING, RUNNING, Replica
from loopml.platform import Platform

log = logging.getLogger("loopml.controlplane.replicas")
PREFIX = "replica:"
RESTART_PAUSE_S = 1.0  # a restarted actor waits this long first: a crashing replica never spins
DRAIN_S = 15.0  # the serving process finishes in-flight requests (10 s) and flushes capture
TAIL_BYTES = 600  # of the serving process's output, reported when it exits
ADOPT_EVERY_S = 5.0  # how often the named actors are listed (replicas another control plane started)


def actor_name(endpoint: str, index: int) -> str:
    return f"{PREFIX}{endpoint}:{index}"


def _parse(name: str) -> tuple[str, int] | None:
    endpoint, _, index = name.removeprefix(PREFIX).rpartition(":")
    return (endpoint, int(index)) if name.startswith(PREFIX) and index.isdigit() else None


class ReplicaActor:
    """Holds a replica's resources on its node and runs the serving process on the node's address."""

    def __init__(self, endpoint: str, index: int, env: dict[str, str]) -> None:
        ctx = ray.get_runtime_context()
        if ctx.was_current_actor_reconstructed:
            time.sleep(RESTART_PAUSE_S)
        self.node_id = ctx.get_node_id()
        self.ip = ray.util.get_node_ip_address()
        self.sock = socket.socket(socket.AF_INET6 if ":" in self.ip else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.ip, 0))
        self.sock.listen(2048)
        self.port = self.sock.getsockname()[1]
        self.endpoint = endpoint
        self.address = f"http://[{self.ip}]:{self.port}" if ":" in self.ip else f"http://{self.ip}:{self.port}"
        home = os.path.join(tempfile.gettempdir(), "loopml-replicas", f"{endpoint}-{index}")
        os.makedirs(home, mode=0o700, exist_ok=True)
        self.log_path = os.path.join(home, "serving.log")
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}, **env,
                    "LOOPML_HOME": home}
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._draining = False
        self._started = threading.Event()
        self._ended = threading.Event()
        # PR_SET_PDEATHSIG fires when the forking thread ends: fork from one that lives as long as the child
        threading.Thread(target=self._run, name="loopml-replica", daemon=True).start()
        self._started.wait()

    def _run(self) -> None:
        fd = self.sock.fileno()
        try:
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "loopml.serving.server", "--fd", str(fd),
                                              "--replica-of", self.endpoint, "--advertise", self.address],
                                             env=self.env, pass_fds=(fd,), stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        finally:
            self._started.set()
        self.returncode = self.proc.wait()
        self._ended.set()
        if not self._draining:  # it crashed or was killed: end the actor, Ray starts it again
            time.sleep(0.5)  # let a pending wait() answer carry the exit code
            os._exit(1)

    def info(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "hostname": socket.gethostname(), "ip": self.ip, "port": self.port,
                "address": self.address, "pid": self.proc.pid if self.proc else None}

    def wait(self) -> tuple[int | None, str]:
        self._ended.wait()
        return self.returncode, read_tail(self.log_path, TAIL_BYTES)

    def drain(self) -> int | None:
        """SIGTERM: the serving process stops accepting, answers what it holds, flushes capture."""
        self._draining = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self._ended.wait(DRAIN_S)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        return self.returncode


RemoteReplicaActor = ray.remote(ReplicaActor)


@dataclass
class _Watch:
    replica: Replica
    actor: Any
    info: Any | None  # ObjectRef of actor.info() until its serving process runs
    done: Any | None  # ObjectRef of actor.wait(): ready when the process ends or the actor dies


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


class RayReplicas:  # implements loopml.jobs.replicas.ReplicaPlacer
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        if not ray.is_initialized():  # the RayExecutor usually connected this process already
            try:
                ray.init(address=self.settings.ray_address, namespace=NAMESPACE, log_to_driver=False,
                         logging_level=logging.WARNING)
            except Exception as exc:  # noqa: BLE001 - whatever Ray raises, one line
                raise LoopMLError(f"cannot reach the Ray cluster at LOOPML_RAY_ADDRESS={self.settings.ray_address}: "
                                  f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
        self._watched: dict[str, _Watch] = {}
        self._draining: dict[str, tuple[Any, Any]] = {}  # name → (actor, ObjectRef of drain())
        self._adopted_at = -ADOPT_EVERY_S

    # -- the ReplicaPlacer protocol ----------------------------------------------------------------
    def observe(self) -> list[Replica]:
        if time.monotonic() - self._adopted_at >= ADOPT_EVERY_S:
            self._adopted_at = time.monotonic()
            self._adopt()
        refs = [r for w in self._watched.values() for r in (w.info, w.done) if r is not None]
        refs += [ref for _, ref in self._draining.values()]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0]) if refs else set()
        out: list[Replica] = []
        for name, w in list(self._watched.items()):
            if w.done is not None and w.done in ready:
                self._ended(w)
            if w.info is not None and w.info in ready:
                self._placed(w)
            out.append(w.replica)
            if w.replica.state == DEAD:
                del self._watched[name]
        for name, (actor, ref) in list(self._draining.items()):
            if ref in ready:
                del self._draining[name]
                self._kill(actor)
        return out

    def place(self, endpoint: str, index: int, resources: dict[str, float]) -> Replica:
        name = actor_name(endpoint, index)
        actor = RemoteReplicaActor.options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=-1, max_concurrency=4,
            num_cpus=resources["cpus"], num_gpus=resources["gpus"],
            memory=int(resources["memory_gb"] * 2**30)).remote(endpoint, index, self._env())
        return self._watch(Replica(endpoint, index, name), actor).replica

    def remove(self, replica: Replica) -> None:
        w = self._watched.pop(replica.name, None)
        if w is None:
            return
        self._draining[replica.name] = (w.actor, w.actor.drain.remote())

    def detach(self) -> None:
        self._watched.clear()
        for actor, _ in self._draining.values():  # a scale-in under way is finished, not left half done
            self._kill(actor)
        self._draining.clear()

    # -- inside --------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        """The serving settings (as the control plane gives its own serving process) plus the S3
        credentials this control plane uses, so the replica reaches the same stores."""
        env = self.settings.child_env("serving", base={})
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        return env

    def _watch(self, replica: Replica, actor: Any) -> _Watch:
        w = _Watch(replica, actor, actor.info.remote(), actor.wait.remote())
        self._watched[replica.name] = w
        return w

    def _adopt(self) -> None:
        """Replica actors started by an earlier control plane (they kept serving meanwhile)."""
        try:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a.get("namespace") == NAMESPACE and a["name"].startswith(PREFIX)]
        except Exception:  # noqa: BLE001 - a listing Ray cannot give now: next tick
            return
        for name in names:
            slot = _parse(name)
            if name in self._watched or name in self._draining or slot is None:
                continue
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            self._watch(Replica(slot[0], slot[1], name), actor)

    def _placed(self, w: _Watch) -> None:
        ref, w.info = w.info, None
        try:
            where = ray.get(ref, timeout=10)
        except ray.exceptions.ActorUnavailableError:  # restarting: ask the new incarnation
            w.info = w.actor.info.remote()
            return
        except ray.exceptions.RayError:
            return  # died before it served: its wait() says so
        r = w.replica
        if r.reason:  # a restarted one
            log.warning("endpoint %s: replica %d serves again on node %s (%s)", r.endpoint, r.index,
                        where["node_id"][:12], where["address"])
        r.state, r.node, r.address, r.pid = RUNNING, where["node_id"][:12], where["address"], where["pid"]

    def _ended(self, w: _Watch) -> None:
        """Its serving process ended (the actor ends itself) or the actor died: Ray restarts it,
        unless it is gone for good (killed without restart) — then it is reported dead."""
        ref, w.done = w.done, None
        r = w.replica
        try:
            code, tail = ray.get(ref, timeout=10)
            why = f"serving process exited (code {code})" + (f": {_last_line(tail)}" if _last_line(tail) else "")
        except ray.exceptions.ActorUnavailableError:  # still restarting (the loss is known): ask again
            w.done = w.actor.wait.remote()
            if w.info is None and r.state != RUNNING:
                w.info = w.actor.info.remote()
            return
        except ray.exceptions.RayError as exc:
            why = self._why_lost(r, exc)
        try:
            actor = ray.get_actor(r.name, namespace=NAMESPACE)
        except ValueError:
            log.warning("endpoint %s: replica %d is gone (%s)", r.endpoint, r.index, why)
            r.state, r.reason = DEAD, why
            return
        log.warning("endpoint %s: replica %d lost (%s); Ray restarts it", r.endpoint, r.index, why)
        w.actor = actor
        r.state, r.reason, r.address = PENDING, why, None
        w.info, w.done = actor.info.remote(), actor.wait.remote()

    @staticmethod
    def _why_lost(r: Replica, exc: Exception) -> str:
        if r.node:
            node = next((n for n in ray.nodes() if n["NodeID"].startswith(r.node)), None)
            if node is None or not node.get("Alive"):
                return f"node {r.node} died"
        return f"its Ray actor died ({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]})"

    @staticmethod
    def _kill(actor: Any) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
