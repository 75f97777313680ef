#!/usr/bin/env python3
"""Run this bundle's model on one image: letterbox, inference, decode (NMS-free or with NMS; masks), draw.

    python3 infer.py image.jpg                             # the bundle's engine (model_int8.engine for INT8)
    python3 infer.py image.jpg --engine model_fp16.engine --out result.jpg
    python3 infer.py image.jpg --onnx model_int8.onnx      # same pipeline on ONNX Runtime (host check)

Needs tensorrt (8.5+, 10.x or 11.x) + numpy + OpenCV (CUDA through the CUDA runtime library, via ctypes); the
--onnx check needs onnxruntime instead of tensorrt. Pre/post-processing: yolo_decode.py, beside this file.
"""

import argparse
import ctypes
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # this bundle's yolo_decode.py, also under `python -I` (no script folder on the path)

from yolo_decode import load_metadata, run  # noqa: E402 (the bundle's pre/post-processing)


class TRTRunner:
    """Minimal TensorRT runner (8.5+, 10.x, 11.x: the I/O-tensor API): CUDA memory and a stream through libcudart."""

    H2D, D2H = 1, 2  # cudaMemcpyKind

    def __init__(self, engine_path):
        import tensorrt as trt

        for lib in ("libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"):
            try:
                self.cuda = ctypes.CDLL(lib)
                break
            except OSError:
                continue
        else:
            raise SystemExit("libcudart.so not found (install the CUDA runtime / JetPack)")
        engine_path = Path(engine_path)
        if not engine_path.exists():
            raise SystemExit(f"engine {engine_path} not found; build it first: python3 build_engine.py")
        self.trt, self.host, self.dev = trt, {}, {}
        self.stream = ctypes.c_void_p()
        self._check(self.cuda.cudaStreamCreate(ctypes.byref(self.stream)), "cudaStreamCreate")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:  # serialized by another TensorRT version or for another GPU
            raise SystemExit(f"TensorRT {trt.__version__} cannot load {engine_path.name}: it was built by another "
                             f"TensorRT version or for another GPU; rebuild it here with: python3 build_engine.py")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise SystemExit("TensorRT could not create an execution context (out of GPU memory?)")
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in self.names:
            shape = tuple(self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise SystemExit(f"engine tensor {name} has a dynamic shape {shape}; build it from a static ONNX")
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            self.host[name] = np.empty(shape, dtype=dtype)
            ptr = ctypes.c_void_p()
            self._check(self.cuda.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(self.host[name].nbytes)), "cudaMalloc")
            self.dev[name] = ptr
            if not self.context.set_tensor_address(name, ptr.value):
                raise SystemExit(f"TensorRT refused the device address of {name}")
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]

    def _check(self, code, what):
        if code != 0:
            raise SystemExit(f"{what} failed with CUDA error {code}")

    def __call__(self, x):
        name = self.inputs[0]
        x = np.ascontiguousarray(x, dtype=self.host[name].dtype)
        if x.shape != self.host[name].shape:
            raise SystemExit(f"input shape {x.shape} != engine input {self.host[name].shape}")
        self.host[name][...] = x
        size = ctypes.c_size_t(x.nbytes)
        src = self.host[name].ctypes.data_as(ctypes.c_void_p)
        self._check(self.cuda.cudaMemcpyAsync(self.dev[name], src, size, self.H2D, self.stream), "cudaMemcpyAsync")
        if not self.context.execute_async_v3(self.stream.value):
            raise SystemExit("TensorRT execute_async_v3 failed; see the TensorRT log above")
        for n in self.outputs:
            h = self.host[n]
            dst = h.ctypes.data_as(ctypes.c_void_p)
            self._check(self.cuda.cudaMemcpyAsync(dst, self.dev[n], ctypes.c_size_t(h.nbytes), self.D2H, self.stream),
                        "cudaMemcpyAsync")
        self._check(self.cuda.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [self.host[n].copy() for n in self.outputs]

    def close(self):
        for ptr in self.dev.values():
            self.cuda.cudaFree(ptr)
        self.dev = {}
        if self.stream.value:
            self.cuda.cudaStreamDestroy(self.stream)
            self.stream = ctypes.c_void_p()


class ORTRunner:
    """The same pipeline on ONNX Runtime, to check a bundle on a host without a GPU."""

    def __init__(self, onnx_path):
        import onnxruntime as ort

        self.sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def __call__(self, x):
        return self.sess.run(None, {self.name: x})


def default_engine(meta):
    """The engine build_engine.py writes by default: model_<precision>.engine for the bundle's precision."""
    precision = meta.get("engine", {}).get("precision") or ("int8" if meta["models"].get("int8") else "fp16")
    return f"model_{precision}.engine"


def main():
    meta = load_metadata()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--engine", default=str(HERE / default_engine(meta)),
                    help="TensorRT engine (default: the bundle's, built by build_engine.py)")
    ap.add_argument("--onnx", help="run an ONNX file with ONNX Runtime instead of the engine")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--out", help="annotated image (default: detections/<image>_det.jpg in the current folder)")
    ap.add_argument("--json", action="store_true", help="print detections as JSON")
    args = ap.parse_args()

    runner = ORTRunner(args.onnx) if args.onnx else TRTRunner(args.engine)
    try:
        run(args.image, runner, meta, conf=args.conf, iou=args.iou, out=args.out, as_json=args.json)
    finally:
        if hasattr(runner, "close"):
            runner.close()


if __name__ == "__main__":
    main()
