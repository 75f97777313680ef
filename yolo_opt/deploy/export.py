"""`export()`: the `yolo-opt export` verb for yolo-opt's formats (INT8 ONNX, TensorRT engine, Jetson bundle)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ultralytics.utils import LOGGER

from yolo_opt.errors import ConfigError
from yolo_opt.options import ExportOptions
from yolo_opt.validation import describe


def export(model: str | Path, opts: ExportOptions | None = None, data: str | Path | None = None,
           verbose: bool = True, bundle: bool = False, onnx_args: dict[str, Any] | None = None,
           **shortcuts: Any) -> dict[str, Any]:
    """An FP32 or INT8 QDQ ONNX, a TensorRT engine, an OpenVINO IR, or a Jetson / OpenVINO bundle.

    Args:
        model: Ultralytics `.pt` (pruned or not).
        opts: `format` (onnx, engine, jetson, openvino), `int8`, `imgsz`, `out` (the .onnx, .engine, OpenVINO or
            bundle folder; nothing is written anywhere else), `workspace` (TensorRT GiB), `device` (OpenVINO) and
            the PTQ options in `opts.ptq`; or their keyword shortcuts
            (`export("best.pt", int8=True, calib="entropy", data="data.yaml")`).
        data: data.yaml: its train split calibrates, its val split validates.
        verbose: Log the summary (Ultralytics' LOGGER).
        bundle: With format=openvino, the deployment folder (FP32 + INT8 IR, metadata.json, infer.py) instead of
            one model folder (format=jetson is always a bundle).
        onnx_args: Other Ultralytics export arguments of an FP32 `format=onnx` export (`opset`, `dynamic`, `nms`,
            ...); the defaults are batch 1 and static shapes.

    Returns:
        A report dict (paths, mAPs, layers kept in float).
    """
    from yolo_opt.arch import adapter
    from yolo_opt.data.calib import calibration_files
    from yolo_opt.data.checks import check_dataset
    from yolo_opt.deploy.bundle import make_bundle
    from yolo_opt.deploy.onnx import export_onnx
    from yolo_opt.deploy.tensorrt import build_engine
    from yolo_opt.io.checkpoint import load_model, trained_imgsz
    from yolo_opt.io.files import check_output
    from yolo_opt.quant.ptq import quantize_onnx

    opts = ExportOptions.from_kwargs(opts, **shortcuts)
    if onnx_args and (opts.int8 or opts.format != "onnx"):
        raise ConfigError(f"{', '.join(onnx_args)}: Ultralytics ONNX arguments apply to an FP32 format=onnx export only")
    if opts.format == "engine":  # before the ONNX export and INT8 validation, which would leave their folders
        from yolo_opt.deploy.tensorrt import import_tensorrt

        import_tensorrt()
    net = load_model(model)
    if opts.imgsz is None:  # as `yolo export`: the size the checkpoint was trained at
        opts = opts.replace(imgsz=trained_imgsz(model))
    ptq, fmt, int8, imgsz, out = opts.ptq, opts.format, opts.int8, opts.imgsz, opts.out
    adapter(net).exporter_args(opts.end2end, (onnx_args or {}).get("nms"))  # a head the model lacks: refused now
    if out:  # an existing folder, the input itself or an unwritable place fails now, not after the calibration
        check_output(out, [model], folder=fmt in ("jetson", "openvino"),
                     example=("model_int8.onnx" if int8 else "model.onnx") if fmt == "onnx" else "model.engine")
    if int8 or fmt == "jetson":  # one clear error before any work: the classes, and usable train and val images
        check_dataset(data, getattr(net, "names", None))
        calibration_files(data, ptq.calib_images)
    if fmt == "openvino":
        return _openvino(model, opts, data, verbose=verbose, bundle=bundle)
    if fmt == "jetson":
        folder = make_bundle(model, data, out or Path(model).with_name(Path(model).stem + "_jetson"), ptq,
                             imgsz=imgsz, int8=True, workspace=opts.workspace, end2end=opts.end2end)
        if verbose:
            LOGGER.info(f"Jetson bundle written: {folder} (see {folder / 'README.txt'})")
        return {"bundle": str(folder)}
    report: dict[str, Any] = {}
    if not int8:
        onnx_out = (Path(out).with_suffix(".onnx") if fmt == "engine" else Path(out)) if out else None
        fp32 = export_onnx(model, onnx_out, imgsz=imgsz, end2end=opts.end2end, **(onnx_args or {}))
        report["fp32"] = str(fp32)
        src = fp32
        if verbose and fmt == "onnx":
            LOGGER.info(f"FP32 ONNX: {fp32}")
    else:
        # the FP32 ONNX is only a step here: made in a scratch folder, so nothing is written (or replaced) next to
        # the model; the INT8 model goes to out= (its .onnx beside an engine), else next to the model
        int8_out = (Path(out) if fmt == "onnx" else Path(out).with_suffix(".onnx")) if out else \
            Path(model).with_name(f"{Path(model).stem}_int8.onnx")
        with tempfile.TemporaryDirectory(prefix="yolo-opt-export-") as scratch:
            fp32 = export_onnx(model, Path(scratch) / f"{Path(model).stem}.onnx", imgsz=imgsz, end2end=opts.end2end)
            if fmt == "engine" and ptq.calib == "legacy":
                engine = build_engine(fp32, out, int8=int8, workspace=opts.workspace, calib="legacy", data=data,
                                      calib_images=ptq.calib_images)
                return {"engine": str(engine)}
            # TensorRT runs symmetric activations only
            r = quantize_onnx(fp32, data, int8_out, ptq.replace(symmetric=True) if fmt == "engine" else ptq)
        report.update(r.as_dict())
        report.pop("fp32_path")  # removed with the scratch folder
        src = r.path
        if verbose:
            line = f"INT8 QDQ ONNX: {r.path} ({ptq.calib}, {r.calib_images} images)"
            if r.fp32_map is not None:
                line += f"; {describe(r.maps())}"
            LOGGER.info(line)
            if r.excluded_layers:
                LOGGER.info(f"kept in float to meet max_map_drop={ptq.max_map_drop}: {', '.join(r.excluded_layers)}")
    if fmt == "engine":
        engine = build_engine(src, out if out else Path(src).with_suffix(".engine"), int8=int8,
                              workspace=opts.workspace)
        report["engine"] = str(engine)
        if verbose:
            LOGGER.info(f"TensorRT engine: {engine}")
    return report


def _openvino(model: str | Path, opts: ExportOptions, data: str | Path | None, *, verbose: bool,
              bundle: bool) -> dict[str, Any]:
    """format=openvino: one IR folder (FP32, or NNCF INT8 with int8=True), or the OpenVINO bundle."""
    from yolo_opt.deploy.openvino import export_openvino
    from yolo_opt.io.openvino import require

    require("openvino")  # the one-line install hint before anything else
    ptq = opts.ptq
    if bundle:
        from yolo_opt.deploy.bundle import make_openvino_bundle

        folder = make_openvino_bundle(model, data, opts.out or Path(model).with_name(Path(model).stem + "_openvino"),
                                      ptq, imgsz=opts.imgsz, device=opts.device, end2end=opts.end2end)
        if verbose:
            LOGGER.info(f"OpenVINO bundle written: {folder} (see {folder / 'README.txt'})")
        return {"bundle": str(folder)}
    r = export_openvino(model, opts.out, opts.imgsz, int8=opts.int8, data=data, calib_images=ptq.calib_images,
                        max_map_drop=ptq.max_map_drop, device=opts.device, end2end=opts.end2end)
    if verbose:
        line = f"OpenVINO {r.precision.upper()} IR: {r.path} (device {r.device})"
        if r.fp32_map is not None:
            line += f"; {describe(r.maps())}"
        LOGGER.info(line)
    return {"openvino": str(r.path), **r.as_dict()}
