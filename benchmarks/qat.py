"""QAT / PTQ / distillation benchmark on the generated dataset, in one run.

The pruned model (prune ratio --ratio inside the trainer, --ft-epochs of recovery) is quantized to INT8 two ways:
(a) post-training calibration (full-graph QDQ via ONNX Runtime), (b) quantization-aware fine-tuning (--qat-epochs,
Ultralytics' ModelOpt fake-quant) exported to QDQ ONNX with the QAT scales. Recovery (c) with vs without
distillation from the unpruned model. mAP50-95 of every ONNX from the Ultralytics validator, relative to the FP32
ONNX of the same pruned model. Reuses the baseline and runs of benchmarks/prune.py when they are in --out.

    python benchmarks/qat.py --out runs/bench/prune
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/prune")
    parser.add_argument("--arch", default="yolov8n")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--method", default="l2")
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--ft-epochs", type=int, default=10)
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--calib", default="minmax,entropy,percentile")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=80)
    args = parser.parse_args()

    from prune import train_run

    from yolo_opt.bench import validate
    from yolo_opt.data import make_dataset
    from yolo_opt.deploy import export_onnx
    from yolo_opt.quant import export_qat_onnx, quantize_onnx

    out = Path(args.out).resolve()
    data = make_dataset(out / "data", seed=0, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz)
    results_path = out / "qat_results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def record(key: str, onnx: Path) -> float:
        if key not in results:
            results[key] = {"file": str(onnx), **validate(onnx, data, args.imgsz)}
            results_path.write_text(json.dumps(results, indent=1))
        return results[key]["map"]

    base = train_run(f"{args.arch}.yaml", data, out, f"{args.arch}-base", args.base_epochs, args.imgsz)
    tag = f"{args.arch}-p{args.ratio}-{args.method}"
    pruned = train_run(str(base), data, out, tag, args.ft_epochs, args.imgsz, prune=args.ratio,
                       prune_method=args.method)
    distilled = train_run(str(base), data, out, f"{tag}-distill", args.ft_epochs, args.imgsz, prune=args.ratio,
                          prune_method=args.method, distill=True)
    for key, pt in (("pruned", pruned), ("pruned+distill", distilled)):
        fp32 = export_onnx(pt, pt.with_name("fp32.onnx"), imgsz=args.imgsz)
        record(f"{key}/fp32", fp32)
        for calib in args.calib.split(","):
            int8 = pt.with_name(f"ptq_{calib}.onnx")
            if not int8.exists():
                quantize_onnx(fp32, data, int8, calib=calib, calib_images=256, validate=False)
            record(f"{key}/ptq-{calib}", int8)
        qat_pt = train_run(str(pt), data, out, f"{pt.parent.parent.name}-qat", args.qat_epochs, args.imgsz,
                           qat=True, lr0=1e-4, optimizer="AdamW", warmup_epochs=0)
        qat_onnx = qat_pt.with_name("qat_int8.onnx")
        if not qat_onnx.exists():
            export_qat_onnx(qat_pt, imgsz=args.imgsz, out=qat_onnx)
        record(f"{key}/qat", qat_onnx)
    print(table(results, record_base=validate(base, data, args.imgsz)["map"]))


def table(results: dict, record_base: float) -> str:
    """mAP50-95 of every INT8 ONNX as a ratio to the FP32 ONNX of the same recovered model."""
    lines = ["| model | precision | mAP50-95 | / FP32 of same model | / unpruned baseline |", "|---|---|---|---|---|"]
    for key, r in results.items():
        group, precision = key.split("/")
        fp32 = results.get(f"{group}/fp32", {}).get("map")
        lines.append(f"| {group} | {precision} | {r['map']:.4f} | {r['map'] / fp32:.3f} | {r['map'] / record_base:.3f} |"
                     if fp32 else f"| {group} | {precision} | {r['map']:.4f} | - | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
