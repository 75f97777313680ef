"""Folders to copy to a device: a Jetson bundle (ONNX models, engine-build scripts) and an OpenVINO bundle (IRs), each
with metadata.json and an inference script that decodes the model's output format (NMS-free or not; masks)."""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError
from yolo_opt.io.files import atomic_folder, owned_folder
from yolo_opt.options import DEFAULT_IMGSZ, PTQOptions

README = """yolo-opt Jetson bundle ({name})
===========================================
Files: model_fp32.onnx, {int8_line}metadata.json, build_engine.py / build_engine.sh (engine build),
infer.py + yolo_decode.py (run the engine on an image: letterbox, decode, masks).

On the device (JetPack with TensorRT; needs only tensorrt, numpy and OpenCV):

  1. python3 build_engine.py                 (or: sh build_engine.sh, the same with trtexec)
  2. python3 infer.py path/to/image.jpg      (writes detections/image_det.jpg)

Default engine: {engine} ({precision_default}). Other precisions: build_engine.py --precision fp16|fp32|int8,
sh build_engine.sh fp16|fp32|int8; then infer.py --engine model_<precision>.engine.

Supported TensorRT / JetPack
----------------------------
  TensorRT 8.5 / 8.6   JetPack 5.1 (8.5), JetPack 6.0 (8.6)
  TensorRT 10.x        JetPack 6.1 / 6.2 (10.3), JetPack 7 (10.x)
  TensorRT 11.x        x86-64 / SBSA GPUs (NVIDIA does not support JetPack on TensorRT 11 as of 11.4)
Both scripts choose by the installed version: build_engine.py reads tensorrt.__version__, build_engine.sh the
version in trtexec's banner ("TensorRT v8602", "v100300", ...; override with TRT_MAJOR=8|10|11).
  8.x   explicit-batch network (EXPLICIT_BATCH); INT8 engine = --int8 --fp16 / BuilderFlag.INT8 + FP16 (FP16 for the
        layers the Q/DQ model keeps in float: the box decode)
  10.x  no batch flag (explicit batch is the only mode); the same precision flags (deprecated from 10.12: warnings)
  11.x  strongly typed networks only: no precision flags (trtexec rejects --int8/--fp16). INT8 comes from the Q/DQ
        nodes of model_int8.onnx; its float layers run in FP32. FP16 needs an FP16 ONNX (ModelOpt AutoCast:
        python -m modelopt.onnx.autocast --onnx_path model_fp32.onnx --output_path model_fp16.onnx, then
        build_engine.py --precision fp16 --onnx model_fp16.onnx); the scripts refuse FP16 from the FP32 model.
The legacy INT8 calibrator is not used: model_int8.onnx carries its scales (explicit quantization). An engine only
runs on the TensorRT version and GPU that built it; infer.py says so and asks for a rebuild.

Precision: {precision}. Image size: {imgsz}. Classes: {nc}. Output: {output}
Validated here: {accuracy}
"""

TRTEXEC = """#!/bin/sh
# Equivalent of build_engine.py with trtexec (JetPack: /usr/src/tensorrt/bin/trtexec).  sh build_engine.sh [int8|fp16|fp32]
# Flags follow trtexec's TensorRT version (its banner, or TRT_MAJOR=8|10|11):
#   8.x, 10.x  --int8 --fp16 (INT8 Q/DQ model), --fp16 (FP16), none (FP32)
#   11.x       none: networks are always strongly typed and --int8/--fp16 are unknown options; INT8 comes from the
#              Q/DQ nodes, FP16 needs an FP16 ONNX (pass ONNX=model_fp16.onnx)
set -e
cd "$(dirname "$0")"
TRTEXEC=${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}
PRECISION=${{1:-{precision}}}
if [ -z "$TRT_MAJOR" ]; then
  V=$("$TRTEXEC" --help 2>&1 | sed -n 's/.*TensorRT v\\([0-9][0-9.]*\\).*/\\1/p' | head -n 1)
  case "$V" in
    *.*) TRT_MAJOR=${{V%%.*}} ;;
    ??????*) TRT_MAJOR=${{V%????}} ;;
    ????) TRT_MAJOR=${{V%???}} ;;
    *) echo "cannot read the TensorRT version from '$TRTEXEC --help'; set TRT_MAJOR=8, 10 or 11" >&2; exit 2 ;;
  esac
fi
case "$PRECISION" in
  int8) MODEL={int8_onnx}; FLAGS="--int8 --fp16" ;;
  fp16) MODEL=model_fp32.onnx; FLAGS="--fp16" ;;
  fp32) MODEL=model_fp32.onnx; FLAGS="" ;;
  *) echo "usage: sh build_engine.sh [int8|fp16|fp32]" >&2; exit 2 ;;
esac
if [ "$TRT_MAJOR" -ge 11 ]; then
  FLAGS=""
  if [ "$PRECISION" = fp16 ] && [ -z "$ONNX" ]; then
    echo "TensorRT $TRT_MAJOR builds strongly typed networks: FP16 needs an FP16 ONNX (see README.txt); pass ONNX=model_fp16.onnx" >&2
    exit 2
  fi
fi
if [ "$MODEL" = none ]; then echo "this bundle has no INT8 model; use fp16 or fp32" >&2; exit 2; fi
MODEL=${{ONNX:-$MODEL}}
echo "TensorRT $TRT_MAJOR.x: $PRECISION from $MODEL ${{FLAGS:-(no precision flags)}}"
"$TRTEXEC" --onnx="$MODEL" --saveEngine="model_$PRECISION.engine" $FLAGS --memPoolSize=workspace:{workspace_mib}
"""

SUPPORTED_TENSORRT = {
    "8": "8.5 / 8.6 (JetPack 5.1 / 6.0): explicit batch flag, INT8 + FP16 builder flags",
    "10": "10.x (JetPack 6.1 / 6.2 / 7): INT8 + FP16 builder flags",
    "11": "11.x (x86-64/SBSA; no JetPack yet): strongly typed, INT8 from Q/DQ, FP16 needs an FP16 ONNX",
}


def _template(name: str) -> str:
    return resources.files("yolo_opt.deploy.templates").joinpath(name).read_text()


def _model_info(model: str | Path, imgsz: int | list[int], end2end: bool | None) -> dict[str, Any]:
    """What both bundles' metadata.json say of the model: classes, input, task; `end2end` as asked (None: the head
    Ultralytics exports by default), settled by `_head` once the model is exported."""
    from yolo_opt import __version__
    from yolo_opt.arch import adapter
    from yolo_opt.io.checkpoint import load_model

    net = load_model(model)
    arch = adapter(net)
    return {
        "yolo_opt": __version__,
        "source": Path(model).name,
        "family": arch.name,
        "task": arch.task.name,
        "names": {str(k): v for k, v in net.names.items()},
        "imgsz": [imgsz, imgsz] if isinstance(imgsz, int) else list(imgsz),
        "stride": int(max(net.stride)) if hasattr(net, "stride") else 32,
        "end2end": arch.deploy_end2end(end2end),
        "nm": int(getattr(arch.head, "nm", 0)),
        "preprocess": "letterbox to imgsz (keep aspect, pad 114, centred), BGR->RGB, /255, NCHW float32",
    }


def _head(info: dict[str, Any], model: str | Path, end2end: bool) -> None:
    """The head the exported model holds (its metadata), and the output format infer.py decodes (NMS-free or not;
    mask prototypes)."""
    from yolo_opt.arch import adapter
    from yolo_opt.io.checkpoint import load_model

    info["end2end"] = bool(end2end)
    info["output_format"] = adapter(load_model(model)).output_format(end2end)


def _write_scripts(folder: Path, infer: str) -> None:
    """infer.py (the runtime's `infer` template) and yolo_decode.py (the pre/post-processing both bundles share)."""
    (folder / "infer.py").write_text(_template(infer))
    (folder / "yolo_decode.py").write_text(_template("yolo_decode.py"))
    for f in ("infer.py", "yolo_decode.py"):
        os.chmod(folder / f, 0o755)


def _accuracy(maps: dict[str, float | None], data: str | Path, runtime: str) -> tuple[dict[str, Any], str]:
    """metadata.json's accuracy record and the README line, from `fp32_map`/`int8_map` (and `*_mask_map`)."""
    from yolo_opt.validation import describe

    record = {k: v for k, v in maps.items() if v is not None}
    return {**record, "data": str(data)}, f"{describe(maps)} ({runtime})"


def make_bundle(
    model: str | Path,
    data: str | Path | None,
    out: str | Path,
    ptq: PTQOptions | None = None,
    *,
    imgsz: int | list[int] = DEFAULT_IMGSZ,
    int8: bool = True,
    validate: bool = True,
    workspace: float = 2.0,
    progress: bool = True,
    end2end: bool | None = None,
    **shortcuts: Any,
) -> Path:
    """Write a Jetson deployment folder for an Ultralytics `.pt` (pruned models too).

    The folder holds `model_fp32.onnx`, `model_int8.onnx` (INT8 Q/DQ with zero point 0, what TensorRT consumes),
    `metadata.json` (names, imgsz, stride, output format, input/output names and shapes, precision, measured mAP),
    `build_engine.py` (TensorRT Python API only), `build_engine.sh` (the same with trtexec), `infer.py`
    (TensorRT + numpy + OpenCV) with `yolo_decode.py` (letterbox; NMS-free or NMS decode; masks) and `README.txt`.
    It is built in a temporary folder next to `out` and renamed into place (`atomic_folder`), so a failure or a
    kill never leaves a half-written bundle, and only an earlier bundle is ever replaced.

    Args:
        model: Ultralytics `.pt` checkpoint (detection or segmentation).
        data: data.yaml (train split calibrates, val split validates); required when `int8`.
        out: Bundle folder: absent, empty, or an earlier yolo-opt bundle (replaced once the new one is complete);
            any other non-empty folder is refused.
        ptq: `calib`, `calib_images`, `per_channel`, `max_map_drop` as in `quantize_onnx` (activations are always
            symmetric: TensorRT's kind); or their keyword shortcuts (`calib_images=64`).
        imgsz: Input size.
        int8: Include the INT8 QDQ model (else FP32/FP16 only).
        validate: Measure FP32 and INT8 mAP50-95 (needed for `max_map_drop`).
        workspace: TensorRT builder workspace (GiB) written into the scripts.
        progress: Show progress bars.
        end2end: True: the NMS-free output of an end-to-end model; False: one-to-many + NMS; None: the head
            Ultralytics exports by default.

    Returns:
        The bundle folder.
    """
    from yolo_opt.deploy.onnx import export_onnx, exported_end2end
    from yolo_opt.io.onnx import load_onnx, onnx_io
    from yolo_opt.quant.calibrate import calibration_method
    from yolo_opt.quant.ptq import quantize_onnx
    from yolo_opt.quant.tensorrt import to_tensorrt_qdq
    from yolo_opt.validation import validate_onnx

    ptq = PTQOptions.from_kwargs(ptq, **shortcuts)
    if not out:
        raise ConfigError("out= is required for a bundle, e.g. out=jetson_bundle")
    out = Path(out)
    owned_folder(out, "bundle")  # a folder of the user's is refused before any work (and again before the swap)
    info: dict[str, Any] = _model_info(model, imgsz, end2end)
    if int8:
        calibration_method(ptq.calib)
        from yolo_opt.data.calib import calibration_files

        calibration_files(data, ptq.calib_images)  # fail fast on no/empty data before exporting anything
    with atomic_folder(out, "bundle") as tmp:
        fp32 = export_onnx(model, tmp / "model_fp32.onnx", imgsz=imgsz, end2end=info["end2end"])
        _head(info, model, exported_end2end(fp32))
        io = onnx_io(load_onnx(fp32, check=False))
        info.update(input=io["inputs"][0], outputs=io["outputs"], models={"fp32": "model_fp32.onnx"}, precision="fp32",
                    workspace_gib=workspace)
        accuracy = "not validated"
        if int8:
            r = quantize_onnx(fp32, data, tmp / "model_int8_ort.onnx", ptq.replace(symmetric=True), validate=validate,
                              progress=progress)  # TensorRT runs symmetric activations only
            to_tensorrt_qdq(r.path, tmp / "model_int8.onnx")  # TensorRT form, checked by lint_tensorrt_qdq
            (tmp / "model_int8_ort.onnx").unlink()
            info["models"]["int8"] = "model_int8.onnx"
            info["precision"] = "int8-qdq"
            info["quantization"] = {
                "calib": ptq.calib, "calib_images": r.calib_images, "per_channel": ptq.per_channel,
                "form": "tensorrt (INT8 zero point 0, float bias, NVIDIA Q/DQ placement: yolo_opt.quant.tensorrt)",
                "activations": "int8 symmetric per-tensor (zero point 0)", "weights": "int8 symmetric per-channel"
                if ptq.per_channel else "int8 symmetric per-tensor", "float_layers": r.excluded_layers,
                "float_tail_nodes": r.tail_nodes,
            }
            if r.fp32_map is not None:
                info["accuracy"], accuracy = _accuracy(r.maps(), data, "ONNX Runtime CPU")
        elif validate and data:
            m32 = validate_onnx(fp32, data)
            info["accuracy"], accuracy = _accuracy({f"fp32_{k}": m32.get(k) for k in ("map", "mask_map")}, data,
                                                   "ONNX Runtime CPU")
        default = "int8" if int8 else "fp16"
        info["engine"] = {"precision": default, "file": f"model_{default}.engine"}
        info["tensorrt"] = SUPPORTED_TENSORRT
        (tmp / "metadata.json").write_text(json.dumps(info, indent=2))
        (tmp / "build_engine.py").write_text(_template("build_engine.py"))
        _write_scripts(tmp, "infer.py")
        (tmp / "build_engine.sh").write_text(TRTEXEC.format(
            precision=default, int8_onnx=info["models"].get("int8", "none"), workspace_mib=int(workspace * 1024)))
        for f in ("build_engine.py", "build_engine.sh"):
            os.chmod(tmp / f, 0o755)
        int8_line = "model_int8.onnx (INT8 Q/DQ graph in TensorRT form), " if int8 else ""
        (tmp / "README.txt").write_text(README.format(
            name=Path(model).name, int8_line=int8_line, engine=info["engine"]["file"], precision_default=default,
            precision=info["precision"], imgsz=info["imgsz"], nc=len(info["names"]), accuracy=accuracy,
            output=info["output_format"]))
    return out


OPENVINO_README = """yolo-opt OpenVINO bundle ({name})
=============================================
Files: model_fp32_openvino_model/ (FP32 IR), model_int8_openvino_model/ (NNCF INT8 IR), metadata.json,
infer.py + yolo_decode.py (run a model on an image: letterbox, decode, masks).

On the device (an Intel CPU, iGPU or NPU; needs only openvino, numpy and OpenCV):

  python3 infer.py path/to/image.jpg                    (writes detections/image_det.jpg; default model {default}, device {device})
  python3 infer.py image.jpg --model model_fp32_openvino_model --device GPU

Each model folder also loads in Ultralytics: YOLO("model_int8_openvino_model").predict(...).

Image size: {imgsz}. Classes: {nc}. Output: {output}
Validated here: {accuracy}
"""


def make_openvino_bundle(
    model: str | Path,
    data: str | Path | None,
    out: str | Path,
    ptq: PTQOptions | None = None,
    *,
    imgsz: int = DEFAULT_IMGSZ,
    device: str | None = None,
    validate: bool = True,
    progress: bool = True,
    end2end: bool | None = None,
    **shortcuts: Any,
) -> Path:
    """Write an OpenVINO deployment folder for an Ultralytics `.pt` (pruned models too).

    The folder holds the FP32 IR (Ultralytics' exporter) and the NNCF INT8 IR (accuracy-controlled under
    `max_map_drop`), each in Ultralytics' `*_openvino_model/` layout, `metadata.json` (names, imgsz, output
    format, models, device, measured mAP), `infer.py` (OpenVINO + numpy + OpenCV) with `yolo_decode.py` and
    `README.txt`; it is built in a temporary folder and renamed into place, so a failure never leaves a
    half-written bundle. `ptq`: `calib_images` and `max_map_drop` (or their keyword shortcuts); `end2end`: as in
    `make_bundle`.
    """
    import yaml

    from yolo_opt.data.calib import calibration_files
    from yolo_opt.deploy.openvino import export_openvino
    from yolo_opt.io.openvino import openvino_device, require

    ptq = PTQOptions.from_kwargs(ptq, **shortcuts)
    require("openvino"), require("nncf")
    if not out:
        raise ConfigError("out= is required for a bundle, e.g. out=openvino_bundle")
    out = Path(out)
    owned_folder(out, "OpenVINO bundle")  # a folder of the user's is refused before any work (and again before the swap)
    dev = openvino_device(device)
    info: dict[str, Any] = _model_info(model, imgsz, end2end)
    calibration_files(data, ptq.calib_images)  # fail fast on no/empty data before exporting anything
    with atomic_folder(out, "OpenVINO bundle") as tmp:
        fp32 = export_openvino(model, tmp / "model_fp32_openvino_model", imgsz, device=dev, data=data,
                               validate=validate, progress=progress, end2end=info["end2end"])
        meta = yaml.safe_load((fp32.path / "metadata.yaml").read_text()) or {}
        _head(info, model, bool(meta.get("end2end", False)))
        int8 = export_openvino(model, tmp / "model_int8_openvino_model", imgsz, int8=True, data=data,
                               calib_images=ptq.calib_images, max_map_drop=ptq.max_map_drop, device=dev,
                               validate=validate,
                               progress=progress, fp32=fp32.path)
        info.update(models={"fp32": fp32.path.name, "int8": int8.path.name}, precision="int8", device=dev,
                    quantization={"tool": "nncf", "preset": "mixed", "calib_images": int8.calib_images,
                                  "max_map_drop": ptq.max_map_drop, "float_ops": int8.float_ops})
        accuracy = "not validated"
        if int8.fp32_map is not None:
            info["accuracy"], accuracy = _accuracy(int8.maps(), data, f"OpenVINO {dev}")
        (tmp / "metadata.json").write_text(json.dumps(info, indent=2))
        _write_scripts(tmp, "infer_openvino.py")
        (tmp / "README.txt").write_text(OPENVINO_README.format(
            name=Path(model).name, default=info["models"]["int8"], device=dev, imgsz=info["imgsz"],
            nc=len(info["names"]), accuracy=accuracy, output=info["output_format"]))
    return out
