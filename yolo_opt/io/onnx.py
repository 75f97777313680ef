"""ONNX files: load with one clear error, read Ultralytics' metadata and the graph's inputs and outputs."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from yolo_opt.errors import ModelError, first_line


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
        first = first_line(e)
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
