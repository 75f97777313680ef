"""FP32 ONNX export through Ultralytics' own exporter, ONNX checks, and validation of .onnx files."""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from yolo_opt.errors import ConfigError, DeployError, ModelError


def load_onnx(path: str | Path, check: bool = True):
    """Load an ONNX model with one clear error for a missing, corrupt or invalid file.

    Raises:
        ModelError: The file is missing, not ONNX, or fails `onnx.checker`.
    """
    import onnx

    path = Path(path)
    if not path.exists():
        raise ModelError(f"ONNX file not found: {path}; export one with 'yolo-opt export model=best.pt format=onnx'")
    try:
        model = onnx.load(str(path))
        if check:
            onnx.checker.check_model(model)
    except Exception as e:  # protobuf DecodeError, ValidationError, ...
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path} is not a valid ONNX model ({first}); is it corrupt or truncated? Re-export it") from e
    if not model.graph.node:
        raise ModelError(f"{path} has an empty ONNX graph; re-export it")
    return model


def onnx_metadata(model) -> dict[str, Any]:
    """Ultralytics' metadata_props of an exported ONNX model, parsed (names, stride, imgsz, ...)."""
    out: dict[str, Any] = {}
    for prop in model.metadata_props:
        try:
            out[prop.key] = ast.literal_eval(prop.value)
        except (ValueError, SyntaxError):
            out[prop.key] = prop.value
    return out


def onnx_io(model) -> dict[str, list[dict[str, Any]]]:
    """Input and output names, shapes and element types of an ONNX graph."""
    import onnx

    init = {i.name for i in model.graph.initializer}

    def desc(v) -> dict[str, Any]:
        t = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or -1) for d in t.shape.dim]
        return {"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name}

    return {
        "inputs": [desc(v) for v in model.graph.input if v.name not in init],
        "outputs": [desc(v) for v in model.graph.output],
    }


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

    from yolo_opt.prune.io import load_model

    model = Path(model)
    load_model(model)  # one clear error for missing/corrupt/non-detection checkpoints
    out = Path(out) if out else model.with_suffix(".onnx")
    if out.suffix != ".onnx":
        raise ConfigError(f"ONNX output must end in .onnx, got '{out}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{out.stem}.", dir=out.parent))
    try:
        yolo = YOLO(str(model), task="detect")
        yolo.model.pt_path = str(tmpdir / f"{out.stem}.pt")  # Ultralytics writes next to pt_path
        args = {"format": "onnx", "imgsz": imgsz, "simplify": simplify, "dynamic": False, "batch": 1, **kwargs}
        if opset:
            args["opset"] = opset
        try:
            written = Path(yolo.export(**args))
        except Exception as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise DeployError(f"Ultralytics ONNX export of {model} failed: {first}") from e
        load_onnx(written)
        os.replace(written, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return out


def validate_onnx(
    path: str | Path, data: str | Path, imgsz: int | list[int] | None = None, verbose: bool = False, **kwargs: Any
) -> dict[str, float]:
    """mAP of an `.onnx` model with the Ultralytics validator (ONNX Runtime on CPU).

    Returns:
        {"map50_95": ..., "map50": ...}.
    """
    from ultralytics import YOLO

    from yolo_opt.deploy.calib import dataset_images

    dataset_images(data, "val")  # clear DataError before Ultralytics tries to download anything
    load_onnx(path, check=False)
    if imgsz is None:
        imgsz = onnx_metadata(load_onnx(path, check=False)).get("imgsz", 640)
    args = {"data": str(data), "imgsz": imgsz, "plots": False, "batch": 1, "verbose": verbose, "device": "cpu"}
    metrics = YOLO(str(path), task="detect").val(**{**args, **kwargs})
    return {"map50_95": float(metrics.box.map), "map50": float(metrics.box.map50)}
