"""Writing QDQ models with ONNX Runtime's quantizer: the placement and data types our ONNX Runtime form uses."""

from __future__ import annotations

from pathlib import Path

from yolo_opt.quant.calibrate import calibration_method

QUANT_OPS = ("Conv", "Sigmoid", "Mul", "Add", "Concat", "Split", "MaxPool", "Resize", "Slice")
# 7-bit weights (ONNX Runtime's reduce_range). x86 CPUs without VNNI (AVX2 only) multiply U8 x S8 pairs into a
# saturating int16 sum (vpmaddubsw): 255 * 127 * 2 overflows it, 255 * 64 * 2 does not, and 8-bit weights lose
# most of the accuracy there, while in exact arithmetic (VNNI CPUs, TensorRT) the 8th bit is within noise. So one
# file, right on every CPU; 7 bits in the first conv only (NNCF's default fix) is not enough
# (measured: docs/benchmarks.md#int8-activations-and-weights; benchmarks/int8_kernels.py on your CPU).
WEIGHT_REDUCE_RANGE = True


def write_qdq(pre_path: Path, out: Path, cache: Path, *, method: str, per_channel: bool, exclude: list[str],
              symmetric: bool = True) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(pre_path), str(out), calibration_data_reader=None, calibration_cache_path=str(cache),
        quant_format=QuantFormat.QDQ, per_channel=per_channel, reduce_range=WEIGHT_REDUCE_RANGE,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=list(QUANT_OPS), nodes_to_exclude=exclude, calibrate_method=calibration_method(method),
        extra_options={
            # UINT8 activations: ONNX Runtime's CPU QDQ fusion turns U8 graphs into QLinear kernels (S8 activations
            # stayed unfused, slower than FP32). Symmetric ones (zero point 128) are exactly S8 ones with zero point
            # 0, which `to_tensorrt_qdq` writes for TensorRT; asymmetric ones (ONNX Runtime only, as fast) give
            # one-signed tensors (sigmoid, and SiLU's >= -0.28) their 8th bit, which keeps more of the FP32 mAP
            # (measured: docs/benchmarks.md#int8-activations-and-weights).
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


