"""serving.model_cache: load once, share, wait while loading, unload least-recently-used."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("onnxruntime")

from loopml.core.errors import CorruptArtifact  # noqa: E402
from loopml.serving.model_cache import ModelCache, ModelNotReady  # noqa: E402
from tests.serving_support import register  # noqa: E402

pytest_plugins = ("tests.serving_support",)


def test_concurrent_first_use_loads_once_and_lru_unloads_past_budget(platform, digit_bundles):
    v1 = register(platform, "digits", digit_bundles[0])
    v2 = register(platform, "digits", digit_bundles[1])
    cache = ModelCache(platform.artifacts, platform.settings.home / "cache", memory_mb=64)

    async def run():
        k1, k2 = ("digits", 1, 8, 2.0), ("digits", 2, 8, 2.0)
        hosts = await asyncio.gather(*[cache.get(k1, lambda: v1) for _ in range(5)])
        assert all(h is hosts[0] for h in hosts) and cache.loads == 1
        assert hosts[0].model_version == "1" and hosts[0].model_name == "digits"
        one_model = cache.used_bytes
        assert one_model > 0
        cache.budget = int(one_model * 1.5)  # room for one model only
        h2 = await cache.get(k2, lambda: v2)
        assert cache.peek(k1) is None and cache.peek(k2) is h2  # k1 was least recently used
        assert cache.unloads == 1 and not hosts[0].loaded
        # a pinned model is never unloaded, even over budget
        h1 = await cache.get(k1, lambda: v1, pinned={k1, k2})
        assert cache.peek(k1) is h1 and cache.peek(k2) is h2
        await cache.close()

    asyncio.run(run())


def test_waiting_is_bounded_and_failures_reach_every_waiter(platform, digit_bundles):
    cache = ModelCache(platform.artifacts, platform.settings.home / "cache", wait_s=0.05)

    async def run():
        import threading

        gate = threading.Event()

        def slow_record():
            gate.wait(10)
            raise CorruptArtifact("no such files")

        key = ("ghost", 1, 8, 2.0)
        with pytest.raises(ModelNotReady, match="still loading"):
            await cache.get(key, slow_record)
        gate.set()
        cache.wait_s = 10
        with pytest.raises(CorruptArtifact):
            await cache.get(key, slow_record)
        assert cache.peek(key) is None

    asyncio.run(run())
