#!/usr/bin/env python3
"""Build a TensorRT engine from this bundle's ONNX model. Needs only the `tensorrt` Python package (JetPack).

    python3 build_engine.py                      # the bundle's default (INT8 Q/DQ model -> model_int8.engine)
    python3 build_engine.py --precision fp16     # FP32 ONNX with FP16 kernels -> model_fp16.engine (TensorRT < 11)
    python3 build_engine.py --onnx model_int8_qat.onnx --engine model_qat.engine

The installed TensorRT's major version (trt.__version__) picks the code path:
  8.x   (JetPack 5.1: 8.5, JetPack 6.0: 8.6)  explicit-batch network (EXPLICIT_BATCH flag); INT8 and FP16 builder
        flags (FP16 for the layers the Q/DQ model keeps in float)
  10.x  (JetPack 6.1/6.2: 10.3, JetPack 7: 10.x)  explicit batch is the only mode (no flag); the same builder flags
        (deprecated from 10.12, which only warns)
  11.x  (x86/SBSA; JetPack is not supported as of TensorRT 11.4)  strongly typed networks only: no precision flags.
        INT8 comes from the model's Q/DQ nodes; FP16 needs an FP16-typed ONNX (ModelOpt AutoCast), FP32 otherwise
"""

import argparse
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


class BuildError(RuntimeError):
    """The ONNX model cannot be parsed or built with the installed TensorRT (one line, names the fix)."""


def tensorrt_major(version):
    """Major version of a TensorRT version string ('8.6.1' -> 8, '10.3.0.26' -> 10)."""
    return int(str(version).split(".")[0])


def network_flags(trt, major):
    """`create_network` flags: explicit batch on 8.x, none on 10.x, strongly typed on 11+ (its only mode)."""
    if major < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if major < 11:
        return 0  # explicit batch is the only mode; EXPLICIT_BATCH is deprecated and ignored
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # accepted and implied on 11


def _network_types(trt, network):
    """(has Q/DQ layers, has FP16 tensors) of a parsed network: what precision a strongly typed build gets."""
    quantized = half = False
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        quantized = quantized or layer.type == trt.LayerType.QUANTIZE
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            half = half or tensor.dtype == trt.DataType.HALF
    return quantized, half


def build_serialized(trt, onnx_bytes, int8=True, fp16=True, workspace_gib=None, calibrator=None, verbose=False):
    """Parse an ONNX model and build a serialized engine (bytes) with the installed TensorRT.

    Args:
        trt: The imported `tensorrt` module.
        onnx_bytes: The ONNX model (for INT8: a Q/DQ model in TensorRT form, or FP32 with `calibrator`).
        int8: INT8 precision (8.x/10.x: INT8 flag; 11: requires Q/DQ in the model).
        fp16: FP16 for layers not in INT8 (8.x/10.x: FP16 flag; 11: requires an FP16-typed model unless int8).
        workspace_gib: Builder workspace limit in GiB (None: TensorRT's default).
        calibrator: A legacy IInt8Calibrator (8.x/10.x only; removed in TensorRT 11).
        verbose: INFO-level TensorRT log instead of WARNING.

    Raises:
        BuildError: Parse or build failure, or a precision this TensorRT cannot give this model.
    """
    major = tensorrt_major(trt.__version__)
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt, major))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT {trt.__version__} cannot parse the ONNX model: {errors[:400]}")
    config = builder.create_builder_config()
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if major < 11:
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)  # float tail (box decode) and any layer kept in float
        if int8:
            config.set_flag(trt.BuilderFlag.INT8)  # scales from the Q/DQ nodes (explicit quantization) ...
            if calibrator is not None:
                config.int8_calibrator = calibrator  # ... or from the legacy calibrator (implicit quantization)
    else:
        if calibrator is not None:
            raise BuildError(f"TensorRT {trt.__version__} has no INT8 calibrator (removed in 11); "
                             "use the Q/DQ model (explicit quantization)")
        quantized, half = _network_types(trt, network)
        if int8 and not quantized:
            raise BuildError(f"TensorRT {trt.__version__} builds INT8 only from Q/DQ nodes and this model has none; "
                             "use the bundle's model_int8.onnx")
        if fp16 and not int8 and not half:
            raise BuildError(f"TensorRT {trt.__version__} builds strongly typed networks: FP16 needs an FP16 ONNX "
                             "(python -m modelopt.onnx.autocast --onnx_path model_fp32.onnx --output_path "
                             "model_fp16.onnx, then --onnx model_fp16.onnx), or use --precision fp32 or int8")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT {trt.__version__} failed to build the engine; see the TensorRT log above")
    return bytes(serialized)


def default_precision(meta):
    """The bundle's default engine precision: int8 when it carries the INT8 model, else fp16."""
    return meta.get("engine", {}).get("precision") or ("int8" if meta["models"].get("int8") else "fp16")


def main():
    meta = json.loads((HERE / "metadata.json").read_text())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=["int8", "fp16", "fp32"], default=default_precision(meta))
    ap.add_argument("--onnx", help="ONNX file (default: from metadata.json for the precision)")
    ap.add_argument("--engine", help="output engine (default: model_<precision>.engine)")
    ap.add_argument("--workspace", type=float, default=meta.get("workspace_gib", 2.0), help="GiB")
    ap.add_argument("--verbose", action="store_true", help="TensorRT INFO log")
    args = ap.parse_args()

    import tensorrt as trt

    key = "int8" if args.precision == "int8" else "fp32"
    if key not in meta["models"]:
        raise SystemExit(f"this bundle has no {key} model; choose another --precision or pass --onnx")
    onnx_file = Path(args.onnx) if args.onnx else HERE / meta["models"][key]
    engine_file = Path(args.engine) if args.engine else HERE / f"model_{args.precision}.engine"
    major = tensorrt_major(trt.__version__)
    if major < 10:
        path = "explicit batch, precision flags"
    elif major < 11:
        path = "precision flags"
    else:
        path = "strongly typed, precision from the model"
    print(f"TensorRT {trt.__version__} ({path}): building {onnx_file.name} as {args.precision}")
    try:
        payload = build_serialized(trt, onnx_file.read_bytes(), int8=args.precision == "int8",
                                   fp16=args.precision in ("int8", "fp16"), workspace_gib=args.workspace,
                                   verbose=args.verbose)
    except BuildError as e:
        raise SystemExit(str(e)) from None
    tmp = engine_file.with_name(f".{engine_file.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, engine_file)
    print(f"wrote {engine_file} (TensorRT {trt.__version__}, {args.precision})")


if __name__ == "__main__":
    main()
