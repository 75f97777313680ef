"""The detect task: Ultralytics' `Detect` head (YOLOv5u/v8/v9/11/12) and its end-to-end variants (YOLO26's
`Detect(end2end)`, YOLOv10's `v10Detect`).

An end-to-end head has a one-to-one branch (`one2one_cv2/cv3`) beside the one-to-many one; both read the neck's
outputs, so both are traced and both keep their output convs (the class scores and box distances are the head's
outputs; DFL's fixed conv is part of the decode).
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.modules import Detect, v10Detect

from yolo_opt.arch.base import Task, register_task

BRANCHES = ("cv2", "cv3", "one2one_cv2", "one2one_cv3")


def output_convs(head: nn.Module, branches: tuple[str, ...] = BRANCHES) -> list[nn.Module]:
    """The last conv of each branch of a head (its outputs) and DFL's fixed conv."""
    keep: list[nn.Module] = [head.dfl] if isinstance(getattr(head, "dfl", None), nn.Module) else []
    for name in branches:
        seqs = getattr(head, name, None)
        if seqs is not None:
            keep.extend(seq[-1] for seq in seqs)
    return keep


def output_format(head: nn.Module, end2end: bool) -> str:
    """What the deployed detector outputs (for bundles, their README and infer.py)."""
    if end2end:
        return f"(1, {head.max_det}, 6): x1, y1, x2, y2 in input pixels, score, class (NMS-free, top-{head.max_det})"
    return "(1, 4+nc, anchors): xywh in input pixels, then class scores (sigmoid applied); needs NMS"


DETECT = register_task(Task(
    name="detect",
    heads=(Detect, v10Detect),
    trainer="ultralytics.models.yolo.detect:DetectionTrainer",
    validator="ultralytics.models.yolo.detect:DetectionValidator",
    metrics={"map": "metrics/mAP50-95(B)", "map50": "metrics/mAP50(B)"},
    head_keep=output_convs,
    distill_keys=("boxes", "scores"),
    output=output_format,
))
