"""`yolo-opt demo`: generated data -> small baseline trained on CPU -> the default recipe, with its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.config import ARGS, coerce


def run_demo(**kwargs: Any) -> dict[str, Any]:
    """Run the demo end to end and print the report table; finished parts are reused on a second call.

    Keys: out (folder, default runs/opt/demo), n_train, n_val, base_epochs, arch (yolov8n), recipe (cpu-onnx),
    lat_imgsz, imgsz (160), and any recipe key as an override (e.g. epochs=5 prune_target=0.4).

    Returns:
        The benchmark rows of the recipe's report.
    """
    from yolo_opt.bench.report import markdown_table
    from yolo_opt.callbacks import train_in
    from yolo_opt.data import make_dataset
    from yolo_opt.pipeline import optimize

    demo_keys = {a.name for a in ARGS if "demo" in a.modes}
    ours = {a.name: a.default for a in ARGS if "demo" in a.modes}
    ours.update({k: coerce(k, v) for k, v in kwargs.items() if k in demo_keys})
    rest = {k: v for k, v in kwargs.items() if k not in demo_keys}  # recipe overrides, validated by the recipe
    imgsz = int(rest.pop("imgsz", 160))
    out = Path(ours["out"] or "runs/opt/demo").resolve()
    data = make_dataset(out / "data", seed=0, n_train=ours["n_train"], n_val=ours["n_val"], imgsz=imgsz)
    print(f"yolo-opt demo: {ours['arch']} baseline, {ours['base_epochs']} epochs on the CPU (reused when done) ...")
    base = train_in(out, "baseline", f"{ours['arch']}.yaml", data=str(data), epochs=ours["base_epochs"], imgsz=imgsz,
                    batch=16, workers=0, plots=False, seed=0, close_mosaic=max(1, ours["base_epochs"] // 4))
    rows = optimize(base, data, ours["recipe"], name="optimized", project=out, imgsz=imgsz,
                    lat_imgsz=ours["lat_imgsz"], plots=False, workers=0, **rest)
    print("\n" + markdown_table(rows))
    print(f"\nreport: {out / 'optimized' / 'report.md'} (plot: report.png, figures: results.json)")
    return rows

