"""Full-graph INT8 QDQ quantization of YOLO ONNX models with ONNX Runtime, and the accuracy fallback.

What is quantized and why (measured on yolov8n, see DESIGN.md): every Conv (per-channel symmetric INT8 weights) and
every activation through SiLU (Sigmoid*Mul), Add, Concat, Split, MaxPool and Resize, so that ONNX Runtime fuses the
whole backbone/neck into QLinear kernels and TensorRT sees one explicit-quantization (QDQ) graph. Left in float:
the Detect post-processing tail (DFL softmax, anchor/stride math, score sigmoid, final concat), found from the graph
as every node that no feature Conv depends on. Concat inputs and output share one range (one scale), so a concat is a
plain copy in INT8 instead of a re-quantization. Activations are symmetric (UINT8 with zero point 128 for ONNX Runtime
CPU; `to_tensorrt_qdq` rewrites them losslessly to INT8 with zero point 0, the form TensorRT requires).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from yolo_opt.errors import ConfigError, DeployError

CALIB_METHODS = ("minmax", "entropy", "percentile")
CALIB_CHUNK = 8  # images per calibrator call: bounds memory at any image size
QUANT_OPS = ("Conv", "Sigmoid", "Mul", "Add", "Concat", "Split", "MaxPool", "Resize", "Slice")


def calibration_method(name: str):
    """Map a `calib=` name to ONNX Runtime's CalibrationMethod, or raise ConfigError naming the choices."""
    from onnxruntime.quantization import CalibrationMethod

    table = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    key = str(name).lower()
    if key not in table:
        raise ConfigError(f"unknown calib '{name}'; choose one of: {', '.join(CALIB_METHODS)} (legacy: format=engine)")
    return table[key]


# ---------------------------------------------------------------------------------------------------- graph analysis
def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def _producers(graph) -> dict[str, Any]:
    return {t: n for n in graph.node for t in n.output}


def feature_convs(model) -> list[str]:
    """Names of Conv nodes that compute features (all but DFL's fixed 1-output-channel conv)."""
    init = {i.name: i for i in model.graph.initializer}
    names = []
    for n in model.graph.node:
        if n.op_type != "Conv":
            continue
        w = init.get(n.input[1]) if len(n.input) > 1 else None
        if w is not None and len(w.dims) == 4 and w.dims[0] == 1:
            continue  # DFL integral conv (arange weights): part of the decode tail
        names.append(n.name)
    return names


def float_tail(model) -> list[str]:
    """Post-processing nodes to keep in float: every node that no feature Conv depends on.

    For YOLO Detect heads this is the box decode after the final head convs (reshape/concat of the branches, DFL
    softmax and conv, anchor and stride arithmetic, the class sigmoid and the output concat), found from the graph
    itself so it also holds for pruned models and other head variants.
    """
    graph = model.graph
    prod = _producers(graph)
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
    cons = _consumers(graph)
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


# ---------------------------------------------------------------------------------------------------- calibration
def calibrate(model_path: str | Path, reader, method: str = "minmax", workdir: str | Path | None = None):
    """Collect activation ranges of every tensor with ONNX Runtime's calibrator (symmetric, as TensorRT wants).

    Returns:
        onnxruntime.quantization.calibrate.TensorsData.
    """
    import onnx
    from onnxruntime.quantization.calibrate import create_calibrator

    cm = calibration_method(method)
    ops = sorted({n.op_type for n in onnx.load(str(model_path)).graph.node})
    options: dict[str, Any] = {"symmetric": True}
    if cm.name == "Entropy":  # ORT's default 128 bins == 128 quantized bins always picks the full range (= minmax)
        options.update(num_bins=512, num_quantized_bins=128)  # 2048 (TensorRT's) is minutes slower in ORT's search
    with tempfile.TemporaryDirectory(prefix="yolo-opt-calib.", dir=workdir) as tmp:
        calibrator = create_calibrator(
            Path(model_path), ops, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=cm, extra_options=options,
        )
        try:
            # ONNX Runtime keeps every activation of every image it is given before reducing them to ranges or
            # histograms (yolov8n at 640 px: ~190 MB an image), so feed it a chunk at a time; both calibrator
            # kinds merge what successive calls collect.
            for start in range(0, len(reader), CALIB_CHUNK):
                reader.set_range(start, min(len(reader), start + CALIB_CHUNK))
                calibrator.collect_data(reader)
            ranges = calibrator.compute_data()
        except ValueError as e:  # numpy histogram of a degenerate (constant/near-zero) activation range
            raise DeployError(f"calib={method} failed on this model ({str(e).splitlines()[0][:120]}); "
                              "use calib=minmax or a trained model") from e
        del calibrator
    return ranges


# ONNX Runtime gives these ops' outputs their input's scale, so they join the Concat range groups.
SCALE_PRESERVING = ("Resize", "MaxPool", "Split", "Slice", "Reshape", "Transpose")


def share_concat_ranges(model, ranges, skip: set[str]) -> int:
    """Give each quantized Concat's inputs and output one common range (union), in place. Returns groups merged.

    Scale-preserving ops (Resize, MaxPool, Split, ...) link their input and outputs into the same group, since ONNX
    Runtime's QDQ quantizer reuses the input scale for their outputs.
    """
    from onnxruntime.quantization.calibrate import TensorData

    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    init = {i.name for i in model.graph.initializer}
    for n in model.graph.node:
        if n.name in skip or n.op_type not in {"Concat", *SCALE_PRESERVING}:
            continue
        io = [*n.input, *n.output] if n.op_type == "Concat" else [n.input[0], *n.output]
        tensors = [t for t in io if t and t not in init and t in ranges]
        for t in tensors[1:]:
            parent[find(t)] = find(tensors[0])
    groups: dict[str, list[str]] = {}
    for t in list(parent):
        groups.setdefault(find(t), []).append(t)
    merged = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        lo = min(float(np.min(ranges[t].range_value[0])) for t in members)
        hi = max(float(np.max(ranges[t].range_value[1])) for t in members)
        for t in members:
            ranges[t] = TensorData(lowest=np.array(lo, dtype=np.float32), highest=np.array(hi, dtype=np.float32))
        merged += 1
    return merged


# ---------------------------------------------------------------------------------------------------- quantization
def _write_qdq(pre_path: Path, out: Path, cache: Path, method: str, per_channel: bool, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre_path), str(out), calibration_data_reader=None, calibration_cache_path=str(cache),
        quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=False,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=list(QUANT_OPS), nodes_to_exclude=exclude, calibrate_method=calibration_method(method),
        extra_options={
            # Symmetric UINT8 activations (zero point 128): ONNX Runtime's CPU QDQ fusion turns U8 graphs into QLinear
            # kernels (S8 activations stayed unfused, 2x slower than FP32, in ORT 1.32), and a symmetric U8 Q/DQ is
            # exactly an S8 one with zero point 0, which `to_tensorrt_qdq` writes for TensorRT.
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "ForceQuantizeNoInputCheck": True,  # MaxPool/Split/Resize stay INT8 inside the graph
            "QDQKeepRemovableActivations": False,  # no Relu/Clip in YOLO; SiLU is Sigmoid*Mul, quantized as such
        },
    )


def to_tensorrt_qdq(src: str | Path, dst: str | Path) -> Path:
    """Write the TensorRT form of a QDQ model: see `yolo_opt.quant.tensorrt.to_tensorrt_qdq` (delegates there).

    INT8 zero points 0 instead of symmetric UINT8 128, INT32 bias DequantizeLinear folded into float, and NVIDIA's
    Q/DQ placement (Conv inputs, residual Adds, shared Concat/MaxPool scales; nothing on outputs that feed float
    layers). Written atomically.

    Raises:
        DeployError: Asymmetric activations, or a result that still fails `lint_tensorrt_qdq`.
    """
    from yolo_opt.quant.tensorrt import to_tensorrt_qdq as _to_tensorrt_qdq

    return _to_tensorrt_qdq(src, dst)


def _copy_metadata(src, dst_path: Path, extra: dict[str, str]) -> None:
    import onnx

    q = onnx.load(str(dst_path))
    del q.metadata_props[:]
    for p in src.metadata_props:
        q.metadata_props.add(key=p.key, value=p.value)
    for k, v in extra.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(dst_path))


@dataclass
class QuantizeResult:
    """What `quantize_onnx` wrote and measured."""

    path: Path
    fp32_path: Path
    calib: str
    calib_images: int
    excluded_layers: list[str] = field(default_factory=list)
    tail_nodes: int = 0
    shared_concats: int = 0
    fp32_map: float | None = None
    int8_map: float | None = None
    fp32_map50: float | None = None
    int8_map50: float | None = None
    sensitivity: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"], d["fp32_path"] = str(self.path), str(self.fp32_path)
        return d


def layer_sensitivity(fp32_path: Path, int8_path: Path, groups: list[dict[str, Any]], batches: list[np.ndarray],
                      input_name: str) -> list[dict[str, Any]]:
    """Rank Conv layers by the quantization error each adds (per-node output error vs FP32, most sensitive first).

    For each layer, error = ||int8 - fp32|| / ||fp32|| of a tensor over the given images; the layer's score is the
    error at its output minus the error at its input, i.e. what quantizing that layer itself adds.
    """
    import onnx
    import onnxruntime as ort

    tensors = sorted({t for g in groups for t in (g["input"], g["output"])} - {input_name})

    def run(path: Path) -> dict[str, list[np.ndarray]]:
        m = onnx.load(str(path))
        have = {o.name for o in m.graph.output}
        for t in tensors:
            if t not in have:
                m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        res: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
        for b in batches:
            outs = sess.run(tensors, {input_name: b})
            for t, o in zip(tensors, outs, strict=True):
                res[t].append(o)
        return res

    f, q = run(fp32_path), run(int8_path)

    def err(t: str) -> float:
        if t == input_name:
            return 0.0
        num = sum(float(np.linalg.norm(a - b)) for a, b in zip(q[t], f[t], strict=True))
        den = sum(float(np.linalg.norm(b)) for b in f[t]) + 1e-12
        return num / den

    rows = [{"layer": g["name"], "nodes": g["nodes"], "error_in": err(g["input"]), "error_out": err(g["output"])}
            for g in groups]
    for r in rows:
        r["added_error"] = r["error_out"] - r["error_in"]
    return sorted(rows, key=lambda r: r["added_error"], reverse=True)


def quantize_onnx(
    onnx_path: str | Path,
    data: str | Path | None,
    out: str | Path | None = None,
    calib: str = "minmax",
    calib_images: int = 256,
    per_channel: bool = True,
    imgsz: int | list[int] | None = None,
    max_map_drop: float | None = None,
    exclude: list[str] | None = None,
    validate: bool = True,
    evaluate: Callable[[Path], float] | None = None,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize an FP32 YOLO ONNX model to a full-graph INT8 QDQ model, calibrated on the train split.

    Args:
        onnx_path: FP32 ONNX model (from `export_onnx`; static batch 1).
        data: Ultralytics `data.yaml`; `calib_images` train images calibrate, the val split validates.
        out: INT8 output path (default: `<stem>_int8.onnx` next to `onnx_path`).
        calib: Calibration method: minmax, entropy or percentile (99.999th percentile of |x|).
        calib_images: Number of train images used (a seeded sample when the split has more).
        per_channel: Per-output-channel weight scales (recommended; TensorRT supports them).
        imgsz: Input size (default: the ONNX input shape).
        max_map_drop: Largest accepted absolute mAP50-95 drop vs FP32 (e.g. 0.01). When exceeded, the most sensitive
            layers (see `layer_sensitivity`) are kept in float, 1, 2, 4, ... of them, until the bound holds.
        exclude: Extra node names to keep in float.
        validate: Measure FP32 and INT8 mAP50-95 with the Ultralytics validator (needed for `max_map_drop`).
        evaluate: Score of a model file, higher is better (default: Ultralytics mAP50-95 on the val split).
        progress: Show progress bars.

    Returns:
        QuantizeResult with the path, mAPs, layers kept in float and the sensitivity ranking (when used).

    Raises:
        ConfigError: Unknown calib, calib_images < 1, bad max_map_drop.
        DataError: No or empty dataset.
        ModelError: Missing or corrupt ONNX file.
        DeployError: The accuracy bound cannot be met.
    """
    import onnx
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from yolo_opt.deploy.calib import CalibrationReader, calibration_files, load_batches
    from yolo_opt.deploy.onnx_export import load_onnx, onnx_io, validate_onnx
    from yolo_opt.files import atomic_path

    calibration_method(calib)
    if max_map_drop is not None and not 0 <= float(max_map_drop) < 1:
        raise ConfigError(f"max_map_drop={max_map_drop} is out of range; use an absolute mAP50-95 drop, 0 <= x < 1")
    if max_map_drop is not None and not validate and evaluate is None:
        raise ConfigError("max_map_drop needs validation; do not combine it with validate=False")
    onnx_path = Path(onnx_path)
    fp32 = load_onnx(onnx_path)
    io = onnx_io(fp32)
    if len(io["inputs"]) != 1:
        raise DeployError(f"{onnx_path} has {len(io['inputs'])} inputs; expected one image input")
    input_name, shape = io["inputs"][0]["name"], io["inputs"][0]["shape"]
    if imgsz is None:
        if not all(isinstance(s, int) and s > 0 for s in shape[2:]):
            raise ConfigError(f"{onnx_path} has a dynamic input shape {shape}; pass imgsz= or export with dynamic=False")
        imgsz = [int(shape[2]), int(shape[3])]
    files = calibration_files(data, calib_images)
    out = Path(out) if out else onnx_path.with_name(f"{onnx_path.stem}_int8.onnx")
    if out.resolve() == onnx_path.resolve():
        raise ConfigError(f"INT8 output {out} would overwrite the FP32 model; choose another out=")

    work = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent if out.parent.exists() else None))
    try:
        pre = work / "pre.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # optimization can fail on exotic graphs; shape inference alone still helps
            quant_pre_process(str(onnx_path), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        tail = float_tail(pre_model)
        batches = load_batches(files, imgsz, progress)
        reader = CalibrationReader(batches, input_name, progress, desc=f"calibrating ({calib})")
        ranges = calibrate(pre, reader, calib, work)
        shared = share_concat_ranges(pre_model, ranges, set(tail))
        cache = work / "ranges.json"
        save_tensors_data(ranges, cache)
        extra_meta = {"yolo_opt_precision": "int8-qdq", "yolo_opt_calib": calib, "yolo_opt_calib_images": str(len(files))}

        def build(excluded_layers: list[str], groups_by_name: dict[str, dict] | None = None) -> Path:
            nodes = list(tail) + list(exclude or [])
            for name in excluded_layers:
                nodes += groups_by_name[name]["nodes"] if groups_by_name else [name]
            cand = work / f"int8_{len(excluded_layers)}.onnx"
            _write_qdq(pre, cand, cache, calib, per_channel, nodes)
            meta = {**extra_meta, "yolo_opt_float_layers": json.dumps(excluded_layers)}
            _copy_metadata(fp32, cand, meta)
            return cand

        result = QuantizeResult(out, onnx_path, calib, len(files), tail_nodes=len(tail), shared_concats=shared)
        cand = build([])
        score = evaluate or (lambda p: validate_onnx(p, data, imgsz)["map50_95"])
        if validate or evaluate is not None:
            if evaluate is None:
                m32, m8 = validate_onnx(onnx_path, data, imgsz), validate_onnx(cand, data, imgsz)
                result.fp32_map, result.fp32_map50 = m32["map50_95"], m32["map50"]
                result.int8_map, result.int8_map50 = m8["map50_95"], m8["map50"]
            else:
                result.fp32_map, result.int8_map = float(evaluate(onnx_path)), float(evaluate(cand))
        if max_map_drop is not None and result.fp32_map - result.int8_map > max_map_drop:
            groups = layer_groups(pre_model, set(tail))
            by_name = {g["name"]: g for g in groups}
            ranking = layer_sensitivity(pre, cand, groups, batches[: min(8, len(batches))], input_name)
            result.sensitivity = [{k: r[k] for k in ("layer", "added_error", "error_in", "error_out")} for r in ranking]
            k, met = 1, False
            while True:
                k = min(k, len(ranking))
                layers = [r["layer"] for r in ranking[:k]]
                cand = build(layers, by_name)
                result.int8_map = float(score(cand))
                if evaluate is None:
                    result.int8_map50 = None
                if result.fp32_map - result.int8_map <= max_map_drop:
                    result.excluded_layers, met = layers, True
                    break
                if k == len(ranking):
                    break
                k *= 2
            if not met:
                raise DeployError(
                    f"INT8 mAP50-95 {result.int8_map:.4f} vs FP32 {result.fp32_map:.4f} misses max_map_drop="
                    f"{max_map_drop} even with all {len(ranking)} conv layers in float; raise max_map_drop, use more "
                    f"calib_images or another calib (entropy/percentile)")
        with atomic_path(out) as tmp:
            shutil.copyfile(cand, tmp)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
