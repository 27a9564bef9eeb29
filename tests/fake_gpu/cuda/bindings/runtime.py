"""Stand-in ``cuda.bindings.runtime``: one device, an Orin (compute 8.7), for tests/export/test_trt_build.py."""

from __future__ import annotations

from types import SimpleNamespace


class cudaError_t:  # noqa: N801 - mirrors cuda-python
    cudaSuccess = 0


def cudaGetDevice() -> tuple[int, int]:  # noqa: N802
    return cudaError_t.cudaSuccess, 0


def cudaGetDeviceProperties(device: int) -> tuple[int, SimpleNamespace]:  # noqa: N802
    return cudaError_t.cudaSuccess, SimpleNamespace(name=b"Orin\x00", major=8, minor=7)
