"""The torch-pruning glue every pruning module builds on: the pruner yolo-opt uses, channel rounding, what is left
alone, and the context in which a model is traced (eval mode, every parameter visible to autograd, no hooks).

Pruning decisions are ratios (of channels, of GFLOPs), so models are traced and their GFLOPs searched at one small
image size, `SEARCH_IMGSZ`: convolution MACs scale with the image area at every layer, so a GFLOPs *ratio* is the
same at any multiple of the stride, and a small image makes each trace and count cheap. This module owns that size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch_pruning as tp
from torch import nn

from yolo_opt.errors import PruneError
from yolo_opt.io.checkpoint import check_detection_model
from yolo_opt.prune.importance import importance

SEARCH_IMGSZ = 128  # the image size of every trace, GFLOPs search and estimate (ratios do not depend on it)
MAX_RATIO = 0.9  # torch-pruning's max_pruning_ratio: no group loses more than this


def round_kept(kept: float, channels: int, round_to: int | None) -> int:
    """Kept channels rounded to the *nearest* multiple of `round_to` (at least one multiple, at most all)."""
    if not round_to:
        return int(kept)
    return min(max(round_to, int(round(kept / round_to)) * round_to), channels)


def n_pruned(channels: int, ratio: float, round_to: int | None) -> int:
    """Channels the pruner removes from a `channels`-wide group at `ratio` (torch-pruning + nearest rounding)."""
    ratio = min(ratio, MAX_RATIO)
    n = channels - int(channels * (1 - ratio))
    if n <= 0:
        return 0
    return max(channels - round_kept(channels - n, channels, round_to), 0)


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels stay intact: head output convs, DFL, attention (qkv is head-shaped), and the
    bypass half of a C2PSA whose halves must stay equal (`prune_native`)."""
    from ultralytics.nn.modules import Attention

    from yolo_opt.prune.blocks import C2PSASplit

    head = check_detection_model(model)
    ignored: list[nn.Module] = [head.dfl] if isinstance(head.dfl, nn.Module) else []
    for branches in (head.cv2, head.cv3, getattr(head, "one2one_cv2", None), getattr(head, "one2one_cv3", None)):
        if branches is not None:
            ignored.extend(seq[-1] for seq in branches)
    ignored.extend(m for m in model.modules() if isinstance(m, Attention))
    ignored.extend(m.cva for m in model.modules() if isinstance(m, C2PSASplit) and m.equal_halves)
    return ignored


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Trace and measure in eval mode (no BN statistics updates), then restore each module's mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


@contextmanager
def no_forward_hooks(model: nn.Module) -> Iterator[nn.Module]:
    """Detach forward hooks (e.g. a distillation wrapper's feature capture) while the model is copied or traced."""
    saved = {m: m._forward_hooks for m in model.modules() if m._forward_hooks}
    for m in saved:
        m._forward_hooks = OrderedDict()
    try:
        yield model
    finally:
        for m, hooks in saved.items():
            m._forward_hooks = hooks


@contextmanager
def traceable(model: nn.Module) -> Iterator[nn.Module]:
    """Every float parameter requires grad while tracing, then restored.

    DepGraph follows autograd: in a released (frozen) checkpoint the first layers, reached only by an input that
    needs no grad, are invisible to it and form no group (yolov8n: model.0 and model.1). The trainer's model is
    trainable, so tracing this way gives the groups the trainer sees.
    """
    params = [p for p in model.parameters() if p.is_floating_point()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    try:
        yield model
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)


def example_input(model: nn.Module, imgsz: int = SEARCH_IMGSZ) -> torch.Tensor:
    """A random image batch of one at `imgsz`, on the model's device and dtype."""
    p = next(model.parameters())
    ch = model.yaml.get("ch", 3) if isinstance(getattr(model, "yaml", None), dict) else 3
    return torch.rand(1, ch, imgsz, imgsz, device=p.device, dtype=p.dtype)


def forward_outputs(model: nn.Module, x: torch.Tensor):
    """The tensor output of a YOLO forward (what DepGraph traces)."""
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def layer_name(names: dict[nn.Module, str], module: nn.Module) -> str:
    """A group's name: its root layer, without the `.conv` of Ultralytics' Conv wrapper."""
    name = names[module]
    return name[: -len(".conv")] if name.endswith(".conv") else name


def group_root(model: nn.Module, name: str) -> nn.Module:
    """The torch-pruning root layer named `name` (an Ultralytics `Conv` wrapper resolves to its `nn.Conv2d`)."""
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise PruneError(
            f"layer '{name}' is not in this model; per-layer ratios (sensitivity=) must come from the same model"
        ) from None
    return module.conv if isinstance(getattr(module, "conv", None), nn.Conv2d) else module


class NearestRoundPruner(tp.pruner.MetaPruner):
    """MetaPruner that rounds kept channels to the *nearest* multiple of `round_to` (torch-pruning floors it).

    Flooring keeps 8 of 16 channels at a 25% ratio; nearest-rounding keeps the achieved ratio close to the
    asked one, so GFLOPs targets can be met precisely while channel counts stay hardware friendly.
    """

    def _round_to(self, n_pruned, current_channels, round_to):
        return current_channels - round_kept(current_channels - n_pruned, current_channels, round_to)


def build_pruner(
    model: nn.Module,
    ratio: float,
    prune_method: str,
    prune_round: int | None,
    prune_global: bool = False,
    layer_ratios: dict[str, float] | None = None,
    imgsz: int = SEARCH_IMGSZ,
) -> tp.pruner.MetaPruner:
    """The torch-pruning pruner yolo-opt uses (nearest rounding, `ignored_layers` left alone), tracing at `imgsz`."""
    ratio_dict = {group_root(model, name): float(r) for name, r in (layer_ratios or {}).items()}
    return NearestRoundPruner(
        model,
        example_input(model, imgsz),
        importance=importance(prune_method),
        pruning_ratio=ratio,
        global_pruning=prune_global,
        max_pruning_ratio=MAX_RATIO,
        ignored_layers=ignored_layers(model),
        round_to=prune_round,
        forward_fn=forward_outputs,
        pruning_ratio_dict=ratio_dict or None,
    )
