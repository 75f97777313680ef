"""Graph analysis of a YOLO ONNX model for INT8: feature convs, the float decode tail, conv+SiLU layers, and the
shared ranges of Concat inputs and outputs. Decisions come from the graph itself, so pruned models and other head
variants work unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def consumers(graph) -> dict[str, list]:
    """Tensor name -> the nodes that read it (absent optional inputs, named "", are skipped)."""
    out: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            if t:
                out.setdefault(t, []).append(n)
    return out


def producers(graph) -> dict[str, Any]:
    """Tensor name -> the node that writes it."""
    return {t: n for n in graph.node for t in n.output}


def is_dfl_conv(node, init: dict[str, Any]) -> bool:
    """DFL's integral: a bias-free 1x1 conv to one channel whose weights are 0, 1, ..., reg_max-1 (fixed, not
    learned). A class conv of a one-class model also has one output channel, but learned weights: it is a feature
    conv and is quantized."""
    from onnx import numpy_helper

    w = init.get(node.input[1]) if len(node.input) > 1 else None
    if w is None or len(node.input) > 2 or list(w.dims[:1]) != [1] or list(w.dims[2:]) != [1, 1]:
        return False
    values = numpy_helper.to_array(w).reshape(-1)
    return values.size > 1 and bool(np.array_equal(values, np.arange(values.size, dtype=values.dtype)))


def feature_convs(model) -> list[str]:
    """Names of Conv nodes that compute features (all but DFL's fixed integral conv)."""
    init = {i.name: i for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and not is_dfl_conv(n, init)]


def float_tail(model) -> list[str]:
    """Post-processing nodes to keep in float: every node that no feature Conv depends on.

    For YOLO Detect heads this is the box decode after the final head convs (reshape/concat of the branches, DFL
    softmax and conv, anchor and stride arithmetic, the class sigmoid and the output concat), found from the graph
    itself so it also holds for pruned models and other head variants.
    """
    graph = model.graph
    prod = producers(graph)
    convs = set(feature_convs(model))
    ancestors: set[str] = set()
    stack = [n for n in graph.node if n.name in convs]
    while stack:
        node = stack.pop()
        if node.name in ancestors:
            continue
        ancestors.add(node.name)
        stack += [prod[t] for t in node.input if t in prod]
    return [n.name for n in graph.node if n.name not in ancestors]


def layer_groups(model, tail: set[str]) -> list[dict[str, Any]]:
    """Conv 'layers' that can be kept in float together: a Conv plus its SiLU (Sigmoid, Mul) when present."""
    graph = model.graph
    cons = consumers(graph)
    groups = []
    for name in feature_convs(model):
        if name in tail:
            continue
        conv = next(n for n in graph.node if n.name == name)
        nodes, out = [conv.name], conv.output[0]
        users = cons.get(out, [])
        sig = next((u for u in users if u.op_type == "Sigmoid"), None)
        if sig is not None:
            mul = next((u for u in users if u.op_type == "Mul" and sig.output[0] in u.input), None)
            if mul is not None:
                nodes += [sig.name, mul.name]
                out = mul.output[0]
        groups.append({"name": conv.name, "nodes": nodes, "input": conv.input[0], "output": out})
    return groups


# ONNX Runtime gives these ops' outputs their input's scale, so they join the Concat range groups.
class TensorSets:
    """Union-find over tensor names: the sets of tensors that must share one quantization scale (ORT's ranges here,
    TensorRT's Q/DQ scales in `quant.tensorrt`)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        parent = self.parent
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, tensors: list[str | None]) -> None:
        """Join `tensors` (None entries skipped) into one set."""
        tensors = [t for t in tensors if t is not None]
        for t in tensors[1:]:
            self.parent[self.find(t)] = self.find(tensors[0])

    def groups(self) -> list[list[str]]:
        """Every set, each in the order its tensors were first seen."""
        out: dict[str, list[str]] = {}
        for t in list(self.parent):
            out.setdefault(self.find(t), []).append(t)
        return list(out.values())


SCALE_PRESERVING = ("Resize", "MaxPool", "Split", "Slice", "Reshape", "Transpose")


def share_concat_ranges(model, ranges, skip: set[str]) -> int:
    """Give each quantized Concat's inputs and output one common range (union), in place. Returns groups merged.

    Scale-preserving ops (Resize, MaxPool, Split, ...) link their input and outputs into the same group, since ONNX
    Runtime's QDQ quantizer reuses the input scale for their outputs.
    """
    from onnxruntime.quantization.calibrate import TensorData

    sets = TensorSets()
    init = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        if n.name in skip or n.op_type not in {"Concat", *SCALE_PRESERVING}:
            continue
        io = [*n.input, *n.output] if n.op_type == "Concat" else [n.input[0], *n.output]
        sets.union([t for t in io if t and t not in init and t in ranges])
    merged = 0
    for members in sets.groups():
        if len(members) < 2:
            continue
        lo = min(float(np.min(ranges[t].range_value[0])) for t in members)
        hi = max(float(np.max(ranges[t].range_value[1])) for t in members)
        for t in members:
            ranges[t] = TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        merged += 1
    return merged


