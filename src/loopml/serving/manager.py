"""The serving process's view of the endpoints: kept in step with the metadata store.

Every ``poll_s`` the manager reads the endpoints' generations (one small query); an endpoint
whose generation changed is rebuilt in its own task and exception boundary: its model
versions load (or are reused from the cache), then the new ``LiveEndpoint`` replaces the old
in one assignment, the serving process reports it to the store, and versions no endpoint uses
any more are drained and unloaded a moment later. A version that fails to load leaves the old
generation serving and marks the endpoint ``Failed`` with the reason (retried later).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any, Callable

from loopml.core.errors import InvalidInput, LoopMLError, NotFound
from loopml.platform import Platform
from loopml.registry.refs import ModelRef, parse_model_ref
from loopml.registry.resolve import resolve
from loopml.serving.host import ModelHost
from loopml.serving.live import LiveEndpoint, Variant
from loopml.serving.model_cache import Key, ModelCache, ModelNotReady

log = logging.getLogger("loopml.serving.manager")

RETRY_FAILED_S = 30.0
RELEASE_DELAY_S = 1.0  # requests that picked the old hosts finish reading their bodies first
_REF_TTL_S = 2.0


def _key(model: str, version: int, resolved: dict[str, Any]) -> Key:
    return (model, int(version), int(resolved["max_batch_size"]),
            float(resolved["max_batch_delay_ms"]))


class EndpointManager:
    def __init__(self, platform: Platform, cache: ModelCache, *, poll_s: float = 0.25,
                 parent_pid: int | None = None,
                 on_removed: Callable[[str], None] | None = None,
                 standalone: bool = False, only: frozenset[str] | None = None) -> None:
        self.platform = platform
        self.cache = cache
        self.poll_s = poll_s
        self.parent_pid = parent_pid
        self.on_removed = on_removed  # e.g. drop the endpoint's metric series
        # a `loopml serve` node: no parent control plane to follow, and the endpoint rows are the
        # control plane's (its embedded data plane reports them); a node reports in serving_nodes
        self.standalone = standalone
        # `loopml serve --endpoints a,b`: this node serves (loads, reports, readies for) only these
        self.only = only
        self.live: dict[str, LiveEndpoint] = {}
        # name → (uid, generation) as last read: uid tells a re-created endpoint from the old one
        self.known: dict[str, tuple[str, int]] = {}
        self._failed: dict[str, tuple[tuple[str, int], float, str]] = {}
        self._unreported: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self._building: dict[Key, int] = {}  # keys held by builds in progress (pinned)
        self._refs: dict[ModelRef, tuple[float, dict[str, Any]]] = {}
        self._target_failures: dict[str, tuple[float, BaseException]] = {}
        self.synced = asyncio.Event()

    # -- what the data plane asks ----------------------------------------------------------
    def get(self, name: str) -> LiveEndpoint | None:
        return self.live.get(name)

    def loading(self, name: str) -> bool:
        # before the first sync every name may exist: 503 + Retry-After, never a false 404
        if self.only is not None and name not in self.only:
            return False  # not served here: 404
        return not self.synced.is_set() or (name in self.known and name not in self.live
                                            and name not in self._failed)

    def failure(self, name: str) -> str | None:
        """Why an endpoint with nothing to serve failed to load (None when it did not fail)."""
        failed = self._failed.get(name)
        return failed[2] if failed is not None and name not in self.live else None

    def ready(self) -> bool:
        return self.synced.is_set() and all(
            name in self.live and self.live[name].incarnation == key
            for name, key in self.known.items() if name not in self._failed)

    async def target_model(self, ep: LiveEndpoint, ref: str) -> Variant:
        """Multi-model endpoints: ``X-Amzn-SageMaker-Target-Model: MODEL[:VERSION|@ALIAS]``."""
        if not ep.multi_model:
            raise InvalidInput(f"endpoint {ep.name!r} is not a multi-model endpoint; "
                               "create it with --multi-model to use a target model")
        if len(ref) > 200:
            raise InvalidInput("target model reference is too long")
        allowed = {v.model for v in ep.variants}
        parsed = parse_model_ref(ref)
        if parsed.name not in allowed:
            # scoped: an endpoint's callers reach versions of its own models, not the registry
            raise InvalidInput(f"target model {ref!r} is not served by endpoint {ep.name!r}; "
                               f"it serves versions of {', '.join(sorted(allowed))}")
        failed = self._target_failures.get(ref)
        if failed is not None and time.monotonic() < failed[0]:
            raise failed[1]
        try:
            return await self._target(ep, parsed)
        except LoopMLError as exc:
            if len(self._target_failures) > 1000:
                self._target_failures.clear()
            self._target_failures[ref] = (time.monotonic() + 10.0, exc)  # no load storms
            raise

    async def _target(self, ep: LiveEndpoint, ref: ModelRef) -> Variant:
        rec = await self._resolve_ref(ref)
        base = ep.variants[0]
        resolved = {"max_batch_size": base.host.batcher.max_batch_size,
                    "max_batch_delay_ms": base.host.batcher.max_delay_ms}
        key = _key(rec["name"], rec["version"], resolved)
        host = await self.cache.get(key, lambda: rec, pinned=self.pinned())
        return Variant(name=base.name, host=host, weight=0.0, model=rec["name"],
                       version=int(rec["version"]))

    async def _resolve_ref(self, ref: ModelRef) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._refs.get(ref)
        if hit is not None and now - hit[0] < _REF_TTL_S:
            return hit[1]
        rec = await asyncio.to_thread(resolve, self.platform, ref)
        if len(self._refs) > 1000:
            self._refs.clear()
        self._refs[ref] = (now, rec)
        return rec

    def pinned(self) -> set[Key]:
        keys: set[Key] = set(self._building)
        for ep in self.live.values():
            for host in ep.hosts():
                keys.add(self._host_key(host))
        return keys

    @staticmethod
    def _host_key(host: ModelHost) -> Key:
        return (host.model_name, int(host.model_version), host.batcher.max_batch_size,
                float(host.batcher.max_delay_ms))

    # -- keeping in step -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        parent = self.parent_pid or os.getppid()
        while not stop.is_set():
            if not self.standalone and os.getppid() != parent:
                log.warning("the control plane (pid %s) went away: stopping", parent)
                stop.set()
                break
            try:
                await self.sync_once()
            except Exception:  # noqa: BLE001 - the store may be briefly unavailable
                log.exception("endpoint sync failed")
            try:
                await asyncio.wait_for(stop.wait(), self.poll_s)
            except TimeoutError:
                pass

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def sync_once(self) -> None:
        known = await asyncio.to_thread(self.platform.endpoints.generations)
        if self.only is not None:
            known = {name: key for name, key in known.items() if name in self.only}
        self.known = known
        for name in [n for n in self.live if self.live[n].incarnation[0] != known.get(n, ("",))[0]]:
            old = self.live.pop(name)  # deleted (or deleted and re-created: a new uid)
            log.info("endpoint %s removed", name)
            if self.on_removed is not None:
                self.on_removed(name)
            self._spawn(self._release(old))
        for name in [n for n in self._failed if n not in known]:
            del self._failed[name]
        for name, (uid, gen, served) in list(self._unreported.items()):
            if await self._report(name, uid, gen, served):
                del self._unreported[name]
        now = time.monotonic()
        for name, key in known.items():
            current = self.live.get(name)
            if current is not None and current.incarnation == key:
                continue
            failed = self._failed.get(name)
            if failed is not None and failed[0] == key and now < failed[1]:
                continue
            task = self._tasks.get(name)
            if task is not None and not task.done():
                continue
            self._tasks[name] = asyncio.get_running_loop().create_task(self._apply(name))
        for name in [n for n, t in self._tasks.items() if t.done() and n not in known]:
            del self._tasks[name]
        self.synced.set()

    async def _report(self, name: str, uid: str, gen: int, served: dict[str, Any]) -> bool:
        if self.standalone:
            return True
        try:
            await asyncio.to_thread(self.platform.endpoints.report, name, gen, ok=True,
                                    served=served, uid=uid)
            return True
        except Exception:  # noqa: BLE001 - retried at the next sync
            log.exception("reporting endpoint %s failed; will retry", name)
            return False

    async def _apply(self, name: str) -> None:
        try:
            rec = await asyncio.to_thread(self.platform.endpoints.get, name)
        except NotFound:
            return
        uid, gen, res = rec["uid"], rec["generation"], rec["resolved"]
        old = self.live.get(name)
        if old is not None and old.incarnation[0] != uid:
            old = None  # a re-created endpoint does not inherit the old one's versions
        try:
            new = await self._build(name, (uid, gen), res)
        except Exception as exc:  # noqa: BLE001 - the endpoint's own boundary
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.error("endpoint %s generation %s failed to load: %s", name, gen, message)
            self._failed[name] = ((uid, gen), time.monotonic() + RETRY_FAILED_S, message)
            if old is not None:
                message += f" (still serving generation {old.generation})"
            try:
                if self.standalone:
                    return
                await asyncio.to_thread(self.platform.endpoints.report, name, gen, ok=False,
                                        served=None, message=f"loading failed: {message}",
                                        uid=uid)
            except Exception:  # noqa: BLE001
                log.exception("reporting endpoint %s failed", name)
            return
        if self.known.get(name, ("",))[0] != uid:  # deleted while loading
            await self._release(new, delay=0)
            return
        previous = self.live.get(name)
        self.live[name] = new
        self._failed.pop(name, None)
        try:
            served = {"pid": os.getpid(),
                      "variants": [{"name": v.name, "model": v.model, "version": v.version,
                                    "runtime": v.host.bundle.runtime_name} for v in new.variants],
                      "shadow": ({"model": new.shadow.model, "version": new.shadow.version}
                                 if new.shadow else None)}
            if not await self._report(name, uid, gen, served):
                self._unreported[name] = (uid, gen, served)
        finally:
            if previous is not None:
                self._spawn(self._release(previous))

    async def _build(self, name: str, incarnation: tuple[str, int],
                     res: dict[str, Any]) -> LiveEndpoint:
        held: list[Key] = []

        async def variant(v: dict[str, Any]) -> Variant:
            key = _key(v["model"], v["version"], res)
            self._building[key] = self._building.get(key, 0) + 1  # pinned until built
            held.append(key)
            host = await self.cache.get(key, lambda: v, pinned=self.pinned())
            return Variant(name=v["name"], host=host, weight=float(v.get("weight", 0.0)),
                           model=v["model"], version=int(v["version"]))

        try:
            variants = [await variant(v) for v in res["variants"]]
            shadow = await variant(res["shadow"]) if res.get("shadow") else None
        finally:
            for key in held:
                self._building[key] -= 1
                if not self._building[key]:
                    del self._building[key]
        hosts = [v.host for v in variants] + ([shadow.host] if shadow else [])
        if not all(h.loaded for h in hosts):
            raise ModelNotReady("a model version was unloaded while the endpoint was built; "
                                "retrying")
        kinds = {h.kind for h in hosts}
        if len(kinds) > 1:
            raise InvalidInput(f"the variants of endpoint {name!r} take different inputs "
                               f"({', '.join(sorted(kinds))})")
        return LiveEndpoint(name=name, generation=incarnation[1], variants=variants,
                            shadow=shadow, incarnation=incarnation,
                            capture_fraction=float(res.get("capture_percent", 0.0)) / 100.0,
                            multi_model=bool(res.get("multi_model")),
                            key_hashes=frozenset(res.get("key_hashes") or ()))

    async def _release(self, ep: LiveEndpoint, delay: float = RELEASE_DELAY_S) -> None:
        """Unload the hosts of a replaced/deleted endpoint that nothing else uses."""
        if delay:
            await asyncio.sleep(delay)
        pinned = self.pinned()
        for host in ep.hosts():
            key = self._host_key(host)
            if key not in pinned and self.cache.peek(key) is host:
                await self.cache.unload(key)

    async def close(self) -> None:
        for task in [*self._tasks.values(), *self._background]:
            task.cancel()
        self.live.clear()
        await self.cache.close()
