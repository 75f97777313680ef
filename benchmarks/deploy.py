"""Deploy benchmark: FP32 vs INT8 QDQ ONNX (each calibration) vs Ultralytics' own INT8 ONNX, baseline and pruned.

    PYTHONPATH=. YOLO_OFFLINE=1 python benchmarks/deploy.py --model best.pt --data data.yaml \
        --imgsz 160 --lat-imgsz 320 --out runs/bench_deploy

mAP50-95 from the Ultralytics validator on the .onnx at --imgsz; ONNX Runtime CPU latency (batch 1, warm-up, median
of interleaved rounds of timed runs) at --lat-imgsz. Ratios are to the same model's FP32 ONNX. Writes JSON + Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def ultralytics_int8(pt: Path, data: str, imgsz: int, workdir: Path) -> Path:
    from ultralytics import YOLO

    d = workdir / f"ul_{imgsz}"
    d.mkdir(parents=True, exist_ok=True)
    local = d / pt.name
    shutil.copyfile(pt, local)
    return Path(YOLO(str(local)).export(format="onnx", quantize=8, data=data, imgsz=imgsz, batch=1))


def artefacts(name: str, pt: Path, data: str, imgsz: int, workdir: Path, calibs: list[str],
              n_calib: int) -> dict[str, Path]:
    from yolo_opt.deploy import export_onnx
    from yolo_opt.quant import quantize_onnx

    d = workdir / f"{name}_{imgsz}"  # per model label: two models may both be called best.pt
    d.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(pt, d / "fp32.onnx", imgsz=imgsz)
    out = {"fp32": fp32}
    for c in calibs:
        out[f"int8-{c}"] = quantize_onnx(fp32, data, d / f"int8_{c}.onnx", calib=c, calib_images=n_calib, validate=False, progress=False).path
    out["ultralytics-int8"] = ultralytics_int8(pt, data, imgsz, d)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--imgsz", type=int, default=160, help="size for mAP")
    ap.add_argument("--lat-imgsz", type=int, default=320, help="size for latency")
    ap.add_argument("--prune", type=float, default=0.5, help="also benchmark a one-shot pruned copy (0: skip)")
    ap.add_argument("--pruned", default=None, help="a pruned + fine-tuned .pt to benchmark instead of --prune")
    ap.add_argument("--calib", default="minmax,entropy,percentile")
    ap.add_argument("--calib-images", type=int, default=128)
    ap.add_argument("--runs", type=int, default=20, help="timed runs per round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (noise on shared CPUs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench_deploy")
    args = ap.parse_args()

    from yolo_opt.bench import onnx_latency
    from yolo_opt.bench.measure import validate_onnx
    from yolo_opt.training import prune_checkpoint

    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    models = {"baseline": Path(args.model)}
    if args.pruned:
        models["pruned"] = Path(args.pruned)
    elif args.prune > 0:
        pruned = work / "pruned.pt"
        prune_checkpoint(args.model, pruned, prune=args.prune, imgsz=args.imgsz)
        models[f"pruned{args.prune}"] = pruned
    calibs = [c for c in args.calib.split(",") if c]
    rows = []
    for mname, pt in models.items():
        acc = artefacts(mname, pt, args.data, args.imgsz, work, calibs, args.calib_images)
        lat = artefacts(mname, pt, args.data, args.lat_imgsz, work, calibs, args.calib_images)
        maps = {k: validate_onnx(p, args.data, args.imgsz) for k, p in acc.items()}
        times: dict[str, list[float]] = {k: [] for k in lat}
        for _ in range(args.rounds):
            for k, p in lat.items():
                times[k].append(onnx_latency(p, runs=args.runs, warmup=5, threads=args.threads)["ms"])
        for k in acc:
            rows.append({
                "model": mname, "variant": k, "size_mb": lat[k].stat().st_size / 1e6,
                "map50_95": maps[k]["map"], "map50": maps[k]["map50"],
                "latency_ms": statistics.median(times[k]), "latency_rounds_ms": times[k],
            })
        base = next(r for r in rows if r["model"] == mname and r["variant"] == "fp32")
        for r in rows:
            if r["model"] == mname:
                r["size_ratio"] = r["size_mb"] / base["size_mb"]
                r["map_ratio"] = r["map50_95"] / base["map50_95"] if base["map50_95"] else float("nan")
                r["latency_ratio"] = r["latency_ms"] / base["latency_ms"]
    import onnxruntime

    header = (f"ONNX Runtime {onnxruntime.__version__} CPU, {args.threads} threads, batch 1; mAP at imgsz={args.imgsz}, "
              f"latency at imgsz={args.lat_imgsz} (median of {args.rounds}x{args.runs} interleaved runs); "
              f"calib_images={args.calib_images}")
    lines = [header, "", "| model | variant | size MB (x) | mAP50-95 (x) | latency ms (x) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['size_mb']:.2f} ({r['size_ratio']:.2f}) | "
                     f"{r['map50_95']:.4f} ({r['map_ratio']:.3f}) | {r['latency_ms']:.1f} ({r['latency_ratio']:.2f}) |")
    table = "\n".join(lines)
    print(table)
    (work / "deploy.md").write_text(table + "\n")
    (work / "deploy.json").write_text(json.dumps({"settings": vars(args), "header": header, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
