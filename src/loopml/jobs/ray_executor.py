"""RayExecutor: each job in a detached Ray actor on whichever node has the resources it asks for.

The only module that imports Ray (jobs.executors loads it when LOOPML_EXECUTOR=ray). The actor
runs the same worker as the local executor — ``python -m loopml.jobs.worker JOB_ID``, the store
locations in its environment — as a child process, so every job gets a fresh Python (Keras keeps
global state) and reports progress, logs, metrics and checkpoints to the stores itself, exactly
as locally. The actor only reserves the job's resources on its node and watches the child.

Why a detached, named actor rather than a task: it outlives the control plane (a task dies with
its driver), so a restarted control plane finds it by name (``job:<id>:<attempt>``) and re-attaches.

Node loss: when the actor dies with its node, the job (still running in the store, so never a
job that already recorded its outcome) is started again on a node that has room, at most
``job_retries`` times; a training job continues from its own last checkpoint (train_runner).
Each retry and each placement is an event of the job. The child dies with its actor
(PR_SET_PDEATHSIG), so a retry never runs beside a leftover.
"""

from __future__ import annotations

import ctypes
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
from dataclasses import dataclass
from typing import Any

import ray

from loopml.artifacts.keys import join
from loopml.core.errors import InvalidInput, LoopMLError
from loopml.core.jobstatus import RUNNING
from loopml.core.resources import of_job
from loopml.jobs.executor import Exited, Placement
from loopml.platform import Platform

log = logging.getLogger("loopml.controlplane")
NAMESPACE = "loopml"
PENDING = "ray:pending"  # a job's worker host until its actor has a node
MAX_UNPLACED = 4  # actors waiting for a node at once; further jobs wait, queued, in the store
KILL_GRACE_S = 10.0
LINGER_S = 600.0  # an actor whose worker ended waits this long for a control plane to collect it
RETRY = "retry "  # how a retry event's message starts (the attempts are counted from the events)
_CKPT_RE = re.compile(r"epoch-(\d+)\.npz$")
_STANDARD = {"CPU", "GPU", "memory", "object_store_memory"}


def placement_label(node_id: str) -> str:
    """What a job records as its worker host: the node id's first 12 hex digits."""
    return f"ray:{node_id[:12]}"


def _die_with_parent() -> None:  # in the child, before exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the child may outlive a killed actor
        pass


class JobActor:
    """Reserves a job's resources on its node and runs its worker as a child process."""

    def __init__(self, job_id: str, env: dict[str, str]) -> None:
        self.job_id = job_id
        self.node_id = ray.get_runtime_context().get_node_id()
        log_dir = os.path.join(tempfile.gettempdir(), "loopml-workers")
        os.makedirs(log_dir, exist_ok=True)
        self.log_path = os.path.join(log_dir, f"{job_id}.out")
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("LOOPML_")}, **env}
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._started = threading.Event()
        self._ended = threading.Event()
        # PR_SET_PDEATHSIG fires when the thread that forked ends: fork from a thread that lives
        # exactly as long as the child
        threading.Thread(target=self._run, name="loopml-worker", daemon=True).start()
        self._started.wait()

    def _run(self) -> None:
        try:
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "loopml.jobs.worker", self.job_id],
                                             env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        finally:
            self._started.set()
        self.returncode = self.proc.wait()
        self._ended.set()
        threading.Timer(LINGER_S, self._leave).start()

    def _leave(self) -> None:  # nobody collected the result: free the node's resources
        try:
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
        except Exception:  # noqa: BLE001
            os._exit(0)

    def placement(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "hostname": socket.gethostname(), "ip": ray.util.get_node_ip_address(),
                "pid": self.proc.pid if self.proc else None}

    def wait(self) -> tuple[int | None, str]:
        self._ended.wait()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(self.log_path) - 2000))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            tail = ""
        return self.returncode, tail

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

    # -- the Executor protocol ---------------------------------------------------------------
    def free_slots(self) -> int:
        unplaced = sum(1 for run in self._runs.values() if run.where is not None)
        return max(0, MAX_UNPLACED - unplaced)

    def submit(self, job_id: str) -> Placement:
        self._start(job_id, self.platform.jobs.get(job_id), self._attempt(job_id))
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
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0]) if refs else set()
        for job_id, run in list(self._runs.items()):
            if run.where is not None and run.where in ready:
                self._placed(job_id, run)
            if run.done in ready:
                self._finished(job_id, run)
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
        try:
            actor = ray.get_actor(self._name(job_id, attempt), namespace=NAMESPACE)
        except ValueError:
            self._lost[job_id] = f"its Ray actor (attempt {attempt}) is gone: lost while no control plane watched it"
            return True
        self._runs[job_id] = _Run(actor, attempt, actor.wait.remote(), actor.placement.remote() if host == PENDING else None,
                                  node=host.removeprefix("ray:"))
        return True

    def shutdown(self) -> None:
        """Stop watching; the actors (detached) keep running their jobs for the next control plane."""
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
                        "custom": {k: v for k, v in total.items() if k not in _STANDARD and not k.startswith("node:")}})
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
