"""Pinned-size device buffers and one CUDA stream through cuda-python: the copies around every inference.

Allocated once for the largest batch; :meth:`upload` and :meth:`download` copy asynchronously on the stream,
:meth:`synchronize` waits. Used by :class:`edge.model.backends.trt.TrtBackend`; ``scripts/gpu_check.py`` runs it
on a GPU without TensorRT, with torch standing in for the engine and as the numerical reference.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from edge.errors import BackendError
from edge.model.backends.trt_api import cuda_call

FLOAT32_BYTES = 4


class DeviceBuffers:
    """One float32 input and one float32 output buffer of fixed capacity, and the stream they are copied on."""

    def __init__(self, cudart: ModuleType, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        """``in_shape``/``out_shape``: the largest batch, e.g. ``(8, 1, 1001, 64)`` and ``(8, 512)``."""
        self._cudart = cudart
        self.in_shape, self.out_shape = in_shape, out_shape
        self.host_out = np.empty(out_shape, dtype=np.float32)
        self.device_in = cuda_call(cudart, cudart.cudaMalloc(int(np.prod(in_shape)) * FLOAT32_BYTES))
        self.device_out = cuda_call(cudart, cudart.cudaMalloc(self.host_out.nbytes))
        self.stream = cuda_call(cudart, cudart.cudaStreamCreate())

    def upload(self, batch: np.ndarray) -> np.ndarray:
        """Queue the copy of ``batch`` (at most the capacity) to the input buffer; returns the contiguous float32
        array, which must stay alive until :meth:`synchronize`."""
        host = np.ascontiguousarray(batch, dtype=np.float32)
        if host.shape[0] > self.in_shape[0] or host.shape[1:] != self.in_shape[1:]:
            raise BackendError(f"batch of shape {host.shape} does not fit the buffers {self.in_shape}",
                               "split batches above the engine's maximum")
        cudart = self._cudart
        cuda_call(cudart, cudart.cudaMemcpyAsync(self.device_in, host.ctypes.data, host.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))
        return host

    def download(self, rows: int) -> np.ndarray:
        """Queue the copy of the first ``rows`` output rows back to the host; valid after :meth:`synchronize`."""
        out = self.host_out[:rows]
        cudart = self._cudart
        cuda_call(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self.device_out, out.nbytes,
                                                 cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))
        return out

    def synchronize(self) -> None:
        cuda_call(self._cudart, self._cudart.cudaStreamSynchronize(self.stream))

    @property
    def stream_handle(self) -> int:
        return int(self.stream)

    def addresses(self) -> tuple[Any, Any]:
        """(input, output) device pointers, for ``set_tensor_address``."""
        return self.device_in, self.device_out

    def close(self) -> None:
        """Free both buffers and destroy the stream."""
        cudart = self._cudart
        for pointer in (self.device_in, self.device_out):
            cuda_call(cudart, cudart.cudaFree(pointer))
        cuda_call(cudart, cudart.cudaStreamDestroy(self.stream))
