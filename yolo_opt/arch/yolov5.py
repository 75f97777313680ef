"""YOLOv5u: YOLOv5's C3 backbone with YOLOv8's anchor-free head. C3 has no `chunk`: nothing to add for pruning."""

from __future__ import annotations

from yolo_opt.arch.base import Family, has_layer, register_family

YOLOV5U = register_family(Family(name="YOLOv5u", order=5, recognise=has_layer("C3")))
