"""Loaded model versions of one serving process, shared by every endpoint and variant using them.

A version loads once (download from the artifact store into a local cache folder, ONNX
Runtime session, warm-up of every bucket size) in a thread, off the event loop; concurrent
requests for a version that is loading wait on the same future, bounded by ``wait_s``.
Versions no endpoint pins (multi-model traffic) are unloaded least-recently-used when the
estimated memory passes the budget; their batchers drain first.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

from loopml.artifacts.store import ArtifactStore
from loopml.core.errors import LoopMLError
from loopml.serving.host import ModelHost

log = logging.getLogger("loopml.serving.models")

Key = tuple[str, int, int, float]  # model, version, max batch size, max delay ms
_ESTIMATE_FACTOR = 3  # runtime memory ≈ 3× the files on disk (session arena, buffers)


class ModelNotReady(LoopMLError):
    code = "model_not_ready"
    status = 503


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class ModelCache:
    def __init__(self, artifacts: ArtifactStore, cache_dir: Path, *, memory_mb: int = 2048,
                 wait_s: float = 60.0) -> None:
        self.artifacts = artifacts
        self.cache_dir = Path(cache_dir)
        self.budget = memory_mb * 2**20
        self.wait_s = wait_s
        self._hosts: OrderedDict[Key, ModelHost] = OrderedDict()  # LRU order
        self._sizes: dict[Key, int] = {}
        self._loading: dict[Key, asyncio.Future] = {}
        self.loads = 0
        self.unloads = 0
        self._download_locks: dict[tuple[str, int], threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # -- lookup --------------------------------------------------------------------------------
    def peek(self, key: Key) -> ModelHost | None:
        host = self._hosts.get(key)
        if host is not None:
            self._hosts.move_to_end(key)
        return host

    async def get(self, key: Key, version_record: Callable[[], dict[str, Any]],
                  *, pinned: set[Key] | None = None) -> ModelHost:
        """The loaded host for ``key``, loading it if needed (``version_record`` gives the
        registry record: artifact prefix, trusted flag; called in a thread)."""
        host = self.peek(key)
        if host is not None:
            return host
        fut = self._loading.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._loading[key] = fut
            asyncio.get_running_loop().create_task(self._load(key, version_record, fut, pinned))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except TimeoutError:
            raise ModelNotReady(f"model {key[0]}:{key[1]} is still loading after "
                                f"{self.wait_s:g} s; retry later") from None

    async def _load(self, key: Key, version_record, fut: asyncio.Future,
                    pinned: set[Key] | None) -> None:
        try:
            host = await asyncio.to_thread(self._load_sync, key, version_record)
            self._hosts[key] = host
            self.loads += 1
            await self.evict(pinned or set())
            fut.set_result(host)
        except BaseException as exc:  # noqa: BLE001 - every waiter gets the reason
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody may be waiting any more
        finally:
            self._loading.pop(key, None)

    def _load_sync(self, key: Key, version_record) -> ModelHost:
        model, version, max_batch, delay = key
        rec = version_record()
        folder = self.cache_dir / model / str(version)
        with self._locks_guard:  # one download per version, even for several batch settings
            lock = self._download_locks.setdefault((model, int(version)), threading.Lock())
        with lock:
            if not (folder / "loopml.json").is_file():
                tmp = self.cache_dir / model / f".{version}-{uuid.uuid4().hex[:8]}"
                try:
                    self.artifacts.download_dir(rec["artifact_prefix"], tmp,
                                                required=("loopml.json",))
                    shutil.rmtree(folder, ignore_errors=True)  # a partial copy from a crash
                    tmp.rename(folder)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.perf_counter()
        host = ModelHost.load(folder, max_batch_size=max_batch, max_delay_ms=delay,
                              name=f"{model}:{version}", trusted=bool(rec.get("trusted")))
        host.model_name, host.model_version = model, str(version)
        self._sizes[key] = _folder_bytes(folder) * _ESTIMATE_FACTOR
        log.info("loaded %s:%s in %.2f s (%s)", model, version, time.perf_counter() - t0,
                 host.bundle.runtime_name)
        return host

    # -- memory ---------------------------------------------------------------------------------
    @property
    def used_bytes(self) -> int:
        return sum(self._sizes.get(k, 0) for k in self._hosts)

    async def evict(self, pinned: set[Key]) -> None:
        """Unload least-recently-used unpinned versions while over budget."""
        for key in list(self._hosts):
            if self.used_bytes <= self.budget:
                return
            if key in pinned:
                continue
            await self.unload(key)

    async def unload(self, key: Key) -> None:
        host = self._hosts.pop(key, None)
        self._sizes.pop(key, None)
        if host is not None:
            self.unloads += 1
            log.info("unloading %s", host.name)
            await host.close(drain=True)

    def hosts(self) -> list[tuple[Key, ModelHost]]:
        return list(self._hosts.items())

    async def close(self) -> None:
        for key in list(self._hosts):
            await self.unload(key)
