"""Stand-in ``tensorrt`` (see ../README.md). Behaviour is set by environment variables:

``FAKE_TRT_VERSION`` (default 10.3.0.30); ``FAKE_TRT_CACHE`` = ``accept`` (default), ``reject`` (set_timing_cache
returns False for a non-empty cache, as for one from another GPU) or ``none`` (get_timing_cache returns None).
Calls are appended to :data:`CALLS` as ``(name, args)``.
"""

from __future__ import annotations

import os
from typing import Any

__version__ = os.environ.get("FAKE_TRT_VERSION", "10.3.0.30")
CALLS: list[tuple[str, tuple[Any, ...]]] = []


class Logger:
    WARNING = 2

    def __init__(self, level: int) -> None:
        self.level = level


class NetworkDefinitionCreationFlag:
    STRONGLY_TYPED = 0


class MemoryPoolType:
    WORKSPACE = 0


class BuilderFlag:
    TF32 = 6


def Dims(values: list[int]) -> tuple[int, ...]:  # noqa: N802 - mirrors tensorrt.Dims
    return tuple(values)


class _Cache:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def serialize(self) -> bytes:
        return self.data + b"+timings"


class _Config:
    def __init__(self) -> None:
        self._cache: _Cache | None = None

    def set_memory_pool_limit(self, pool: int, size: int) -> None:
        CALLS.append(("set_memory_pool_limit", (pool, size)))

    def clear_flag(self, flag: int) -> None:
        CALLS.append(("clear_flag", (flag,)))

    def add_optimization_profile(self, profile: _Profile) -> int:
        CALLS.append(("add_optimization_profile", (profile.shapes,)))
        return 0

    def create_timing_cache(self, data: bytes) -> _Cache:
        return _Cache(data)

    def set_timing_cache(self, cache: _Cache, ignore_mismatch: bool) -> bool:
        accepted = not (os.environ.get("FAKE_TRT_CACHE") == "reject" and cache.data)
        CALLS.append(("set_timing_cache", (cache.data, accepted)))
        if accepted:
            self._cache = cache
        return accepted

    def get_timing_cache(self) -> _Cache | None:
        return None if os.environ.get("FAKE_TRT_CACHE") == "none" else self._cache


class _Profile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Any, ...]] = {}

    def set_shape(self, name: str, smallest: Any, typical: Any, largest: Any) -> None:
        self.shapes[name] = (smallest, typical, largest)


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> object:
        CALLS.append(("create_network", (flags,)))
        return object()

    def create_builder_config(self) -> _Config:
        return _Config()

    def create_optimization_profile(self) -> _Profile:
        return _Profile()

    def build_serialized_network(self, network: object, config: _Config) -> bytes:
        return f"fake plan, TensorRT {__version__}, {len(CALLS)} calls".encode()


class OnnxParser:
    num_errors = 0

    def __init__(self, network: object, logger: Logger) -> None:
        pass

    def parse_from_file(self, path: str) -> bool:
        CALLS.append(("parse_from_file", (path,)))
        return True
