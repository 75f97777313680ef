"""Channel groups of a YOLO model: what the pruner would remove from each, their names, and masking one.

A group is named by its root layer (e.g. `model.4.m.1.cv2`): all layers whose channels are coupled with that
layer's output channels (residual adds, concats, BN, the consumers' input channels) lose the same channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from yolo_opt.arch import adapter
from yolo_opt.prune.depgraph import SEARCH_IMGSZ, build_pruner, eval_mode, layer_name, memory_guard, traceable

MASKABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.Linear)  # layers whose pruned channels a mask zeroes


def plans(model: nn.Module, ratio: float, method: str, round_to: int | None,
          imgsz: int = SEARCH_IMGSZ) -> tuple[list, Any]:
    """Channels the pruner would remove from each group at `ratio`, scored on the unpruned model (nothing pruned).

    Returns (list of (group name, root channels, [(module name, 'out'|'in', channel idxs)]), pruner).
    """
    names = {m: n for n, m in model.named_modules()}
    with memory_guard("tracing the channel groups"), eval_mode(model), traceable(model):
        pruner = build_pruner(model, ratio, method, round_to, imgsz=imgsz)
        out = []
        for group in pruner.step(interactive=True):  # yields the planned groups; nothing is pruned here
            root = group[0].dep.target.module
            items = []
            for dep, idxs in group:
                target = dep.target.module
                if target not in names or not isinstance(target, MASKABLE):
                    continue
                kind = "out" if pruner.DG.is_out_channel_pruning_fn(dep.handler) else "in"
                items.append((names[target], kind, sorted({int(i) for i in idxs})))
            out.append((layer_name(names, root), getattr(root, "out_channels", None), items))
    return out, pruner


def prunable_groups(model: nn.Module, imgsz: int = SEARCH_IMGSZ, round_to: int | None = 8) -> dict[str, int]:
    """Prunable groups of a model: root layer name -> channels (after `make_prunable`)."""
    adapter(model).make_prunable()
    names = {m: n for n, m in model.named_modules()}
    with memory_guard("tracing the channel groups"), eval_mode(model), traceable(model):
        pruner = build_pruner(model, 0.0, "l2", round_to, imgsz=imgsz)
        groups = pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
        return {layer_name(names, g[0].dep.target.module): g[0].dep.target.module.out_channels for g in groups}


def mask_group(model: nn.Module, items: Sequence[tuple[str, str, list[int]]]) -> None:
    """Zero the channels a group's pruning would remove (BN scale+shift and conv rows of out-pruned layers).

    After SiLU such a channel is exactly zero, which is what removing it does to every consumer: the same outputs
    as pruning the group (checked in the tests) without re-tracing the network. A transposed conv (the segment
    head's prototype upsampling) holds its output channels in weight dimension 1.
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
            elif isinstance(module, (nn.Conv2d, nn.Linear, nn.ConvTranspose2d)):
                module.weight[(slice(None), index) if isinstance(module, nn.ConvTranspose2d) else index] = 0
                if module.bias is not None:
                    module.bias[index] = 0
