"""The adapter layer's building blocks: what a model family and a task tell the rest of yolo-opt, the registries
they are entered in, and the split-free twin every `chunk`/`split` block is replaced by for pruning.

A family file (`yolov8.py`, `yolo26.py`, ...) registers a `Family`: the blocks it introduced, their twins, the
layers pruning must leave alone, its extra parameters and outputs to trace. A task file (`detect.py`,
`segment.py`) registers a `Task`: its heads, what of them stays intact, the outputs to score and distil, its
trainer, validator and metric keys, and its deploy output format. `yolo_opt.arch.adapter(model)` composes them for
one model; nothing below asks a model its type anywhere else.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from ultralytics.nn.modules import Conv


@dataclass(frozen=True)
class Family:
    """One model family: how it is recognised, and what pruning must know about the blocks it introduced."""

    name: str  # as users know it, e.g. "YOLO26"
    order: int  # position in messages and tables (release order)
    recognise: Callable[[nn.Module], bool]  # whether a model belongs to this family
    twins: dict[type, type] = field(default_factory=dict)  # Ultralytics block class -> its split-free twin class
    keep: Callable[[nn.Module], Iterable[nn.Module]] | None = None  # modules whose output channels stay intact
    unwrapped: Callable[[nn.Module], Iterable[tuple[nn.Parameter, int]]] | None = None  # bare parameters + pruned dim


@dataclass(frozen=True)
class Task:
    """One task (the head's job): what of the head stays intact, what its outputs are, how Ultralytics trains and
    validates it, and what a deployed model outputs."""

    name: str  # Ultralytics' task name: "detect", "segment"
    heads: tuple[type, ...]  # the exact head classes of this task
    trainer: str  # Ultralytics' trainer class ("module:Class"), which yolo-opt's pruning trainer extends
    validator: str  # Ultralytics' validator class
    metrics: dict[str, str]  # our key -> the validator's key, e.g. {"map": "metrics/mAP50-95(B)"}
    head_keep: Callable[[nn.Module], Iterable[nn.Module]]  # output convs of the head (their channels are its outputs)
    distill_keys: tuple[str, ...]  # the tensors of a training output distillation compares
    output: Callable[[nn.Module, bool], str]  # the deployed output format, for bundles and their infer.py
    primary: str = "map"  # the metric figures lead with (segmentation: the masks')
    # (branch, module whose input feeds it) of branches that run only in training: a trace adds them
    training_branches: Callable[[nn.Module], list[tuple[nn.Module, nn.Module]]] = lambda head: []


FAMILIES: list[Family] = []
TASKS: list[Task] = []


def register_family(family: Family) -> Family:
    FAMILIES.append(family)
    FAMILIES.sort(key=lambda f: f.order)
    return family


def register_task(task: Task) -> Task:
    TASKS.append(task)
    return task


def has_layer(*names: str) -> Callable[[nn.Module], bool]:
    """A `recognise` rule: a layer of the model is one of these Ultralytics classes, by the class path Ultralytics
    records on each layer (`.type`), which a twin keeps: a pruned model is still recognised."""
    return lambda model: any(str(getattr(m, "type", "")).rpartition(".")[2] in names for m in model.model)


def modules_of(*classes: type) -> Callable[[nn.Module], list[nn.Module]]:
    """A `keep` rule: every module of `classes` in the model."""
    return lambda model: [m for m in model.modules() if isinstance(m, classes)]


# ----------------------------------------------------------------------------------------------- split-free twins
# Attributes Ultralytics' forward routing and model summary read from each layer of `model.model`.
ROUTING_ATTRS = ("i", "f", "type", "np")


def half_conv(conv: Conv, start: int, end: int) -> Conv:
    """A copy of `conv` keeping output channels [start, end): same weights, BN stats and train/eval mode."""
    half = copy.deepcopy(conv)
    half.conv = nn.Conv2d(
        conv.conv.in_channels, end - start, conv.conv.kernel_size, conv.conv.stride, conv.conv.padding,
        conv.conv.dilation, conv.conv.groups, bias=conv.conv.bias is not None,
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


def merge_convs(first: Conv, second: Conv) -> Conv:
    """One Conv whose output channels are `first`'s then `second`'s (the inverse of `half_conv`)."""
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


def copy_routing(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Give `dst` the routing attributes of `src` (its place in `model.model`) and its train/eval mode."""
    for attr in ROUTING_ATTRS:
        if hasattr(src, attr):
            setattr(dst, attr, getattr(src, attr))
    dst.train(src.training)
    return dst


def native_class(twin: nn.Module, default: type) -> type:
    """The Ultralytics class a twin replaced (C2f or C3k2, ...), from the layer type Ultralytics records."""
    from ultralytics.nn.modules import block as ultralytics_blocks

    module, _, name = str(getattr(twin, "type", "")).rpartition(".")
    cls = getattr(ultralytics_blocks, name, None) if module == "ultralytics.nn.modules.block" else None
    return cls if isinstance(cls, type) and issubclass(cls, default) else default


class SplitTwin(nn.Module):
    """A block whose `cv1` output is cut in two by `chunk`/`split`, rebuilt with `cv1` as two convs (`first`,
    `second` attributes named by the subclass): identical outputs, and DepGraph sees two channel groups.

    `equal_halves` (set for `prune_native`): the pruner keeps both halves equally wide, so `native()` can put
    Ultralytics' own block back; where one half is intact anyway (attention), the other is kept intact too.
    """

    halves: ClassVar[tuple[str, str]] = ("cv0", "cv1")
    native_base: ClassVar[type] = nn.Module  # the Ultralytics class (or base class) the twin stands for
    pickled_as: ClassVar[tuple[str, ...]] = ()  # older names checkpoints hold it under (the safe loader allows them)
    equal_halves = False


    def split(self, block: nn.Module, *shared: str) -> None:
        """Become the twin of `block`: its `cv1` cut into this twin's two halves (the same weights), the modules
        named `shared` shared with it, and its place in the model (routing) and train/eval mode."""
        c = block.cv1.conv.out_channels // 2
        first, second = self.halves
        setattr(self, first, half_conv(block.cv1, 0, c))
        setattr(self, second, half_conv(block.cv1, c, 2 * c))
        for name in shared:
            setattr(self, name, getattr(block, name))
        copy_routing(block, self)
    def intact_half(self) -> nn.Module | None:
        """The half whose channels pruning never removes (it feeds attention), if any."""
        return None

    def native(self) -> nn.Module | None:
        """Ultralytics' own block holding the same weights, or None while the halves differ in width."""
        first, second = (getattr(self, name) for name in self.halves)
        if first.conv.out_channels != second.conv.out_channels:
            return None
        cls = native_class(self, self.native_base)
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block.c = first.conv.out_channels
        block.cv1 = merge_convs(first, second)
        self._fill_native(block)
        return copy_routing(self, block)

    def _fill_native(self, block: nn.Module) -> None:
        """Move the twin's other submodules into the native block (override)."""
        raise NotImplementedError


def holds_attention(module: nn.Module) -> bool:
    """Whether a submodule runs attention (its qkv projection is head-shaped: pruning leaves it alone)."""
    from ultralytics.nn.modules.block import AAttn, Attention

    return any(isinstance(m, (Attention, AAttn)) for m in module.modules())


def flatten_tensors(out: Any) -> list[torch.Tensor]:
    """Every tensor of a (nested) model output, in order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flatten_tensors(o)]
    return []
