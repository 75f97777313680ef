#!/usr/bin/env python3
"""Pre- and post-processing of this bundle's model, shared by its infer.py: letterbox, then the decode of either
output format (metadata.json "end2end"), masks for a segmentation model, drawing. numpy + OpenCV only.

    end2end   (1, max_det, 6 [+ nm]): x1, y1, x2, y2 (input pixels), score, class [, mask coefficients]; no NMS
    classic   (1, 4 + nc [+ nm], anchors): cx, cy, w, h (input pixels), class scores [, mask coefficients]; NMS here
    masks     a second output (1, nm, h/4, w/4) of prototypes: mask = sigmoid(coefficients @ prototypes)
"""

import json
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent


def load_metadata():
    return json.loads((HERE / "metadata.json").read_text())


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
    """BGR image -> (1, 3, h, w) float32 RGB in [0, 1], letterboxed; with the gain and padding to undo it."""
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


def detections(pred, meta, conf=0.25, iou=0.45, max_det=300):
    """The first output (batch 1) -> (M, 6) xyxy, score, class in input pixels and (M, nm) mask coefficients."""
    pred, nc, nm = pred[0], len(meta["names"]), int(meta.get("nm", 0))
    if meta.get("end2end"):  # NMS-free head: already xyxy, score, class
        keep = pred[:, 4] > conf
        return pred[keep, :6].astype(np.float32), pred[keep, 6:6 + nm].astype(np.float32)
    pred = pred.T  # (anchors, 4 + nc + nm)
    scores_all = pred[:, 4:4 + nc]
    cls = scores_all.argmax(1)
    score = scores_all[np.arange(len(cls)), cls]
    m = score > conf
    xywh, score, cls, coef = pred[m, :4], score[m], cls[m], pred[m, 4 + nc:4 + nc + nm]
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    keep = nms(xyxy + cls[:, None] * 7680.0, score, iou)[:max_det]  # class offset: per-class NMS in one pass
    det = np.concatenate([xyxy[keep], score[keep, None], cls[keep, None].astype(np.float32)], 1)
    return det.astype(np.float32), coef[keep].astype(np.float32)


def masks(coef, proto, det, shape):
    """(M, h, w) boolean masks in input pixels: sigmoid(coefficients @ prototypes) cut to each box at the
    prototypes' resolution, then upsampled (the order Ultralytics' process_mask uses)."""
    nm, mh, mw = proto.shape[-3:]
    if not len(det):
        return np.zeros((0, *shape), dtype=bool)
    probs = 1 / (1 + np.exp(-(coef @ proto.reshape(nm, -1)).reshape(-1, mh, mw)))
    box = det[:, :4] * np.array([mw / shape[1], mh / shape[0], mw / shape[1], mh / shape[0]], dtype=np.float32)
    cols, rows = np.arange(mw)[None, None, :], np.arange(mh)[None, :, None]
    inside = ((cols >= box[:, 0, None, None]) & (cols < box[:, 2, None, None])
              & (rows >= box[:, 1, None, None]) & (rows < box[:, 3, None, None]))
    probs = probs * inside
    return np.stack([cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) > 0.5 for m in probs])


def to_image(det, mask, gain, pad, *, image_shape):
    """Boxes and masks from input pixels back to the original image (undo the letterbox)."""
    det = det.copy()
    det[:, [0, 2]] = ((det[:, [0, 2]] - pad[0]) / gain).clip(0, image_shape[1])
    det[:, [1, 3]] = ((det[:, [1, 3]] - pad[1]) / gain).clip(0, image_shape[0])
    if mask is not None and len(mask):
        h, w = int(round(image_shape[0] * gain)), int(round(image_shape[1] * gain))
        mask = mask[:, pad[1]:pad[1] + h, pad[0]:pad[0] + w]
        mask = np.stack([cv2.resize(m.astype(np.uint8), (image_shape[1], image_shape[0]),
                                    interpolation=cv2.INTER_NEAREST) > 0 for m in mask])
    return det, mask


def postprocess(outputs, meta, gain, pad, *, image_shape, conf=0.25, iou=0.45):
    """The model's outputs -> (M, 6) xyxy, score, class in image pixels, and (M, H, W) masks (None: detection)."""
    det, coef = detections(outputs[0], meta, conf, iou)
    mask = None
    if meta.get("nm") and len(outputs) > 1:
        mask = masks(coef, outputs[1][0], det, meta["imgsz"])
        keep = mask.any((1, 2))  # a detection whose mask is empty is dropped (as Ultralytics' predictor does)
        det, mask = det[keep], mask[keep]
    return to_image(det, mask, gain, pad, image_shape=image_shape)


def run(image_path, infer, meta, *, conf=0.25, iou=0.45, out=None, as_json=False):
    """Read an image, run `infer` (batch in -> list of outputs), decode, draw; prints a summary or JSON rows."""
    image = cv2.imread(str(image_path))
    if image is None:
        raise SystemExit(f"cannot read image {image_path}")
    x, gain, pad = preprocess(image, meta["imgsz"])
    det, mask = postprocess(infer(x), meta, gain, pad, image_shape=image.shape[:2], conf=conf, iou=iou)
    names = {int(k): v for k, v in meta["names"].items()}
    rows = []
    for i, d in enumerate(det):
        row = {"box": [round(float(v), 1) for v in d[:4]], "score": round(float(d[4]), 4),
               "class": names.get(int(d[5]), str(int(d[5])))}
        if mask is not None:
            row["mask_pixels"] = int(mask[i].sum())
            image[mask[i]] = (0.5 * image[mask[i]] + (0, 127, 0)).astype(np.uint8)
        rows.append(row)
        x1, y1, x2, y2 = (int(v) for v in d[:4])
        cv2.rectangle(image, (x1, y1), (x2, y2), (0, 255, 0), 2)
        cv2.putText(image, f"{row['class']} {d[4]:.2f}", (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (0, 255, 0), 1)
    path = Path(out) if out else Path("detections") / f"{Path(image_path).stem}_det.jpg"  # never beside the input
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    print(json.dumps(rows) if as_json else f"{len(rows)} detections -> {path}")
    return rows
