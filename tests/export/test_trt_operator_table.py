"""The operator table as data: small valid ONNX graphs exercising each modelled restriction get the verdict
onnx-tensorrt's docs/operators.md gives for each TensorRT version."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.errors import ExportError
from export.trt_compat import CHECKS, TABLE_FILE, TRT_TARGETS, check_model, operator_row, target_for_version

FLOAT = TensorProto.FLOAT


def model(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
          initializers: Sequence[onnx.TensorProto] = (), opset: int = 18,
          outputs: Sequence[str] = ("y",)) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs),
                              [helper.make_tensor_value_info(o, FLOAT, None) for o in outputs], list(initializers))
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # Every graph below is valid ONNX (schemas, attributes, input types): only TensorRT's support is in question.
    context = onnx.checker.C.CheckerContext()
    context.ir_version, context.opset_imports = built.ir_version, {"": opset}
    for node in built.graph.node:
        onnx.checker.check_node(node, context)
    onnx.shape_inference.infer_shapes(built, strict_mode=True)
    return built


def x_input(shape: Sequence[int] = (1, 4, 8, 8)) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", FLOAT, list(shape))


def ints(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def verdict(built: onnx.ModelProto) -> dict[str, str]:
    """Target -> first reason (or "ok")."""
    found = {t: "ok" for t in TRT_TARGETS}
    for problem in check_model(built):
        for target in problem.targets:
            found[target] = problem.reason if found[target] == "ok" else found[target]
    return found


def test_slice_takes_tensor_axes_from_10_3_but_pad_only_from_10_4() -> None:
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    sliced = model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])], [x_input(), axes],
                   [ints("starts", [0]), ints("ends", [2])])
    assert set(verdict(sliced).values()) == {"ok"}
    padded = model([helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"])], [x_input(), axes],
                   [ints("pads", [1, 1])])
    result = verdict(padded)
    assert "`axes` must be an initializer" in result["10.3"]
    assert result["10.15"] == result["11.x"] == "ok"


def test_pad_wrap_is_supported_on_every_target() -> None:
    built = model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="wrap")], [x_input()],
                  [ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])], opset=19)
    assert set(verdict(built).values()) == {"ok"}
    edge_mode = model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="edge")], [x_input()],
                      [ints("pads", [0, 0, 1, 1, 0, 0, 1, 1])])
    assert set(verdict(edge_mode).values()) == {"ok"}


@pytest.mark.parametrize("window", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_window_functions_arrive_after_10_3(window: str) -> None:
    size = helper.make_tensor_value_info("size", TensorProto.INT64, [])
    built = model([helper.make_node(window, ["size"], ["y"])], [size])
    result = verdict(built)
    assert "not supported by TensorRT 10.3's ONNX parser (supported in the 10.15 table)" in result["10.3"]
    assert result["10.15"] == result["11.x"] == "ok"


def stft(window_is_constant: bool, complex_input: bool = False) -> onnx.ModelProto:
    signal = helper.make_tensor_value_info("x", FLOAT, [1, 4800, 2 if complex_input else 1])
    inputs = [signal]
    initializers = [ints("step", [480])]
    hann = numpy_helper.from_array(np.hanning(1024).astype(np.float32), "window")
    if window_is_constant:
        initializers = [numpy_helper.from_array(np.array(480, dtype=np.int64), "step"), hann]
    else:
        initializers = [numpy_helper.from_array(np.array(480, dtype=np.int64), "step")]
        inputs.append(helper.make_tensor_value_info("window", FLOAT, [1024]))
    return model([helper.make_node("STFT", ["x", "step", "window"], ["y"], onesided=1)], inputs, initializers,
                 opset=17)


def test_stft_is_supported_from_10_5_with_constant_window_and_real_input() -> None:
    result = verdict(stft(window_is_constant=True))
    assert "not supported by TensorRT 10.3" in result["10.3"]
    assert result["10.15"] == "ok"
    assert "`window` must be an initializer" in verdict(stft(window_is_constant=False))["10.15"]
    assert "complex-valued input" in verdict(stft(window_is_constant=True, complex_input=True))["10.15"]


def test_gelu_is_supported_on_10_3_and_affine_grid_nowhere() -> None:
    gelu = model([helper.make_node("Gelu", ["x"], ["y"], approximate="tanh")], [x_input()], opset=20)
    assert set(verdict(gelu).values()) == {"ok"}
    theta = helper.make_tensor_value_info("theta", FLOAT, [1, 2, 3])
    grid = model([helper.make_node("AffineGrid", ["theta", "size"], ["y"])], [theta], [ints("size", [1, 1, 8, 8])],
                 opset=20)
    assert all("not supported" in reason for reason in verdict(grid).values())


@pytest.mark.parametrize(("op", "opset", "inputs", "attrs"), [
    ("CastLike", 15, ["x", "like"], {}),
    ("Mish", 18, ["x"], {}),
    ("DeformConv", 19, ["x", "w", "offset"], {}),
])
def test_operators_the_old_table_missed_are_supported(op: str, opset: int, inputs: list[str],
                                                      attrs: dict[str, object]) -> None:
    initializers = {"like": numpy_helper.from_array(np.zeros(1, np.float32), "like"),
                    "w": numpy_helper.from_array(np.zeros((4, 4, 3, 3), np.float32), "w"),
                    "offset": numpy_helper.from_array(np.zeros((1, 18, 6, 6), np.float32), "offset")}
    built = model([helper.make_node(op, inputs, ["y"], **attrs)], [x_input()],
                  [initializers[i] for i in inputs if i in initializers], opset=opset)
    assert set(verdict(built).values()) == {"ok"}


@pytest.mark.parametrize(("attrs", "problem"), [
    ({"mode": "cubic"}, "mode=cubic"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
    ({"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, "half_pixel_symmetric"),
    ({"mode": "nearest", "keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy"),
    ({"mode": "linear", "antialias": 1}, "antialias"),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None),
    ({"mode": "nearest", "nearest_mode": "floor"}, None),
])
def test_resize_modes(attrs: dict[str, object], problem: str | None) -> None:
    built = model([helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], **attrs)], [x_input()],
                  [ints("sizes", [1, 4, 16, 16])], opset=19)
    result = verdict(built)
    if problem is None:
        assert set(result.values()) == {"ok"}
    else:
        assert all(problem in reason for reason in result.values()), result


def test_axes_of_squeeze_and_reductions_must_be_constant() -> None:
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    for op in ("Squeeze", "ReduceMean"):
        dynamic = model([helper.make_node(op, ["x", "axes"], ["y"])], [x_input(), axes])
        assert all("`axes` must be an initializer" in r for r in verdict(dynamic).values()), op
        constant = model([helper.make_node(op, ["x", "axes"], ["y"])], [x_input((1, 1, 8, 8))], [ints("axes", [1])])
        assert set(verdict(constant).values()) == {"ok"}, op


def test_layer_norm_mean_output_is_rejected() -> None:
    scale = numpy_helper.from_array(np.ones(8, np.float32), "scale")
    first = model([helper.make_node("LayerNormalization", ["x", "scale"], ["y"])], [x_input()], [scale])
    assert set(verdict(first).values()) == {"ok"}
    both = model([helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean"])], [x_input()], [scale],
                 outputs=("y", "mean"))
    assert all("only the first output" in r for r in verdict(both).values())


def qdq_matmul(weight_axis: int, activation_scales: int = 1, zero_type: type = np.int8) -> onnx.ModelProto:
    """x (activation) Q/DQ -> MatMul with a (8, 5) int8 weight DQ'd per channel along ``weight_axis``."""
    weight = numpy_helper.from_array(np.ones((8, 5), np.int8), "w_q")
    scale_count = 5 if weight_axis == 1 else 8
    initializers = [
        weight,
        numpy_helper.from_array(np.full(scale_count, 0.1, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(scale_count, np.int8), "w_zero"),
        numpy_helper.from_array(np.full(activation_scales, 0.1, np.float32).reshape(-1)
                                if activation_scales > 1 else np.array(0.1, np.float32), "x_scale"),
        numpy_helper.from_array(np.zeros(activation_scales, zero_type).reshape(-1)
                                if activation_scales > 1 else np.array(0, zero_type), "x_zero"),
    ]
    axis = {"axis": 3} if activation_scales > 1 else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="q_x", **axis),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dq_x", **axis),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="dq_w", axis=weight_axis),
             helper.make_node("MatMul", ["xd", "w"], ["y"], name="mm")]
    return model(nodes, [x_input()], initializers, opset=19)


def test_qdq_axis_must_be_the_output_channel_of_the_weight() -> None:
    assert set(verdict(qdq_matmul(weight_axis=1)).values()) == {"ok"}
    wrong = check_model(qdq_matmul(weight_axis=0))
    assert [p.node for p in wrong] == ["dq_w"] and "contraction axis" in wrong[0].reason


def test_qdq_per_channel_activations_and_uint8_are_rejected() -> None:
    per_channel = check_model(qdq_matmul(weight_axis=1, activation_scales=8))
    assert {p.node for p in per_channel} == {"q_x", "dq_x"}
    assert all("activation" in p.reason for p in per_channel)
    unsigned = check_model(qdq_matmul(weight_axis=1, zero_type=np.uint8))
    assert {p.node for p in unsigned} == {"q_x", "dq_x"} and all("uint8" in p.reason for p in unsigned)


def test_opset_newer_than_the_parser_is_flagged_per_target() -> None:
    built = model([helper.make_node("Relu", ["x"], ["y"])], [x_input()], opset=21)
    result = verdict(built)
    assert "opset 21" in result["10.3"] and result["10.15"] == "ok"


def test_installed_version_picks_the_newest_table_not_newer_than_it() -> None:
    assert target_for_version("10.3.0.30") == "10.3"
    assert target_for_version("10.8.0.43") == "10.3"  # no table of its own: the conservative older one
    assert target_for_version("10.15.1.29") == "10.15"
    assert target_for_version("11.2.0") == "11.x"
    with pytest.raises(ExportError, match="older than 10.3"):
        target_for_version("8.6.1")


def test_table_has_one_sourced_row_per_operator_and_version_with_checks_that_match_its_text() -> None:
    rows = json.loads(TABLE_FILE.read_text(encoding="utf-8"))["rows"]
    keys = [(r["tensorrt"], r["op"]) for r in rows]
    assert len(keys) == len(set(keys))
    ops_by_target = {t: {op for target, op in keys if target == t} for t in TRT_TARGETS}
    assert ops_by_target["10.3"] <= ops_by_target["10.15"] == ops_by_target["11.x"]
    for row in rows:
        assert row["source"].startswith(("onnx-tensorrt", "no TensorRT 11")), row
        assert all(c["kind"] in CHECKS for c in row["checks"]), row
        text = row["restrictions"]
        constant_inputs = {c["name"] for c in row["checks"] if c["kind"] == "constant_input"}
        for name in re.findall(r"`(\w+)` must be an initializer", text):
            if row["op"] != "Dropout":  # is_training is the table's name for the training_mode input
                assert name in constant_inputs, row
    assert operator_row("Gelu", "10.3") is not None and operator_row("Gelu", "10.3").supported  # type: ignore[union-attr]


def table_tool() -> ModuleType:
    """scripts/trt_operator_table.py, the tool that writes the table's rows."""
    spec = importlib.util.spec_from_file_location("trt_operator_table",
                                                  TABLE_FILE.parents[1] / "scripts" / "trt_operator_table.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_stored_checks_are_what_the_table_tool_derives_from_each_rows_text() -> None:
    tool = table_tool()
    for row in json.loads(TABLE_FILE.read_text(encoding="utf-8"))["rows"]:
        assert row["checks"] == tool.derive_checks(row["op"], row["supported"], row["restrictions"]), row


def test_table_tool_reads_an_operators_md_support_matrix() -> None:
    tool = table_tool()
    text = ("| Operator | Supported | Supported Types | Restrictions |\n|---|---|---|---|\n"
            "| Pad                       | Y          | FP32, FP16 | `axes` must be an initializer |\n"
            "| HannWindow                | N          |\n")
    rows = tool.parse_operators_md(text)
    assert rows == {"Pad": {"supported": True, "types": "FP32, FP16", "restrictions": "`axes` must be an initializer"},
                    "HannWindow": {"supported": False, "types": "", "restrictions": ""}}
    assert {"kind": "constant_input", "name": "axes", "index": 3} in tool.derive_checks("Pad", True,
                                                                                        rows["Pad"]["restrictions"])
