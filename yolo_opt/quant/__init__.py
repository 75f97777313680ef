"""Quantization: QAT (Ultralytics' ModelOpt fake-quant, run through yolo-opt's trainer) and its QDQ ONNX."""

from yolo_opt.quant.qat import count_qdq, export_qat_onnx

__all__ = ["count_qdq", "export_qat_onnx"]
