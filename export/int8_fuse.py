"""Write ONNX Runtime's integer MatMul of an ``ort`` INT8 graph explicitly, with its bias inside the kernel.

ONNX Runtime turns ``QuantizeLinear -> DequantizeLinear -> MatMul(·, DequantizeLinear(W))`` into one
``MatMulIntegerToFloat`` at load time, but leaves the bias ``Add`` that follows it as a separate float op:
one more pass over every linear layer's output (measured ~60 of the INT8 graph's ~100 ``Add`` kernels on
HTS-AT). Here each such chain becomes ``MatMulIntegerToFloat(x_q, W_q, x_scale, W_scale, x_zp, W_zp, bias)``
(a ``com.microsoft`` contrib op), whose kernel adds the bias while it writes the float result. The
arithmetic is the same integer product with the same scales; only where the bias is added changes.
A fused ``BiasGelu`` (bias + GELU) after such a MatMul likewise becomes a plain ``Gelu`` with the bias in the
integer kernel: measured on AVX-512, ONNX Runtime's BiasGelu takes ~1.5x its Gelu.
"""

from __future__ import annotations

from typing import Any

MSFT = "com.microsoft"


def _initializers(graph: Any) -> dict[str, Any]:
    return {i.name: i for i in graph.initializer}


def fuse_integer_matmuls(model: Any) -> tuple[Any, int]:
    """Rewrite, in place, every weight MatMul of a Q/DQ graph (activation per-tensor u8/s8, weight a
    constant s8/u8, per-tensor or per-column) as ``MatMulIntegerToFloat``, folding the bias of a following
    ``Add`` or ``BiasGelu`` (a 1-D constant of the output width). Returns the model and how many MatMuls
    were rewritten."""
    from onnx import helper

    graph = model.graph
    inits = _initializers(graph)
    producer = {out: n for n in graph.node for out in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    removed: set[int] = set()
    replacement: dict[int, Any] = {}
    rewritten = 0
    for node in graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        act, weight = producer.get(node.input[0]), producer.get(node.input[1])
        if act is None or weight is None or act.op_type != weight.op_type or act.op_type != "DequantizeLinear":
            continue
        if weight.input[0] not in inits or any(a.name == "axis" and a.i != 1 for a in weight.attribute):
            continue
        if act.input[1] not in inits or len(inits[act.input[1]].dims) != 0:
            continue  # per-tensor activation scale only
        width = inits[weight.input[0]].dims[-1]
        inputs = [act.input[0], weight.input[0], act.input[1], weight.input[1],
                  act.input[2] if len(act.input) > 2 else "", weight.input[2] if len(weight.input) > 2 else ""]
        out = node.output[0]
        followers = consumers.get(out, [])
        bias_add = followers[0] if len(followers) == 1 and out not in outputs else None
        bias = None
        if bias_add is not None and bias_add.op_type in ("Add", "BiasGelu"):
            other = bias_add.input[1] if bias_add.input[0] == out else bias_add.input[0]
            if other in inits and list(inits[other].dims) == [width] and inits[other].data_type == 1:
                bias = other
        if bias is not None and bias_add is not None:
            inputs.append(bias)
            if bias_add.op_type == "Add":
                out = bias_add.output[0]
                removed.add(id(bias_add))
            else:  # BiasGelu(y, b) -> Gelu(y + b), the bias added by the integer kernel
                replacement[id(bias_add)] = helper.make_node("Gelu", [out], list(bias_add.output),
                                                             name=f"{bias_add.name}_gelu", domain=MSFT)
        fused = helper.make_node("MatMulIntegerToFloat", inputs, [out], name=f"{node.name}_integer", domain=MSFT)
        replacement[id(node)] = fused
        rewritten += 1
    if not rewritten:
        return model, 0
    kept = [replacement.get(id(n), n) for n in graph.node if id(n) not in removed]
    del graph.node[:]
    graph.node.extend(kept)
    _drop_unused_dequantize(graph)
    if not any(o.domain == MSFT for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MSFT, 1))
    return model, rewritten


def _drop_unused_dequantize(graph: Any) -> None:
    """Remove DequantizeLinear nodes (and weight initializers) nothing reads any more."""
    while True:
        used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    stale = [i for i in graph.initializer if i.name not in used]
    for init in stale:
        graph.initializer.remove(init)
