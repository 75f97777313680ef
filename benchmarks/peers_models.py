"""The two models benchmarks/peers.py compares: a baseline trained from a yaml, and a pruned + fine-tuned copy.

Both are cached (`train_in` reuses finished runs and resumes killed ones), so peers.py can be re-run cheaply.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def train_run(model: str, data: Path, project: Path, name: str, epochs: int, imgsz: int, **opts) -> Path:
    """One cached training run with the benchmark's fixed settings."""
    from yolo_opt.training import train_in

    return train_in(project, name, model, data=str(data), epochs=epochs, imgsz=imgsz, batch=16, workers=0,
                    plots=False, close_mosaic=max(1, epochs // 4), seed=0, deterministic=False, device="cpu", **opts)


def models(out: Path, arch: str = "yolov8n", base_epochs: int = 20, ft_epochs: int = 10, prune_target: float = 0.5,
           prune: float | None = None, prune_round: int = 8, imgsz: int = 160, n_train: int = 300,
           n_val: int = 80) -> tuple[Path, dict[str, Path]]:
    """data.yaml and {"baseline": best.pt, "pruned": best.pt}, trained or taken from the cache in `out`.

    The pruned model is yolo-opt's default recipe, `prune_target=` (per-layer ratios from the trainer's own
    sensitivity analysis), or one ratio everywhere with `prune=`."""
    from yolo_opt.data import make_dataset

    out = Path(out).resolve()  # Ultralytics puts a relative project under its own runs folder
    data = make_dataset(out / "data", seed=0, n_train=n_train, n_val=n_val, imgsz=imgsz)
    base = train_run(f"{arch}.yaml", data, out, f"{arch}-base", base_epochs, imgsz)
    how = {"prune": prune} if prune is not None else {"prune_target": prune_target}
    name = f"{arch}-p{prune}-r{prune_round}" if prune is not None else f"{arch}-t{prune_target}-r{prune_round}"
    pruned = train_run(str(base), data, out, name, ft_epochs, imgsz, prune_round=prune_round, **how)
    return data, {"baseline": base, "pruned": pruned}


if __name__ == "__main__":
    import sys

    print(models(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/peers")))
