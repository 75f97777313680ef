"""Deployment: FP32 ONNX export, full-graph INT8 QDQ quantization, TensorRT engines and Jetson bundles.

    from yolo_opt.deploy import export_onnx, quantize_onnx, build_engine, make_bundle, export
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.deploy.bundle import make_bundle
from yolo_opt.deploy.onnx_export import export_onnx, load_onnx, validate_onnx
from yolo_opt.deploy.quantize import (
    CALIB_METHODS,
    QuantizeResult,
    float_tail,
    layer_sensitivity,
    quantize_onnx,
    to_tensorrt_qdq,
)
from yolo_opt.deploy.tensorrt import build_engine, format_calibration_cache, parse_calibration_cache
from yolo_opt.errors import ConfigError

__all__ = [
    "CALIB_METHODS",
    "QuantizeResult",
    "build_engine",
    "export",
    "export_onnx",
    "float_tail",
    "format_calibration_cache",
    "layer_sensitivity",
    "load_onnx",
    "make_bundle",
    "parse_calibration_cache",
    "quantize_onnx",
    "to_tensorrt_qdq",
    "validate_onnx",
]


def export(
    model: str | Path,
    format: str = "onnx",  # noqa: A002 (the Ultralytics key)
    int8: bool = False,
    data: str | Path | None = None,
    imgsz: int | list[int] = 640,
    calib: str = "minmax",
    calib_images: int = 256,
    per_channel: bool = True,
    max_map_drop: float | None = None,
    out: str | Path | None = None,
    workspace: float | None = 4.0,
    verbose: bool = True,
) -> dict[str, Any]:
    """`yolo-opt export`: FP32 + INT8 QDQ ONNX (validated), a TensorRT engine, or a Jetson bundle.

    Args:
        model: Ultralytics `.pt` (pruned or not).
        format: "onnx", "engine" or "jetson" (bundle folder).
        int8: Quantize (ONNX/engine); bundles always include the INT8 model when data is given.
        data: data.yaml; its train split calibrates, its val split validates.
        imgsz: Export size.
        calib: minmax|entropy|percentile (ONNX Runtime calibration), or legacy (format=engine only).
        calib_images: Calibration images.
        per_channel: Per-channel weight scales.
        max_map_drop: Largest accepted absolute mAP50-95 drop; sensitive layers are kept in float to meet it.
        out: Output path (INT8 .onnx, .engine or bundle folder).
        workspace: TensorRT workspace in GiB.
        verbose: Print the summary.

    Returns:
        A report dict (paths, mAPs, layers kept in float).
    """
    from yolo_opt.deploy.calib import calibration_files
    from yolo_opt.prune.io import load_model

    fmt = str(format).lower()
    if fmt not in {"onnx", "engine", "jetson"}:
        raise ConfigError(f"format={format} is not a yolo-opt deploy format; use onnx, engine or jetson")
    if calib == "legacy" and fmt != "engine":
        raise ConfigError("calib=legacy is TensorRT's implicit calibrator: use it with format=engine")
    if calib != "legacy":
        from yolo_opt.deploy.quantize import calibration_method

        calibration_method(calib)
    load_model(model)
    if int8 or fmt == "jetson":
        calibration_files(data, calib_images)  # one clear error before any work
    if fmt == "jetson":
        folder = make_bundle(model, data, out or Path(model).with_name(Path(model).stem + "_jetson"), imgsz,
                             True, calib, calib_images, per_channel, max_map_drop, workspace=workspace or 2.0)
        if verbose:
            print(f"Jetson bundle written: {folder} (see {folder / 'README.txt'})")
        return {"bundle": str(folder)}
    report: dict[str, Any] = {}
    onnx_out = Path(out).with_suffix(".onnx") if (out and fmt == "engine") else None
    fp32 = export_onnx(model, onnx_out if not int8 else None, imgsz=imgsz)
    report["fp32"] = str(fp32)
    if fmt == "engine" and calib == "legacy":
        engine = build_engine(fp32, out, int8=int8, workspace=workspace, calib="legacy", data=data,
                              calib_images=calib_images)
        return {**report, "engine": str(engine)}
    src = fp32
    if int8:
        int8_out = out if (out and fmt == "onnx") else None
        r = quantize_onnx(fp32, data, int8_out, calib, calib_images, per_channel, max_map_drop=max_map_drop)
        report.update(r.as_dict())
        src = r.path
        if verbose:
            line = f"INT8 QDQ ONNX: {r.path} ({calib}, {r.calib_images} images)"
            if r.fp32_map is not None:
                line += f"; mAP50-95 FP32 {r.fp32_map:.4f} -> INT8 {r.int8_map:.4f} ({r.int8_map - r.fp32_map:+.4f})"
            print(line)
            if r.excluded_layers:
                print(f"kept in float to meet max_map_drop={max_map_drop}: {', '.join(r.excluded_layers)}")
    if fmt == "engine":
        engine = build_engine(src, out if out else Path(src).with_suffix(".engine"), int8=int8, workspace=workspace)
        report["engine"] = str(engine)
        if verbose:
            print(f"TensorRT engine: {engine}")
    return report
