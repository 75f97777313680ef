"""Load and save Ultralytics checkpoints with clear errors and atomic writes; yolo-opt's per-model metadata."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from yolo_opt.errors import ModelError, YoloOptError
from yolo_opt.io.files import atomic_write_bytes

# Detection heads other than plain boxes (Segment, Pose, OBB, ...) subclass Detect: only Detect itself is supported.


def check_detection_model(model: nn.Module):
    """Return the detection head, or raise ModelError if `model` is not an Ultralytics detection model."""
    from ultralytics.nn.modules import Detect

    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not len(layers):
        raise ModelError(f"{type(model).__name__} is not an Ultralytics YOLO model; pass a YOLO detection .pt")
    head = layers[-1]
    if type(head) is not Detect:
        task = getattr(model, "task", type(head).__name__)
        raise ModelError(f"only detection models are supported (this is a '{task}' model with a "
                         f"{type(head).__name__} head)")
    return head


# Our per-model metadata, pickled with the module (survives EMA copies and Ultralytics checkpoints).
META_ATTR = "yolo_opt"


def load_model(path: str | Path) -> nn.Module:
    """Load the detection model of an Ultralytics `.pt` checkpoint (FP32, CPU, eval mode).

    Raises:
        ModelError: Missing file, not a `.pt`, unreadable/corrupt checkpoint, or not a detection model.
    """
    from ultralytics.nn.tasks import load_checkpoint

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


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict of a `.pt` file (epoch, train_args, modelopt, ...)."""
    return torch.load(path, map_location="cpu", weights_only=False)


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
