"""Load and save Ultralytics checkpoints with clear errors and atomic writes."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from yolo_opt.errors import ModelError, YoloOptError
from yolo_opt.files import atomic_write_bytes

# Our per-model metadata, pickled with the module (survives EMA copies and Ultralytics checkpoints).
META_ATTR = "yolo_opt"


def load_model(path: str | Path) -> nn.Module:
    """Load the detection model of an Ultralytics `.pt` checkpoint (FP32, CPU, eval mode).

    Raises:
        ModelError: Missing file, not a `.pt`, unreadable/corrupt checkpoint, or not a detection model.
    """
    from ultralytics.nn.tasks import load_checkpoint

    from yolo_opt.prune.core import check_detection_model

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file not found: {path}; pass model=path/to/best.pt")
    if path.suffix != ".pt":
        raise ModelError(f"model must be an Ultralytics .pt checkpoint, got '{path.name}'")
    try:
        model, _ = load_checkpoint(path)
    except Exception as e:  # torch/pickle raise many types for a damaged file
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelError(f"cannot read {path} as an Ultralytics checkpoint ({first}); is the file corrupt or truncated?") from e
    try:
        check_detection_model(model)
    except YoloOptError as e:
        raise ModelError(f"{path}: {e}") from e
    return model


def save_model(model: nn.Module, path: str | Path, train_args: dict | None = None) -> Path:
    """Save `model` as a normal Ultralytics checkpoint (FP16 module under 'model'), atomically."""
    import io

    from ultralytics import __version__ as ul_version

    from yolo_opt import __version__

    path = Path(path)
    if path.suffix != ".pt":
        raise ModelError(f"output must end in .pt, got '{path.name}'")
    snapshot = copy.deepcopy(model).eval().half()
    for p in snapshot.parameters():
        p.requires_grad = False
    if hasattr(snapshot, "criterion"):
        snapshot.criterion = None
    buffer = io.BytesIO()
    torch.save(
        {
            "date": datetime.now().astimezone().isoformat(),
            "version": ul_version,
            "yolo_opt": __version__,
            "license": "AGPL-3.0 (https://ultralytics.com/license)",
            "model": snapshot,
            "train_args": dict(train_args or getattr(model, "args", None) or {}),
        },
        buffer,
    )
    atomic_write_bytes(path, buffer.getvalue())
    return path


def meta(model: nn.Module) -> dict:
    """The model's yolo-opt metadata dict (created empty on first use)."""
    info = getattr(model, META_ATTR, None)
    if not isinstance(info, dict):
        info = {}
        setattr(model, META_ATTR, info)
    return info


def prune_checkpoint(
    model: str | Path,
    out: str | Path,
    prune: float | None = None,
    prune_target: float | None = None,
    prune_method: str = "l2",
    round_to: int | None = 8,
    prune_global: bool = False,
    imgsz: int = 640,
    data: str | None = None,
    batches: int = 8,
    prune_ratios: str = "uniform",
    sensitivity: str | Path | None = None,
) -> dict:
    """One-shot pruning without training: load `model`, prune, save to `out`. Returns a summary dict.

    Exactly one of `prune` (channel fraction) or `prune_target` (GFLOPs ratio to keep) is used. With
    `prune_ratios="sensitivity"` and a `sensitivity` report, per-group ratios reach the same GFLOPs (see
    `yolo_opt.prune.sensitivity.allocate_ratios`).
    """
    from yolo_opt.errors import ConfigError
    from yolo_opt.prune.core import PRUNE_METHODS, check_ratio, count_macs, prune_model, ratio_for_macs

    out = Path(out)
    if out.suffix != ".pt":
        raise ConfigError(f"out= must name a .pt file, got '{out}'")
    if prune_method not in PRUNE_METHODS:
        raise ConfigError(f"unknown prune_method '{prune_method}'; choose one of: {', '.join(PRUNE_METHODS)}")
    if (prune is None) == (prune_target is None):
        raise ConfigError("give exactly one of prune=<fraction of channels> or prune_target=<GFLOPs ratio>")
    if prune is not None:
        check_ratio(prune, "prune")
    else:
        check_target(prune_target)
    if prune_method == "taylor" and not data:
        raise ConfigError("prune_method=taylor scores channels with training batches; pass data=data.yaml")
    layer_ratios = None
    if prune_ratios == "sensitivity":
        from yolo_opt.prune.sensitivity import check_sensitivity_opts

        check_sensitivity_opts({"sensitivity": sensitivity, "prune_global": prune_global})
    elif prune_ratios != "uniform":
        raise ConfigError(f"unknown prune_ratios '{prune_ratios}'; choose one of: uniform, sensitivity")
    net = load_model(model)
    base_macs, base_params = count_macs(net, imgsz)
    if prune_ratios == "sensitivity":
        from yolo_opt.prune.sensitivity import sensitivity_ratios

        layer_ratios, _ = sensitivity_ratios(net, sensitivity, prune, prune_target, round_to, imgsz=min(imgsz, 320))
        ratio = 0.0
    else:
        ratio = prune if prune is not None else ratio_for_macs(net, prune_target, prune_method, round_to, prune_global, imgsz=min(imgsz, 320))
    loader, loss_fn = (None, None)
    if prune_method == "taylor":
        from yolo_opt.prune.data import taylor_batches

        loader, loss_fn = taylor_batches(net, data, imgsz, batches)
    prune_model(net, ratio, prune_method, round_to, prune_global, imgsz, loader, loss_fn, layer_ratios=layer_ratios)
    macs, params = count_macs(net, imgsz)
    info = meta(net)
    info.setdefault("base_macs", base_macs)
    info.setdefault("base_params", base_params)
    step = {"ratio": ratio, "method": prune_method, "macs": macs, "params": params}
    if layer_ratios:
        step["layer_ratios"] = layer_ratios
    info.setdefault("history", []).append(step)
    save_model(net, out)
    return {
        "out": str(out),
        "ratio": ratio,
        "method": prune_method,
        "layer_ratios": layer_ratios,
        "params": params,
        "params_ratio": params / base_params,
        "gflops": 2 * macs / 1e9,
        "gflops_ratio": macs / base_macs,
        "imgsz": imgsz,
    }


def check_target(target: float) -> float:
    """Validate a GFLOPs ratio target in (0, 1]."""
    from yolo_opt.errors import ConfigError

    if not isinstance(target, (int, float)) or isinstance(target, bool) or not 0 < target <= 1:
        raise ConfigError(f"prune_target={target!r} is out of range; use the GFLOPs ratio to keep, 0 < x <= 1 (e.g. 0.5)")
    return float(target)
