"""An endpoint as the serving process holds it: variants bound to loaded hosts, immutable.

A new generation of an endpoint is a new ``LiveEndpoint`` swapped in whole (one dict
assignment on the event loop), so a request sees either the old variants or the new ones,
never a mix; the old hosts drain afterwards.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from itertools import accumulate

from loopml.core.errors import NotFound
from loopml.serving.host import ModelHost

__all__ = ["Variant", "LiveEndpoint"]


@dataclass(frozen=True)
class Variant:
    name: str
    host: ModelHost
    weight: float
    model: str
    version: int
    name_bytes: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "name_bytes", self.name.encode())


@dataclass
class LiveEndpoint:
    name: str
    generation: int
    variants: list[Variant]
    shadow: Variant | None = None
    capture_fraction: float = 0.0
    multi_model: bool = False
    key_hashes: frozenset[str] = frozenset()
    incarnation: tuple[str, int] = ("", 0)  # (uid, generation) in the metadata store
    _by_name: dict[str, Variant] = field(default_factory=dict, repr=False)
    _cumulative: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._by_name = {v.name: v for v in self.variants}
        live = [v for v in self.variants if v.weight > 0] or self.variants
        self._weighted = live
        self._cumulative = list(accumulate(v.weight for v in live))

    def pick(self, target: str | None = None) -> Variant:
        """The variant to answer: the one named by ``X-Amzn-SageMaker-Target-Variant``, else a
        weighted random choice (weights relative, as in SageMaker)."""
        if target is not None:
            variant = self._by_name.get(target)
            if variant is None:
                raise NotFound(f"variant {target!r} not found on endpoint {self.name!r}; "
                               f"variants: {sorted(self._by_name)}")
            return variant
        if len(self._weighted) == 1:
            return self._weighted[0]
        total = self._cumulative[-1]
        if total <= 0:
            return self._weighted[0]
        return self._weighted[bisect.bisect_right(self._cumulative, random.random() * total)]

    def hosts(self) -> list[ModelHost]:
        out = [v.host for v in self.variants]
        if self.shadow is not None:
            out.append(self.shadow.host)
        return out
