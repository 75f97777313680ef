"""Full-graph INT8 QDQ quantization of YOLO ONNX models with ONNX Runtime, and the accuracy fallback.

What is quantized and why (measured: docs/benchmarks.md#int8-activations-and-weights): every Conv (per-channel
symmetric INT8 weights) and every activation through SiLU (Sigmoid*Mul), Add, Concat, Split, MaxPool and Resize, so
that ONNX Runtime fuses the whole backbone/neck into QLinear kernels and TensorRT sees one explicit-quantization
(QDQ) graph. Left in float: the Detect post-processing tail (DFL softmax, anchor/stride math, score sigmoid, final
concat), found from the graph as every node that no feature Conv depends on. Concat inputs and output share one
range (one scale), so a concat is a plain copy in INT8 instead of a re-quantization. Activations are UINT8 (what
ONNX Runtime's CPU kernels fuse), asymmetric by default: one-signed tensors (sigmoid, SiLU) keep all 8 bits (more
accurate than symmetric, as fast). With `symmetric=True` (zero point 128) this is the model
`yolo_opt.quant.tensorrt.to_tensorrt_qdq` turns into the TensorRT form (INT8 zero point 0, float biases, Q/DQ only
where NVIDIA's placement rules want them).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ultralytics.utils import LOGGER

from yolo_opt.errors import ConfigError, DeployError
from yolo_opt.options import PTQOptions
from yolo_opt.quant.calibrate import calibrate, calibration_method
from yolo_opt.quant.graph import float_tail, layer_groups, share_concat_ranges
from yolo_opt.quant.qdq import copy_metadata, write_qdq


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
    fp32_mask_map: float | None = None  # segmentation models: the masks' mAP50-95
    int8_mask_map: float | None = None
    symmetric: bool = False  # the activations written: as asked, or the more accurate kind where both were measured
    sensitivity: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["path"], d["fp32_path"] = str(self.path), str(self.fp32_path)
        return d

    def maps(self) -> dict[str, float | None]:
        """The mAP50-95 figures measured (boxes; masks of a segmentation model), FP32 and INT8."""
        keys = ("fp32_map", "int8_map") + (("fp32_mask_map", "int8_mask_map") if self.fp32_mask_map is not None else ())
        return {k: getattr(self, k) for k in keys}

    def drop(self) -> float:
        """The largest mAP50-95 loss of INT8 vs FP32 (boxes, and masks where measured): what max_map_drop bounds."""
        drops = [self.fp32_map - self.int8_map]
        if self.fp32_mask_map is not None and self.int8_mask_map is not None:
            drops.append(self.fp32_mask_map - self.int8_mask_map)
        return max(drops)

    def record(self, fp32: dict[str, float] | None, int8: dict[str, float]) -> None:
        """Keep the validator's figures (`yolo_opt.validation`) of the FP32 model (when given) and of INT8."""
        for prefix, figures in (("fp32", fp32), ("int8", int8)):
            for key, value in (figures or {}).items():
                if hasattr(self, f"{prefix}_{key}"):
                    setattr(self, f"{prefix}_{key}", value)


def quantization_sensitivity(fp32_path: Path, int8_path: Path, groups: list[dict[str, Any]], batches: list[np.ndarray],
                             *, input_name: str) -> list[dict[str, Any]]:
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
    opts: PTQOptions | None = None,
    *,
    imgsz: int | list[int] | None = None,
    exclude: list[str] | None = None,
    validate: bool = True,
    evaluate: Callable[[Path], float] | None = None,
    progress: bool = True,
    **shortcuts: Any,
) -> QuantizeResult:
    """Quantize an FP32 YOLO ONNX model to a full-graph INT8 QDQ model, calibrated on the train split.

    Args:
        onnx_path: FP32 ONNX model (from `export_onnx`; a static batch, 1 unless exported for throughput).
        data: Ultralytics `data.yaml`; `calib_images` train images calibrate, the val split validates.
        out: INT8 output path (default: `<stem>_int8.onnx` next to `onnx_path`).
        opts: `calib` (minmax, entropy, percentile = 99.999th percentile of |x|), `calib_images` (a seeded sample of
            the train split), `per_channel` weight scales, `max_map_drop` (largest accepted absolute mAP50-95 drop vs
            FP32, of the boxes and, for a segmentation model, of the masks: when exceeded, the layers `quantization_sensitivity` ranks first are kept in float, 1, 2, 4, ...
            of them, until the bound holds); or their keyword shortcuts (`calib="entropy"`).
        imgsz: Input size (default: the ONNX input shape).
        exclude: Extra node names to keep in float.
        validate: Measure FP32 and INT8 mAP50-95 with the Ultralytics validator (needed for `max_map_drop`).
        evaluate: Score of a model file, higher is better (default: Ultralytics mAP50-95 on the val split).
        progress: Show progress bars.

    Returns:
        QuantizeResult with the path, mAPs, layers kept in float and the sensitivity ranking (when used).

    Raises:
        ConfigError: Bad options, or max_map_drop without validation.
        DataError: No or empty dataset.
        ModelError: Missing or corrupt ONNX file.
        DeployError: The accuracy bound cannot be met.
    """
    import onnx
    from onnxruntime.quantization.calibrate import save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from yolo_opt.data.calib import CalibrationReader, calibration_files, load_batches, stack_batches
    from yolo_opt.data.checks import check_classes
    from yolo_opt.io.files import atomic_path, check_output, temporary_dir
    from yolo_opt.io.onnx import load_onnx, onnx_io, onnx_metadata
    from yolo_opt.validation import validate_onnx

    opts = PTQOptions.from_kwargs(opts, **shortcuts)
    calibration_method(opts.calib)  # calib=legacy is TensorRT's own calibrator: one clear error before any work
    calib, calib_images, per_channel, max_map_drop = opts.calib, opts.calib_images, opts.per_channel, opts.max_map_drop
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
    check_classes(data, onnx_metadata(fp32).get("names"), f"{onnx_path.name}")
    files = calibration_files(data, calib_images)
    out = Path(out) if out else onnx_path.with_name(f"{onnx_path.stem}_int8.onnx")
    check_output(out, [onnx_path])

    work = temporary_dir(out)
    try:
        pre = work / "pre.onnx"
        try:
            quant_pre_process(str(onnx_path), str(pre), skip_symbolic_shape=True)
        except Exception:  # optimization can fail on exotic graphs; shape inference alone still helps
            quant_pre_process(str(onnx_path), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        tail = float_tail(pre_model)
        batches = load_batches(files, imgsz, progress)
        batches = stack_batches(batches, shape[0] if isinstance(shape[0], int) else 1)  # a model exported at batch=8
        # activations: as asked, else both kinds measured where the model is scored, the more accurate kept (ONNX
        # Runtime runs both with the same UINT8 kernels, so they cost the same); unscored, asymmetric
        measured = validate or evaluate is not None
        kinds = [opts.symmetric] if opts.symmetric is not None else ([False, True] if measured else [False])
        caches: dict[bool, Path] = {}
        shared = 0
        for sym in kinds:
            reader = CalibrationReader(batches, input_name, progress, desc=f"calibrating ({calib})")
            ranges = calibrate(pre, reader, calib, workdir=work, symmetric=sym)
            shared = share_concat_ranges(pre_model, ranges, set(tail))
            caches[sym] = work / f"ranges_{int(sym)}.json"
            save_tensors_data(ranges, caches[sym])

        def build(excluded_layers: list[str], groups_by_name: dict[str, dict] | None = None,
                  sym: bool = kinds[0]) -> Path:
            nodes = list(tail) + list(exclude or [])
            for name in excluded_layers:
                nodes += groups_by_name[name]["nodes"] if groups_by_name else [name]
            cand = work / f"int8_{int(sym)}_{len(excluded_layers)}.onnx"
            write_qdq(pre, cand, caches[sym], method=calib, per_channel=per_channel, exclude=nodes, symmetric=sym)
            meta = {"yolo_opt_precision": "int8-qdq", "yolo_opt_calib": calib,
                    "yolo_opt_calib_images": str(len(files)), "yolo_opt_float_layers": json.dumps(excluded_layers),
                    "yolo_opt_activations": "symmetric" if sym else "asymmetric"}
            copy_metadata(fp32, cand, meta)
            return cand

        result = QuantizeResult(out, onnx_path, calib, len(files), tail_nodes=len(tail), shared_concats=shared)

        def score(path: Path) -> None:  # the INT8 candidate's figures
            if evaluate is None:
                result.record(None, validate_onnx(path, data, imgsz))
            else:
                result.int8_map = float(evaluate(path))

        if measured:
            if evaluate is None:
                result.record(validate_onnx(onnx_path, data, imgsz), {})
            else:
                result.fp32_map = float(evaluate(onnx_path))
        tried: dict[bool, tuple[Path, dict[str, Any]]] = {}
        for sym in kinds:
            cand = build([], sym=sym)
            if measured:
                score(cand)
            tried[sym] = cand, {k: getattr(result, k) for k in ("int8_map", "int8_map50", "int8_mask_map")}
        symmetric = kinds[0]
        if len(kinds) == 2:  # the smaller loss wins (masks' too); a tie stays asymmetric
            loss = {sym: max(result.fp32_map - f["int8_map"],
                             (result.fp32_mask_map - f["int8_mask_map"]) if f["int8_mask_map"] is not None else -1.0)
                    for sym, (_, f) in tried.items()}
            symmetric = loss[True] < loss[False]
            LOGGER.info(f"yolo-opt: INT8 activations {'symmetric' if symmetric else 'asymmetric'}: mAP50-95 "
                        f"{tried[symmetric][1]['int8_map']:.4f} against {tried[not symmetric][1]['int8_map']:.4f} "
                        f"{'asymmetric' if symmetric else 'symmetric'} ({abs(loss[True] - loss[False]):.4f} less loss; "
                        "measured on the same calibration images, the same speed on ONNX Runtime)")
        cand, figures = tried[symmetric]
        for k, v in figures.items():
            setattr(result, k, v)
        result.symmetric = symmetric

        if max_map_drop is not None and result.drop() > max_map_drop:
            groups = layer_groups(pre_model, set(tail))
            by_name = {g["name"]: g for g in groups}
            ranking = quantization_sensitivity(pre, cand, groups, batches[: min(8, len(batches))], input_name=input_name)
            result.sensitivity = [{k: r[k] for k in ("layer", "added_error", "error_in", "error_out")} for r in ranking]
            k, met = 1, False
            while True:
                k = min(k, len(ranking))
                layers = [r["layer"] for r in ranking[:k]]
                cand = build(layers, by_name, symmetric)
                score(cand)
                if result.drop() <= max_map_drop:
                    result.excluded_layers, met = layers, True
                    break
                if k == len(ranking):
                    break
                k *= 2
            if not met:
                raise DeployError(
                    f"INT8 mAP50-95 {result.int8_map:.4f} vs FP32 {result.fp32_map:.4f} (largest drop, masks included: "
                    f"{result.drop():.4f}) misses max_map_drop="
                    f"{max_map_drop} even with all {len(ranking)} conv layers in float; raise max_map_drop, use more "
                    f"calib_images or another calib (entropy/percentile)")
        with atomic_path(out) as tmp:
            shutil.copyfile(cand, tmp)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
