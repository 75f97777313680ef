"""QDQ ONNX from a QAT checkpoint: the Q/DQ scales are the ones the fake-quantized model trained with."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from yolo_opt.errors import ModelError
from yolo_opt.options import DEFAULT_IMGSZ


def count_qdq(onnx_path: str | Path) -> int:
    """Number of QuantizeLinear nodes in an ONNX model."""
    import onnx

    return Counter(n.op_type for n in onnx.load(str(onnx_path)).graph.node)["QuantizeLinear"]


def export_qat_onnx(weights: str | Path, imgsz: int = DEFAULT_IMGSZ, out: str | Path | None = None,
                    end2end: bool | None = None) -> Path:
    """Export a QAT checkpoint (trained with quantize=8 / qat=True) to a QDQ ONNX model, atomically.

    ONNX Runtime runs it on CPU; TensorRT builds an explicit-quantization INT8 engine from it. An end-to-end model
    (YOLO26) gets its NMS-free output unless `end2end=False`, as every yolo-opt export.

    Returns:
        Path of the ONNX file (default: next to `weights`, `<stem>_qat.onnx`).
    """
    from ultralytics import YOLO

    from yolo_opt.arch import adapter
    from yolo_opt.io.checkpoint import load_model, read_checkpoint

    weights = Path(weights)
    ckpt = read_checkpoint(weights)
    if not ckpt.get("modelopt"):
        raise ModelError(f"{weights} carries no quantization-aware training state; train it with qat=True first")
    out = Path(out) if out else weights.with_name(f"{weights.stem}_qat.onnx")
    head = adapter(load_model(weights)).exporter_args(end2end)
    exported = Path(YOLO(str(weights)).export(format="onnx", imgsz=imgsz, simplify=True, verbose=False, **head))
    if count_qdq(exported) == 0:
        exported.unlink(missing_ok=True)
        raise ModelError(f"export of {weights} produced no Q/DQ nodes; is ModelOpt installed (nvidia-modelopt)?")
    os.replace(exported, out)
    return out
