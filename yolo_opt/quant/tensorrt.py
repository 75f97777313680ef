"""The TensorRT form of a QDQ ONNX model (explicit quantization), and a lint for it.

TensorRT builds INT8 engines from Q/DQ graphs under stricter rules than ONNX Runtime runs them. `to_tensorrt_qdq`
rewrites our ONNX Runtime PTQ model (`yolo_opt.quant.ptq.quantize_onnx`) or a QAT export (Ultralytics/ModelOpt) into the
form TensorRT 8.6, 10 and 11 parse and fuse well; `lint_tensorrt_qdq` lists what still breaks those rules.

Lossless steps (ONNX Runtime outputs stay bit-identical, graph optimizations off):
- Constant DequantizeLinear nodes that are not Conv weights are folded into float initializers (`(q - zp) * scale`
  in float32, as ONNX Runtime computes it). ONNX Runtime's QDQ writer quantizes every Conv bias to INT32 feeding a
  DequantizeLinear; TensorRT's Dequantize accepts INT8 input only (8.6; INT8/FP8 in 10), so the ONNX parser rejects
  the first one (onnx-tensorrt#850, onnxruntime#14229). The same holds for UINT8 constants (YOLO11's attention scale).
- Symmetric UINT8 zero points (128) become INT8 zero points (0) with the same scale: `q_u8 = q_s8 + 128`, so the
  dequantized values are equal. TensorRT's parser asserts `shiftIsAllZeros(zeroPoint)` and, in 8.x, that the zero
  point input is present (onnx-tensorrt `QuantDequantLinearHelper`), so a missing one is written as INT8 0.

Placement (`placement=True`, the default; changes ONNX Runtime outputs slightly, see tests/test_tensorrt.py):
- Q/DQ stays only where a consumer needs INT8 input: the data input of a Conv ("quantize all inputs of weighted
  operations", TensorRT developer guide, Q/DQ layer-placement recommendations), the inputs of a residual Add (NVIDIA's
  YOLO QAT guide, yolo_deepstream `QuantAdd`), and the inputs of ops TensorRT moves Q/DQ across (Concat, MaxPool,
  Resize, Split, Slice, Reshape, Transpose) when their output is needed in INT8. Everything else is removed: Conv
  outputs ("by default, don't quantize the outputs of weighted operations", same guide; TensorRT fuses the SiLU that
  follows into the convolution), Sigmoid outputs inside SiLU, the head convs that feed the float decode tail, MatMul
  inputs. ONNX Runtime's own QDQ code calls Conv-output quantization "not recommended" for TensorRT.
- One scale per group that TensorRT merges into one tensor: a Concat's quantized inputs and output, a MaxPool's (and
  the other scale-preserving ops') input and output, and both inputs of a residual Add (yolo_deepstream
  `quantization/rules.py` and `apply_custom_rules_to_quantizer`; NVIDIA measured a QAT YOLOv7 at 180 qps before
  these rules and 207 after, vs 206 for implicit PTQ, on Jetson Orin). The shared scale is the largest in the group,
  so no member's calibrated range is clipped; our PTQ already shares Concat/MaxPool scales, so only residual Adds
  change there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yolo_opt.errors import DeployError, ModelError
from yolo_opt.quant.graph import TensorSets, consumers, producers

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# Ops that TensorRT moves Q/DQ across, executing them in INT8 when their input and output scales agree (developer
# guide, "Q/DQ propagation": commuting layers; yolo_deepstream rules: Concat and MaxPool).
SCALE_PRESERVING = ("Concat", "MaxPool", "Resize", "Split", "Slice", "Reshape", "Transpose", "Flatten", "Squeeze",
                    "Unsqueeze")
WEIGHTED = ("Conv", "ConvTranspose")
PRECISION_KEY = "yolo_opt_precision"
TENSORRT_PRECISION = "int8-qdq-tensorrt"


@dataclass
class TensorRTForm:
    """What `tensorrt_form` changed."""

    folded_constants: int = 0  # constant DequantizeLinear (INT32 bias, UINT8 constants) folded into float
    zero_points: int = 0  # Q/DQ zero points rewritten to INT8 0 (or added)
    removed_pairs: int = 0  # activation Q/DQ pairs removed by the placement rules
    float_consumers: int = 0  # consumers rewired from a kept DQ to the float tensor (they do not need INT8)
    shared_groups: int = 0  # scale groups (Concat/MaxPool/residual Add) with more than one Q
    rescaled: int = 0  # Q/DQ whose scale changed to the group's shared one


# ------------------------------------------------------------------------------------------------------ graph helpers
class _Graph:
    def __init__(self, model) -> None:
        self.model, self.g = model, model.graph
        self.refresh()

    def refresh(self) -> None:
        self.init = {i.name: i for i in self.g.initializer}
        self.prod, self.cons = producers(self.g), consumers(self.g)
        self.outputs = {o.name for o in self.g.output}

    def const(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.init:
            return numpy_helper.to_array(self.init[name])
        n = self.prod.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def const_dtype(self, name: str) -> int | None:
        if name in self.init:
            return self.init[name].data_type
        n = self.prod.get(name)
        if n is not None and n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    return a.t.data_type
        return None

    def is_const(self, name: str) -> bool:
        return name in self.init or (name in self.prod and self.prod[name].op_type == "Constant")


def _attr(node, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _dq_value(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """DequantizeLinear in float32, as ONNX Runtime computes it: float(q - zp) * scale."""
    q = q.astype(np.int64)
    if zp is not None:
        q = q - (zp.astype(np.int64) if zp.ndim == 0 or zp.size == 1 else _expand(zp.astype(np.int64), q.ndim, axis))
    s = scale.astype(np.float32)
    if s.size > 1:
        s = _expand(s, q.ndim, axis)
    return (q.astype(np.float32) * s).astype(np.float32)


def _expand(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis % ndim] = v.size
    return v.reshape(shape)


def _is_weight_dq(gr: _Graph, dq) -> bool:
    """A DequantizeLinear of a constant that is a Conv's weight input (TensorRT's weight quantization)."""
    users = gr.cons.get(dq.output[0], [])
    return bool(users) and all(u.op_type in WEIGHTED and len(u.input) > 1 and u.input[1] == dq.output[0] for u in users)


def _constants_to_initializers(gr: _Graph) -> None:
    """Constant nodes feeding Q/DQ scales or zero points become initializers (one place to read and rewrite)."""
    from onnx import numpy_helper

    names = {t for n in gr.g.node if n.op_type in QDQ_OPS for t in n.input[1:] if t}
    drop = []
    for n in gr.g.node:
        if n.op_type == "Constant" and n.output[0] in names:
            value = gr.const(n.output[0])
            if value is None:
                continue
            gr.g.initializer.append(numpy_helper.from_array(value, n.output[0]))
            drop.append(n)
    for n in drop:
        gr.g.node.remove(n)
    gr.refresh()


def _remove_unused_initializers(gr: _Graph) -> None:
    used = {t for n in gr.g.node for t in n.input} | gr.outputs
    keep = [i for i in gr.g.initializer if i.name in used]
    del gr.g.initializer[:]
    gr.g.initializer.extend(keep)
    gr.refresh()


# ------------------------------------------------------------------------------------------------------ lossless steps
def _fold_constant_dq(gr: _Graph) -> int:
    """Fold every constant DequantizeLinear except Conv weights into a float initializer."""
    from onnx import numpy_helper

    folded = 0
    for dq in [n for n in gr.g.node if n.op_type == "DequantizeLinear"]:
        if not gr.is_const(dq.input[0]) or _is_weight_dq(gr, dq) or dq.output[0] in gr.outputs:
            continue
        q, scale = gr.const(dq.input[0]), gr.const(dq.input[1])
        zp = gr.const(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        if q is None or scale is None:
            continue
        value = _dq_value(q, scale, zp, int(_attr(dq, "axis", 1)))
        name = f"{dq.output[0]}_folded"
        gr.g.initializer.append(numpy_helper.from_array(value, name))
        for u in gr.cons.get(dq.output[0], []):
            for i, t in enumerate(u.input):
                if t == dq.output[0]:
                    u.input[i] = name
        gr.g.node.remove(dq)
        gr.refresh()
        folded += 1
    return folded


def _int8_zero_points(gr: _Graph, src: str) -> int:
    """UINT8 zero point 128 -> INT8 0 (same scale, same values); missing zero points -> INT8 0."""
    import onnx
    from onnx import numpy_helper

    changed = 0
    done: set[str] = set()
    for n in [n for n in gr.g.node if n.op_type in QDQ_OPS]:
        if len(n.input) < 3 or not n.input[2]:
            if n.op_type == "QuantizeLinear":  # ONNX's default zero point is UINT8 0: an asymmetric [0, 255] range
                raise DeployError(f"{src}: QuantizeLinear {n.name} has no zero point (UINT8 by default); "
                                  "re-quantize with symmetric INT8 or UINT8 zero point 128")
            if gr.is_const(n.input[0]) and gr.const_dtype(n.input[0]) != onnx.TensorProto.INT8:
                continue  # reported by the lint
            scale = gr.const(n.input[1])
            shape = () if scale is None else scale.shape
            name = f"{n.name or n.output[0]}_zero_point_int8"
            gr.g.initializer.append(numpy_helper.from_array(np.zeros(shape, dtype=np.int8), name))
            while len(n.input) < 3:
                n.input.append("")
            n.input[2] = name
            changed += 1
            continue
        name = n.input[2]
        if name in done:
            continue
        zp, dtype = gr.const(name), gr.const_dtype(name)
        if zp is None:
            raise DeployError(f"{src}: zero point {name} of {n.name} is computed, not a constant; TensorRT needs "
                              "constant INT8 zero points")
        if dtype == onnx.TensorProto.UINT8:
            if not np.all(zp == 128):
                raise DeployError(f"{src}: activation zero point {name} is not 128 (asymmetric: the ONNX Runtime "
                                  "form); re-quantize with symmetric=True (format=engine and bundle do), TensorRT "
                                  "supports zero point 0 only")
            new = np.zeros(zp.shape, dtype=np.int8)
        elif dtype == onnx.TensorProto.INT8:
            if np.any(zp != 0):
                raise DeployError(f"{src}: zero point {name} is not 0; TensorRT supports symmetric INT8 only")
            done.add(name)
            continue
        else:
            raise DeployError(f"{src}: {n.op_type} {n.name} has a {onnx.TensorProto.DataType.Name(dtype)} zero "
                              "point; TensorRT supports INT8 (zero point 0) only")
        gr.init[name].CopyFrom(numpy_helper.from_array(new, name))
        done.add(name)
        changed += 1
    # Q outputs were UINT8: fix any recorded type (ONNX Runtime refuses a model whose value_info disagrees).
    q_out = {n.output[0] for n in gr.g.node if n.op_type == "QuantizeLinear"}
    for vi in [*gr.g.value_info, *gr.g.output]:
        if vi.name in q_out and vi.type.tensor_type.elem_type == onnx.TensorProto.UINT8:
            vi.type.tensor_type.elem_type = onnx.TensorProto.INT8
    gr.refresh()
    return changed


# ------------------------------------------------------------------------------------------------------ placement
class _Placement:
    """Which activation Q/DQ pairs a TensorRT engine needs (see the module docstring for the rules)."""

    def __init__(self, gr: _Graph) -> None:
        self.gr = gr
        self.q_of: dict[str, Any] = {}  # activation tensor -> its QuantizeLinear
        for n in gr.g.node:
            if n.op_type == "QuantizeLinear" and not gr.is_const(n.input[0]):
                self.q_of.setdefault(n.input[0], n)
        self.memo: dict[str, bool] = {}

    def dqs(self, q) -> list:
        return [u for u in self.gr.cons.get(q.output[0], []) if u.op_type == "DequantizeLinear"]

    def readers(self, tensor: str) -> list[tuple[Any, str]]:
        """(consumer, name it reads) of a tensor, looking through its Q/DQ pair when it has one."""
        q = self.q_of.get(tensor)
        if q is None:
            return [(u, tensor) for u in self.gr.cons.get(tensor, [])]
        return [(u, d.output[0]) for d in self.dqs(q) for u in self.gr.cons.get(d.output[0], [])]

    def needed(self, tensor: str) -> bool:
        """Does some consumer of `tensor` need it in INT8?"""
        if tensor in self.memo:
            return self.memo[tensor]
        self.memo[tensor] = False  # cycle guard (graphs are acyclic; Loop bodies are not looked into)
        q = self.q_of.get(tensor)
        if q is not None and any(d.output[0] in self.gr.outputs for d in self.dqs(q)):
            self.memo[tensor] = True  # a graph output: leave it as it is
            return True
        self.memo[tensor] = any(self.consumer_needs(u, name, tensor) for u, name in self.readers(tensor))
        return self.memo[tensor]

    def consumer_needs(self, node, name: str, tensor: str) -> bool:
        op = node.op_type
        if op in WEIGHTED:  # quantize the data input of weighted ops (weights are constants, handled apart)
            return node.input[0] == name
        if op == "Add":  # residual Add: both inputs INT8 (yolo_deepstream QuantAdd), except a Conv output, which
            # TensorRT fuses into the Conv as its element-wise epilogue (developer guide: Conv + Add fusion)
            producer = self.gr.prod.get(tensor)
            return (producer is None or producer.op_type not in WEIGHTED) and self.needed(node.output[0])
        if op in SCALE_PRESERVING:  # only their data input (not Resize scales, Reshape shapes, Slice starts)
            data_input = op == "Concat" or node.input[0] == name
            return data_input and any(self.needed(o) for o in node.output)
        return False  # Sigmoid/Mul (SiLU, fused into the Conv), MatMul (left float by our PTQ), the float tail


def _apply_placement(gr: _Graph, report: TensorRTForm) -> None:
    p = _Placement(gr)
    decisions = {t: p.needed(t) for t in list(p.q_of)}
    drop = []
    for tensor, keep in decisions.items():
        q = p.q_of[tensor]
        for d in p.dqs(q):
            for u in list(gr.cons.get(d.output[0], [])):
                if keep and p.consumer_needs(u, d.output[0], tensor):
                    continue
                for i, t in enumerate(u.input):
                    if t == d.output[0]:
                        u.input[i] = tensor
                if keep:
                    report.float_consumers += 1
            if not keep:
                drop.append(d)
        if not keep:
            drop.append(q)
            report.removed_pairs += 1
    for n in drop:
        gr.g.node.remove(n)
    # Q nodes whose DQs no longer have consumers (all rewired to float) are dropped too.
    gr.refresh()
    for q in [n for n in gr.g.node if n.op_type == "QuantizeLinear" and not gr.is_const(n.input[0])]:
        dqs = [u for u in gr.cons.get(q.output[0], []) if u.op_type == "DequantizeLinear"]
        if dqs and not any(gr.cons.get(d.output[0]) or d.output[0] in gr.outputs for d in dqs):
            for d in dqs:
                gr.g.node.remove(d)
            gr.g.node.remove(q)
            report.removed_pairs += 1
    gr.refresh()
    _share_scales(gr, report)


def scale_groups(model) -> list[list[str]]:
    """Activation tensors whose Q/DQ must share one scale in the TensorRT form (see the module docstring)."""
    gr = model if isinstance(model, _Graph) else _Graph(model)
    q_of = {n.input[0]: n for n in gr.g.node if n.op_type == "QuantizeLinear" and not gr.is_const(n.input[0])}

    def source(name: str) -> str | None:
        """The quantized tensor a consumer reads: `name` is a DQ output of its Q, or the tensor itself."""
        d = gr.prod.get(name)
        if d is not None and d.op_type == "DequantizeLinear":
            q = gr.prod.get(d.input[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in q_of:
                return q.input[0]
        return name if name in q_of else None

    sets = TensorSets()
    for n in gr.g.node:
        if n.op_type in SCALE_PRESERVING:
            ins = list(n.input) if n.op_type == "Concat" else [n.input[0]]
            outs = [o for o in n.output if o in q_of]
            if outs:
                sets.union([source(t) for t in ins] + outs)
        elif n.op_type == "Add":
            srcs = [source(t) for t in n.input[:2]]
            if all(s is not None for s in srcs):
                sets.union(srcs)
    return [sorted(g) for g in sets.groups() if len(g) > 1]


def _share_scales(gr: _Graph, report: TensorRTForm) -> None:
    q_of = {n.input[0]: n for n in gr.g.node if n.op_type == "QuantizeLinear" and not gr.is_const(n.input[0])}
    for group in scale_groups(gr):
        qs = [q_of[t] for t in group]
        scales = {q.input[1]: float(np.max(gr.const(q.input[1]))) for q in qs}
        if any(np.asarray(gr.const(s)).size != 1 for s in scales):
            continue  # per-channel activation scales are reported by the lint
        report.shared_groups += 1
        best = max(scales, key=scales.get)
        for q in qs:
            nodes = [q, *[u for u in gr.cons.get(q.output[0], []) if u.op_type == "DequantizeLinear"]]
            if q.input[1] != best:
                report.rescaled += 1
            for n in nodes:
                n.input[1] = best
    gr.refresh()


# ------------------------------------------------------------------------------------------------------ public API
def tensorrt_form(model, placement: bool = True, src: str = "model") -> TensorRTForm:
    """Rewrite an in-memory QDQ ONNX model to its TensorRT form, in place. Returns what changed.

    Raises:
        DeployError: A zero point is neither symmetric UINT8 (128) nor INT8 0, or is not a constant.
    """
    gr = _Graph(model)
    _constants_to_initializers(gr)
    report = TensorRTForm()
    report.folded_constants = _fold_constant_dq(gr)
    report.zero_points = _int8_zero_points(gr, src)
    if placement:
        _apply_placement(gr, report)
    _remove_unused_initializers(gr)
    props = {p.key: p for p in model.metadata_props}
    if PRECISION_KEY in props:
        props[PRECISION_KEY].value = TENSORRT_PRECISION
    else:
        model.metadata_props.add(key=PRECISION_KEY, value=TENSORRT_PRECISION)
    summary = json.dumps({**asdict(report), "placement": placement})
    if "yolo_opt_tensorrt_form" in props:
        props["yolo_opt_tensorrt_form"].value = summary
    else:
        model.metadata_props.add(key="yolo_opt_tensorrt_form", value=summary)
    return report


def to_tensorrt_qdq(src: str | Path, dst: str | Path, placement: bool = True) -> Path:
    """Write the TensorRT form of a QDQ ONNX model (our PTQ or a QAT export) to `dst`, atomically.

    Args:
        src: QDQ ONNX model (ONNX Runtime form from `quantize_onnx`, or a ModelOpt QAT export).
        dst: Output path (may equal `src`).
        placement: Apply NVIDIA's Q/DQ placement rules (default). False keeps only the lossless steps (constant
            DequantizeLinear folding, INT8 zero points), whose ONNX Runtime outputs are bit-identical to `src`'s.

    Returns:
        `dst`.

    Raises:
        ModelError: `src` is missing or not ONNX.
        DeployError: The model cannot be expressed for TensorRT (asymmetric quantization), or the result still
            fails `lint_tensorrt_qdq`.
    """
    import onnx

    from yolo_opt.io.files import atomic_path

    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ModelError(f"ONNX file not found: {src}")
    try:
        model = onnx.load(str(src))
    except Exception as e:  # protobuf DecodeError
        raise ModelError(f"{src} is not a valid ONNX model ({type(e).__name__}); re-export it") from e
    tensorrt_form(model, placement=placement, src=str(src))
    problems = lint_tensorrt_qdq(model, placement=placement)
    if problems:
        raise DeployError(f"{src}: the TensorRT form still breaks {len(problems)} rule(s), first: {problems[0]}")
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


def lint_tensorrt_qdq(model, placement: bool = True) -> list[str]:
    """What in a QDQ ONNX model TensorRT's explicit quantization rejects or runs badly; empty when valid.

    Checks (sources in the module docstring):
    - no UINT8 tensor anywhere (initializers, inputs, outputs, value_info, Constant/Cast/QuantizeLinear output types);
    - every QuantizeLinear/DequantizeLinear has a constant INT8 zero point of all zeros, of the scale's size;
    - every DequantizeLinear reads INT8: an INT8 initializer or a QuantizeLinear output;
    - scales are constant float32, finite and positive; per-channel scales only on Conv weights, with an explicit
      axis 0 and one scale per output channel (TensorRT assumes KCRS weights; ONNX's default axis is 1);
    - with `placement`: no Q/DQ pair that NVIDIA's placement rules remove, and one scale per Concat/MaxPool/residual
      Add group.

    Args:
        model: An `onnx.ModelProto` or a path.
        placement: Also check NVIDIA's placement rules.
    """
    import onnx

    if not hasattr(model, "graph"):
        model = onnx.load(str(model))
    gr = _Graph(model)
    problems: list[str] = []
    u8 = onnx.TensorProto.UINT8
    for i in gr.g.initializer:
        if i.data_type == u8:
            problems.append(f"UINT8 initializer {i.name}")
    for vi in [*gr.g.input, *gr.g.output, *gr.g.value_info]:
        if vi.type.tensor_type.elem_type == u8:
            problems.append(f"UINT8 tensor {vi.name}")
    for n in gr.g.node:
        if n.op_type == "Constant" and any(a.name == "value" and a.t.data_type == u8 for a in n.attribute):
            problems.append(f"UINT8 Constant {n.name or n.output[0]}")
        if n.op_type == "Cast" and _attr(n, "to") == u8:
            problems.append(f"Cast to UINT8 {n.name or n.output[0]}")
        if n.op_type == "QuantizeLinear" and _attr(n, "output_dtype", 0) not in (0, onnx.TensorProto.INT8):
            problems.append(f"QuantizeLinear {n.name} output_dtype is not INT8")
        if n.op_type not in QDQ_OPS:
            continue
        name = n.name or n.output[0]
        scale = gr.const(n.input[1]) if len(n.input) > 1 else None
        if scale is None:
            problems.append(f"{n.op_type} {name}: scale is not a constant")
            continue
        if gr.const_dtype(n.input[1]) != onnx.TensorProto.FLOAT:
            problems.append(f"{n.op_type} {name}: scale is not float32")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{n.op_type} {name}: scales must be finite and positive")
        zp = gr.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        if zp is None:
            problems.append(f"{n.op_type} {name}: zero point missing or not constant (TensorRT 8.x needs it)")
        elif gr.const_dtype(n.input[2]) != onnx.TensorProto.INT8 or np.any(zp != 0):
            problems.append(f"{n.op_type} {name}: zero point must be INT8 0")
        elif zp.size != scale.size:
            problems.append(f"{n.op_type} {name}: zero point and scale sizes differ")
        data = n.input[0]
        if n.op_type == "DequantizeLinear":
            producer = gr.prod.get(data)
            if gr.is_const(data):
                if gr.const_dtype(data) != onnx.TensorProto.INT8:
                    dtype = onnx.TensorProto.DataType.Name(gr.const_dtype(data) or 0)
                    problems.append(f"DequantizeLinear {name}: input is a {dtype} constant, not INT8")
            elif producer is None or producer.op_type != "QuantizeLinear":
                problems.append(f"DequantizeLinear {name}: input is not INT8 (not a QuantizeLinear output)")
        if scale.size > 1:
            problems += _per_channel_problems(gr, n, name, scale.size)
    if placement:
        problems += _placement_problems(gr)
    return problems


def _per_channel_problems(gr: _Graph, n, name: str, size: int) -> list[str]:
    """Per-channel scales are for Conv weights only: axis 0, one scale per output channel."""
    weight = n.input[0]
    if n.op_type == "DequantizeLinear" and not gr.is_const(weight):
        q = gr.prod.get(weight)  # QAT form: QuantizeLinear(float weight) -> DequantizeLinear
        weight = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else weight
    value = gr.const(weight)
    dq = n if n.op_type == "DequantizeLinear" else next(
        (u for u in gr.cons.get(n.output[0], []) if u.op_type == "DequantizeLinear"), None)
    if value is None or dq is None or not _is_weight_dq(gr, dq):
        return [f"{n.op_type} {name}: per-channel scale on an activation (TensorRT: weights only)"]
    axis = _attr(n, "axis")
    out = []
    if axis is None or axis % value.ndim != 0:
        out.append(f"{n.op_type} {name}: per-channel axis must be given as 0, got {axis}")
    if size != value.shape[0]:
        out.append(f"{n.op_type} {name}: {size} scales for {value.shape[0]} output channels")
    return out


def _placement_problems(gr: _Graph) -> list[str]:
    p = _Placement(gr)
    out = [f"placement: Q/DQ on {t} that no consumer needs in INT8 (feeds {_readers(p, t)})"
           for t in p.q_of if not p.needed(t)]
    q_of = p.q_of
    for group in scale_groups(gr):
        scales = {float(np.max(gr.const(q_of[t].input[1]))) for t in group if t in q_of}
        if len(scales) > 1:
            out.append(f"placement: {len(scales)} scales in one Concat/MaxPool/residual-Add group ({group[0]}, ...)")
    return out


def _readers(p: _Placement, tensor: str) -> str:
    return ", ".join(sorted({u.op_type for u, _ in p.readers(tensor)})) or "nothing"
