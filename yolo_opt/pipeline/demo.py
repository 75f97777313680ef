"""`yolo-opt demo`: generated data -> small baseline trained on CPU -> the default recipe, with its table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError
from yolo_opt.options import BenchOptions, DemoOptions


def run_demo(opts: DemoOptions | None = None, **kwargs: Any) -> dict[str, Any]:
    """Run the demo end to end and log the report table; finished parts are reused on a second call.

    Args:
        opts: out (folder, default runs/opt/demo), n_train, n_val, base_epochs, arch (yolov8n), recipe (cpu-onnx),
            imgsz (160); or their keyword shortcuts.
        **kwargs: DemoOptions shortcuts, `lat_imgsz`, `name` (the run folder under `out`, default "optimized"),
            and any recipe key as an override (e.g. epochs=5 prune_target=0.4 max_map_drop=0.02), validated by the
            recipe.

    Returns:
        The benchmark rows of the recipe's report.
    """
    from ultralytics.utils import LOGGER

    from yolo_opt.bench.report import markdown_table
    from yolo_opt.data import make_dataset
    from yolo_opt.io.checkpoint import check_model_yaml
    from yolo_opt.pipeline.recipes import load_recipe
    from yolo_opt.pipeline.run import optimize
    from yolo_opt.training.phases import train_in

    opts, rest = DemoOptions.resolve(opts, kwargs)
    name = str(rest.pop("name", None) or "optimized")
    if "project" in rest:
        raise ConfigError("demo writes its run under out=: give out= instead of project=")
    bench = BenchOptions.take(rest, "demo")
    overrides = {"imgsz": opts.imgsz, "lat_imgsz": bench.lat_imgsz, "ov_precision": bench.ov_precision,
                 "plots": False, "workers": 0, **rest}
    load_recipe(opts.recipe, overrides)  # a bad recipe or override fails before anything is trained
    check_model_yaml(f"{opts.arch}.yaml", key="arch")  # arch=yolov99 failed after the dataset was written
    out = demo_folder(opts.out)
    data = make_dataset(out / "data", seed=0, n_train=opts.n_train, n_val=opts.n_val, imgsz=opts.imgsz)
    LOGGER.info(f"yolo-opt demo: {opts.arch} baseline, {opts.base_epochs} epochs on the CPU (reused when done) ...")
    base = train_in(out, "baseline", f"{opts.arch}.yaml", data=str(data), epochs=opts.base_epochs, imgsz=opts.imgsz,
                    batch=16, workers=0, plots=False, seed=0, close_mosaic=max(1, opts.base_epochs // 4))
    rows = optimize(base, data, opts.recipe, name=name, project=out, **overrides)
    LOGGER.info("\n" + markdown_table(rows))
    LOGGER.info(f"\nreport: {out / name / 'report.md'} (plot: report.png, figures: results.json)")
    return rows


def demo_folder(out: str | Path) -> Path:
    """The demo's `out=`, made and marked as ours: absent, empty, or an earlier demo (its marker, or the run state of
    a demo made before the marker); anything else is refused before the first write."""
    from yolo_opt.io.files import MARKER, check_output

    out = check_output(Path(str(out)), folder=True).resolve()
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()):
        ours = (marker.is_file() and marker.read_text().strip() == "demo") or (out / "optimized" / "state.json").exists()
        if not ours:
            raise ConfigError(f"out={out} is not empty and not a yolo-opt demo; choose another out= or empty it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text("demo\n")
    except OSError as e:
        raise ConfigError(f"cannot write out={out}: {e.strerror or e}; choose a writable location") from None
    return out
