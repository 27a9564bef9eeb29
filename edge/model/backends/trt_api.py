"""Every TensorRT 10.x / 11.x and cuda-python API difference, in one place (lazy imports, feature-detected).

- INT8 calibrators and the FP16/INT8 builder flags: deprecated in 10.1, removed in 11. Never used here:
  precision lives in the ONNX graph and networks are built strongly typed.
- ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH``: a no-op since 10.0, gone in 11. Never set.
- ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``: opt-in in 10.x; where the flag no longer exists
  every network is strongly typed, so no flag is needed (:func:`network_flags`).
- cuda-python moved ``cuda.cudart`` to ``cuda.bindings.runtime`` (12.6+); JetPack 6 images carry either
  (:func:`load_cudart`).
Engines are tied to the TensorRT version and GPU that built them; the manifest records both.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from edge.errors import BackendError

INSTALL_HINT = ("on a Jetson use JetPack 6's TensorRT (python3-libnvinfer; a venv needs --system-site-packages), "
                "on a desktop `pip install tensorrt cuda-python`")


def require_tensorrt() -> None:
    """A :class:`BackendError` unless TensorRT is importable (a stubs-only install does not count).

    Callers then ``import tensorrt as trt`` themselves, so mypy checks their calls against tensorrt-stubs.
    """
    try:
        import tensorrt
    except ImportError as e:
        raise BackendError("TensorRT is not installed", INSTALL_HINT) from e
    except OSError as e:  # the Python package is there, its libnvinfer is not (or is for another CUDA)
        raise BackendError(f"TensorRT is installed but cannot load its libraries ({e})", INSTALL_HINT) from e
    if not hasattr(tensorrt, "Builder"):
        raise BackendError("TensorRT is not installed (only type stubs were found)", INSTALL_HINT)


def load_cudart() -> ModuleType:
    """cuda-python's runtime API module (``cuda.bindings.runtime`` or the older ``cuda.cudart``)."""
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart

        return cudart
    except ImportError as e:
        raise BackendError("cuda-python is not installed", "`pip install cuda-python` matching the CUDA version") from e


def cuda_call(cudart: ModuleType, result: tuple[Any, ...]) -> Any:
    """Unwrap cuda-python's ``(error, value...)`` tuples; a non-success code is a :class:`BackendError`."""
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise BackendError(f"CUDA call failed: {error}", "check the GPU with nvidia-smi / tegrastats")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity(cudart: ModuleType) -> tuple[str, str]:
    """(GPU name, compute capability ``major.minor``) of the current device; no GPU is a :class:`BackendError`."""
    device = cuda_call(cudart, cudart.cudaGetDevice())
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return name, f"{props.major}.{props.minor}"


def network_flags() -> int:
    """Creation flags for a strongly typed network on this TensorRT version."""
    import tensorrt as trt

    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def version() -> str:
    """TensorRT's version string, as recorded in engine manifest entries."""
    import tensorrt as trt

    return str(trt.__version__)
