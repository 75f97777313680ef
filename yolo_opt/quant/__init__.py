"""Quantization: post-training INT8 (graph analysis, calibration, QDQ writing, accuracy control) and QAT.

    graph      feature convs, the float decode tail, conv+SiLU layers, shared Concat ranges
    calibrate  activation ranges from ONNX Runtime's calibrators, in bounded memory
    qdq        the QDQ writer of our ONNX Runtime form
    tensorrt   the TensorRT form of a QDQ model (INT8 zero point 0, float bias, NVIDIA placement) and its lint
    ptq        `quantize_onnx`: calibrate, write, validate, keep sensitive layers float to meet `max_map_drop`
    qat        the QDQ ONNX of a quantization-aware-trained checkpoint
"""

from yolo_opt.quant.ptq import QuantizeResult, quantization_sensitivity, quantize_onnx
from yolo_opt.quant.qat import count_qdq, export_qat_onnx
from yolo_opt.quant.tensorrt import lint_tensorrt_qdq, to_tensorrt_qdq

__all__ = ["QuantizeResult", "count_qdq", "export_qat_onnx", "lint_tensorrt_qdq", "quantization_sensitivity",
           "quantize_onnx", "to_tensorrt_qdq"]
