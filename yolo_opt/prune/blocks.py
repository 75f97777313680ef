"""Split-free twins of Ultralytics blocks whose `chunk`/`split` hides channel dependencies from DepGraph.

Each twin cuts the block's `cv1` into two convs holding the same weights and BN statistics, so outputs are
identical and torch-pruning sees two independent channel groups. The classes live here (an importable
module) because Ultralytics checkpoints pickle the module itself.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from ultralytics.nn.modules import C2PSA, C2f, Conv

# Attributes Ultralytics' forward routing and model summary read from each layer of `model.model`.
_ROUTING_ATTRS = ("i", "f", "type", "np")


def _half_conv(conv: Conv, start: int, end: int) -> Conv:
    """A copy of `conv` keeping output channels [start, end): same weights, BN stats and train/eval mode."""
    half = copy.deepcopy(conv)
    half.conv = nn.Conv2d(
        conv.conv.in_channels,
        end - start,
        conv.conv.kernel_size,
        conv.conv.stride,
        conv.conv.padding,
        conv.conv.dilation,
        conv.conv.groups,
        bias=conv.conv.bias is not None,
    ).to(conv.conv.weight.device, conv.conv.weight.dtype)
    half.conv.weight.data.copy_(conv.conv.weight.data[start:end])
    if conv.conv.bias is not None:
        half.conv.bias.data.copy_(conv.conv.bias.data[start:end])
    bn = getattr(conv, "bn", None)
    if isinstance(bn, nn.BatchNorm2d):
        half.bn = nn.BatchNorm2d(end - start, bn.eps, bn.momentum, bn.affine, bn.track_running_stats).to(
            bn.weight.device, bn.weight.dtype
        )
        for name in ("weight", "bias"):
            getattr(half.bn, name).data.copy_(getattr(bn, name).data[start:end])
        for name in ("running_mean", "running_var"):
            getattr(half.bn, name).copy_(getattr(bn, name)[start:end])
        half.bn.num_batches_tracked.copy_(bn.num_batches_tracked)
        half.bn.train(bn.training)
    half.conv.train(conv.conv.training)
    half.train(conv.training)
    return half


def _copy_routing(src: nn.Module, dst: nn.Module) -> nn.Module:
    for attr in _ROUTING_ATTRS:
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))
    dst.train(src.training)
    return dst


class C2fSplit(nn.Module):
    """C2f / C3k2 with `cv1` as two convs (`cv0` → first half, `cv1` → second half): prunable by DepGraph."""

    def __init__(self, block: C2f):
        """Build the twin of `block`, sharing its inner blocks and final conv."""
        super().__init__()
        c = block.cv1.conv.out_channels // 2
        self.cv0 = _half_conv(block.cv1, 0, c)
        self.cv1 = _half_conv(block.cv1, c, 2 * c)
        self.cv2 = block.cv2
        self.m = block.m
        _copy_routing(block, self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as the original block."""
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2PSASplit(nn.Module):
    """C2PSA with `cv1` as two convs: `cva` (bypass half) and `cvb` (attention half)."""

    def __init__(self, block: C2PSA):
        """Build the twin of `block`, sharing its PSA blocks and final conv."""
        super().__init__()
        c = block.cv1.conv.out_channels // 2
        self.cva = _half_conv(block.cv1, 0, c)
        self.cvb = _half_conv(block.cv1, c, 2 * c)
        self.cv2 = block.cv2
        self.m = block.m
        _copy_routing(block, self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same output as the original block."""
        return self.cv2(torch.cat((self.cva(x), self.m(self.cvb(x))), 1))


def make_prunable(model: nn.Module) -> int:
    """Replace every C2f/C3k2/C2PSA in a DetectionModel by its split-free twin, in place.

    Returns:
        Number of blocks replaced (0 when the model is already prunable).
    """
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, C2f):
                setattr(parent, name, C2fSplit(child))
                count += 1
            elif isinstance(child, C2PSA):
                setattr(parent, name, C2PSASplit(child))
                count += 1
    return count
