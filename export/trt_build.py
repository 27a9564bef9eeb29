"""``biolingual-export trt``: a strongly typed TensorRT engine from the bundle's ONNX, built on the unit.

Precision comes from the ONNX file (fp32, fp16, or symmetric Q/DQ ``int8-trt``), never from builder
flags; the one flag touched is TF32, cleared for fp32 engines so "fp32" means IEEE fp32. One optimisation
profile covers batch 1..max and is tuned for the typical batch (1: the daemon analyses one window per hop
unless it is catching up). The ONNX is checked against the operator table of the *installed* TensorRT first.

The timing cache is keyed by GPU and TensorRT version (a cache from elsewhere would not attach); one that
does not attach is replaced by an empty one. The plan is written under a content-addressed name and the
manifest switch is the commit point, so a failure at any step leaves the previous engine and manifest intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import durable
from edge.model.backends.trt_api import gpu_identity, load_cudart, network_flags, require_tensorrt, version
from edge.model.bundle import ModelEntry, open_bundle, write_manifest
from edge.model.precision_gate import model_key
from export.errors import ExportError

log = logging.getLogger(__name__)

SOURCE_MODELS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-trt"}
"""Engine precision -> manifest key of the ONNX it is built from."""
DEFAULT_MAX_BATCH = 8
DEFAULT_OPT_BATCH = 1
"""Batch the profile is tuned for: the daemon runs batch 1 except while it catches up on a backlog."""
DEFAULT_WORKSPACE_MB = 1024
TIMING_CACHE_DIR = "trt_timing"
"""Default folder of timing caches, inside the bundle (not part of the manifest)."""
BYTES_PER_MB = 1 << 20
PLAN_HASH_CHARS = 12
INSTALL_ONNX_HINT = "install the unit's TensorRT extra: pip install 'biolingual-edge[tensorrt]'"


@dataclass(frozen=True)
class TrtBuildOptions:
    precision: str = "fp16"
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache_dir: Path | None = None
    """Default: ``trt_timing/`` in the bundle; one file per GPU and TensorRT version."""
    opt_batch: int = DEFAULT_OPT_BATCH


def engine_file(precision: str, plan: bytes) -> str:
    """``audio_encoder.<precision>.<sha256[:12]>.plan``: a new build never overwrites the engine in use."""
    return f"audio_encoder.{precision}.{hashlib.sha256(plan).hexdigest()[:PLAN_HASH_CHARS]}.plan"


def timing_cache_file(folder: Path, gpu_name: str, capability: str, trt_version: str) -> Path:
    """The timing cache for one GPU model and TensorRT version, e.g. ``orin-sm8.7-trt10.3.0.30.cache``."""
    gpu = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    return folder / f"{gpu}-sm{capability}-trt{trt_version}.cache"


def profile_shapes(frame_shape: tuple[int, ...], opt_batch: int,
                   max_batch: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes of the optimisation profile: batch 1, ``opt_batch``, ``max_batch``."""
    if not 1 <= opt_batch <= max_batch:
        raise ExportError(f"--opt-batch {opt_batch} must be between 1 and --max-batch {max_batch}",
                          "the daemon mostly runs batch 1: keep the default")
    return (1, *frame_shape), (opt_batch, *frame_shape), (max_batch, *frame_shape)


def attach_timing_cache(config: Any, cached: bytes) -> str:
    """Attach ``cached`` (possibly empty) to the builder config; returns ``reused``, ``new`` or ``discarded``.

    A cache TensorRT refuses (another GPU, version or a damaged file: ``set_timing_cache`` returns False)
    is replaced by an empty one, so the build goes on, only slower.
    """
    if cached and config.set_timing_cache(config.create_timing_cache(cached), False):
        return "reused"
    if not config.set_timing_cache(config.create_timing_cache(b""), False):
        raise ExportError("TensorRT refused even an empty timing cache", "report the TensorRT version")
    if cached:
        log.warning("timing cache does not match this GPU/TensorRT; starting an empty one")
        return "discarded"
    return "new"


def save_timing_cache(config: Any, path: Path) -> bool:
    """Write the config's timing cache atomically; a cache TensorRT does not hand back is skipped, not fatal."""
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("TensorRT returned no timing cache; %s not updated", path)
        return False
    data = bytes(memoryview(cache.serialize()))
    path.parent.mkdir(parents=True, exist_ok=True)
    durable.atomic_write(path, data)
    return True


def _check_operators(onnx_path: Path, trt_version: str) -> str:
    """Check ``onnx_path`` against the installed TensorRT's operator table; returns that table's name."""
    try:
        from export.trt_compat import require_compatible, target_for_version
    except ImportError as e:
        raise ExportError(f"`trt` needs the {e.name or 'onnx'} package to check the graph", INSTALL_ONNX_HINT) from e
    target = target_for_version(trt_version)
    require_compatible(onnx_path, (target,))
    return target


def _write_plan(bundle_root: Path, precision: str, plan: bytes) -> str:
    name = engine_file(precision, plan)
    durable.atomic_write(bundle_root / name, plan)
    return name


def build_engine(bundle_dir: Path, options: TrtBuildOptions) -> ModelEntry:
    """Build, write the plan and register it as ``trt-<precision>``; a build failure names the cause."""
    if options.precision not in SOURCE_MODELS:
        raise ExportError(f"unknown engine precision '{options.precision}'",
                          f"choose one of: {', '.join(SOURCE_MODELS)}")
    if options.max_batch < 1 or options.workspace_mb < 1:
        raise ExportError("--max-batch and --workspace-mb must be at least 1", "pass positive integers")
    bundle = open_bundle(bundle_dir)
    source_key = SOURCE_MODELS[options.precision]
    source = bundle.model(source_key)
    onnx_path = bundle.root / source.path
    frame_shape = tuple(int(d) for d in source.inputs[0].shape[1:])
    shapes = profile_shapes(frame_shape, options.opt_batch, options.max_batch)
    require_tensorrt()
    import tensorrt as trt

    trt_version = version()
    table = _check_operators(onnx_path, trt_version)
    gpu_name, capability = gpu_identity(load_cudart())

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags())
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {source.path}: {errors}", "run `biolingual-export verify` first")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb * BYTES_PER_MB)
    if options.precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 engines must pass the near-exact gate
    profile = builder.create_optimization_profile()
    smallest, typical, largest = (trt.Dims(list(s)) for s in shapes)
    profile.set_shape(source.inputs[0].name, smallest, typical, largest)
    config.add_optimization_profile(profile)
    cache_path = timing_cache_file(options.timing_cache_dir or bundle.root / TIMING_CACHE_DIR, gpu_name, capability,
                                   trt_version)
    cache_state = attach_timing_cache(config, cache_path.read_bytes() if cache_path.is_file() else b"")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {source.path}",
                          "see the TensorRT log above; try a larger --workspace-mb")
    plan_name = _write_plan(bundle.root, options.precision, bytes(memoryview(serialized)))

    key = model_key("trt", options.precision)
    details = {"tensorrt_version": trt_version, "gpu_name": gpu_name, "compute_capability": capability,
               "precision": options.precision, "source_model": source_key,
               "source_onnx_sha256": bundle.manifest.files[source.path], "max_batch": options.max_batch,
               "opt_batch": options.opt_batch, "workspace_mb": options.workspace_mb, "strongly_typed": True,
               "tf32": options.precision != "fp32", "operator_table": table, "timing_cache": cache_state}
    entry = ModelEntry(path=plan_name, precision=options.precision, runtime="tensorrt", inputs=source.inputs,
                       outputs=source.outputs, details=details)
    previous = bundle.manifest.models.get(key)
    files = {rel: sha for rel, sha in bundle.manifest.files.items() if previous is None or rel != previous.path}
    write_manifest(bundle.root, dataclasses.replace(bundle.manifest, models={**bundle.manifest.models, key: entry},
                                                    files=files))
    if previous is not None and previous.path != plan_name:
        (bundle.root / previous.path).unlink(missing_ok=True)
    try:
        save_timing_cache(config, cache_path)
    except (OSError, RuntimeError) as e:  # the engine is registered; a cache that cannot be saved only costs time
        log.warning("timing cache not saved to %s: %s", cache_path, e)
    log.info("%s engine for %s (compute %s) written to %s", options.precision, gpu_name, capability, plan_name)
    return entry
