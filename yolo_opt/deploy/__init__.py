"""Deployment: FP32 ONNX export, INT8 export, TensorRT engines and Jetson bundles.

    export     the `yolo-opt export` verb (`export(model, ExportOptions(...), data)`)
    onnx       FP32 ONNX through Ultralytics' exporter
    tensorrt   TensorRT engines (TensorRT imported lazily)
    bundle     the Jetson folder and its scripts (templates/)
    select     `yolo-opt deploy`: the fastest deployable form on this machine, chosen by measurement
"""

from yolo_opt.deploy.bundle import make_bundle
from yolo_opt.deploy.export import export
from yolo_opt.deploy.onnx import export_onnx
from yolo_opt.deploy.tensorrt import build_engine, format_calibration_cache, parse_calibration_cache

__all__ = ["build_engine", "export", "export_onnx", "format_calibration_cache", "make_bundle",
           "parse_calibration_cache"]
