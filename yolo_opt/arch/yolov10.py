"""YOLOv10: an end-to-end head (`v10Detect`, the detect task's), C2fCIB (a C2f: the YOLOv8 twin covers it) and
PSA, which `split`s its `cv1` output into a bypass half and an attention half like C2PSA."""

from __future__ import annotations

import torch
from ultralytics.nn.modules.block import PSA

from yolo_opt.arch.base import Family, SplitTwin, has_layer, register_family


class PSASplit(SplitTwin):
    """PSA with `cv1` as two convs: `cva` (bypass half) and `cvb` (attention + feed-forward half)."""

    halves = ("cva", "cvb")
    native_base = PSA

    def __init__(self, block: PSA):
        """Build the twin of `block`, sharing its attention, feed-forward and final conv."""
        super().__init__()
        self.split(block, "attn", "ffn", "cv2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as the original block."""
        b = self.cvb(x)
        b = b + self.attn(b)
        b = b + self.ffn(b)
        return self.cv2(torch.cat((self.cva(x), b), 1))

    def intact_half(self):
        return self.cvb

    def _fill_native(self, block) -> None:
        block.attn, block.ffn, block.cv2 = self.attn, self.ffn, self.cv2


YOLOV10 = register_family(Family(
    name="YOLOv10", order=10, recognise=has_layer("v10Detect", "PSA", "SCDown", "C2fCIB"), twins={PSA: PSASplit},
))
