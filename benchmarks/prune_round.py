"""Latency per GFLOPs of pruned models by `prune_round` (channel counts rounded to multiples of 8, 16, 32), on
ONNX Runtime (FP32, yolo-opt INT8) and OpenVINO (FP32, NNCF INT8), batch 1, each runtime in its own process.

    PYTHONPATH=. YOLO_OFFLINE=1 python benchmarks/prune_round.py --model runs/peers/yolov8n-base/weights/best.pt \
        --data runs/peers/data/data.yaml --out runs/prune_round

One-shot pruning (no fine-tuning: latency does not depend on the weights' values); every ratio is to the unpruned
model's FP32 on the same runtime. "lat/GFLOPs" = latency ratio / GFLOPs ratio (1.0: latency follows GFLOPs).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/prune_round")
    ap.add_argument("--prune", type=float, default=0.5)
    ap.add_argument("--rounds-of", default="8,16,32", help="prune_round values")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--calib-images", type=int, default=64)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from yolo_opt.bench.latency import by_runtime
    from yolo_opt.bench.measure import model_stats
    from yolo_opt.deploy import export_onnx
    from yolo_opt.deploy.openvino import export_openvino
    from yolo_opt.quant import quantize_onnx
    from yolo_opt.training import prune_checkpoint

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    pts = {"unpruned": Path(args.model)}
    for r in (int(x) for x in args.rounds_of.split(",")):
        pt = out / f"p{args.prune}_r{r}.pt"
        if not pt.exists():
            prune_checkpoint(args.model, pt, prune=args.prune, imgsz=args.imgsz, prune_round=r)
        pts[f"round {r}"] = pt
    files: dict[str, dict[str, Path]] = {}
    for name, pt in pts.items():
        d = out / name.replace(" ", "_")
        d.mkdir(exist_ok=True)
        f = {"ort_fp32": d / "fp32.onnx", "ort_int8": d / "int8.onnx", "ov_fp32": d / "fp32_openvino_model",
             "ov_int8": d / "int8_openvino_model"}
        if not f["ort_fp32"].exists():
            export_onnx(pt, f["ort_fp32"], imgsz=args.imgsz)
        if not f["ort_int8"].exists():
            quantize_onnx(f["ort_fp32"], args.data, f["ort_int8"], calib_images=args.calib_images, validate=False,
                          progress=False)
        if not f["ov_fp32"].exists():
            export_openvino(pt, f["ov_fp32"], args.imgsz, validate=False, progress=False)
        if not f["ov_int8"].exists():
            export_openvino(pt, f["ov_int8"], args.imgsz, int8=True, data=args.data, calib_images=args.calib_images,
                            validate=False, progress=False, fp32=f["ov_fp32"])
        files[name] = f
    paths = [str(p) for f in files.values() for p in f.values()]
    ms = dict(zip(paths, (t["ms"] for t in by_runtime(paths, imgsz=args.imgsz, runs=args.runs, rounds=args.rounds,
                                                       threads=args.threads)), strict=True))
    g0 = model_stats(pts["unpruned"], args.imgsz)["gflops"]
    rows = []
    for name, f in files.items():
        g = model_stats(pts[name], args.imgsz)["gflops"]
        row = {"model": name, "gflops": g, "gflops_ratio": g / g0}
        for k in f:
            ref = files["unpruned"]["ort_fp32" if k.startswith("ort") else "ov_fp32"]
            row[f"{k}_ms"] = ms[str(f[k])]
            row[f"{k}_ratio"] = ms[str(f[k])] / ms[str(ref)]
        rows.append(row)
    lines = [f"prune={args.prune}, {args.imgsz} px, batch 1, {args.threads} threads, median of {args.rounds} "
             f"interleaved rounds x {args.runs} calls; ratios to the unpruned FP32 on the same runtime", "",
             "| model | GFLOPs (x) | ORT FP32 (x, lat/GFLOPs) | ORT INT8 (x; vs own FP32) | OpenVINO FP32 (x, lat/GFLOPs) "
             "| OpenVINO INT8 (x; vs own FP32) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['gflops']:.2f} ({r['gflops_ratio']:.2f}) | {r['ort_fp32_ms']:.1f} ms "
            f"({r['ort_fp32_ratio']:.2f}, {r['ort_fp32_ratio'] / r['gflops_ratio']:.2f}) | {r['ort_int8_ms']:.1f} ms "
            f"({r['ort_int8_ratio']:.2f}; {r['ort_int8_ms'] / r['ort_fp32_ms']:.2f}) | {r['ov_fp32_ms']:.1f} ms "
            f"({r['ov_fp32_ratio']:.2f}, {r['ov_fp32_ratio'] / r['gflops_ratio']:.2f}) | {r['ov_int8_ms']:.1f} ms "
            f"({r['ov_int8_ratio']:.2f}; {r['ov_int8_ms'] / r['ov_fp32_ms']:.2f}) |")
    table = "\n".join(lines)
    print(table)
    (out / "prune_round.md").write_text(table + "\n")
    (out / "prune_round.json").write_text(json.dumps({"settings": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
