#!/usr/bin/env python3
"""Run this bundle's detector on one image with OpenVINO: letterbox, inference, box decode, NMS (numpy), draw.

    python3 infer.py image.jpg                                   # the bundle's default model and device
    python3 infer.py image.jpg --model model_fp32_openvino_model --device GPU --out result.jpg

Needs openvino + numpy + OpenCV only (the same pre/post-processing as the Ultralytics validator).
"""

import argparse
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


def load(model_dir, device):
    """Compile the IR in `model_dir` on `device` (latency mode, batch 1)."""
    import openvino as ov

    core = ov.Core()
    name = device.upper()
    if name != "AUTO" and not any(d == name or d.startswith(name + ".") for d in core.available_devices):
        raise SystemExit(f"OpenVINO device {name} is not available here; available: {', '.join(core.available_devices)}")
    xmls = sorted(Path(model_dir).glob("*.xml"))
    if len(xmls) != 1:
        raise SystemExit(f"{model_dir} must hold one OpenVINO .xml model")
    return core.compile_model(str(xmls[0]), name, {"PERFORMANCE_HINT": "LATENCY"})


def main():
    meta = json.loads((HERE / "metadata.json").read_text())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--model", default=meta["models"][meta["precision"]],
                    help="model folder in this bundle (default: the bundle's precision)")
    ap.add_argument("--device", default=meta.get("device", "CPU"), help="OpenVINO device: CPU, GPU, NPU, AUTO")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--out", help="annotated image (default: <image>_det.jpg)")
    ap.add_argument("--json", action="store_true", help="print detections as JSON")
    args = ap.parse_args()

    image = cv2.imread(args.image)
    if image is None:
        raise SystemExit(f"cannot read image {args.image}")
    x, gain, pad = preprocess(image, meta["imgsz"])
    model_dir = Path(args.model) if Path(args.model).is_absolute() else HERE / args.model
    compiled = load(model_dir, args.device)
    det = postprocess(compiled(x)[compiled.output(0)], gain, pad, image.shape[:2], args.conf, args.iou)
    names = {int(k): v for k, v in meta["names"].items()}
    rows = [{"box": [round(float(v), 1) for v in d[:4]], "score": round(float(d[4]), 4),
             "class": names.get(int(d[5]), str(int(d[5])))} for d in det]
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
