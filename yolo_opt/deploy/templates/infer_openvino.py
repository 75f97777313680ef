#!/usr/bin/env python3
"""Run this bundle's model on one image with OpenVINO: letterbox, inference, decode (NMS-free or with NMS; masks),
draw.

    python3 infer.py image.jpg                                   # the bundle's default model and device
    python3 infer.py image.jpg --model model_fp32_openvino_model --device GPU --out result.jpg

Needs openvino + numpy + OpenCV only (the same pre/post-processing as the Ultralytics validator: yolo_decode.py).
"""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # this bundle's yolo_decode.py, also under `python -I` (no script folder on the path)

from yolo_decode import load_metadata, run  # noqa: E402 (the bundle's pre/post-processing)


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
    meta = load_metadata()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image")
    ap.add_argument("--model", default=meta["models"][meta["precision"]],
                    help="model folder in this bundle (default: the bundle's precision)")
    ap.add_argument("--device", default=meta.get("device", "CPU"), help="OpenVINO device: CPU, GPU, NPU, AUTO")
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.45)
    ap.add_argument("--out", help="annotated image (default: detections/<image>_det.jpg in the current folder)")
    ap.add_argument("--json", action="store_true", help="print detections as JSON")
    args = ap.parse_args()

    model_dir = Path(args.model) if Path(args.model).is_absolute() else HERE / args.model
    compiled = load(model_dir, args.device)
    run(args.image, lambda x: [compiled(x)[port] for port in compiled.outputs], meta, conf=args.conf, iou=args.iou,
        out=args.out, as_json=args.json)


if __name__ == "__main__":
    main()
