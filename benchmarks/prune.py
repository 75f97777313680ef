"""Pruning benchmark: baseline vs pruned + fine-tuned YOLOv8n / YOLO11n on the generated dataset, in one run.

For each architecture: train a baseline from its yaml, continue it for the fine-tune epochs (the fair
reference: every model gets the same total training), then for each ratio and method prune inside the
trainer and fine-tune. Reports params, GFLOPs, mAP50-95 before/after fine-tune, PyTorch CPU and ONNX Runtime
CPU latency (median, batch 1), all as ratios to the reference. Results are cached per row in the JSON, so
an interrupted run continues where it stopped.

    python benchmarks/prune.py --out runs/bench/prune            # full run (about an hour on 2 CPU cores)
    python benchmarks/prune.py --base-epochs 3 --ft-epochs 1 --archs yolov8n --ratios 0.5 --methods l2  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def train_run(model: str, data: Path, project: Path, name: str, epochs: int, imgsz: int, **opts) -> Path:
    """Train with yolo-opt (pruning inside the Ultralytics trainer); return best.pt (reused or resumed if present)."""
    from yolo_opt.train import train_in

    return train_in(project, name, model, data=str(data), epochs=epochs, imgsz=imgsz, batch=16, workers=0,
                    plots=False, close_mosaic=max(1, epochs // 4), seed=0, deterministic=False, **opts)


def measure(weights: Path, data: Path, imgsz: int, lat_imgsz: int, runs: int) -> dict:
    """Stats, mAP and latency of one checkpoint (ONNX exported at the latency size)."""
    from ultralytics import YOLO

    from yolo_opt.bench import model_stats, onnx_latency, torch_latency, validate

    onnx = Path(YOLO(str(weights)).export(format="onnx", imgsz=lat_imgsz, simplify=True, verbose=False))
    return {
        **model_stats(weights, lat_imgsz),
        **validate(weights, data, imgsz),
        "torch_ms": torch_latency(weights, lat_imgsz, runs)["ms"],
        "ort_ms": onnx_latency(onnx, lat_imgsz, runs)["ms"],
        "threads": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/prune")
    parser.add_argument("--archs", default="yolov8n,yolo11n")
    parser.add_argument("--ratios", default="0.3,0.5")
    parser.add_argument("--methods", default="l2,bn,taylor")
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--ft-epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=160, help="training / validation size")
    parser.add_argument("--lat-imgsz", type=int, default=640, help="latency measurement size")
    parser.add_argument("--runs", type=int, default=30, help="timed runs per latency median")
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=80)
    parser.add_argument("--remeasure-latency", action="store_true",
                        help="re-time every cached model, interleaved, on a quiet machine")
    args = parser.parse_args()

    from yolo_opt.bench import validate
    from yolo_opt.data import make_dataset
    from yolo_opt.prune import prune_checkpoint

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = make_dataset(out / "data", seed=0, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    def save():
        tmp = results_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(results_path)

    for arch in args.archs.split(","):
        base = train_run(f"{arch}.yaml", data, out, f"{arch}-base", args.base_epochs, args.imgsz)
        ref = train_run(str(base), data, out, f"{arch}-ref", args.ft_epochs, args.imgsz)
        for key, path in ((f"{arch}/base", base), (f"{arch}/reference", ref)):
            if key not in results:
                results[key] = measure(path, data, args.imgsz, args.lat_imgsz, args.runs)
                save()
        for ratio in map(float, args.ratios.split(",")):
            for method in args.methods.split(","):
                key = f"{arch}/prune{ratio}/{method}"
                if key in results:
                    continue
                oneshot = out / f"{arch}-p{ratio}-{method}-oneshot.pt"
                prune_checkpoint(base, oneshot, prune=ratio, prune_method=method, imgsz=args.imgsz, data=str(data))
                before = validate(oneshot, data, args.imgsz)
                best = train_run(str(base), data, out, f"{arch}-p{ratio}-{method}", args.ft_epochs, args.imgsz,
                                 prune=ratio, prune_method=method)
                results[key] = {**measure(best, data, args.imgsz, args.lat_imgsz, args.runs),
                                "map_before_ft": before["map"]}
                save()
    if args.remeasure_latency:
        remeasure(results, out, args.lat_imgsz, args.runs)
        save()
    print(table(results))
    (out / "table.md").write_text(table(results) + "\n")


def remeasure(results: dict, out: Path, lat_imgsz: int, runs: int, rounds: int = 3) -> None:
    """Re-time every model round-robin (each round times every model once), keeping the median per model.

    Interleaving spreads any background load evenly over the models, so the ratios stay fair.
    """
    import statistics

    from yolo_opt.bench import onnx_latency, torch_latency

    paths = {}
    for key in results:
        arch, rest = key.split("/", 1)
        name = {"base": f"{arch}-base", "reference": f"{arch}-ref"}.get(rest)
        if name is None:
            _, ratio, method = key.split("/")
            name = f"{arch}-p{ratio.removeprefix('prune')}-{method}"
        paths[key] = out / name / "weights" / "best.pt"
    samples = {key: {"torch_ms": [], "ort_ms": []} for key in paths}
    for _ in range(rounds):
        for key, pt in paths.items():
            samples[key]["torch_ms"].append(torch_latency(pt, lat_imgsz, runs)["ms"])
            samples[key]["ort_ms"].append(onnx_latency(pt.with_suffix(".onnx"), lat_imgsz, runs)["ms"])
    for key, s in samples.items():
        results[key].update({k: statistics.median(v) for k, v in s.items()})


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}" if b else "n/a"


def table(results: dict) -> str:
    """Markdown table: figures as ratios to the baseline; mAP also to the reference (baseline + the same fine-tune)."""
    rows = [
        "| model | params | GFLOPs | mAP50-95 (abs) | mAP before FT / base | mAP after FT / base | mAP after FT / ref "
        "| PyTorch CPU latency | ORT CPU latency |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        arch = key.split("/")[0]
        ref, base = results.get(f"{arch}/reference"), results.get(f"{arch}/base")
        if not ref or not base:
            continue
        before = _ratio(r["map_before_ft"], base["map"]) if "map_before_ft" in r else "-"
        rows.append(
            f"| {key} | {_ratio(r['params'], base['params'])} | {_ratio(r['gflops'], base['gflops'])} | {r['map']:.3f} "
            f"| {before} | {_ratio(r['map'], base['map'])} | {_ratio(r['map'], ref['map'])} "
            f"| {_ratio(r['torch_ms'], base['torch_ms'])} | {_ratio(r['ort_ms'], base['ort_ms'])} |"
        )
    ref_lines = [
        f"{k}: {v['params'] / 1e6:.2f}M params, {v['gflops']:.2f} GFLOPs, mAP50-95 "
        f"{v['map']:.3f}, PyTorch {v['torch_ms']:.1f} ms, ORT {v['ort_ms']:.1f} ms ({v['threads']} threads)"
        for k, v in results.items() if k.endswith(("/base", "/reference"))
    ]
    return "\n".join(rows + [""] + ref_lines)


if __name__ == "__main__":
    main()
