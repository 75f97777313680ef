"""YOLOv8 (and every later family built of C2f blocks: YOLO11's C3k2, YOLOv10's C2fCIB, YOLO26's C3k2).

C2f splits its `cv1` output with `chunk(2)`, which hides the channel dependency from DepGraph: its twin cuts `cv1`
into two convs holding the same weights.
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules import C2f

from yolo_opt.arch.base import Family, SplitTwin, has_layer, holds_attention, register_family


class C2fSplit(SplitTwin):
    """C2f / C3k2 / C2fCIB with `cv1` as two convs (`cv0` -> first half, `cv1` -> second half)."""

    halves = ("cv0", "cv1")
    native_base = C2f
    pickled_as = ("yolo_opt.prune.blocks.C2fSplit",)  # its home before the adapter layer

    def __init__(self, block: C2f):
        """Build the twin of `block`, sharing its inner blocks and final conv."""
        super().__init__()
        self.split(block, "cv2", "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as the original block."""
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))

    def intact_half(self):
        """YOLO26's last C3k2 runs attention on its second half (`m`): that half keeps its channels."""
        return self.cv1 if holds_attention(self.m) else None

    def _fill_native(self, block) -> None:
        block.cv2, block.m = self.cv2, self.m


YOLOV8 = register_family(Family(
    name="YOLOv8", order=8, recognise=has_layer("C2f"),
    twins={C2f: C2fSplit},
))
