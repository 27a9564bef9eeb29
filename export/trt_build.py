"""``biolingual-export trt``: a strongly typed TensorRT engine from the bundle's ONNX, built on the unit.

Precision comes from the ONNX file (fp32, fp16, or symmetric Q/DQ ``int8-trt``), never from builder
flags. One optimisation profile covers batch 1..max; the timing cache is reused across builds; the
plan file is TensorRT's raw serialisation, described by its manifest entry.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from edge.backends.trt_api import gpu_identity, load_cudart, network_flags, require_tensorrt, version
from edge.bundle import ModelEntry, open_bundle, write_manifest
from edge.precision_gate import model_key
from export.errors import ExportError
from export.trt_compat import require_compatible

log = logging.getLogger(__name__)

SOURCE_MODELS = {"fp32": "fp32", "fp16": "fp16", "int8": "int8-trt"}
"""Engine precision -> manifest key of the ONNX it is built from."""
DEFAULT_MAX_BATCH = 8
DEFAULT_WORKSPACE_MB = 1024
TIMING_CACHE_FILE = "trt_timing.cache"
BYTES_PER_MB = 1 << 20


@dataclass(frozen=True)
class TrtBuildOptions:
    precision: str = "fp16"
    max_batch: int = DEFAULT_MAX_BATCH
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None
    """Default: ``trt_timing.cache`` in the bundle (not part of the manifest)."""


def engine_file(precision: str) -> str:
    return f"audio_encoder.{precision}.plan"


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
    require_compatible(onnx_path)
    require_tensorrt()
    import tensorrt as trt

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
    frame_shape = tuple(int(d) for d in source.inputs[0].shape[1:])
    profile = builder.create_optimization_profile()
    smallest, largest = trt.Dims([1, *frame_shape]), trt.Dims([options.max_batch, *frame_shape])
    profile.set_shape(source.inputs[0].name, smallest, largest, largest)
    config.add_optimization_profile(profile)
    cache_path = options.timing_cache or bundle.root / TIMING_CACHE_FILE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT could not build an engine from {source.path}",
                          "see the TensorRT log above; try a larger --workspace-mb")
    out_path = bundle.root / engine_file(options.precision)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_bytes(bytes(memoryview(plan)))
    os.replace(tmp, out_path)
    cache_path.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))

    details = {"tensorrt_version": version(), "gpu_name": gpu_name, "compute_capability": capability,
               "precision": options.precision, "source_model": source_key,
               "source_onnx_sha256": bundle.manifest.files[source.path], "max_batch": options.max_batch,
               "workspace_mb": options.workspace_mb, "strongly_typed": True}
    entry = ModelEntry(path=out_path.name, precision=options.precision, runtime="tensorrt", inputs=source.inputs,
                       outputs=source.outputs, details=details)
    key = model_key("trt", options.precision)
    write_manifest(bundle.root, dataclasses.replace(bundle.manifest, models={**bundle.manifest.models, key: entry}))
    log.info("%s engine for %s (compute %s) written to %s", options.precision, gpu_name, capability, out_path)
    return entry
