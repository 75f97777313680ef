"""What `prune_native=True` costs: YOLO11n pruned to 0.5x GFLOPs with split twins vs with Ultralytics' own blocks.

`prune_native` keeps each block's two `cv1` halves equally wide so the checkpoint can hold Ultralytics' C2f / C3k2 /
C2PSA (it loads without yolo-opt). Uniform per-layer ratios keep C2f/C3k2 halves equal anyway; the one difference
is the C2PSA bypass half, left unpruned (its attention half never is), so the GFLOPs search prunes the rest a
little more. YOLOv8n has no C2PSA: both variants are the same pruning (checked here, no training needed).

One run: generated dataset, a YOLO11n baseline trained from its yaml (cached), one-shot pruning to the GFLOPs
target both ways, mAP50-95 right after pruning (deterministic: no training noise) and after the same fine-tune.

    python benchmarks/native.py --out runs/bench/native                        # ~15 min on 2 CPU cores
    python benchmarks/native.py --base-epochs 2 --ft-epochs 1 --n-train 40    # smoke
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def train_run(model: str, data: Path, project: Path, name: str, epochs: int, imgsz: int, **opts) -> Path:
    """Train with yolo-opt; return best.pt (reused or resumed if present)."""
    from yolo_opt.training import train_in

    return train_in(project, name, model, data=str(data), epochs=epochs, imgsz=imgsz, batch=16, workers=0,
                    plots=False, close_mosaic=max(1, epochs // 4), seed=0, deterministic=False, **opts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench/native")
    parser.add_argument("--target", type=float, default=0.5, help="GFLOPs ratio to keep")
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--ft-epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=160)
    parser.add_argument("--n-train", type=int, default=300)
    parser.add_argument("--n-val", type=int, default=80)
    parser.add_argument("--skip-v8n", action="store_true", help="only YOLO11n (the YOLOv8n check needs no training)")
    args = parser.parse_args()

    import torch
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.bench import model_stats, validate
    from yolo_opt.data import make_dataset
    from yolo_opt.io.checkpoint import load_model, save_model
    from yolo_opt.training import prune_checkpoint

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = make_dataset(out / "data", seed=0, n_train=args.n_train, n_val=args.n_val, imgsz=args.imgsz)
    results: dict = {"target": args.target, "imgsz": args.imgsz, "base_epochs": args.base_epochs,
                     "ft_epochs": args.ft_epochs}

    if not args.skip_v8n:  # YOLOv8n: the same channels are kept both ways (conversion only), so the weights agree
        v8 = save_model(DetectionModel("yolov8n.yaml", nc=5, verbose=False), out / "yolov8n-untrained.pt")
        v8_rows = {}
        for native in (False, True):
            s = prune_checkpoint(v8, out / f"v8n-{'native' if native else 'twins'}.pt", prune_target=args.target,
                                 imgsz=args.imgsz, prune_native=native)
            v8_rows[native] = s
        a, b = (load_model(out / f"v8n-{k}.pt") for k in ("twins", "native"))
        x = torch.rand(1, 3, args.imgsz, args.imgsz)
        with torch.no_grad():
            diff = float((a(x)[0] - b(x)[0]).abs().max())
        results["yolov8n"] = {"gflops_ratio_twins": v8_rows[False]["gflops_ratio"],
                              "gflops_ratio_native": v8_rows[True]["gflops_ratio"], "max_output_diff": diff}

    base = train_run("yolo11n.yaml", data, out, "yolo11n-base", args.base_epochs, args.imgsz)
    rows = {"baseline": {**validate(base, data, args.imgsz), **model_stats(base, args.imgsz)}}
    for native in (False, True):
        name = "native" if native else "twins"
        pruned = out / f"v11n-{name}.pt"
        s = prune_checkpoint(base, pruned, prune_target=args.target, imgsz=args.imgsz, prune_native=native)
        row = {"ratio": s["ratio"], "gflops_ratio": s["gflops_ratio"], "params_ratio": s["params_ratio"],
               "map_pruned": validate(pruned, data, args.imgsz)["map"]}
        best = train_run(str(pruned), data, out, f"v11n-{name}-ft", args.ft_epochs, args.imgsz)
        row.update(map_ft=validate(best, data, args.imgsz)["map"], gflops_ft=model_stats(best, args.imgsz)["gflops"])
        rows[name] = row
    results["yolo11n"] = rows
    (out / "results.json").write_text(json.dumps(results, indent=1))
    b0 = rows["baseline"]["map"]
    if "yolov8n" in results:
        v8 = results["yolov8n"]
        print(f"yolov8n at {args.target}x: GFLOPs twins {v8['gflops_ratio_twins']:.3f}, native "
              f"{v8['gflops_ratio_native']:.3f}; max output difference {v8['max_output_diff']:.2e}")
    print(f"yolo11n baseline mAP50-95 {b0:.4f} ({args.base_epochs} epochs, {args.imgsz}px)")
    print("| variant | ratio | GFLOPs | params | mAP pruned | mAP fine-tuned | vs baseline |")
    print("|---|---|---|---|---|---|---|")
    for name in ("twins", "native"):
        r = rows[name]
        print(f"| {name} | {r['ratio']:.3f} | {r['gflops_ratio']:.3f}x | {r['params_ratio']:.3f}x | {r['map_pruned']:.4f} "
              f"| {r['map_ft']:.4f} | {(r['map_ft'] / b0 if b0 else float('nan')):.3f} |")


if __name__ == "__main__":
    main()
