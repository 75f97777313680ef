"""A folder to copy to a Jetson: ONNX models, metadata, engine-build scripts and a small inference script."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError

README = """yolo-opt Jetson bundle ({name})
===========================================
Files: model_fp32.onnx, model_int8.onnx (INT8 explicit-quantization Q/DQ graph for TensorRT), metadata.json,
build_engine.py / build_engine.sh (engine build), infer.py (run the engine on an image).

On the device (JetPack with TensorRT; needs only tensorrt, numpy and OpenCV):

  1. python3 build_engine.py                 (or: sh build_engine.sh, the same with trtexec)
  2. python3 infer.py path/to/image.jpg      (writes image_det.jpg)

Precision: {precision}. Image size: {imgsz}. Classes: {nc}.
Validated here with ONNX Runtime: {accuracy}
"""

TRTEXEC = """#!/bin/sh
# Equivalent of build_engine.py with trtexec (JetPack: /usr/src/tensorrt/bin/trtexec).
set -e
cd "$(dirname "$0")"
TRTEXEC=${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}
"$TRTEXEC" --onnx={onnx} --saveEngine={engine} {flags} --memPoolSize=workspace:{workspace_mib}M
"""


def _template(name: str) -> str:
    return resources.files("yolo_opt.deploy.templates").joinpath(name).read_text()


def make_bundle(
    model: str | Path,
    data: str | Path | None,
    out: str | Path,
    imgsz: int | list[int] = 640,
    int8: bool = True,
    calib: str = "minmax",
    calib_images: int = 256,
    per_channel: bool = True,
    max_map_drop: float | None = None,
    validate: bool = True,
    workspace: float = 2.0,
    progress: bool = True,
) -> Path:
    """Write a Jetson deployment folder for an Ultralytics `.pt` (pruned models too).

    The folder holds `model_fp32.onnx`, `model_int8.onnx` (INT8 Q/DQ with zero point 0, what TensorRT consumes),
    `metadata.json` (names, imgsz, stride, input/output names and shapes, precision, measured mAP),
    `build_engine.py` (TensorRT Python API only), `build_engine.sh` (the same with trtexec), `infer.py`
    (TensorRT + numpy + OpenCV: letterbox, decode, NMS) and `README.txt`. It is built in a temporary folder
    next to `out` and renamed into place, so a failure never leaves a half-written bundle.

    Args:
        model: Ultralytics `.pt` checkpoint.
        data: data.yaml (train split calibrates, val split validates); required when `int8`.
        out: Bundle folder (replaced if it exists).
        imgsz: Input size.
        int8: Include the INT8 QDQ model (else FP32/FP16 only).
        calib, calib_images, per_channel, max_map_drop, validate: As in `quantize_onnx`.
        workspace: TensorRT builder workspace (GiB) written into the scripts.
        progress: Show progress bars.

    Returns:
        The bundle folder.
    """
    from yolo_opt import __version__
    from yolo_opt.bench.measure import validate_onnx
    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.io.onnx import load_onnx, onnx_io, onnx_metadata
    from yolo_opt.quant.calibrate import calibration_method
    from yolo_opt.quant.ptq import quantize_onnx
    from yolo_opt.quant.qdq import to_tensorrt_qdq

    if not out:
        raise ConfigError("out= is required for a bundle, e.g. out=jetson_bundle")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} exists and is not a folder; choose another out=")
    if int8:
        calibration_method(calib)
        from yolo_opt.data.calib import calibration_files

        calibration_files(data, calib_images)  # fail fast on no/empty data before exporting anything
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        fp32 = export_onnx(model, tmp / "model_fp32.onnx", imgsz=imgsz)
        m = load_onnx(fp32, check=False)
        meta_onnx, io = onnx_metadata(m), onnx_io(m)
        info: dict[str, Any] = {
            "yolo_opt": __version__,
            "source": Path(model).name,
            "task": meta_onnx.get("task", "detect"),
            "names": {str(k): v for k, v in meta_onnx.get("names", {}).items()},
            "imgsz": list(meta_onnx.get("imgsz", [imgsz, imgsz] if isinstance(imgsz, int) else imgsz)),
            "stride": meta_onnx.get("stride", 32),
            "end2end": bool(meta_onnx.get("end2end", False)),
            "input": io["inputs"][0],
            "outputs": io["outputs"],
            "preprocess": "letterbox to imgsz (keep aspect, pad 114, centred), BGR->RGB, /255, NCHW float32",
            "output_format": "(1, 4+nc, anchors): xywh in input pixels, then class scores (sigmoid applied)",
            "models": {"fp32": "model_fp32.onnx"},
            "precision": "fp32",
            "workspace_gib": workspace,
        }
        accuracy = "not validated"
        if int8:
            r = quantize_onnx(fp32, data, tmp / "model_int8_ort.onnx", calib=calib, calib_images=calib_images,
                              per_channel=per_channel, max_map_drop=max_map_drop, validate=validate, progress=progress)
            to_tensorrt_qdq(r.path, tmp / "model_int8.onnx")
            (tmp / "model_int8_ort.onnx").unlink()
            info["models"]["int8"] = "model_int8.onnx"
            info["precision"] = "int8-qdq"
            info["quantization"] = {
                "calib": calib, "calib_images": r.calib_images, "per_channel": per_channel,
                "activations": "int8 symmetric per-tensor (zero point 0)", "weights": "int8 symmetric per-channel"
                if per_channel else "int8 symmetric per-tensor", "float_layers": r.excluded_layers,
                "float_tail_nodes": r.tail_nodes,
            }
            if r.fp32_map is not None:
                info["accuracy"] = {"fp32_map50_95": r.fp32_map, "int8_map50_95": r.int8_map, "data": str(data)}
                accuracy = f"mAP50-95 FP32 {r.fp32_map:.4f}, INT8 {r.int8_map:.4f} (ONNX Runtime CPU)"
        elif validate and data:
            m32 = validate_onnx(fp32, data)
            info["accuracy"] = {"fp32_map50_95": m32["map50_95"], "data": str(data)}
            accuracy = f"mAP50-95 FP32 {m32['map50_95']:.4f} (ONNX Runtime CPU)"
        (tmp / "metadata.json").write_text(json.dumps(info, indent=2))
        (tmp / "build_engine.py").write_text(_template("build_engine.py"))
        (tmp / "infer.py").write_text(_template("infer.py"))
        precision = "int8" if int8 else "fp16"
        flags = "--int8 --fp16" if int8 else "--fp16"
        onnx_name = info["models"]["int8" if int8 else "fp32"]
        (tmp / "build_engine.sh").write_text(TRTEXEC.format(onnx=onnx_name, engine=f"model_{precision}.engine",
                                                            flags=flags, workspace_mib=int(workspace * 1024)))
        for f in ("build_engine.py", "build_engine.sh", "infer.py"):
            os.chmod(tmp / f, 0o755)
        (tmp / "README.txt").write_text(README.format(
            name=Path(model).name, precision=info["precision"], imgsz=info["imgsz"], nc=len(info["names"]),
            accuracy=accuracy))
        os.chmod(tmp, 0o755)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
