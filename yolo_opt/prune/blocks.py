"""The split-free twins, by their earlier home: checkpoints pruned before the adapter layer pickled
`yolo_opt.prune.blocks.C2fSplit` / `C2PSASplit`, and scripts import them from here. The twins themselves live with
their model family in `yolo_opt.arch` (YOLOv8's C2f, YOLO11's C2PSA, YOLOv9's ELAN, YOLOv10's PSA).
"""

from __future__ import annotations

from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.arch.base import SplitTwin
from yolo_opt.arch.yolo11 import C2PSASplit
from yolo_opt.arch.yolov8 import C2fSplit

__all__ = ["C2PSASplit", "C2fSplit", "SplitTwin", "make_prunable", "to_native"]


def make_prunable(model: nn.Module) -> int:
    """Replace every block that splits its `cv1` output by its split-free twin, in place; returns how many
    (0 when the model is already prunable)."""
    return adapter(model).make_prunable()


def to_native(model: nn.Module) -> tuple[int, int]:
    """Put Ultralytics' own blocks back wherever a twin's two halves kept equal widths, in place.

    A native block splits its `cv1` output into two equal halves, so it holds the pruned weights exactly when both
    halves are equally wide: outputs are identical, and the checkpoint then holds only Ultralytics classes (it loads
    without yolo-opt, and under `ULTRALYTICS_SAFE_LOAD=1`).

    Returns:
        (blocks converted, twins kept because their halves differ).
    """
    return adapter(model).to_native()
