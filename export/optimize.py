"""Offline graph optimisation of an exported encoder, saved in the bundle so start-up never redoes it.

Steps, each keeping the answers (the caller gates parity against torch):

1. ``resize_to_matmul``: the bicubic 1001->1024 time stretch of HTS-AT (``Resize``, align_corners,
   a = -0.75) is linear along one axis, so it is exactly ``M @ x`` with a constant ``(1024, 1001)``
   matrix of four cubic taps per row, read off torch's kernel (standard ONNX; gated <= 1e-6 against
   torch's bicubic). ONNX Runtime's own cubic Resize is ~1e-4 off torch (float32 coordinate
   arithmetic), so the MatMul is the more faithful of the two.
2. ``windows_as_gather`` (:mod:`export.window_gather`): Swin's window partition/merge chains (pad, cyclic
   shift, reshape, transpose) become one exact ``Gather`` each.
3. ONNX Runtime's transformer fusions (``onnxruntime.transformers``, model type ``swin``): Gelu/BiasGelu,
   LayerNorm; they emit ``com.microsoft`` contrib ops.
4. ONNX Runtime's extended offline optimisation (``optimized_model_filepath``): constant folding
   (the Swin shift masks, relative-position bias gathers), MatMul+scale and other fusions.

Because of 3 and 4 the result runs only in ONNX Runtime (of the version recorded in the manifest); the
exported standard-ONNX file stays in the bundle for TensorRT and quantisation.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.model.bundle import ORT_OPTIMIZED_KEY, Manifest
from export.errors import ExportError
from export.quiet import quiet_third_party
from export.window_gather import windows_as_gather

CUBIC_COEFF = -0.75
"""Keys' cubic convolution parameter of torch's bicubic interpolation (and of the exported Resize)."""
STRETCH_MAX_ABS = 1e-6
"""Gate for the MatMul replacing the Resize vs torch's bicubic, on unit-scale random input."""
TRANSFORMER_MODEL_TYPE = "swin"
OPTIMIZED_SUFFIX = ".opt.onnx"
CONTRIB_DOMAIN = "com.microsoft"
RUNTIME_NOTE = "onnxruntime-only: contains com.microsoft contrib ops; TensorRT uses the exported standard file"


@dataclass(frozen=True)
class OptimizeReport:
    """What the optimisation did."""

    path: Path
    steps: tuple[str, ...]
    ops_before: int
    ops_after: int
    resize_vs_torch: float | None
    """Max abs error of ONNX Runtime's cubic Resize vs torch (unit-scale input), when one was replaced."""
    matmul_vs_torch: float | None
    """Max abs error of the MatMul that replaced it vs torch (gated by :data:`STRETCH_MAX_ABS`)."""
    ort_version: str


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` float32 matrix equal to torch's align-corners bicubic along one axis.

    Read off torch's own kernel applied to an identity (each column is the response to one input
    sample), so the coefficients are bit-identical to the op the graph was exported from.
    """
    import torch

    identity = torch.eye(in_size, dtype=torch.float32)[None, None]
    with torch.no_grad():
        stretched = torch.nn.functional.interpolate(identity, (out_size, in_size), mode="bicubic",
                                                    align_corners=True)
    return stretched[0, 0].numpy().copy()


def torch_bicubic(x: np.ndarray, out_size: int) -> np.ndarray:
    """Reference: torch's align-corners bicubic stretch of axis 2 of ``(B, C, H, W)`` float32."""
    import torch

    with torch.no_grad():
        return torch.nn.functional.interpolate(torch.from_numpy(x), (out_size, x.shape[3]), mode="bicubic",
                                               align_corners=True).numpy()


def _constant(graph: Any, name: str) -> np.ndarray | None:
    """Value of an initializer or Constant node output, else None."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t)
    return None


def _resize_target(graph: Any, node: Any) -> tuple[int, int] | None:
    """(output H, output W) of a Resize whose sizes are ``Concat(Shape(x)[:2], const[H, W])`` or constant."""
    sizes_name = node.input[3] if len(node.input) > 3 else ""
    if not sizes_name:
        return None
    sizes = _constant(graph, sizes_name)
    if sizes is None:
        producer = next((n for n in graph.node if sizes_name in n.output), None)
        if producer is None or producer.op_type != "Concat":
            return None
        sizes = _constant(graph, producer.input[-1])
    if sizes is None or sizes.shape[0] < 2:
        return None
    return int(sizes[-2]), int(sizes[-1])


def _is_align_corners_cubic(node: Any) -> bool:
    attrs = {a.name: a for a in node.attribute}
    mode = attrs["mode"].s.decode() if "mode" in attrs else "nearest"
    transform = attrs["coordinate_transformation_mode"].s.decode() if "coordinate_transformation_mode" in attrs \
        else "half_pixel"
    coeff = attrs["cubic_coeff_a"].f if "cubic_coeff_a" in attrs else CUBIC_COEFF
    exclude = attrs["exclude_outside"].i if "exclude_outside" in attrs else 0
    antialias = attrs["antialias"].i if "antialias" in attrs else 0
    return (mode == "cubic" and transform == "align_corners" and np.isclose(coeff, CUBIC_COEFF)
            and not exclude and not antialias)


def resize_to_matmul(model: Any) -> tuple[Any, int]:
    """Replace each align-corners bicubic Resize that stretches only the H axis of a 4-D tensor by a MatMul.

    Returns the model (changed in place) and how many nodes were replaced. Input shapes come from ONNX
    shape inference; Resizes it cannot prove to be H-only stretches are left alone.
    """
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    graph = model.graph
    replaced = 0
    for node in list(graph.node):
        if node.op_type != "Resize" or not _is_align_corners_cubic(node):
            continue
        shape = shapes.get(node.input[0])
        target = _resize_target(graph, node)
        if shape is None or len(shape) != 4 or target is None or None in shape[2:]:
            continue
        (in_h, in_w), (out_h, out_w) = shape[2:], target
        if in_w != out_w:
            continue
        matrix_name = f"{node.name or node.output[0]}_bicubic_matrix"
        graph.initializer.append(numpy_helper.from_array(bicubic_matrix(in_h, out_h), matrix_name))
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, helper.make_node("MatMul", [matrix_name, node.input[0]], list(node.output),
                                                     name=f"{node.name}_as_matmul"))
        replaced += 1
    return model, replaced


def _probe(model: Any, tensors: list[str], features: np.ndarray) -> list[np.ndarray]:
    """Values of intermediate ``tensors`` of ``model`` for ``features``, by ONNX Runtime, no optimisation."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for name in tensors:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(tensors, {session.get_inputs()[0].name: features})


def stretch_errors(original: Any, rewritten: Any, input_shape: tuple[int, ...], seed: int = 0) -> tuple[float, float]:
    """Max abs error vs torch's bicubic of (the ONNX Runtime Resize, the MatMul replacing it).

    Measured on the first stretch of each graph, for unit-scale random model input (the scale the
    batch-normalised features have in a trained model).
    """
    resize = next(n for n in original.graph.node if n.op_type == "Resize")
    matmul = next(n for n in rewritten.graph.node if n.output[0] == resize.output[0])
    features = np.random.default_rng(seed).standard_normal(input_shape).astype(np.float32)
    errors = []
    for model, node in ((original, resize), (rewritten, matmul)):
        source_name = node.input[0] if node.op_type == "Resize" else node.input[1]
        source, stretched = _probe(model, [source_name, node.output[0]], features)
        errors.append(float(np.abs(stretched - torch_bicubic(source, stretched.shape[2])).max()))
    return errors[0], errors[1]


@dataclass(frozen=True)
class Fused:
    """Steps 1 to 3 applied to a graph (still portable: standard ONNX plus ``com.microsoft`` contrib ops)."""

    model: Any
    steps: tuple[str, ...]
    resize_vs_torch: float | None
    matmul_vs_torch: float | None


def transformer_fused(original: Any, input_shape: tuple[int, ...]) -> Fused:
    """Steps 1 to 3 of the module docstring on a copy of ``original`` (the exact stretch gated vs torch).

    Both the ORT-optimised fp32 graph and the INT8 graph for ONNX Runtime start from this: quantising
    after the fusions keeps GELU and LayerNorm as single float ops between the integer MatMuls.
    """
    import onnx
    from onnxruntime.transformers.optimizer import optimize_model

    rewritten = type(original)()
    rewritten.CopyFrom(original)
    rewritten, replaced = resize_to_matmul(rewritten)
    steps: list[str] = []
    resize_error = matmul_error = None
    if replaced:
        resize_error, matmul_error = stretch_errors(original, rewritten, input_shape)
        if matmul_error > STRETCH_MAX_ABS:
            raise ExportError(f"bicubic MatMul differs from torch by {matmul_error:.2e} (gate {STRETCH_MAX_ABS:g})",
                              "report this graph; export without optimisation meanwhile")
        steps.append(f"resize_to_matmul x{replaced}")
    rewritten, gathers = windows_as_gather(rewritten, input_shape)
    if gathers:
        steps.append(f"windows_as_gather x{gathers}")
    with quiet_third_party(stdout=True):
        fused = optimize_model(rewritten, model_type=TRANSFORMER_MODEL_TYPE, opt_level=0, use_gpu=False)
    counts = {k: v for k, v in fused.get_fused_operator_statistics().items() if v}
    steps.append("transformer fusions " + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    model = fused.model
    if not any(o.domain == CONTRIB_DOMAIN for o in model.opset_import):  # as save_model_to_file would add
        model.opset_import.append(onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1))
    return Fused(model, tuple(steps), resize_error, matmul_error)


def optimize_onnx(source: Path, target: Path, input_shape: tuple[int, ...]) -> OptimizeReport:
    """Write the ONNX Runtime-optimised version of ``source`` to ``target`` (see the module docstring)."""
    import onnx
    import onnxruntime as ort

    original = onnx.load(str(source))
    ops_before = len(original.graph.node)
    fused = transformer_fused(original, input_shape)
    with tempfile.TemporaryDirectory() as scratch:
        fused_path = Path(scratch) / "fused.onnx"
        onnx.save(fused.model, str(fused_path))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(target)
        ort.InferenceSession(str(fused_path), options, providers=["CPUExecutionProvider"])
    steps = (*fused.steps, "onnxruntime extended offline optimisation")
    ops_after = len(onnx.load(str(target), load_external_data=False).graph.node)
    return OptimizeReport(path=target, steps=steps, ops_before=ops_before, ops_after=ops_after,
                          resize_vs_torch=fused.resize_vs_torch, matmul_vs_torch=fused.matmul_vs_torch,
                          ort_version=ort.__version__)


def optimized_name(model_path: str) -> str:
    """``audio_encoder.fp32.onnx`` -> ``audio_encoder.fp32.opt.onnx``."""
    return model_path.removesuffix(".onnx") + OPTIMIZED_SUFFIX


def add_optimized_model(bundle_dir: Path, manifest: Manifest, precision: str = "fp32") -> Manifest:
    """Optimise the bundle's ``precision`` model and record it as ``details["ort_optimized"]`` of that entry.

    The caller checks parity of the result (``export_fp32_bundle`` gates it against torch) and writes
    the manifest, which checksums the new file like every other.
    """
    entry = manifest.models[precision]
    spec = entry.inputs[0]
    input_shape = (2, *(int(d) for d in spec.shape[1:]))
    rel = optimized_name(entry.path)
    report = optimize_onnx(bundle_dir / entry.path, bundle_dir / rel, input_shape)
    details = {**entry.details, ORT_OPTIMIZED_KEY: {
        "path": rel, "runtime": RUNTIME_NOTE, "standard_ops_only": False, "onnxruntime": report.ort_version,
        "steps": list(report.steps), "nodes_before": report.ops_before, "nodes_after": report.ops_after,
        "resize_vs_torch_max_abs": report.resize_vs_torch, "matmul_vs_torch_max_abs": report.matmul_vs_torch}}
    models = {**manifest.models, precision: dataclasses.replace(entry, details=details)}
    return dataclasses.replace(manifest, models=models, files={**manifest.files, rel: ""})
