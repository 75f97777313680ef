"""Writing QDQ models with ONNX Runtime's quantizer: the placement and data types our ONNX Runtime form uses."""

from __future__ import annotations

from pathlib import Path

from yolo_opt.quant.calibrate import calibration_method

QUANT_OPS = ("Conv", "Sigmoid", "Mul", "Add", "Concat", "Split", "MaxPool", "Resize", "Slice")
# 7-bit weights (ONNX Runtime's reduce_range). x86 CPUs without VNNI (AVX2 only) multiply U8 x S8 pairs into a
# saturating int16 sum (vpmaddubsw): 255 * 127 * 2 overflows it, 255 * 64 * 2 does not. With 8-bit weights ONNX
# Runtime's INT8 convolutions there gave a converged yolov8n 0.50x its FP32 mAP50-95 (7-bit: 0.99x); in exact arithmetic
# (VNNI CPUs, TensorRT) the 8th bit moved mAP50-95 by -0.005 and +0.005 on two models, noise. So one file, right on
# every CPU (benchmarks/int8_kernels.py). 7 bits in the first conv only (NNCF's default fix) was not enough here.
WEIGHT_REDUCE_RANGE = True


def write_qdq(pre_path: Path, out: Path, cache: Path, method: str, per_channel: bool, exclude: list[str],
              symmetric: bool = True) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre_path), str(out), calibration_data_reader=None, calibration_cache_path=str(cache),
        quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=WEIGHT_REDUCE_RANGE,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=list(QUANT_OPS), nodes_to_exclude=exclude, calibrate_method=calibration_method(method),
        extra_options={
            # UINT8 activations: ONNX Runtime's CPU QDQ fusion turns U8 graphs into QLinear kernels (S8 activations
            # stayed unfused, 2x slower than FP32, in ORT 1.32). Symmetric ones (zero point 128) are exactly S8 ones
            # with zero point 0, which `to_tensorrt_qdq` writes for TensorRT; asymmetric ones (ONNX Runtime only,
            # as fast) give one-signed tensors (sigmoid, and SiLU's >= -0.28) their 8th bit: YOLO26n kept 0.983 of
            # its FP32 mAP50-95 with them against 0.961 symmetric, its 0.5x-pruned copy 0.984 against 0.888.
            "ActivationSymmetric": symmetric,
            "WeightSymmetric": True,
            "ForceQuantizeNoInputCheck": True,  # MaxPool/Split/Resize stay INT8 inside the graph
            "QDQKeepRemovableActivations": False,  # no Relu/Clip in YOLO; SiLU is Sigmoid*Mul, quantized as such
        },
    )


def copy_metadata(src, dst_path: Path, extra: dict[str, str]) -> None:
    import onnx

    q = onnx.load(str(dst_path))
    del q.metadata_props[:]
    for p in src.metadata_props:
        q.metadata_props.add(key=p.key, value=p.value)
    for k, v in extra.items():
        q.metadata_props.add(key=k, value=v)
    onnx.save(q, str(dst_path))


