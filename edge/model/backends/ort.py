"""ONNX Runtime backend: one session per process, created once, providers and threads explicit."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

import numpy as np
import onnxruntime as ort

from edge.errors import BackendError
from edge.model.backends.cache_dirs import trt_ep_cache_dir
from edge.model.backends.denormals import flush_denormals, keep_float_mode
from edge.model.backends.int8_path import keep_int8_exact
from edge.model.bundle import ORT_OPTIMIZED_KEY, Bundle, ModelEntry

log = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""glibc ``mallopt`` parameter: the most malloc arenas the process may create."""
M_MMAP_THRESHOLD = -3
"""glibc ``mallopt`` parameter: allocations from this size up get pages of their own, unmapped on free."""
LOW_MEMORY_MMAP_THRESHOLD = 256 * 1024
"""Activations (0.3-6 MB each) are mapped and unmapped per tensor instead of piling up in the heap: the INT8
model's first-inference peak drops by ≈ 15 MB and its steady RSS by ≈ 55 MB (BENCHMARKS.md, *Peak memory*)."""


TRT_EP = "TensorrtExecutionProvider"


def _with_options(provider: str, bundle: Bundle) -> str | tuple[str, dict[str, str]]:
    if provider != TRT_EP:
        return provider
    cache = trt_ep_cache_dir(bundle)  # outside the bundle: the service mounts it read-only
    return provider, {"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                      "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(cache)}


def limit_malloc_arenas() -> bool:
    """Make glibc serve every thread from one malloc arena (True when it could).

    By default each thread that allocates gets an arena of its own, and memory that ONNX Runtime freed in
    one (the analysis thread's activations) is not reused by another: ≈ 20 MB more peak RSS in the daemon.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, 1))
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to limit
        return False


def map_large_allocations(threshold: int = LOW_MEMORY_MMAP_THRESHOLD) -> bool:
    """Serve allocations of ``threshold`` bytes and more with their own pages, returned to the OS on free
    (glibc ``M_MMAP_THRESHOLD``, which also stops glibc raising the threshold as it sees large frees)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):  # not glibc
        return False


def release_freed_memory() -> bool:
    """Hand the heap memory freed so far back to the OS (glibc ``malloc_trim``; True when it could).

    Loading a session parses the ONNX file and builds (and prepacks) the initializers, then frees the
    parse: ≈ 16 MB of the INT8 model's load stays resident in the heap unless trimmed, and every later
    allocation (activations) stacks on top of it in the peak.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):  # not glibc
        return False


class OrtBackend:
    """Runs the bundle's ONNX audio encoder of one precision with ONNX Runtime.

    Prefers the offline-optimised graph recorded under ``details["ort_optimized"]`` (same model, fused
    ops, nothing left to optimise at start-up); ``optimized=False`` runs the exported graph.
    """

    name = "ort"

    def __init__(self, bundle: Bundle, precision: str = "fp32", threads: int | None = None,
                 providers: tuple[str, ...] = ("CPUExecutionProvider",), optimized: bool = True,
                 low_memory: bool = False) -> None:
        """``low_memory`` turns off ONNX Runtime's CPU memory arena and memory-pattern planning and runs a batch
        one window at a time: the full model's activations are ≈ 36 MB per window in flight (INT8, arena off; ORT's
        buffer reuse keeps them so, turning it off halves that for ≈ 40 % more CPU per window: BENCHMARKS.md), so
        peak RSS stays at the one-window level whatever batch the caller sends; it also
        limits glibc to one malloc arena (:func:`limit_malloc_arenas`), maps large allocations on their own pages
        (:func:`map_large_allocations`) and trims the heap the session load freed (:func:`release_freed_memory`).
        BENCHMARKS.md, *Peak memory*."""
        entry = bundle.model(precision)
        if entry.runtime != "onnxruntime":
            raise BackendError(f"the {precision} model is for {entry.runtime}, not ONNX Runtime",
                               "pick the backend that matches the model or another precision")
        missing = [p for p in providers if p not in ort.get_available_providers()]
        if missing:
            raise BackendError(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available "
                f"(this install has {', '.join(ort.get_available_providers())})",
                "install onnxruntime-gpu for CUDA/TensorRT providers, or use CPUExecutionProvider",
            )
        if low_memory:
            limit_malloc_arenas()
            map_large_allocations()
        options = ort.SessionOptions()
        options.enable_cpu_mem_arena = not low_memory
        options.enable_mem_pattern = not low_memory
        # ORT's pool threads flush subnormals (Swin's masked softmax makes many; see backends/denormals.py).
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
        # Pool threads block between kernels instead of spinning: a spinning pool took 2.1x the CPU and 2.4x
        # the wall time per INT8 window at 2 threads beside other work (BENCHMARKS.md, *INT8 on Intel Xeon*, 10).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if entry.precision == "int8":  # u8×s8 saturates on x86 without VNNI: the exact u8×u8 path there
            keep_int8_exact(options)
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        path = bundle.path(self._model_file(entry, optimized))
        try:
            with keep_float_mode():  # the option also sets this thread's mode for good: undo that
                self._session = ort.InferenceSession(str(path), sess_options=options,
                                                     providers=[_with_options(p, bundle) for p in providers])
        except Exception as e:  # ORT raises its own untyped exceptions for corrupt or unsupported graphs
            raise BackendError(f"ONNX Runtime cannot load {path}: {e}", "re-export the bundle") from e
        if low_memory:
            release_freed_memory()
        active = self._session.get_providers()
        if active[0] != providers[0]:
            # ORT falls back to the next provider when one fails to initialise; we refuse instead.
            raise BackendError(f"ONNX Runtime could not start {providers[0]} (running on {active[0]})",
                               "check the CUDA/TensorRT installation, or request CPUExecutionProvider")
        self.precision = precision
        self.low_memory = low_memory
        self.model_file = path.name
        self._input = entry.inputs[0].name
        self._output = entry.outputs[0].name
        log.info("ONNX Runtime %s model %s on %s", precision, path.name, ", ".join(self._session.get_providers()))

    def _model_file(self, entry: ModelEntry, optimized: bool) -> str:
        """The ORT-optimised graph when the bundle has one made by this ONNX Runtime version, else the export."""
        self.optimized = False
        extra = entry.details.get(ORT_OPTIMIZED_KEY)
        if not optimized or not extra:
            return entry.path
        if extra.get("onnxruntime") != ort.__version__:
            log.info("optimised graph was made by ONNX Runtime %s, this is %s: using the exported graph",
                     extra.get("onnxruntime"), ort.__version__)
            return entry.path
        self.optimized = True
        return str(extra["path"])

    def embed(self, features: np.ndarray) -> np.ndarray:
        """(B, 1, n_frames, n_mels) float32 -> (B, D) float32."""
        if self.low_memory and features.shape[0] > 1:
            return np.concatenate([self._run(features[i : i + 1]) for i in range(features.shape[0])])
        return self._run(features)

    def _run(self, features: np.ndarray) -> np.ndarray:
        with flush_denormals():
            return self._session.run([self._output], {self._input: features})[0]
