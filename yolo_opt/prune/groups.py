"""What torch-pruning may prune in a YOLO detection model, and how channel groups are found and named.

A group is named by its root layer (e.g. `model.4.m.1.cv2`): all layers whose channels are coupled with that
layer's output channels (residual adds, concats, BN, the consumers' input channels) lose the same channels.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from yolo_opt.errors import PruneError
from yolo_opt.io.checkpoint import check_detection_model


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


def example_input(model: nn.Module, imgsz: int) -> torch.Tensor:
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


def plans(model: nn.Module, ratio: float, method: str, round_to: int | None, imgsz: int) -> tuple[list, Any]:
    """Channels the pruner would remove from each group at `ratio`, scored on the unpruned model (nothing pruned).

    Returns (list of (group name, root channels, [(module name, 'out'|'in', channel idxs)]), pruner).
    """
    from yolo_opt.prune.pruner import build_pruner

    names = {m: n for n, m in model.named_modules()}
    with eval_mode(model), traceable(model):
        pruner = build_pruner(model, ratio, method, round_to, False, imgsz)
        out = []
        for group in pruner.step(interactive=True):  # yields the planned groups; nothing is pruned here
            root = group[0].dep.target.module
            items = []
            for dep, idxs in group:
                target = dep.target.module
                if target not in names or not isinstance(target, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                    continue
                kind = "out" if pruner.DG.is_out_channel_pruning_fn(dep.handler) else "in"
                items.append((names[target], kind, sorted({int(i) for i in idxs})))
            out.append((layer_name(names, root), getattr(root, "out_channels", None), items))
    return out, pruner


def prunable_groups(model: nn.Module, imgsz: int = 64, round_to: int | None = 8) -> dict[str, int]:
    """Prunable groups of a detection model: root layer name -> channels (after `make_prunable`)."""
    from yolo_opt.prune.blocks import make_prunable
    from yolo_opt.prune.pruner import build_pruner

    check_detection_model(model)
    make_prunable(model)
    names = {m: n for n, m in model.named_modules()}
    with eval_mode(model), traceable(model):
        pruner = build_pruner(model, 0.0, "l2", round_to, False, imgsz)
        groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
        return {layer_name(names, g[0].dep.target.module): g[0].dep.target.module.out_channels for g in groups}


def mask_group(model: nn.Module, items: Sequence[tuple[str, str, list[int]]]) -> None:
    """Zero the channels a group's pruning would remove (BN scale+shift and conv rows of out-pruned layers).

    After SiLU such a channel is exactly zero, which is what removing it does to every consumer: the same outputs
    as pruning the group (checked in the tests) without re-tracing the network.
    """
    with torch.no_grad():
        for name, kind, idxs in items:
            if kind != "out" or not idxs:
                continue
            module = model.get_submodule(name)
            index = torch.tensor(idxs, dtype=torch.long)
            if isinstance(module, nn.BatchNorm2d):
                module.weight[index] = 0
                module.bias[index] = 0
            elif isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight[index] = 0
                if module.bias is not None:
                    module.bias[index] = 0
