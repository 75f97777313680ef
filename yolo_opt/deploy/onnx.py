"""FP32 ONNX export through Ultralytics' own exporter, in a temporary folder renamed into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DeployError, first_line
from yolo_opt.io.files import temporary_dir


def export_onnx(
    model: str | Path,
    out: str | Path | None = None,
    imgsz: int | list[int] = 640,
    opset: int | None = None,
    simplify: bool = True,
    **kwargs: Any,
) -> Path:
    """Export an Ultralytics `.pt` (pruned ones too) to an FP32 ONNX file with Ultralytics' own exporter.

    The export runs in a temporary folder next to `out` and is renamed into place, so a failed export never
    leaves a partial file. Batch size is 1 and shapes are static (what TensorRT and INT8 calibration want).

    Args:
        model: Path to the `.pt` checkpoint.
        out: Output `.onnx` path (default: next to the model, same stem).
        imgsz: Export image size (int or [h, w]).
        opset: ONNX opset (None: Ultralytics' default).
        simplify: Run onnxslim as Ultralytics does.
        **kwargs: Other Ultralytics export arguments (e.g. `nms`).

    Returns:
        Path of the written FP32 ONNX file.

    Raises:
        ModelError: Missing or unreadable checkpoint.
        DeployError: Ultralytics' exporter failed.
    """
    from ultralytics import YOLO

    from yolo_opt.io.checkpoint import load_model
    from yolo_opt.io.onnx import load_onnx

    model = Path(model)
    load_model(model)  # one clear error for missing/corrupt/non-detection checkpoints
    out = Path(out) if out else model.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"ONNX output must end in .onnx, got '{out}'")
    tmpdir = temporary_dir(out)
    try:
        yolo = YOLO(str(model), task="detect")
        yolo.model.pt_path = str(tmpdir / f"{out.stem}.pt")  # Ultralytics writes next to pt_path
        args = {"format": "onnx", "imgsz": imgsz, "simplify": simplify, "dynamic": False, "batch": 1, **kwargs}
        if opset:
            args["opset"] = opset
        try:
            written = Path(yolo.export(**args))
        except Exception as e:
            first = first_line(e)
            raise DeployError(f"Ultralytics ONNX export of {model} failed: {first}") from e
        load_onnx(written)
        os.replace(written, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out
