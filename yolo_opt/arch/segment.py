"""The segment task: Ultralytics' `Segment` head (YOLOv8/9/11-seg) and YOLO26's `Segment26` (end-to-end, and a
training-only semantic branch in its prototype module, `Proto26.semseg`).

A Segment head is a Detect head plus mask coefficients (`cv4`, and `one2one_cv4` end-to-end) and prototypes
(`proto`): the last coefficient convs and the prototype output conv (`proto.cv3`) are outputs and keep their
channels; so does the semantic branch's output. That branch runs only in training, so tracing adds it (`trace`)
or DepGraph would leave its inputs full width while their producers shrink.
"""

from __future__ import annotations

from torch import nn
from ultralytics.nn.modules import Segment
from ultralytics.nn.modules.head import Segment26

from yolo_opt.arch.base import Task, register_task
from yolo_opt.arch.detect import BRANCHES, output_convs
from yolo_opt.arch.detect import output_format as detect_format


def head_keep(head: nn.Module) -> list[nn.Module]:
    keep = output_convs(head, (*BRANCHES, "cv4", "one2one_cv4"))
    keep.append(head.proto.cv3)
    semseg = getattr(head.proto, "semseg", None)
    if semseg is not None:
        keep.append(semseg[-1])
    return keep


def training_branches(head: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(branch, module whose input feeds it) of the training-only branches a trace in eval mode would miss."""
    semseg = getattr(head.proto, "semseg", None)
    return [(semseg, head.proto.feat_fuse)] if semseg is not None else []


def output_format(head: nn.Module, end2end: bool) -> str:
    dets = detect_format(head, end2end).replace("(1, 4+nc, anchors)", "(1, 4+nc+nm, anchors)")
    dets = dets.replace(", 6)", ", 6+nm)").replace("class (", "class, mask coefficients (")
    return (f"output0 {dets}; output1 (1, nm, h/4, w/4) mask prototypes: mask = sigmoid(coefficients @ prototypes), "
            f"nm={head.nm}")


SEGMENT = register_task(Task(
    name="segment",
    heads=(Segment, Segment26),
    trainer="ultralytics.models.yolo.segment:SegmentationTrainer",
    validator="ultralytics.models.yolo.segment:SegmentationValidator",
    metrics={"map": "metrics/mAP50-95(B)", "map50": "metrics/mAP50(B)", "mask_map": "metrics/mAP50-95(M)",
             "mask_map50": "metrics/mAP50(M)"},
    head_keep=head_keep,
    distill_keys=("boxes", "scores", "mask_coefficient", "proto"),
    output=output_format,
    primary="mask_map",
    training_branches=training_branches,
))
