"""YOLOv9: its ELAN blocks (`RepNCSPELAN4`, `ELAN1`) `chunk` their `cv1` output like C2f; the twin cuts `cv1` in two.

ADown also chunks, but its own *input*: DepGraph maps those indices itself (checked in the tests: pruned and
masked models give the same outputs).
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules.block import RepNCSPELAN4

from yolo_opt.arch.base import Family, SplitTwin, has_layer, register_family


class ELANSplit(SplitTwin):
    """RepNCSPELAN4 / ELAN1 with `cv1` as two convs (`cv0`, `cv1`); `cv2`, `cv3`, `cv4` as in the block."""

    halves = ("cv0", "cv1")
    native_base = RepNCSPELAN4

    def __init__(self, block: RepNCSPELAN4):
        """Build the twin of `block`, sharing its inner stages and final conv."""
        super().__init__()
        self.split(block, "cv2", "cv3", "cv4")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as the original block."""
        y = [self.cv0(x), self.cv1(x)]
        y.append(self.cv2(y[-1]))
        y.append(self.cv3(y[-1]))
        return self.cv4(torch.cat(y, 1))

    def _fill_native(self, block) -> None:
        block.cv2, block.cv3, block.cv4 = self.cv2, self.cv3, self.cv4


YOLOV9 = register_family(Family(
    name="YOLOv9", order=9, recognise=has_layer("RepNCSPELAN4", "ELAN1", "ADown", "AConv"), twins={RepNCSPELAN4: ELANSplit},
))
