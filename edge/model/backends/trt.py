"""TensorRT backend: a strongly typed engine from the bundle, name-based I/O, device buffers allocated once.

CUDA through cuda-python (never torch). An engine built by another TensorRT version or on another GPU
model, or from an ONNX file the bundle no longer holds (re-exported or re-quantised since), is refused with
a hint to rebuild it on this unit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from edge.errors import BackendError
from edge.model.backends.device_buffers import DeviceBuffers
from edge.model.backends.trt_api import gpu_identity, load_cudart, require_tensorrt, version
from edge.model.bundle import Bundle
from edge.model.precision_gate import model_key

log = logging.getLogger(__name__)

def engine_mismatch(details: Mapping[str, Any], trt_version: str, gpu_name: str, compute_capability: str) -> str | None:
    """Why an engine recorded with ``details`` cannot run here, or ``None`` when it matches."""
    built = (details.get("tensorrt_version"), details.get("gpu_name"), details.get("compute_capability"))
    if built[0] != trt_version:
        return f"engine was built with TensorRT {built[0]}, this unit has {trt_version}"
    if built[1] != gpu_name or built[2] != compute_capability:
        return (f"engine was built on {built[1]} (compute {built[2]}), this unit has {gpu_name} "
                f"(compute {compute_capability})")
    return None


def stale_engine(bundle: Bundle, details: Mapping[str, Any]) -> str | None:
    """Why an engine's recorded source ONNX is not the bundle's current one, or ``None`` when it is."""
    source_key = details.get("source_model")
    source = bundle.manifest.models.get(str(source_key))
    if source is None:
        return f"the engine was built from the {source_key} model, which the bundle no longer has"
    if details.get("source_onnx_sha256") != bundle.manifest.files.get(source.path):
        return f"the engine was built from another version of {source.path} (re-exported or re-quantised since)"
    return None


class TrtBackend:
    """Runs the bundle's ``trt-<precision>`` engine; batches above the engine's maximum are split."""

    name = "trt"

    def __init__(self, bundle: Bundle, precision: str = "fp16") -> None:
        key = model_key("trt", precision)
        entry = bundle.model(key)
        if entry.runtime != "tensorrt":
            raise BackendError(f"the {key} model is for {entry.runtime}, not TensorRT", "pick another precision")
        rebuild = f"rebuild it on this unit: `biolingual-export trt --bundle {bundle.root} --precision {precision}`"
        stale = stale_engine(bundle, entry.details)
        if stale:
            raise BackendError(f"{key}: {stale}", rebuild)
        require_tensorrt()
        import tensorrt as trt

        self._cudart = cudart = load_cudart()
        gpu_name, capability = gpu_identity(cudart)
        problem = engine_mismatch(entry.details, version(), gpu_name, capability)
        if problem:
            raise BackendError(problem, rebuild)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(bundle.path(entry.path).read_bytes())
        if self._engine is None:
            raise BackendError(f"TensorRT cannot load {entry.path}", "rebuild it with `biolingual-export trt`")
        self._context = self._engine.create_execution_context()
        self.precision = precision
        self.max_batch = int(entry.details["max_batch"])
        self._input, self._output = entry.inputs[0].name, entry.outputs[0].name
        self._frame_shape = tuple(int(d) for d in entry.inputs[0].shape[1:])
        self._dim = int(entry.outputs[0].shape[1])
        for name in (self._input, self._output):
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise BackendError(f"engine tensor {name} is not float32", "rebuild from a bundle with float32 I/O")
        self._buffers = DeviceBuffers(cudart, (self.max_batch, *self._frame_shape), (self.max_batch, self._dim))
        device_in, device_out = self._buffers.addresses()
        self._context.set_tensor_address(self._input, int(device_in))
        self._context.set_tensor_address(self._output, int(device_out))
        log.info("TensorRT %s engine %s on %s", precision, entry.path, gpu_name)

    def embed(self, features: np.ndarray) -> np.ndarray:
        """(B, 1, n_frames, n_mels) float32 -> (B, D) float32."""
        return np.concatenate([self._run(features[i : i + self.max_batch])
                               for i in range(0, features.shape[0], self.max_batch)])

    def _run(self, features: np.ndarray) -> np.ndarray:
        if features.shape[1:] != self._frame_shape:
            raise BackendError(f"features of shape {features.shape[1:]}, engine expects {self._frame_shape}",
                               "use the bundle's frontend parameters")
        buffers = self._buffers
        host = buffers.upload(features)
        self._context.set_input_shape(self._input, host.shape)
        if not self._context.execute_async_v3(buffers.stream_handle):
            raise BackendError("TensorRT inference failed", "see the TensorRT log above; rebuild the engine")
        out = buffers.download(host.shape[0])
        buffers.synchronize()
        return out.copy()

    def close(self) -> None:
        """Free the device buffers and stream (also done by the context manager)."""
        self._buffers.close()

    def __enter__(self) -> TrtBackend:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
