"""YOLO11: C3k2 (a C2f: the YOLOv8 twin covers it) and C2PSA, whose `split` feeds attention on one half.

Attention's qkv projection is shaped by its heads, so its channels stay intact (pruning them blew up or broke the
reshape); C2PSA's attention half therefore keeps its width, and with `prune_native` its bypass half too.
"""

from __future__ import annotations

import torch
from ultralytics.nn.modules import C2PSA
from ultralytics.nn.modules.block import Attention

from yolo_opt.arch.base import Family, SplitTwin, has_layer, modules_of, register_family


class C2PSASplit(SplitTwin):
    """C2PSA with `cv1` as two convs: `cva` (bypass half) and `cvb` (attention half)."""

    halves = ("cva", "cvb")
    native_base = C2PSA
    pickled_as = ("yolo_opt.prune.blocks.C2PSASplit",)  # its home before the adapter layer

    def __init__(self, block: C2PSA):
        """Build the twin of `block`, sharing its PSA blocks and final conv."""
        super().__init__()
        self.split(block, "cv2", "m")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as the original block."""
        return self.cv2(torch.cat((self.cva(x), self.m(self.cvb(x))), 1))

    def intact_half(self):
        return self.cvb

    def _fill_native(self, block) -> None:
        block.cv2, block.m = self.cv2, self.m


YOLO11 = register_family(Family(
    name="YOLO11", order=11, recognise=has_layer("C3k2", "C2PSA"), twins={C2PSA: C2PSASplit}, keep=modules_of(Attention),
))
