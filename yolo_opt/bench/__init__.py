"""Measurements: params, GFLOPs, file size, mAP (Ultralytics validator) and latency (PyTorch / ONNX Runtime)."""

from yolo_opt.bench.measure import model_stats, onnx_latency, torch_latency, validate

__all__ = ["model_stats", "onnx_latency", "torch_latency", "validate"]
