"""Swin's window partition and merge as one ``Gather`` each: a graph rewrite at export, exact.

HTS-AT (Swin) moves every block's activations through pure data-movement chains: ``Reshape -> Pad ->
Slice/Concat x2 (the cyclic shift) -> Reshape -> Transpose -> Reshape`` into windows, and back after the
attention. Each op is one more pass over the tensor. Every such chain only permutes the token axis, so
here it is found by probing (the chain run on a tensor that holds each token's own index), checked to be
a permutation that treats each batch item alike, and replaced by ``Gather(x, indices, axis=1)`` plus a free
``Reshape``: one pass instead of up to six. Chains that pad, drop or mix tokens fail the probe and stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MOVE_OPS = frozenset({"Reshape", "Pad", "Slice", "Concat", "Split", "Transpose", "Identity", "Squeeze", "Unsqueeze"})
"""Operators that only move data (any chain of them is a fixed rearrangement for fixed shapes)."""
MIN_CHAIN = 3
"""Shorter chains (a lone Reshape, a Reshape + Transpose) are left to ONNX Runtime."""


@dataclass(frozen=True)
class _Chain:
    source: str
    target: str
    nodes: tuple[Any, ...]


def _data_inputs(node: Any) -> list[str]:
    """The inputs a data-movement op moves (Concat: all; the others: the first; the rest are parameters)."""
    return [i for i in node.input if i] if node.op_type == "Concat" else list(node.input[:1])


def _chains(graph: Any) -> list[_Chain]:
    """Maximal data-movement chains from one tensor to one tensor, with constant parameters only."""
    constants = {i.name for i in graph.initializer}
    constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    starts = [o for n in graph.node if n.op_type not in MOVE_OPS | {"Constant"} for o in n.output]
    found: list[_Chain] = []
    for start in [i.name for i in graph.input] + starts:
        first = readers.get(start, [])
        if not first or any(r.op_type not in MOVE_OPS or start not in _data_inputs(r) for r in first):
            continue
        region: dict[int, Any] = {}
        frontier, ends = [start], set()
        while frontier:
            tensor = frontier.pop()
            for reader in readers.get(tensor, []):
                if reader.op_type not in MOVE_OPS:
                    ends.add(tensor)
                elif id(reader) not in region:
                    region[id(reader)] = reader
                    frontier.extend(reader.output)
        made = {o for n in region.values() for o in n.output}
        moved = {start} | made
        valid = (len(ends) == 1 and len(region) >= MIN_CHAIN and not (made & outputs)
                 and all(readers.get(t) for t in made)  # nothing dropped (e.g. an unused Split part)
                 and all(i in moved for n in region.values() for i in _data_inputs(n))
                 and all(i in constants for n in region.values() for i in n.input[1:] if i and n.op_type != "Concat")
                 and all(r.op_type not in MOVE_OPS for r in readers.get(next(iter(ends)), [])))
        if valid:
            found.append(_Chain(start, ends.pop(), tuple(n for n in graph.node if id(n) in region)))
    return found


def _session(model: Any) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 4  # a probe that cannot run is expected; it is reported by returning None
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run_chain(graph: Any, chain: _Chain, value: np.ndarray, opset: Any) -> np.ndarray:
    import onnx
    from onnx import helper

    used = {i for n in chain.nodes for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    consts = [n for n in graph.node if n.op_type == "Constant" and n.output[0] in used]
    probe = helper.make_graph([*consts, *chain.nodes], "probe",
                              [helper.make_tensor_value_info(chain.source, onnx.TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(chain.target, onnx.TensorProto.FLOAT, None)], inits)
    return _session(helper.make_model(probe, opset_imports=list(opset))).run(None, {chain.source: value})[0]


def _source_shapes(model: Any, sources: list[str], input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Shapes of ``sources`` for one batch item, by running the float graph once on zeros."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(s, onnx.TensorProto.FLOAT, None) for s in sources)
    session = _session(probe)
    values = session.run(None, {session.get_inputs()[0].name: np.zeros((1, *input_shape[1:]), np.float32)})
    return {s: tuple(v.shape) for s, v in zip(sources, values, strict=True)}


def _token_permutation(graph: Any, chain: _Chain, shape: tuple[int, ...],
                       opset: Any) -> tuple[np.ndarray, list[int], list[int]] | None:
    """For a chain whose source has ``shape`` per batch item (batch-major first axis, channels last):
    (indices over the item's tokens, the source seen as ``(batch, tokens, channels)``, the target shape),
    or None if the chain is not the same permutation of tokens for every item."""
    channels, tokens = shape[-1], int(np.prod(shape[:-1]))
    results = []
    for batch in (1, 2):
        code = np.arange(batch * tokens, dtype=np.float32).reshape(batch * shape[0], *shape[1:-1], 1)
        try:
            out = _run_chain(graph, chain, np.repeat(code, channels, axis=-1), opset)
        except Exception:  # noqa: BLE001 - a chain ONNX Runtime cannot run alone is simply not rewritten
            return None
        if out.size != batch * tokens * channels or out.shape[-1] != channels:
            return None
        flat = out.reshape(-1, channels)
        if not (flat == flat[:, :1]).all():
            return None
        results.append((out.shape, flat[:, 0].astype(np.int64)))
    (shape1, index1), (shape2, index2) = results
    if sorted(index1.tolist()) != list(range(tokens)) or shape2[0] != 2 * shape1[0] or shape2[1:] != shape1[1:]:
        return None
    if not np.array_equal(index2, np.concatenate([index1, index1 + tokens])):
        return None
    return index1, [-1, tokens, channels], [-1, *shape1[1:]]


def windows_as_gather(model: Any, input_shape: tuple[int, ...]) -> tuple[Any, int]:
    """Replace, in place, every token-permuting data-movement chain by ``Reshape -> Gather -> Reshape``.

    ``input_shape``: the model input's shape (its first axis, the batch, is ignored). Returns the model and
    how many chains were replaced (each checked on a probe, so the answers are bit-identical).
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    chains = _chains(graph)
    if not chains:
        return model, 0
    shapes = _source_shapes(model, sorted({c.source for c in chains}), input_shape)
    replaced = 0
    for chain in chains:
        found = _token_permutation(graph, chain, shapes[chain.source], model.opset_import)
        if found is None:
            continue
        indices, tokens_shape, target_shape = found
        stem = f"{chain.nodes[0].name or chain.source}_window_gather"
        graph.initializer.extend([numpy_helper.from_array(indices, f"{stem}_indices"),
                                  numpy_helper.from_array(np.array(tokens_shape, np.int64), f"{stem}_tokens"),
                                  numpy_helper.from_array(np.array(target_shape, np.int64), f"{stem}_shape")])
        nodes = [helper.make_node("Reshape", [chain.source, f"{stem}_tokens"], [f"{stem}_in"], name=f"{stem}_in"),
                 helper.make_node("Gather", [f"{stem}_in", f"{stem}_indices"], [f"{stem}_out"], name=stem, axis=1),
                 helper.make_node("Reshape", [f"{stem}_out", f"{stem}_shape"], [chain.target], name=f"{stem}_shape")]
        position = list(graph.node).index(chain.nodes[0])
        for node in chain.nodes:
            graph.node.remove(node)
        for node in reversed(nodes):
            graph.node.insert(position, node)
        replaced += 1
    _drop_unused_initializers(graph)
    return model, replaced


def _drop_unused_initializers(graph: Any) -> None:
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
