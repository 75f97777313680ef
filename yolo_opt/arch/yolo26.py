"""YOLO26: end-to-end (NMS-free: a one-to-one head beside the one-to-many one) and no DFL (`reg_max=1`).

What it needs beyond YOLO11's blocks is handled where it belongs: both heads are traced and kept (detect task),
the attention half of its last C3k2 stays intact (`C2fSplit.intact_half`), distillation has a box term without DFL
(`yolo_opt.distill.losses`), the INT8 graph keeps the top-k tail in float (graph-derived), and exports default to
the end-to-end output (`yolo_opt.deploy`). This file recognises it.
"""

from __future__ import annotations

from ultralytics.nn.modules import Detect

from yolo_opt.arch.base import Family, register_family


def _is_yolo26(model) -> bool:
    head = model.model[-1] if hasattr(model, "model") and len(model.model) else None
    return isinstance(head, Detect) and head.reg_max == 1 and getattr(head, "one2one_cv2", None) is not None


YOLO26 = register_family(Family(name="YOLO26", order=26, recognise=_is_yolo26))
