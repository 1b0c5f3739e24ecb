"""RayExecutor: each job in a detached Ray actor on whichever node has the resources it asks for.

With jobs/ray_replicas.py the only modules that import Ray (jobs.executors loads it when
LOOPML_EXECUTOR=ray). The actor runs the same worker as the local executor — ``python -m
loopml.jobs.worker JOB_ID``, the store locations in its environment — as a child process, so
every job gets a fresh Python (Keras keeps global state) and reports progress, logs, metrics and
checkpoints to the stores itself, exactly as locally. The actor only reserves the job's
resources on its node and watches the child.

Why a detached, named actor rather than a task: it outlives the control plane (a task dies with
its driver), so a restarted control plane finds it by name (``job:<id>:<attempt>``) and re-attaches.

Node loss: when the actor dies with its node, the job (still running in the store, so never a
job that already recorded its outcome) is started again on a node that has room, at most
``job_retries`` times; a training job continues from its own last checkpoint (train_runner).
Each retry and each placement is an event of the job. The child dies with its actor
(PR_SET_PDEATHSIG), so a retry never runs beside a leftover.

Warm actors (``Settings.warm_workers`` > 0): that many spare actors wait on the cluster, each
holding the default training resources (1 CPU, 2 GB) and running ``python -m loopml.jobs.warm``
— TensorFlow/Keras and the runners already imported (jobs/warm.py, as the local executor's
spares). A job whose request fits within a spare's is handed to it (``take``: the job id and
environment on the child's stdin), so it skips the ~8 s import; the spare then is that job's
actor (still one fresh process per job) and a new spare is started. A job asking for more, or
arriving when no spare is placed, starts cold. Spares yield: when a job has waited for a node for
a few seconds, an idle spare is ended to give back its resources, and none is started while a job
waits. An idle spare ends by itself when no control plane has renewed its lease for a minute (its
control plane died): spares never pile up on a cluster. A warm job's actor is named ``spare:<hex>``;
its placement event names it, so a restarted control plane re-attaches to it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput, LoopMLError
from loopml.core.jobstatus import RUNNING
from loopml.core.resources import job_resources, of_job
from loopml.jobs.executor import Exited, Placement
from loopml.jobs.logtail import read_tail
from loopml.platform import Platform

log = logging.getLogger("loopml.controlplane")
NAMESPACE = "loopml"
PENDING = "ray:pending"  # a job's worker host until its actor has a node
MAX_UNPLACED = 4  # actors waiting for a node at once; further jobs wait, queued, in the store
KILL_GRACE_S = 10.0
TAIL_BYTES = 2000  # of the worker's output, reported when it exits
LINGER_S = 600.0  # an actor whose worker ended waits this long for a control plane to collect it
RETRY = "retry "  # how a retry event's message starts (the attempts are counted from the events)
_CKPT_RE = re.compile(r"epoch-(\d+)\.npz$")
_STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}
SPARE = "spare:"  # how a spare actor's name starts
SPARE_LEASE_S = 60.0  # an idle spare whose lease is not renewed this long ends (its control plane is gone)
LEASE_EVERY_S = 10.0
YIELD_AFTER_S = 3.0  # a job waiting this long for a node makes an idle spare give back its resources
MAX_BACKOFF_S = 60.0
_WARM_RE = re.compile(r"warm actor (spare:[0-9a-f]+)")


def placement_label(node_id: str) -> str:
    """What a job records as its worker host: the node id's first 12 hex digits."""
    return f"ray:{node_id[:12]}"


def _die_with_parent() -> None:  # in the child, before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child may outlive a killed actor
        pass


class JobActor:
    """Reserves a job's resources on its node and runs its worker as a child process.

    ``job_id`` None: a spare. Its child is the warm worker (imports done before any job), fed one
    job by ``take``; until then ``lease`` must be called every minute or the spare ends."""

    def __init__(self, job_id: str | None, env: dict[str, str]) -> None:
        self.job_id = job_id
        self.node_id = ray.get_runtime_context().get_node_id()
        self.log_dir = os.path.join(tempfile.gettempdir(), "loopml-workers")
        os.makedirs(self.log_dir, exist_ok=True)
        name = job_id or f"spare-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.log_path = os.path.join(self.log_dir, f"{name}.out")
        self.env = self._full_env(env)
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.is_ready = job_id is not None
        self._lock = threading.Lock()
        self._leased = time.monotonic()
        self._started = threading.Event()
        self._ready = threading.Event()
        self._ended = threading.Event()
        # PR_SET_PDEATHSIG fires when the thread that forked ends: fork from a thread that lives
        # exactly as long as the child
        threading.Thread(target=self._run, name="loopml-worker", daemon=True).start()
        self._started.wait()
        if job_id is None:
            threading.Thread(target=self._watch_lease, name="loopml-lease", daemon=True).start()
        else:
            self._ready.set()

    @staticmethod
    def _full_env(env: dict[str, str]) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}, **env}

    def _run(self) -> None:
        read_fd = write_fd = None
        try:
            with open(self.log_path, "ab") as out:
                if self.job_id is not None:
                    self.proc = subprocess.Popen([sys.executable, "-m", "loopml.jobs.worker", self.job_id],
                                                 env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                                 stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
                else:
                    read_fd, write_fd = os.pipe()
                    self.proc = subprocess.Popen([sys.executable, "-m", "loopml.jobs.warm", "--ready-fd", str(write_fd)],
                                                 env=self.env, stdin=subprocess.PIPE, stdout=out,
                                                 stderr=subprocess.STDOUT, pass_fds=(write_fd,),
                                                 preexec_fn=_die_with_parent)
        finally:
            if write_fd is not None:
                os.close(write_fd)
            self._started.set()
        if read_fd is not None:
            threading.Thread(target=self._await_ready, args=(read_fd,), daemon=True).start()
        self.returncode = self.proc.wait()
        self._ended.set()
        self._ready.set()
        threading.Timer(LINGER_S, self._leave).start()

    def _await_ready(self, read_fd: int) -> None:
        try:
            self.is_ready = os.read(read_fd, 1) == b"r"  # b"" when the child ended first
        except OSError:
            pass
        finally:
            os.close(read_fd)
            self._ready.set()

    def _watch_lease(self) -> None:
        while not self._ended.wait(5.0):
            with self._lock:
                if self.job_id is not None:
                    return
                if time.monotonic() - self._leased > SPARE_LEASE_S:
                    self._leave()  # no control plane renews it: an idle spare only holds resources
                    return

    def _leave(self) -> None:  # nobody collected the result: free the node's resources
        try:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        except Exception:  # noqa: BLE001
            os._exit(0)

    def placement(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "hostname": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
                "pid": self.proc.pid if self.proc else None}

    def ready(self) -> bool:
        """Blocks until the spare's imports are done; False if its process ended first."""
        self._ready.wait()
        return self.is_ready and self.returncode is None

    def lease(self) -> None:
        self._leased = time.monotonic()

    def job(self) -> str | None:
        return self.job_id

    def take(self, job_id: str, env: dict[str, str]) -> dict[str, Any] | None:
        """A spare becomes ``job_id``'s actor: its waiting worker gets the job; None if it cannot."""
        with self._lock:
            if self.job_id is not None or self.proc is None or self.proc.poll() is not None:
                return None
            self.job_id = job_id
            path = os.path.join(self.log_dir, f"{job_id}.out")
            os.replace(self.log_path, path)  # the child's open descriptor follows: one file for the job
            self.log_path = path
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"job_id": job_id, "env": self._full_env(env)}).encode() + b"\n")
                self.proc.stdin.close()
            except (OSError, ValueError):
                self.proc.kill()
                return None
        return self.placement()

    def wait(self) -> tuple[int | None, str]:
        self._ended.wait()
        return self.returncode, read_tail(self.log_path, TAIL_BYTES)

    def stop(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)


RemoteJobActor = ray.remote(JobActor)


@dataclass
class _Run:
    actor: Any
    attempt: int
    done: Any  # ObjectRef of actor.wait()
    where: Any | None  # ObjectRef of actor.placement() until the placement is recorded
    node: str = ""  # node id prefix once placed
    since: float = field(default_factory=time.monotonic)


@dataclass
class _Spare:
    actor: Any
    name: str
    done: Any  # ObjectRef of actor.wait(): ready when its process ends (or the actor dies)
    where: Any | None  # ObjectRef of actor.placement() until placed
    waiting: Any | None  # ObjectRef of actor.ready() until its imports are done
    node: str = ""
    hostname: str = ""
    ready: bool = False


def _resources_text(res: dict[str, float]) -> str:
    return f"{res['cpus']:g} CPU, {res['memory_gb']:g} GB" + (f", {res['gpus']:g} GPU" if res["gpus"] else "")


def _as_resources(raw: dict[str, float]) -> dict[str, float]:
    return {"cpus": raw.get("CPU", 0.0), "memory_gb": round(raw.get("memory", 0.0) / 2**30, 2),
            "gpus": raw.get("GPU", 0.0)}


class RayExecutor:  # implements loopml.jobs.executor.Executor
    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.host = "ray"
        if not ray.is_initialized():
            try:
                ray.init(address=self.settings.ray_address, namespace=NAMESPACE, log_to_driver=False,
                         logging_level=logging.WARNING)
            except Exception as exc:  # noqa: BLE001 - whatever Ray raises, one line
                try:
                    ray.shutdown()  # a half-made connection's threads would keep the process alive
                except Exception:  # noqa: BLE001
                    pass
                raise LoopMLError(f"cannot reach the Ray cluster at LOOPML_RAY_ADDRESS={self.settings.ray_address}: "
                                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc}; start one "
                                  "with `ray start --head` or set LOOPML_RAY_ADDRESS") from None
        self._runs: dict[str, _Run] = {}
        self._lost: dict[str, str] = {}  # adopted jobs whose actor is gone: retried at the next poll
        self._ended: list[Exited] = []
        self._cancelled: set[str] = set()
        self._kill_at: dict[str, float] = {}
        self._spares: list[_Spare] = []
        self.spare_resources = job_resources("train")  # what a spare holds: a job asking for no more takes it
        self._spare_failures = 0
        self._spares_not_before = 0.0
        self._leased_at = 0.0
        self._end_leftovers()
        self._refill()  # ready before the first job needs it

    # -- the Executor protocol ---------------------------------------------------------------
    def free_slots(self) -> int:
        unplaced = sum(1 for run in self._runs.values() if run.where is not None)
        return max(0, MAX_UNPLACED - unplaced)

    def submit(self, job_id: str) -> Placement:
        job, attempt = self.platform.jobs.get(job_id), self._attempt(job_id)
        warm = self._take_spare(job_id, job, attempt)
        if warm is not None:
            return warm
        self._start(job_id, job, attempt)
        return Placement(PENDING, None)

    def cancel(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is None:
            return
        self._cancelled.add(job_id)
        run.actor.stop.remote(int(signal.SIGTERM))  # the worker records "cancelled" itself
        self._kill_at.setdefault(job_id, time.monotonic() + KILL_GRACE_S)

    def poll(self) -> list[Exited]:
        refs = [ref for run in self._runs.values() for ref in (run.done, run.where) if ref is not None]
        refs += [ref for sp in self._spares for ref in (sp.done, sp.where, sp.waiting) if ref is not None]
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0]) if refs else set()
        for job_id, run in list(self._runs.items()):
            if run.where is not None and run.where in ready:
                self._placed(job_id, run)
            if run.done in ready:
                self._finished(job_id, run)
        self._watch_spares(ready)
        for job_id, why in list(self._lost.items()):
            del self._lost[job_id]
            self._retry_or_end(job_id, why)
        now = time.monotonic()
        for job_id, deadline in list(self._kill_at.items()):  # SIGTERM ignored: kill the actor
            if now > deadline:
                del self._kill_at[job_id]
                if job_id in self._runs:
                    ray.kill(self._runs[job_id].actor, no_restart=True)
        ended, self._ended = self._ended, []
        return ended

    def owns(self, job_id: str) -> bool:
        return job_id in self._runs or job_id in self._lost

    def adopt(self, job_id: str, host: str | None, pid: int | None) -> bool:
        if not host or not host.startswith("ray:"):
            return False  # not placed on Ray (a local worker of an earlier control plane)
        attempt = self._attempt(job_id)
        actor = self._actor_of(job_id, attempt)
        if actor is None:
            self._lost[job_id] = f"its Ray actor (attempt {attempt}) is gone: lost while no control plane watched it"
            return True
        self._runs[job_id] = _Run(actor, attempt, actor.wait.remote(), actor.placement.remote() if host == PENDING else None,
                                  node=host.removeprefix("ray:"))
        return True

    def shutdown(self) -> None:
        """Stop watching; the actors (detached) keep running their jobs for the next control plane.
        Idle spares end (a restarted control plane starts its own)."""
        for spare in self._spares:
            self._kill(spare.actor)
        self._spares.clear()
        self._runs.clear()
        self._lost.clear()
        if ray.is_initialized():
            ray.shutdown()

    # -- cluster status -------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """Every node Ray knows (dead ones too, for a while), its resources total and free."""
        try:
            from ray._private.state import available_resources_per_node

            free = available_resources_per_node()
        except Exception:  # noqa: BLE001 - a private API: without it, no free figures
            free = {}
        out = []
        for node in ray.nodes():
            total = node.get("Resources") or {}
            out.append({"node": node["NodeID"][:12], "placement": placement_label(node["NodeID"]),
                        "address": node.get("NodeManagerAddress"), "hostname": node.get("NodeManagerHostname"),
                        "alive": bool(node.get("Alive")), "head": "node:__internal_head__" in total,
                        "total": _as_resources(total),
                        "free": _as_resources(free[node["NodeID"]]) if node["NodeID"] in free else None,
                        "custom": {k: v for k, v in total.items() if k not in _STANDARD and not k.startswith("node:")},
                        "spares": [{"name": sp.name, "ready": sp.ready} for sp in self._spares
                                   if sp.node and node["NodeID"].startswith(sp.node)]})
        return sorted(out, key=lambda n: (not n["alive"], not n["head"], n["node"]))

    # -- inside ---------------------------------------------------------------------------------
    @staticmethod
    def _name(job_id: str, attempt: int) -> str:
        return f"job:{job_id}:{attempt}"

    def _retries(self, job_id: str) -> int:
        return sum(1 for e in self.platform.jobs.events(job_id)
                   if e["status"] == RUNNING and (e["message"] or "").startswith(RETRY))

    def _attempt(self, job_id: str) -> int:
        return 1 + self._retries(job_id)

    def _fits(self, res: dict[str, float]) -> None:
        """A job no node could ever hold would wait forever: refused with what the nodes have."""
        alive = [_as_resources(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]
        if any(n["cpus"] >= res["cpus"] and n["memory_gb"] >= res["memory_gb"] and n["gpus"] >= res["gpus"]
               for n in alive):
            return
        have = "; ".join(_resources_text(n) for n in alive) or "no node is alive"
        raise InvalidInput(f"no node of the Ray cluster has {_resources_text(res)} (nodes: {have}); "
                           "ask for less with --cpus / --memory-gb / --gpus")

    def _env(self) -> dict[str, str]:
        """The worker's settings (as the local executor gives them), plus the S3 credentials this
        control plane uses, so a node reaches the same artifact store."""
        env = self.settings.child_env("worker", base={})
        env.update({k: v for k, v in os.environ.items() if k.startswith("AWS_")})
        return env

    def _start(self, job_id: str, job: dict[str, Any], attempt: int) -> None:
        res = of_job(job)
        self._fits(res)
        actor = RemoteJobActor.options(
            name=self._name(job_id, attempt), namespace=NAMESPACE, lifetime="detached", max_restarts=0,
            max_concurrency=4, num_cpus=res["cpus"], num_gpus=res["gpus"],
            memory=int(res["memory_gb"] * 2**30)).remote(job_id, self._env())
        self._runs[job_id] = _Run(actor, attempt, actor.wait.remote(), actor.placement.remote())

    def _actor_of(self, job_id: str, attempt: int) -> Any | None:
        """The actor running ``job_id``'s attempt: ``job:<id>:<attempt>`` when it started cold, the
        spare its placement event names when warm (or, had the control plane died between handing
        it over and recording that, the spare that says it has the job)."""
        names = [self._name(job_id, attempt)]
        warm = None
        for event in self.platform.jobs.events(job_id):
            message = event["message"] or ""
            if message.startswith(RETRY):
                warm = None  # a placement of an earlier attempt
            elif m := _WARM_RE.search(message):
                warm = m.group(1)
        if warm:
            names.insert(0, warm)
        for name in names:
            try:
                return ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                pass
        if warm:
            return None
        try:
            spares = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                      if a.get("namespace") == NAMESPACE and a["name"].startswith(SPARE)]
        except Exception:  # noqa: BLE001
            return None
        for name in spares:
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
                if ray.get(actor.job.remote(), timeout=10) == job_id:
                    return actor
            except (ValueError, ray.exceptions.RayError):
                continue
        return None

    def _end_leftovers(self) -> None:
        """Actors whose job ended while no control plane watched them (they linger to tell a
        restarted one their exit): the job's outcome is recorded, so they go now and give their
        node's resources back. A job this store does not know is left alone (another store's)."""
        try:
            names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                     if a.get("namespace") == NAMESPACE]
        except Exception:  # noqa: BLE001 - a listing Ray cannot give: they end after LINGER_S anyway
            return
        for name in names:
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
                job_id = name.split(":")[1] if name.startswith("job:") else \
                    ray.get(actor.job.remote(), timeout=10) if name.startswith(SPARE) else None
                if job_id and self.platform.jobs.get(job_id)["status"] != RUNNING:
                    self._kill(actor)
            except (ValueError, LoopMLError, ray.exceptions.RayError):
                continue

    # -- warm actors ----------------------------------------------------------------------------
    @staticmethod
    def _kill(actor: Any) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _spawn_spare(self) -> None:
        res = self.spare_resources
        name = f"{SPARE}{uuid.uuid4().hex[:12]}"
        actor = RemoteJobActor.options(
            name=name, namespace=NAMESPACE, lifetime="detached", max_restarts=0, max_concurrency=4,
            num_cpus=res["cpus"], num_gpus=res["gpus"], memory=int(res["memory_gb"] * 2**30)).remote(None, self._env())
        self._spares.append(_Spare(actor, name, actor.wait.remote(), actor.placement.remote(), actor.ready.remote()))

    def _waiting_job(self) -> bool:
        """Whether a job's actor waits for a node (it may need what a spare holds)."""
        return any(run.where is not None for run in self._runs.values())

    def _refill(self) -> None:
        if self._waiting_job() or time.monotonic() < self._spares_not_before:
            return
        while len(self._spares) < self.settings.warm_workers:
            try:
                self._spawn_spare()
            except Exception as exc:  # noqa: BLE001 - e.g. no node has the resources: cold starts only
                log.warning("could not start a warm actor: %s", exc)
                self._spares_not_before = time.monotonic() + MAX_BACKOFF_S
                return

    def _watch_spares(self, ready: set[Any]) -> None:
        for spare in list(self._spares):
            if spare.where is not None and spare.where in ready:
                try:
                    where = ray.get(spare.where, timeout=10)
                    spare.node, spare.hostname = where["node_id"][:12], where["hostname"]
                except ray.exceptions.RayError:
                    pass  # died before it was placed: its done ref says so
                spare.where = None
            if spare.waiting is not None and spare.waiting in ready:
                try:
                    spare.ready = bool(ray.get(spare.waiting, timeout=10))
                except ray.exceptions.RayError:
                    pass
                spare.waiting = None
            if spare.done in ready:  # its warm worker ended without a job (or the actor died)
                self._spares.remove(spare)
                self._kill(spare.actor)
                self._spare_failures = 0 if spare.ready else self._spare_failures + 1
                delay = min(MAX_BACKOFF_S, 2.0 ** self._spare_failures) if self._spare_failures else 0.0
                self._spares_not_before = time.monotonic() + delay
                log.warning("warm actor %s ended%s; replacing it%s", spare.name,
                            "" if spare.ready else " before it was ready", f" in {delay:g} s" if delay else "")
        now = time.monotonic()
        if any(now - run.since > YIELD_AFTER_S for run in self._runs.values() if run.where is not None):
            idle = sorted(self._spares, key=lambda sp: bool(sp.node))  # unplaced spares first
            if idle:  # a job waits for a node: an idle spare gives its resources back, one per poll
                log.info("warm actor %s ended: a job waits for a node", idle[0].name)
                self._spares.remove(idle[0])
                self._kill(idle[0].actor)
        if self._spares and now - self._leased_at > LEASE_EVERY_S:
            self._leased_at = now
            for spare in self._spares:
                spare.actor.lease.remote()
        self._refill()

    def _take_spare(self, job_id: str, job: dict[str, Any], attempt: int) -> Placement | None:
        """Hand the job to a placed spare holding at least what it asks for (a ready one first)."""
        res, held = of_job(job), self.spare_resources
        if not all(res[k] <= held[k] for k in ("cpus", "memory_gb", "gpus")):
            return None  # it asks for more than a spare holds: a cold start where it fits
        for spare in sorted((sp for sp in self._spares if sp.node), key=lambda sp: not sp.ready):
            self._spares.remove(spare)
            try:
                where = ray.get(spare.actor.take.remote(job_id, self._env()), timeout=30)
            except ray.exceptions.RayError:
                where = None
            if where is None:
                self._kill(spare.actor)
                continue
            label = placement_label(where["node_id"])
            self.platform.jobs.note(job_id, f"running on node {where['node_id'][:12]} ({where['hostname']}, "
                                            f"{where['ip']}), attempt {attempt}, warm actor {spare.name}",
                                    worker_host=label, worker_pid=where["pid"])
            self._runs[job_id] = _Run(spare.actor, attempt, spare.done, None, node=where["node_id"][:12])
            self._refill()
            return Placement(label, where["pid"])
        return None

    def _placed(self, job_id: str, run: _Run) -> None:
        try:
            where = ray.get(run.where, timeout=10)
        except ray.exceptions.RayError:
            run.where = None  # the actor died before it ran: its wait() says so
            return
        run.where = None
        run.node = where["node_id"][:12]
        self.platform.jobs.note(job_id, f"running on node {run.node} ({where['hostname']}, {where['ip']}), "
                                        f"attempt {run.attempt}",
                                worker_host=placement_label(where["node_id"]), worker_pid=where["pid"])

    def _finished(self, job_id: str, run: _Run) -> None:
        try:
            returncode, tail = ray.get(run.done, timeout=10)
        except ray.exceptions.ActorUnavailableError:
            run.done = run.actor.wait.remote()  # not reachable for now: ask again
            return
        except ray.exceptions.RayActorError as exc:
            del self._runs[job_id]
            self._kill_at.pop(job_id, None)
            if job_id in self._cancelled:
                self._cancelled.discard(job_id)
                self._ended.append(Exited(job_id, None, "stopped on request"))
            else:
                self._retry_or_end(job_id, self._why_lost(run, exc))
            return
        del self._runs[job_id]
        self._kill_at.pop(job_id, None)
        self._cancelled.discard(job_id)
        ray.kill(run.actor, no_restart=True)
        self._ended.append(Exited(job_id, returncode, tail))

    def _why_lost(self, run: _Run, exc: Exception) -> str:
        if run.node:
            node = next((n for n in ray.nodes() if n["NodeID"].startswith(run.node)), None)
            if node is None or not node.get("Alive"):
                return f"node {run.node} died"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        return f"its Ray actor died ({first})"

    def _last_epoch(self, job_id: str) -> int | None:
        epochs = [int(m.group(1)) for key in self.platform.artifacts.list(join("jobs", job_id, "checkpoints"))
                  if (m := _CKPT_RE.search(key))]
        return max(epochs) if epochs else None

    def _retry_or_end(self, job_id: str, why: str) -> None:
        """The job's worker was lost with its actor: start it again, or report it ended."""
        job = self.platform.jobs.get(job_id)
        if job["status"] != RUNNING:
            return  # it recorded its outcome before its node went
        limit = self.settings.job_retries
        done = self._retries(job_id)
        if job["cancel_requested"] or done >= limit:
            left = "" if job["cancel_requested"] else f"; no retry left (LOOPML_JOB_RETRIES={limit})"
            self._ended.append(Exited(job_id, None, f"{why}{left}"))
            return
        epoch = self._last_epoch(job_id)
        start = f"from its checkpoint of epoch {epoch}" if epoch else "from the start (no finished epoch)"
        log.warning("job %s: %s; retry %d of %d", job_id, why, done + 1, limit)
        if not self.platform.jobs.note(job_id, f"{RETRY}{done + 1} of {limit}: {why}; starting again {start}",
                                       worker_host=PENDING, worker_pid=None):
            return  # ended meanwhile
        try:
            self._start(job_id, job, done + 2)
        except Exception as exc:  # noqa: BLE001 - e.g. no node left that can hold it
            self._ended.append(Exited(job_id, None, f"{why}; the retry could not start: {exc}"))
