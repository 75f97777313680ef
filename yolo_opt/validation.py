"""Accuracy from the Ultralytics validator, the same way for every model file and every stage that needs it
(benchmarks, INT8 accuracy control, bundles, OpenVINO exports): `.pt`, `.onnx`, `.engine` and OpenVINO models.

Figures are keyed by the task's metrics (`yolo_opt.arch`): `map`, `map50` (boxes) for every model, and `mask_map`,
`mask_map50` for a segmentation model. Ultralytics reads the task from the file (checkpoint, ONNX or OpenVINO
metadata); nothing here assumes detection.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from yolo_opt.options import DEFAULT_IMGSZ


def validate(weights: str | Path, data: str | Path, imgsz: int, batch: int = 16, device: str = "cpu",
             end2end: bool | None = None) -> dict:
    """mAP50-95 and mAP50 from the Ultralytics validator (any format it loads: .pt, .onnx, .engine, OpenVINO).

    An OpenVINO model is given as its folder (any name) or its `.xml` (device: `intel:cpu`, `intel:gpu`). A `.pt`
    end-to-end model (YOLO26) is scored on the head Ultralytics uses by default (what `yolo val` and `yolo export`
    give), or on its NMS-free one-to-one head with `end2end=True`; an exported model on the head it was exported
    with.
    """
    from ultralytics import YOLO

    from yolo_opt.io.checkpoint import read_checkpoint
    from yolo_opt.io.openvino import openvino_folder

    path = Path(weights)
    head = {}
    if path.suffix == ".pt":
        from yolo_opt.arch import adapter

        ckpt = read_checkpoint(path)  # refused unless safe, before Ultralytics opens it
        head = adapter(ckpt.get("ema") or ckpt["model"]).exporter_args(end2end)  # its switch of heads, as export's
    with contextlib.ExitStack() as stack:
        if path.suffix == ".xml" or path.is_dir():
            path = stack.enter_context(openvino_folder(path))  # Ultralytics tells OpenVINO by the folder's name
        yolo = YOLO(str(path))
        metrics = yolo.val(data=str(data), imgsz=imgsz, batch=batch if path.suffix == ".pt" else 1, plots=False,
                           verbose=False, device=device, **head, **stack.enter_context(_scratch()))
    return figures(yolo.task, metrics)


@contextlib.contextmanager
def _scratch():
    """Ultralytics' validator makes a `runs/<task>/valN` folder even when it saves nothing: give it a temporary one,
    removed afterwards, so that validating leaves nothing in the user's working folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="yolo-opt-val.") as tmp:
        yield {"project": tmp, "name": "val", "exist_ok": True}


def describe(maps: dict[str, float | None]) -> str:
    """One line of FP32 -> INT8 figures, e.g. "mAP50-95 FP32 0.7012 -> INT8 0.6987 (-0.0025); masks mAP50-95 ...",
    from keys `fp32_map`, `int8_map` (and `fp32_mask_map`, `int8_mask_map`); a side not measured is left out."""
    parts = []
    for metric, label in (("map", "mAP50-95"), ("mask_map", "masks mAP50-95")):
        fp32, int8 = maps.get(f"fp32_{metric}"), maps.get(f"int8_{metric}")
        if fp32 is not None and int8 is not None:
            parts.append(f"{label} FP32 {fp32:.4f} -> INT8 {int8:.4f} ({int8 - fp32:+.4f})")
        elif fp32 is not None or int8 is not None:
            parts.append(f"{label} {'FP32' if fp32 is not None else 'INT8'} {fp32 if fp32 is not None else int8:.4f}")
    return "; ".join(parts)


def figures(task: str, metrics) -> dict[str, float]:
    """The task's figures from an Ultralytics metrics object: {"map", "map50"[, "mask_map", "mask_map50"]}."""
    from yolo_opt.arch import task_named

    results = metrics.results_dict
    return {key: float(results[name]) for key, name in task_named(task).metrics.items()}


def validate_onnx(
    path: str | Path, data: str | Path, imgsz: int | list[int] | None = None, verbose: bool = False, **kwargs: Any
) -> dict[str, float]:
    """mAP of an `.onnx` model with the Ultralytics validator (ONNX Runtime on CPU), at its own input size by default.

    Returns:
        {"map": mAP50-95, "map50": mAP50, and the masks' for a segmentation model}, like `validate`.
    """
    from ultralytics import YOLO

    from yolo_opt.data.checks import dataset_images
    from yolo_opt.io.onnx import load_onnx, onnx_metadata

    dataset_images(data, "val")  # clear DataError before Ultralytics tries to download anything
    graph = load_onnx(path, check=False)
    if imgsz is None:
        imgsz = onnx_metadata(graph).get("imgsz", DEFAULT_IMGSZ)
    args = {"data": str(data), "imgsz": imgsz, "plots": False, "batch": 1, "verbose": verbose, "device": "cpu"}
    yolo = YOLO(str(path))
    with _scratch() as scratch:
        return figures(yolo.task, yolo.val(**{**args, **scratch, **kwargs}))
