"""Add (or replace) one TensorRT version's rows of export/trt_operators.json from an onnx-tensorrt operators.md.

    git -C ONNX_TENSORRT_CLONE show 10.1-GA:docs/operators.md > ops.md
    python3 scripts/trt_operator_table.py --tensorrt 11.x --opset-max 24 \
        --source "onnx-tensorrt 11.0-GA (COMMIT) docs/operators.md" ops.md

Each table line becomes a row; :func:`derive_checks` turns the restrictions export/trt_compat.py models into
machine-checked ``checks`` (tests/export/test_trt_operator_table.py keeps the stored rows equal to what it derives).
Review the diff by hand: a new restriction wording needs a new rule here.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

TABLE = Path(__file__).resolve().parents[1] / "export" / "trt_operators.json"
_OP = re.compile(r"^[A-Za-z0-9]+$")
RESIZE_CHECKS = [
    {"kind": "attribute_in", "name": "mode", "default": "nearest", "allowed": ["nearest", "linear"]},
    {"kind": "attribute_in", "name": "coordinate_transformation_mode", "default": "half_pixel",
     "allowed": ["half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"]},
    {"kind": "attribute_in", "name": "nearest_mode", "default": "round_prefer_floor",
     "allowed": ["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"]},
    {"kind": "attribute_in", "name": "keep_aspect_ratio_policy", "default": "stretch", "allowed": ["stretch"]},
    {"kind": "attribute_in", "name": "antialias", "default": 0, "allowed": [0]},
]
AXES_INITIALIZER = "`axes` must be an initializer"


def parse_operators_md(text: str) -> dict[str, dict[str, Any]]:
    """Operator -> {supported, types, restrictions} from the support matrix of an operators.md."""
    rows: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) < 2 or not _OP.match(cells[0]) or cells[0] == "Operator":
            continue
        rows[cells[0]] = {"supported": cells[1].startswith("Y"), "types": cells[2] if len(cells) > 2 else "",
                          "restrictions": cells[3] if len(cells) > 3 else ""}
    return rows


def derive_checks(op: str, supported: bool, restrictions: str) -> list[dict[str, Any]]:
    """The machine-checked form of the restrictions export/trt_compat.py models for ``op``."""
    checks: list[dict[str, Any]] = []
    if op == "Resize":
        checks += RESIZE_CHECKS
    if op in ("QuantizeLinear", "DequantizeLinear"):
        checks.append({"kind": "qdq"})
    if op == "Pad":
        checks.append({"kind": "attribute_in", "name": "mode", "default": "constant",
                       "allowed": ["constant", "reflect", "edge", "wrap"]})
    if op in ("Pad", "Slice") and AXES_INITIALIZER in restrictions:
        checks.append({"kind": "constant_input", "name": "axes", "index": 3})
    if op in ("Squeeze", "Unsqueeze") or (op.startswith("Reduce") and AXES_INITIALIZER in restrictions):
        checks.append({"kind": "constant_input", "name": "axes", "index": 1})
    inputs = {"CumSum": ("axis", 1), "OneHot": ("depth", 1), "Dropout": ("training_mode", 2)}
    if op in inputs:
        checks.append({"kind": "constant_input", "name": inputs[op][0], "index": inputs[op][1]})
    if op == "STFT" and supported:
        checks += [{"kind": "constant_input", "name": "frame_step", "index": 1},
                   {"kind": "constant_input", "name": "window", "index": 2}, {"kind": "real_input"}]
    if op in ("LayerNormalization", "MaxPool"):
        checks.append({"kind": "first_output_only"})
    if op == "ScatterND":
        checks.append({"kind": "attribute_in", "name": "reduction", "default": "none", "allowed": ["none"]})
    if op == "TopK":
        checks.append({"kind": "attribute_in", "name": "sorted", "default": 1, "allowed": [1]})
    if op == "Constant":
        checks.append({"kind": "attribute_absent", "names": ["sparse_value", "value_string", "value_strings"]})
    return checks


def write_table(table: dict[str, Any], path: Path = TABLE) -> None:
    """One row per line, so a release's changes read as a diff."""
    head = {k: v for k, v in table.items() if k != "rows"}
    lines = [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    rows = ",\n".join("    " + json.dumps(r) for r in table["rows"])
    path.write_text("{\n" + "\n".join(lines) + '\n  "rows": [\n' + rows + "\n  ]\n}\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("operators_md", type=Path)
    parser.add_argument("--tensorrt", required=True, help="Target name, e.g. 10.3, 10.15, 11.x")
    parser.add_argument("--opset-max", type=int, required=True)
    parser.add_argument("--source", required=True, help="Release and commit the file was read from")
    args = parser.parse_args()
    table = json.loads(TABLE.read_text(encoding="utf-8"))
    parsed = parse_operators_md(args.operators_md.read_text(encoding="utf-8"))
    kept = [r for r in table["rows"] if r["tensorrt"] != args.tensorrt]
    new = [{"tensorrt": args.tensorrt, "op": op, **row, "checks": derive_checks(op, row["supported"],
                                                                             row["restrictions"]),
            "source": args.source} for op, row in sorted(parsed.items(), key=lambda item: item[0].lower())]
    table["rows"] = kept + new
    table["opset"][args.tensorrt] = {"max": args.opset_max, "source": args.source}
    write_table(table)
    print(f"{len(new)} rows for TensorRT {args.tensorrt} written to {TABLE}")


if __name__ == "__main__":
    main()
