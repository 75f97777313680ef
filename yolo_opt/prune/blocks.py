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
    """C2PSA with `cv1` as two convs: `cva` (bypass half) and `cvb` (attention half).

    `equal_halves` (set for `prune_native`): the pruner leaves `cva` intact too, so both halves keep the width the
    attention half always keeps, and `to_native` can put Ultralytics' C2PSA back.
    """

    equal_halves = False

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


def _merge_convs(first: Conv, second: Conv) -> Conv:
    """One Conv whose output channels are `first`'s then `second`'s (the inverse of `_half_conv`)."""
    merged = copy.deepcopy(first)
    a, b = first.conv, second.conv
    merged.conv = nn.Conv2d(a.in_channels, a.out_channels + b.out_channels, a.kernel_size, a.stride, a.padding,
                            a.dilation, a.groups, bias=a.bias is not None).to(a.weight.device, a.weight.dtype)
    merged.conv.weight.data.copy_(torch.cat([a.weight.data, b.weight.data]))
    if a.bias is not None:
        merged.conv.bias.data.copy_(torch.cat([a.bias.data, b.bias.data]))
    bn_a, bn_b = getattr(first, "bn", None), getattr(second, "bn", None)
    if isinstance(bn_a, nn.BatchNorm2d) and isinstance(bn_b, nn.BatchNorm2d):
        n = bn_a.num_features + bn_b.num_features
        merged.bn = nn.BatchNorm2d(n, bn_a.eps, bn_a.momentum, bn_a.affine, bn_a.track_running_stats).to(
            bn_a.weight.device, bn_a.weight.dtype)
        for name in ("weight", "bias"):
            getattr(merged.bn, name).data.copy_(torch.cat([getattr(bn_a, name).data, getattr(bn_b, name).data]))
        for name in ("running_mean", "running_var"):
            getattr(merged.bn, name).copy_(torch.cat([getattr(bn_a, name), getattr(bn_b, name)]))
        merged.bn.num_batches_tracked.copy_(bn_a.num_batches_tracked)
        merged.bn.train(bn_a.training)
    merged.conv.train(a.training)
    merged.train(first.training)
    return merged


def _native_class(twin: nn.Module, default: type) -> type:
    """The Ultralytics class the twin replaced (C2f or C3k2, ...), from the layer type Ultralytics records."""
    from ultralytics.nn.modules import block as ultralytics_blocks

    module, _, name = str(getattr(twin, "type", "")).rpartition(".")
    cls = getattr(ultralytics_blocks, name, None) if module == "ultralytics.nn.modules.block" else None
    return cls if isinstance(cls, type) and issubclass(cls, default) else default


def to_native(model: nn.Module) -> tuple[int, int]:
    """Put Ultralytics' own C2f / C3k2 / C2PSA back wherever a twin's two halves kept equal widths, in place.

    The native block splits its `cv1` output into two equal halves (`chunk(2)` / `split((c, c))`), so it holds the
    pruned weights exactly when both halves are equally wide: outputs are identical, and the checkpoint then holds
    only Ultralytics classes (it loads without yolo-opt, and under `ULTRALYTICS_SAFE_LOAD=1`). Uniform per-layer
    ratios keep C2f/C3k2 halves equal by themselves (same width, same ratio, same rounding); a C2PSA's halves stay
    equal when its bypass half is not pruned (its attention half never is: `prune_native` in the pruner).

    Returns:
        (blocks converted, twins kept because their halves differ).
    """
    converted = kept = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, C2fSplit):
                first, second, default = child.cv0, child.cv1, C2f
            elif isinstance(child, C2PSASplit):
                first, second, default = child.cva, child.cvb, C2PSA
            else:
                continue
            if first.conv.out_channels != second.conv.out_channels:
                kept += 1
                continue
            cls = _native_class(child, default)
            native = cls.__new__(cls)
            nn.Module.__init__(native)
            native.c = first.conv.out_channels
            native.cv1 = _merge_convs(first, second)
            native.cv2 = child.cv2
            native.m = child.m
            setattr(parent, name, _copy_routing(child, native))
            converted += 1
    return converted, kept
