#!/usr/bin/env python3
"""Build a TensorRT engine from this bundle's ONNX model. Needs only the `tensorrt` Python package (JetPack).

    python3 build_engine.py                      # INT8 QDQ model -> model_int8.engine
    python3 build_engine.py --precision fp16     # FP32 ONNX built with FP16 kernels -> model_fp16.engine
"""

import argparse
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    meta = json.loads((HERE / "metadata.json").read_text())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--precision", choices=["int8", "fp16", "fp32"], default="int8" if meta["models"].get("int8") else "fp16")
    ap.add_argument("--onnx", help="ONNX file (default: from metadata.json for the precision)")
    ap.add_argument("--engine", help="output engine (default: model_<precision>.engine)")
    ap.add_argument("--workspace", type=float, default=meta.get("workspace_gib", 2.0), help="GiB")
    args = ap.parse_args()

    import tensorrt as trt

    onnx_file = Path(args.onnx) if args.onnx else HERE / meta["models"]["int8" if args.precision == "int8" else "fp32"]
    engine_file = Path(args.engine) if args.engine else HERE / f"model_{args.precision}.engine"
    logger = trt.Logger(trt.Logger.INFO)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT < 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_file.read_bytes()):
        for i in range(parser.num_errors):
            print(parser.get_error(i))
        raise SystemExit(f"failed to parse {onnx_file}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(args.workspace * (1 << 30)))
    if args.precision in ("int8", "fp16"):
        config.set_flag(trt.BuilderFlag.FP16)  # float tail (box decode) and any layer kept in float
    if args.precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the model's Q/DQ nodes (explicit quantization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SystemExit("engine build failed; see the TensorRT log above")
    tmp = engine_file.with_name(f".{engine_file.name}.tmp")
    tmp.write_bytes(bytes(serialized))
    os.replace(tmp, engine_file)
    print(f"wrote {engine_file} (TensorRT {trt.__version__}, {args.precision})")


if __name__ == "__main__":
    main()
