"""Do the split-free twins cost time once exported? A pruned model exported as pruning leaves it (each C2f/C3k2 `cv1`
as two convolutions reading the same map) against the same model with Ultralytics' own blocks put back
(`ModelAdapter.to_native`: one `cv1` and a split; possible where both halves kept the same width, as one ratio per
layer keeps them), on ONNX Runtime and OpenVINO, batch 1, each model in a process of its own, taking turns over rounds.

    PYTHONPATH=. python benchmarks/twins.py --out runs/bench/twins

The unpruned model in both forms too: the twins' cost before any channel is removed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/bench/twins")
    ap.add_argument("--archs", default="yolov8n,yolo11n,yolo26n")
    ap.add_argument("--prune", type=float, default=0.5)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runtimes", default="onnx,openvino")
    args = ap.parse_args()

    import torch
    from ultralytics.nn.tasks import DetectionModel

    from yolo_opt.arch import adapter
    from yolo_opt.bench.latency_target import deployable, time_models
    from yolo_opt.io.checkpoint import save_model
    from yolo_opt.prune.pruner import prune_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        model = DetectionModel(f"{arch}.yaml", nc=5, verbose=False)
        model.names = {i: str(i) for i in range(5)}
        files = {}
        for label, ratio in (("unpruned", 0.0), (f"pruned {args.prune}", args.prune)):
            net = DetectionModel(f"{arch}.yaml", nc=5, verbose=False)
            net.load_state_dict(model.state_dict())
            net.names = model.names
            adapter(net).make_prunable()
            if ratio:
                prune_model(net, ratio, "l2", 8, imgsz=128)
            twins = save_model(net, out / f"{arch}-{ratio}-twins.pt")
            converted, kept = adapter(net).to_native()
            native = save_model(net, out / f"{arch}-{ratio}-native.pt")
            files[label] = (twins, native, converted, kept)
        for runtime in args.runtimes.split(","):
            for label, (twins, native, converted, kept) in files.items():
                a, b = (deployable(p, runtime, args.imgsz) for p in (twins, native))
                t, n = time_models([a, b], runtime, args.imgsz, rounds=args.rounds)
                rows[f"{arch} {label} {runtime}"] = {"twins_ms": t["ms"], "native_ms": n["ms"],
                                                     "twins_spread": t.get("ms_spread"),
                                                     "native_spread": n.get("ms_spread"), "runtime": t["runtime"],
                                                     "ratio": t["ms"] / n["ms"], "blocks": converted, "kept": kept}
                print(arch, label, runtime, json.dumps(rows[f"{arch} {label} {runtime}"]))
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    lines = ["| model | runtime | twins ms | native ms | twins / native | blocks folded |", "|---|---|---|---|---|---|"]
    for key, r in rows.items():
        lines.append(f"| {key.rsplit(' ', 1)[0]} | {r['runtime']} | {r['twins_ms']:.2f} | {r['native_ms']:.2f} | "
                     f"{r['ratio']:.3f}x | {r['blocks']} |")
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
