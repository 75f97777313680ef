#!/usr/bin/env python3
"""Run this bundle's detector on one image: letterbox, inference, box decode, NMS (numpy), draw.

    python3 infer.py image.jpg                             # the bundle's engine (model_int8.engine for INT8)
    python3 infer.py image.jpg --engine model_fp16.engine --out result.jpg
    python3 infer.py image.jpg --onnx model_int8.onnx      # same pipeline on ONNX Runtime (host check)

Needs tensorrt (8.5+, 10.x or 11.x) + numpy + OpenCV (CUDA through the CUDA runtime library, via ctypes); the
--onnx check needs onnxruntime instead of tensorrt.
"""

import argparse
import ctypes
import json
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def letterbox(image, shape):
    """Resize keeping aspect ratio, pad with 114 to `shape` (h, w), centred. Returns image, gain, (pad_w, pad_h)."""
    h, w = image.shape[:2]
    r = min(shape[0] / h, shape[1] / w)
    nh, nw = int(round(h * r)), int(round(w * r))
    if (nh, nw) != (h, w):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    dh, dw = (shape[0] - nh) / 2, (shape[1] - nw) / 2
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return image, r, (left, top)


def preprocess(image, shape):
    im, gain, pad = letterbox(image, shape)
    x = np.ascontiguousarray(im[..., ::-1].transpose(2, 0, 1), dtype=np.float32)[None] / 255.0
    return x, gain, pad


def nms(boxes, scores, iou):
    """Greedy NMS on xyxy boxes; returns kept indices (highest score first)."""
    order = scores.argsort()[::-1]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        order = order[1:][inter / (areas[i] + areas[order[1:]] - inter + 1e-9) <= iou]
    return np.array(keep, dtype=np.int64)


def postprocess(pred, gain, pad, image_shape, conf=0.25, iou=0.45, max_det=300):
    """(1, 4+nc, N) xywh+scores (or end2end (1, N, 6)) -> (M, 6) xyxy, score, class in original image pixels."""
    pred = pred[0]
    if pred.ndim == 2 and pred.shape[-1] == 6 and pred.shape[0] != 6:  # end2end head: already xyxy, score, class
        det = pred[pred[:, 4] > conf]
    else:
        pred = pred.T  # (N, 4+nc)
        scores_all = pred[:, 4:]
        cls = scores_all.argmax(1)
        score = scores_all[np.arange(len(cls)), cls]
        m = score > conf
        xywh, score, cls = pred[m, :4], score[m], cls[m]
        xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
        keep = nms(xyxy + cls[:, None] * 7680.0, score, iou)[:max_det]  # class offset: per-class NMS in one pass
        det = np.concatenate([xyxy[keep], score[keep, None], cls[keep, None].astype(np.float32)], 1)
    det = det.astype(np.float32)
    det[:, [0, 2]] = ((det[:, [0, 2]] - pad[0]) / gain).clip(0, image_shape[1])
    det[:, [1, 3]] = ((det[:, [1, 3]] - pad[1]) / gain).clip(0, image_shape[0])
    return det


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
    meta = json.loads((HERE / "metadata.json").read_text())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--engine", default=str(HERE / default_engine(meta)),
                    help="TensorRT engine (default: the bundle's, built by build_engine.py)")
    ap.add_argument("--onnx", help="run an ONNX file with ONNX Runtime instead of the engine")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--out", help="annotated image (default: <image>_det.jpg)")
    ap.add_argument("--json", action="store_true", help="print detections as JSON")
    args = ap.parse_args()

    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"cannot read image {args.image}")
    shape = meta["imgsz"]
    x, gain, pad = preprocess(image, shape)
    runner = ORTRunner(args.onnx) if args.onnx else TRTRunner(args.engine)
    try:
        det = postprocess(runner(x)[0], gain, pad, image.shape[:2], args.conf, args.iou)
    finally:
        if hasattr(runner, "close"):
            runner.close()
    names = {int(k): v for k, v in meta["names"].items()}
    rows = [{"box": [round(float(v), 1) for v in d[:4]], "score": round(float(d[4]), 4), "class": names.get(int(d[5]), str(int(d[5])))}
            for d in det]
    for d in det:
        x1, y1, x2, y2 = (int(v) for v in d[:4])
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(image, f"{names.get(int(d[5]), int(d[5]))} {d[4]:.2f}", (x1, max(y1 - 3, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 0), 1)
    out = args.out or str(Path(args.image).with_name(Path(args.image).stem + "_det.jpg"))
    cv2.imwrite(out, image)
    print(json.dumps(rows) if args.json else f"{len(rows)} detections -> {out}")


if __name__ == "__main__":
    main()
