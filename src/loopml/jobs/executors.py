"""Choosing the executor from the settings, and describing where jobs can run (``cluster status``).

Ray is imported only when LOOPML_EXECUTOR=ray, and only here through jobs.ray_executor (the
one module that imports it): a control plane on the local executor never loads it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from loopml.core.errors import InvalidInput
from loopml.core.jobstatus import RUNNING
from loopml.core.resources import of_job
from loopml.jobs.executor import Executor
from loopml.platform import Platform


def check_cluster_mode(settings: Any) -> None:
    """A remote executor with this host's SQLite file or folder: InvalidInput saying what to set."""
    problem = settings.cluster_mode_problem()
    if problem:
        raise InvalidInput(problem)


def check_ray_address(settings: Any, timeout_s: float = 3.0) -> None:
    """LOOPML_RAY_ADDRESS names a HOST:PORT nobody answers on: InvalidInput at once (Ray itself
    would retry for half a minute). ``auto`` is left to Ray, which says at once when it finds none."""
    address = settings.ray_address.removeprefix("ray://")
    if settings.executor != "ray" or address == "auto":
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"LOOPML_RAY_ADDRESS={settings.ray_address!r} must be auto, HOST:PORT of the Ray head "
                           "or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InvalidInput(f"no Ray cluster answers at LOOPML_RAY_ADDRESS={settings.ray_address} "
                           f"({exc.strerror or exc}); start one with `ray start --head` or set LOOPML_RAY_ADDRESS") from None


def make_executor(platform: Platform) -> Executor:
    settings = platform.settings
    if settings.executor == "ray":
        check_cluster_mode(settings)
        check_ray_address(settings)
        from loopml.jobs.ray_executor import RayExecutor

        return RayExecutor(platform)
    from loopml.jobs.local import LocalExecutor

    return LocalExecutor(settings)


def _running_by_host(platform: Platform) -> dict[str, list[dict[str, Any]]]:
    by_host: dict[str, list[dict[str, Any]]] = {}
    for job in platform.jobs.list(status=RUNNING, limit=1000):
        entry = {"id": job["id"], "kind": job["kind"], "resources": of_job(job)}
        by_host.setdefault(job["worker"]["host"] or "", []).append(entry)
    return by_host


def _this_host(platform: Platform, host: str, executor: Executor | None) -> dict[str, Any]:
    import psutil

    jobs = _running_by_host(platform).get(host, [])
    total = {"cpus": os.cpu_count() or 1, "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "gpus": 0}
    pool = getattr(executor, "spares", None)  # the local executor's spare workers
    spares = [{"name": f"spare-{s.proc.pid}", "ready": s.ready} for s in pool.spares] if pool is not None else []
    return {"node": host, "address": host, "alive": True, "head": True, "total": total,
            "free": None, "slots": platform.settings.max_concurrent_jobs, "jobs": jobs, "spares": spares}


def cluster_status(platform: Platform, executor: Executor | None) -> dict[str, Any]:
    """The executor's nodes (resources, the jobs running on each). Without a running executor
    (a server started without its control loop): what the settings would use, this host."""
    if executor is not None and hasattr(executor, "nodes"):
        by_host = _running_by_host(platform)
        nodes = executor.nodes()  # type: ignore[attr-defined]
        for node in nodes:
            node["jobs"] = by_host.pop(node["placement"], [])
        pending = [job for host, jobs in by_host.items() for job in jobs]  # not placed on a node yet
        return {"executor": "ray", "address": platform.settings.ray_address, "nodes": nodes, "unplaced": pending}
    host = executor.host if executor is not None else socket.gethostname()
    return {"executor": "local", "address": None, "nodes": [_this_host(platform, host, executor)], "unplaced": []}
