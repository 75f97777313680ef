"""Writing QDQ models with ONNX Runtime's quantizer: the placement and data types our ONNX Runtime form uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolo_opt.errors import DeployError
from yolo_opt.quant.calibrate import calibration_method

QUANT_OPS = ("Conv", "Sigmoid", "Mul", "Add", "Concat", "Split", "MaxPool", "Resize", "Slice")


def write_qdq(pre_path: Path, out: Path, cache: Path, method: str, per_channel: bool, exclude: list[str]) -> None:
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
    """Rewrite a symmetric-UINT8-activation QDQ model (zero point 128) to INT8 activations (zero point 0), losslessly.

    TensorRT's explicit quantization accepts only INT8 Q/DQ with zero point 0; `q_u8 = q_s8 + 128` with the same scale,
    so both graphs compute the same values. The file is written atomically.

    Raises:
        DeployError: An activation zero point is not 128 (asymmetric quantization cannot be converted).
    """
    import onnx
    from onnx import numpy_helper

    from yolo_opt.io.files import atomic_path
    from yolo_opt.io.onnx import load_onnx

    model = load_onnx(src, check=False)
    inits = {i.name: i for i in model.graph.initializer}
    zps = {n.input[2] for n in model.graph.node if n.op_type in {"QuantizeLinear", "DequantizeLinear"} and len(n.input) > 2}
    for name in zps:
        init = inits.get(name)
        if init is None or init.data_type != onnx.TensorProto.UINT8:
            continue
        value = numpy_helper.to_array(init)
        if not np.all(value == 128):
            raise DeployError(f"{src}: activation zero point {name} is not 128; re-quantize with symmetric activations")
        init.CopyFrom(numpy_helper.from_array(np.zeros(value.shape, dtype=np.int8), name))
    for p in model.metadata_props:
        if p.key == "yolo_opt_precision":
            p.value = "int8-qdq-tensorrt"
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return dst


def copy_metadata(src, dst_path: Path, extra: dict[str, str]) -> None:
    import onnx

    q = onnx.load(str(dst_path))
    del q.metadata_props[:]
    for p in src.metadata_props:
        q.metadata_props.add(key=p.key, value=p.value)
    for k, v in extra.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(dst_path))


