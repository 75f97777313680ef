"""`yolo-opt demo`: generated data -> small baseline -> pruned + fine-tuned model, measured side by side."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from yolo_opt.config import split_args
from yolo_opt.errors import ConfigError


def run_demo(**kwargs: Any) -> list[dict]:
    """Run the demo and print its table; returns one dict of figures per stage.

    Keys: out (run folder, default runs/opt/demo), n_train, n_val, base_epochs, ft_epochs, imgsz (160),
    prune_target (0.5) or prune, prune_method (l2), arch (yolov8n). Finished stages are reused.
    """
    from yolo_opt.bench import model_stats, onnx_latency, validate
    from yolo_opt.callbacks import train
    from yolo_opt.data import make_dataset

    ours, rest = split_args("demo", kwargs)
    imgsz = int(rest.pop("imgsz", 160))
    arch = ours["arch"]
    prune_opts = {k: rest.pop(k) for k in ("prune", "prune_target", "prune_method") if k in rest}
    lat_imgsz = ours["lat_imgsz"]
    if rest:
        raise ConfigError(f"unknown argument(s) for 'yolo-opt demo': {', '.join(rest)}; see 'yolo-opt help'")
    if "prune" not in prune_opts:
        prune_opts.setdefault("prune_target", 0.5)
    out = Path(ours["out"] or "runs/opt/demo").resolve()
    data = make_dataset(out / "data", seed=0, n_train=ours["n_train"], n_val=ours["n_val"], imgsz=imgsz)
    common = {"data": str(data), "imgsz": imgsz, "batch": 16, "workers": 0, "plots": False, "project": str(out),
              "exist_ok": True, "seed": 0}

    def stage(name: str, model: str, epochs: int, **opts) -> Path:
        best = out / name / "weights" / "best.pt"
        if not best.exists():
            print(f"\nyolo-opt demo: {name} ({epochs} epochs) ...", flush=True)
            train(model, epochs=epochs, name=name, close_mosaic=max(1, epochs // 4), **common, **opts)
        return best

    base = stage("baseline", f"{arch}.yaml", ours["base_epochs"])
    pruned = stage("pruned", str(base), ours["ft_epochs"], **prune_opts)

    from ultralytics import YOLO

    rows = []
    for name, weights in (("baseline", base), ("pruned + fine-tuned", pruned)):
        onnx = Path(YOLO(str(weights)).export(format="onnx", imgsz=lat_imgsz, verbose=False))
        rows.append({"stage": name, **model_stats(weights, imgsz), **validate(weights, data, imgsz),
                     "ort_ms": onnx_latency(onnx, lat_imgsz, runs=20)["ms"]})
    print(demo_table(rows, lat_imgsz))
    return rows


def demo_table(rows: list[dict], lat_imgsz: int) -> str:
    """Markdown table with absolute figures and ratios to the first row."""
    ref = rows[0]
    lines = [
        f"| stage | params | GFLOPs | mAP50-95 | mAP50 | ORT CPU ms @{lat_imgsz} "
        f"({os.cpu_count()} threads) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        def rel(k: str, r=r) -> str:
            return f"{r[k] / ref[k]:.2f}x" if ref[k] else "n/a"

        lines.append(
            f"| {r['stage']} | {r['params'] / 1e6:.2f}M ({rel('params')}) | {r['gflops']:.3f} ({rel('gflops')}) "
            f"| {r['map']:.3f} ({rel('map')}) | {r['map50']:.3f} | {r['ort_ms']:.1f} ({rel('ort_ms')}) |"
        )
    return "\n".join(lines)
